"""`make package`: the zip that `az functionapp deploy --type zip` uploads, and nothing else.

The contents are the project tree minus `.funcignore` — the same file `func` and `azd` read, so
the three deploy paths upload the same thing — plus the generated model files, which are in the
tree (set-up writes them) but not in git. Requirements are NOT vendored: Flex Consumption's
remote build installs requirements.txt for the platform it runs on.

The zip is reproducible: entries sorted, fixed timestamps and modes, so the same tree gives the
same bytes (and the same SHA-256 to compare with what is deployed).

    python -m local.package [--out dist/]    # prints the zip's path, size and entry count
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tomllib
import zipfile
from pathlib import Path

import pathspec

from pipeline.settings import PROJECT_ROOT

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# What the app cannot run without; a package missing one of them is not written.
REQUIRED = (
    "function_app.py",
    "host.json",
    "requirements.txt",
    "pipeline/settings.py",
    "steps/prepare.py",
)


def version(root: Path = PROJECT_ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def deployed_files(root: Path = PROJECT_ROOT) -> list[str]:
    """Paths (posix, relative to root) that a deployment carries, sorted."""
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(root).as_posix()
        if not spec.match_file(relative):
            files.append(relative)
    if missing := [name for name in REQUIRED if name not in files]:
        raise SystemExit(f"package: {', '.join(missing)} missing from {root} (or in .funcignore)")
    return files


def build(out_dir: Path, root: Path = PROJECT_ROOT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"darkroom-{version(root)}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for relative in deployed_files(root):
            info = zipfile.ZipInfo(relative, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / relative).read_bytes())
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.package", description=__doc__)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "dist")
    args = parser.parse_args(argv)
    target = build(args.out)
    with zipfile.ZipFile(target) as archive:
        entries = archive.infolist()
    size = target.stat().st_size
    unpacked = sum(e.file_size for e in entries)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(
        f"{target} — {size / 1e6:.1f} MB ({unpacked / 1e6:.1f} MB unpacked), "
        f"{len(entries)} files, sha256 {digest[:16]}…"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
