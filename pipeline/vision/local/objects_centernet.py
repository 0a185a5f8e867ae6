"""Offline object detection in-process: CenterNet (MobileNetV3, COCO's 80 classes) on onnxruntime.

Why in-process: on Azure Functions Flex Consumption a Python app has no Node and no apt packages,
so the detector that ran this model in a Node subprocess (TensorFlow.js) could not be deployed.
The same weights now run from `models/centernet-mobilenetv3.onnx` beside this file, which set-up
converts from the TensorFlow.js graph model in the npm package `@vladmandic/human`
(`models/centernet.json` + `.bin`; `python -m local.export_detector`, run by
`make setup`) and checks against outputs TensorFlow.js itself computed. At run time this module
needs numpy, Pillow and onnxruntime only; no Node, no npm package, no download.

The model (from 610265158/mobilenetv3_centernet, as converted to tfjs by human's author):
- input `images`: float32 NHWC 1x512x512x3, RGB 0..255 (no normalisation);
- output `detections`: 1x100x6, the 100 best heatmap peaks (a 3x3 max-pool keeps local maxima of
  the 128x128x80 class heatmap): x1, y1, x2, y2 in input pixels, score, class (0-based, COCO's
  80 detection classes in order).

Pre-processing is the model author's: the aspect ratio kept, the image resized so its long side is
512 (Pillow, bilinear with antialiasing) and centred on a black 512x512 canvas. Stretching the
image to a square instead (as human does) costs 0.05-0.2 of score on real photos.

Post-processing: scores >= `min_score`, boxes mapped back to the input image and clipped,
per-class non-maximum suppression (IoU > 0.5), best first, at most `max_objects`. Boxes of
different classes are never merged: when the model hesitates between labels for one object (the
white horse of person-dog-horse.jpg: sheep, cow and horse at 0.3-0.4) every label is reported.

The sidecar `models/centernet-mobilenetv3.json` records the source package's version, the ONNX
file's SHA-256 (checked by `load()`) and the conversion check's figures; the detector's version
is the npm package's version. onnxruntime's `run` is thread-safe; one intra-op thread, because
the pipeline runs one worker process per core.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.objects import DetectedObject
from pipeline.vision.local.onnx_session import (
    THREADS,
    cpu_session,
    file_sha256,
    read_sidecar,
    sidecar_path,
)

MODEL_NAME = "centernet-mobilenetv3"
SOURCE_PACKAGE = "@vladmandic/human"  # npm; read at set-up only
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_PATH = MODELS_DIR / f"{MODEL_NAME}.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "detections"
INPUT_SIDE = 512
INPUT_SHAPE = (1, INPUT_SIDE, INPUT_SIDE, 3)
OUTPUT_SHAPE = (1, 100, 6)
NMS_IOU = 0.5
INSTALL_HINT = "install onnxruntime (pip install -r requirements.txt)"
EXPORT_HINT = (
    "run `make setup` to convert it (python -m local.export_detector), "
    "or set DARKROOM_OBJECTS_PROVIDER=azure"
)

# COCO's 80 detection classes in the model's (0-based) order.
LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def _exported_version(model_path: Path) -> str:
    sources = (read_sidecar(model_path) or {}).get("source")
    version = sources.get("version") if isinstance(sources, dict) else None
    return str(version) if version else "unknown"


def letterbox(image: np.ndarray, side: int = INPUT_SIDE) -> tuple[np.ndarray, float, int, int]:
    """`image` (RGB uint8 HxWx3) resized to fit `side` x `side`, centred on black.

    Returns the uint8 canvas (side x side x 3) and (scale, dx, dy) such that
    canvas_pixel = image_pixel * scale + (dx, dy).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    scale = side / max(height, width)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = image
    if (w, h) != (width, height):
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    dx, dy = (side - w) // 2, (side - h) // 2
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[dy : dy + h, dx : dx + w] = resized
    return canvas, scale, dx, dy


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def decode(
    rows: np.ndarray,
    scale: float,
    dx: int,
    dy: int,
    width: int,
    height: int,
    min_score: float,
    max_objects: int,
    iou: float = NMS_IOU,
) -> list[DetectedObject]:
    """The model's 100x6 rows (canvas pixels) → objects in image pixels, best first."""
    rows = np.asarray(rows, dtype=np.float64)
    scores, classes = rows[:, 4], rows[:, 5]
    keep = (
        (scores >= min_score)
        & (classes >= 0)
        & (classes < len(LABELS))
        & (classes == np.round(classes))
    )
    rows = rows[keep]
    xyxy = np.empty((len(rows), 4))
    xyxy[:, [0, 2]] = np.clip((rows[:, [0, 2]] - dx) / scale, 0, width)
    xyxy[:, [1, 3]] = np.clip((rows[:, [1, 3]] - dy) / scale, 0, height)
    sized = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
    rows, xyxy = rows[sized], xyxy[sized]
    order = np.argsort(-rows[:, 4], kind="stable")
    kept: list[int] = []
    for i in order:
        if len(kept) >= max_objects:
            break
        if not any(rows[k, 5] == rows[i, 5] and _iou(xyxy[k], xyxy[i]) > iou for k in kept):
            kept.append(int(i))
    objects = []
    for i in kept:
        x1, y1, x2, y2 = xyxy[i]
        box = (round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1))
        score = round(min(max(float(rows[i, 4]), 0.0), 1.0), 4)
        objects.append(DetectedObject(name=LABELS[int(rows[i, 5])], score=score, box=box))
    return objects


class CenterNetObjectDetector(Analyzer):
    """COCO objects with boxes from CenterNet MobileNetV3 on onnxruntime, one CPU thread."""

    capability: ClassVar[str] = "objects"
    name: ClassVar[str] = "centernet-mobilenetv3-coco"
    version: ClassVar[str] = _exported_version(DEFAULT_MODEL_PATH)

    def __init__(
        self,
        min_score: float = 0.3,
        max_objects: int = 20,
        num_threads: int | None = THREADS,
        model_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        self.min_score = min_score
        self.max_objects = max_objects
        self.num_threads = num_threads  # onnxruntime intra-op threads; None: its default
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        self.version = _exported_version(self.model_path)  # type: ignore[misc]
        self._session = None

    def _exported(self) -> tuple[Path, dict]:
        path = self.model_path
        if not path.is_file():
            raise ModelUnavailable(f"CenterNet ONNX model not found at {path}: {EXPORT_HINT}")
        sidecar = read_sidecar(path)
        if sidecar is None or not isinstance(sidecar.get("sha256"), str):
            raise ModelUnavailable(
                f"CenterNet conversion record {sidecar_path(path)} is missing or unreadable: "
                f"{EXPORT_HINT}"
            )
        return path, sidecar

    def check(self) -> None:
        self._exported()
        if importlib.util.find_spec("onnxruntime") is None:
            raise ModelUnavailable(f"onnxruntime is not installed: {INSTALL_HINT}")

    def _load(self) -> None:
        path, sidecar = self._exported()
        try:
            import onnxruntime  # noqa: F401  (installed? say so clearly before loading)
        except ImportError as exc:
            raise ModelUnavailable(f"onnxruntime is not installed: {INSTALL_HINT}") from exc
        if file_sha256(path) != sidecar["sha256"]:
            raise ModelUnavailable(
                f"{path} does not match the SHA-256 in {sidecar_path(path).name}: {EXPORT_HINT}"
            )
        try:
            session = cpu_session(path, self.num_threads)
        except Exception as exc:
            raise ModelUnavailable(f"cannot load CenterNet model {path}: {exc}") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [(i.name, tuple(i.shape)) for i in inputs] != [(INPUT_NAME, INPUT_SHAPE)] or [
            (o.name, tuple(o.shape)) for o in outputs
        ] != [(OUTPUT_NAME, OUTPUT_SHAPE)]:
            raise ModelUnavailable(
                f"{path}: expected input {INPUT_NAME} {INPUT_SHAPE} and output {OUTPUT_NAME} "
                f"{OUTPUT_SHAPE}, found {[(i.name, i.shape) for i in inputs]} → "
                f"{[(o.name, o.shape) for o in outputs]}: {EXPORT_HINT}"
            )
        self._session = session

    def raw(self, canvas: np.ndarray) -> np.ndarray:
        """The model's 100x6 detections for one 512x512 RGB canvas (uint8 or float)."""
        self.load()
        x = np.ascontiguousarray(canvas, dtype=np.float32)[np.newaxis]
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0]

    def _predict(self, image: np.ndarray) -> list[DetectedObject]:
        canvas, scale, dx, dy = letterbox(image)
        height, width = image.shape[:2]
        return decode(
            self.raw(canvas), scale, dx, dy, width, height, self.min_score, self.max_objects
        )
