"""A model's raw output → labels, boxes, a class map or a vector: the named, tested decoders.

Every decoder checks what it is given first: a wrong rank, NaN or infinity, scores out of
[0, 1] where probabilities are promised, or a class index the labels do not have raise
`MalformedOutput` with what is wrong — the image fails with that reason, nothing crashes, and
nothing made-up reaches a document. Coordinates stay in the model input's pixels here; the
step maps them to the image (`preprocess.Geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class MalformedOutput(ValueError):
    """The model answered something its decoder cannot read: the image fails with this reason."""


@dataclass(frozen=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise MalformedOutput(f"{what} is not numeric ({values.dtype})")
    values = values.astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise MalformedOutput(f"{what} holds NaN or infinity")
    return values


def _probabilities(values: np.ndarray, what: str) -> np.ndarray:
    if values.size and (values.min() < -1e-4 or values.max() > 1 + 1e-4):
        raise MalformedOutput(
            f"{what}: scores must be probabilities in [0, 1], got {values.min():.4g} to "
            f"{values.max():.4g} (set DECODER=softmax or sigmoid if the model gives logits)"
        )
    return np.clip(values, 0.0, 1.0)


def _vector(output: np.ndarray, what: str) -> np.ndarray:
    values = _finite(output, what)
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1 or not values.size:
        raise MalformedOutput(f"{what} must be one vector per image, got shape {output.shape}")
    return values


def class_scores(output: np.ndarray, decoder: str) -> np.ndarray:
    """One probability per class: softmax of logits, sigmoid of logits (multi-label), or the
    model's own probabilities (`scores`)."""
    values = _vector(output, "the classifier's output")
    if decoder == "softmax":
        shifted = np.exp(values - values.max())
        return shifted / shifted.sum()
    if decoder == "sigmoid":
        return 1.0 / (1.0 + np.exp(-values))
    return _probabilities(values, "the classifier's output")


def top_labels(scores: np.ndarray, top_k: int, min_score: float) -> list[tuple[int, float]]:
    """(class index, score), best first: the `top_k` best at or above `min_score`."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(int(i), float(scores[i])) for i in order if scores[i] >= min_score]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression of [N, 4] corner boxes, best first; kept indices."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        left = np.maximum(boxes[best, 0], boxes[rest, 0])
        top = np.maximum(boxes[best, 1], boxes[rest, 1])
        right = np.minimum(boxes[best, 2], boxes[rest, 2])
        bottom = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.maximum(right - left, 0) * np.maximum(bottom - top, 0)
        union = areas[best] + areas[rest] - overlap
        ratio = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        order = rest[ratio <= iou]
    return keep


def _per_class_nms(
    corners: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float, top_k: int
) -> list[Detection]:
    # Offsetting each class's boxes apart lets one NMS pass stay within classes (torchvision's
    # batched_nms trick).
    offset = labels[:, None].astype(np.float32) * (float(corners.max(initial=0.0)) + 1.0)
    kept = nms(corners + offset, scores, iou)[:top_k]
    return [Detection(*map(float, corners[i]), float(scores[i]), int(labels[i])) for i in kept]


def yolo(
    output: np.ndarray, classes: int | None, min_score: float, iou: float, top_k: int
) -> list[Detection]:
    """A raw YOLO head, one image: YOLOv8-style `[1, 4 + C, N]` (cx, cy, w, h, class scores) or
    YOLOv5-style `[1, N, 5 + C]` (cx, cy, w, h, objectness, class scores); boxes in the input's
    pixels. Which one is told by the class count when the labels give it, else by the shape:
    the N candidates outnumber the 4 + C (or 5 + C) numbers each."""
    values = _finite(output, "the detector's output")
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise MalformedOutput(f"a YOLO head is [1, 4+C, N] or [1, N, 5+C], got {output.shape}")
    rows, cols = values.shape
    if classes is not None and rows == 4 + classes:
        v8 = True
    elif classes is not None and cols == 5 + classes:
        v8 = False
    elif classes is not None and cols == 4 + classes:
        values, v8 = values.T, True
    elif classes is not None:
        raise MalformedOutput(
            f"a YOLO head for {classes} classes is [1, {4 + classes}, N] or [1, N, "
            f"{5 + classes}], got {list(output.shape)} (check LABELS)"
        )
    else:
        v8 = rows < cols
    if v8:
        candidates = values.T  # [N, 4 + C]
        boxes, class_probs = candidates[:, :4], candidates[:, 4:]
    else:
        boxes, objectness, class_probs = values[:, :4], values[:, 4:5], values[:, 5:]
        class_probs = class_probs * objectness
    if class_probs.shape[1] == 0:
        raise MalformedOutput(f"the YOLO head {list(output.shape)} has no class scores")
    class_probs = _probabilities(class_probs, "the detector's class scores")
    labels = class_probs.argmax(axis=1)
    scores = class_probs[np.arange(len(labels)), labels]
    chosen = scores >= min_score
    boxes, scores, labels = boxes[chosen], scores[chosen], labels[chosen]
    corners = np.stack(
        [
            boxes[:, 0] - boxes[:, 2] / 2,
            boxes[:, 1] - boxes[:, 3] / 2,
            boxes[:, 0] + boxes[:, 2] / 2,
            boxes[:, 1] + boxes[:, 3] / 2,
        ],
        axis=1,
    )
    return _per_class_nms(corners, scores, labels, iou, top_k)


def decoded_boxes(
    output: np.ndarray, min_score: float, iou: float, top_k: int, size: tuple[int, int]
) -> list[Detection]:
    """Already-decoded rows `[N, 6]` (x1, y1, x2, y2, score, class), with or without a batch
    dimension, as models exported with their NMS give them. Coordinates in the input's pixels,
    or normalised to [0, 1] (then scaled by the input `size`). NMS again only if rows of one
    class still overlap beyond `iou`: it changes nothing on a model that did it already."""
    values = _finite(output, "the detector's output")
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or values.shape[1] != 6:
        raise MalformedOutput(f"DECODER=boxes reads rows [N, 6], got {list(output.shape)}")
    values = values[values[:, 4] >= min_score]
    _probabilities(values[:, 4], "the detector's scores")
    if values.size and np.any(values[:, 5] < 0):
        raise MalformedOutput("a class index is negative")
    corners = values[:, :4].copy()
    if corners.size and corners.max() <= 1.5:  # normalised coordinates
        corners *= np.asarray([size[0], size[1], size[0], size[1]], np.float32)
    return _per_class_nms(corners, values[:, 4], values[:, 5].astype(np.int64), iou, top_k)


def class_map(output: np.ndarray, min_score: float) -> tuple[np.ndarray, bool]:
    """A segmentation output → a class index per pixel (input resolution) and whether class 0
    is "background" in a binary mask. Accepts `[1, C, H, W]` scores (argmax), `[1, 1, H, W]` or
    `[1, H, W]` one probability per pixel (above `min_score` → class 1), and integer class maps."""
    values = np.asarray(output)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 2:
        if np.issubdtype(values.dtype, np.integer):
            if values.size and values.min() < 0:
                raise MalformedOutput("the class map holds a negative class index")
            return values.astype(np.int32), False
        probs = _probabilities(_finite(values, "the mask"), "the mask")
        return (probs >= min_score).astype(np.int32), True
    if values.ndim == 3:
        scores = _finite(values, "the mask")
        return scores.argmax(axis=0).astype(np.int32), False
    raise MalformedOutput(f"a mask is [1, C, H, W], [1, H, W] or [H, W], got {list(output.shape)}")


def embedding(output: np.ndarray) -> np.ndarray:
    """One vector per image, L2-normalised (so cosine and dot product agree)."""
    values = _vector(output, "the embedding")
    norm = float(np.linalg.norm(values))
    if norm == 0:
        raise MalformedOutput("the embedding is all zeros")
    return values / norm
