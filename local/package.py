"""`make package`: the zip that `az functionapp deploy --type zip` uploads, and nothing else.

The contents are the project tree minus `.funcignore` — the same file `func` and `azd` read, so
the three deploy paths upload the same thing — plus the generated model files, which are in the
tree (set-up writes them) but not in git.

Two ways to get the app's packages onto Azure (docs/deploy.md weighs them):
- remote build (the default zip): requirements are not vendored; Flex Consumption installs
  requirements.txt for the platform it runs on. Microsoft documents a 60-second timeout for it
  (learn.microsoft.com/azure/azure-functions/python-build-options), and it needs PyPI at deploy.
- prebuilt (`--prebuilt`): the zip also carries `.python_packages/lib/site-packages`, installed
  here by pip for Azure's platform, not this machine's: Linux x86-64 wheels only, CPython of the
  app's version, glibc of Azure's Python ≤ 3.11 image (Debian 11, glibc 2.31: manylinux_2_28 and
  older; Azure/azure-functions-python-worker#1651). Deployed with remote build off. `--vendor`
  puts the same folder into the project root, for azd with `remoteBuild: false`.

The zip is reproducible: entries sorted, fixed timestamps and modes, so the same tree gives the
same bytes (and the same SHA-256 to compare with what is deployed).

    python -m local.package [--out dist/]    # prints the zip's path, size and entry count
    python -m local.package --prebuilt       # … with the packages, for remote build off
    python -m local.package --vendor         # ./.python_packages for azd, remoteBuild: false
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
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


# Where the Functions Python worker finds an app's own packages (python-build-options: "Dependencies
# must be installed into ./.python_packages/lib/site-packages").
SITE_PACKAGES = ".python_packages/lib/site-packages"
# Azure's image for Python 3.11 and older is Debian 11 (glibc 2.31): wheels for glibc 2.28 and
# older only, never a manylinux_2_34 one (azure-functions-python-worker#1651, cryptography 44).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
DEFAULT_PYTHON = "3.11"  # infra/bicep/main.bicep pythonVersion


def version(root: Path = PROJECT_ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def deployed_files(root: Path = PROJECT_ROOT) -> list[str]:
    """Paths (posix, relative to root) that a deployment carries, sorted. A `.python_packages/`
    left in the root by `--vendor` is not part of it: `build` adds packages only when asked."""
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(root).as_posix()
        if not spec.match_file(relative) and not relative.startswith(".python_packages/"):
            files.append(relative)
    if missing := [name for name in REQUIRED if name not in files]:
        raise SystemExit(f"package: {', '.join(missing)} missing from {root} (or in .funcignore)")
    return files


def vendor(target: Path, python: str = DEFAULT_PYTHON, root: Path = PROJECT_ROOT) -> Path:
    """requirements.txt installed into `target` for Azure's platform (see PLATFORMS), by pip
    from the registry: wheels only, nothing compiled here. A no-op when `target` already holds
    exactly this (its stamp names the requirements, the Python version and the platforms)."""
    requirements = (root / "requirements.txt").read_bytes()
    key = hashlib.sha256(requirements + f"|{python}|{','.join(PLATFORMS)}".encode()).hexdigest()
    stamp = target / ".darkroom-vendored"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return target
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(staging), "--only-binary=:all:", *platforms,
        "--python-version", python, "--implementation", "cp",
        "-r", str(root / "requirements.txt"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(
            f"package: pip could not get Linux x86-64 wheels for Python {python}: "
            f"{(done.stderr or done.stdout).strip()[-1500:]}"
        )
    shutil.rmtree(staging / "bin", ignore_errors=True)  # console scripts: nothing runs them
    (staging / stamp.name).write_text(key + "\n")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(target)
    return target


def vendored_files(site_packages: Path) -> list[tuple[str, Path]]:
    """(name in the zip, file) for every file of a vendored site-packages, sorted."""
    return [
        (f"{SITE_PACKAGES}/{path.relative_to(site_packages).as_posix()}", path)
        for path in sorted(site_packages.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.name != ".darkroom-vendored"
    ]


def build(out_dir: Path, root: Path = PROJECT_ROOT, prebuilt: str | None = None) -> Path:
    """The zip; with `prebuilt` (a Python version) the app's packages for Azure go in too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = [(relative, root / relative) for relative in deployed_files(root)]
    name = f"darkroom-{version(root)}"
    if prebuilt:
        cache = root / ".darkroom" / "cache" / f"site-packages-py{prebuilt}-linux-x86_64"
        entries += vendored_files(vendor(cache, prebuilt, root))
        name += f"-py{prebuilt}-linux-x86_64"
    target = out_dir / f"{name}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for relative, path in sorted(entries):
            info = zipfile.ZipInfo(relative, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.package", description=__doc__)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "dist")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="the app's Python version")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--prebuilt",
        action="store_true",
        help="carry the app's packages, built for Azure (deploy with remote build off)",
    )
    mode.add_argument(
        "--vendor",
        action="store_true",
        help=f"only install the packages into ./{SITE_PACKAGES} (azd with remoteBuild: false)",
    )
    args = parser.parse_args(argv)
    if args.vendor:
        folder = vendor(PROJECT_ROOT / SITE_PACKAGES, args.python)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder} — {size / 1e6:.0f} MB for Python {args.python} on Linux x86-64")
        return 0
    target = build(args.out, prebuilt=args.python if args.prebuilt else None)
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
