"""Offline face detection: MediaPipe BlazeFace full-range, run by OpenCV's TFLite importer.

Weights: `face_detection_full_range.tflite` from the npm package `@mediapipe/face_detection`
(Apache-2.0). Azure runs no npm, so set-up (`python -m local.models`) copies the file and the
package's package.json (its version) into `models/blazeface/` beside this module, which the
deployment package carries.

The model, as read by `cv2.dnn.readNetFromTFLite` (OpenCV 4.10+):
- input: 1x3x192x192 float32, RGB scaled to [-1, 1] (NCHW; OpenCV transposes the NHWC graph);
- output `reshaped_classifier_face_4`: 1x2304x1, one logit per anchor;
- output `reshaped_regressor_face_4`: 1x2304x16 per anchor, in input pixels:
  [dx, dy, w, h] (box centre offset from the anchor centre, box size), then 6 keypoints (kx, ky)
  as offsets from the anchor centre: right eye, left eye, nose tip, mouth, right ear, left ear.
- anchors: a 48x48 grid (stride 4), one per cell, centre ((col + 0.5) * 4, (row + 0.5) * 4),
  row-major.

The image is letterboxed (centred, black bars) into the square input. The whole image is one
pass, which finds faces down to ~6.5% of the long side. A second pass with the image at half size
in the input finds faces that fill the frame, which the full-range model otherwise scores low (a
tight face crop: 0.58 -> 0.86); it keeps only faces over 40% of the long side, since at that scale
it also takes a squirrel's face or a chimney for a small face. An image of 480 px or more adds
overlapping square tiles (3x2 or 3x3), which find faces down to ~3% of the long side. Detections
from every pass are merged with MediaPipe's weighted non-maximum suppression.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.engine import runtime_threads
from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.faces import Face
from pipeline.vision.local.onnx_session import THREADS

MODEL_DIR = Path(__file__).resolve().parent / "models" / "blazeface"
MODEL_FILE = "face_detection_full_range.tflite"
INPUT_SIZE = 192
STRIDE = 4
NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0  # MediaPipe clips logits to +-100 before the sigmoid
ZOOM_OUT = 2.0  # the second whole-image pass shows the image at half size
ZOOM_OUT_MIN_FACE = 0.4  # ...and keeps only faces this large (fraction of the long side)


# ----------------------------------------------------------------------------- numpy helpers


def anchor_centres(size: int = INPUT_SIZE, stride: int = STRIDE) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in input pixels, row-major over the grid."""
    n = size // stride
    ys, xs = np.mgrid[0:n, 0:n]
    return np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], axis=1).astype(
        np.float32
    )


def letterbox(
    image: np.ndarray, size: int = INPUT_SIZE, zoom_out: float = 1.0
) -> tuple[np.ndarray, float, float, float]:
    """Fit `image` (RGB uint8 HxWx3) into a size x size square, centred, its long side filling
    1 / `zoom_out` of the square.

    Returns the NCHW float32 blob in [-1, 1] and (scale, pad_x, pad_y) such that
    input_pixel = image_pixel * scale + pad.
    """
    import cv2

    h, w = image.shape[:2]
    scale = size / (max(h, w) * zoom_out)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), -1.0, np.float32)  # black bars, as MediaPipe
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized.astype(np.float32) / 127.5 - 1.0
    return canvas.transpose(2, 0, 1)[None].copy(), scale, float(pad_x), float(pad_y)


def decode(
    logits: np.ndarray, regressors: np.ndarray, anchors: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> (boxes (K,4) x,y,w,h, scores (K,), keypoints (K,6,2)), input pixels."""
    logits = np.clip(logits.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    reg = regressors.reshape(-1, 4 + 2 * NUM_KEYPOINTS)[keep]
    a = anchors[keep]
    cx, cy = a[:, 0] + reg[:, 0], a[:, 1] + reg[:, 1]
    w, h = reg[:, 2], reg[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    keypoints = reg[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + a[:, None, :]
    return boxes, scores[keep], keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x,y,w,h box against (N,4) x,y,w,h boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Take the best remaining detection and every remaining one overlapping it by more than
    `iou_threshold`; emit their score-weighted mean box and keypoints with the best score.
    """
    order = np.argsort(-scores, kind="stable")
    out_b, out_s, out_k = [], [], []
    while order.size:
        best = order[0]
        overlap = iou(boxes[best], boxes[order]) > iou_threshold
        overlap[0] = True
        group = order[overlap]
        wts = scores[group][:, None]
        out_b.append((boxes[group] * wts).sum(0) / wts.sum())
        out_k.append((keypoints[group] * wts[:, :, None]).sum(0) / wts.sum())
        out_s.append(scores[best])
        order = order[~overlap]
    if not out_b:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2))
    return np.array(out_b), np.array(out_s), np.array(out_k)


def inside_tile(
    boxes: np.ndarray, x: int, y: int, side: int, width: int, height: int, margin: float = 0.01
) -> np.ndarray:
    """Mask of tile detections (image pixels) not cut by a tile edge that is inside the image.

    A face cut by such an edge gives a shifted, shrunken box; the whole face is in a
    neighbouring tile (or in the whole-image pass), so the cut one is dropped.
    """
    m = margin * side
    keep = np.ones(len(boxes), bool)
    if x > 0:
        keep &= boxes[:, 0] >= x + m
    if y > 0:
        keep &= boxes[:, 1] >= y + m
    if x + side < width:
        keep &= boxes[:, 0] + boxes[:, 2] <= x + side - m
    if y + side < height:
        keep &= boxes[:, 1] + boxes[:, 3] <= y + side - m
    return keep


def tile_windows(
    width: int, height: int, min_long_side: int = 480, fraction: float = 0.4, overlap: float = 0.25
) -> list[tuple[int, int, int]]:
    """Square tiles (x, y, side) to run besides the whole image; none below `min_long_side`.

    The tile side is `fraction` of the long side (capped by the short side), so a face about 2.5%
    of the long side reaches the ~12 input pixels the model needs. Tiles overlap by at least
    `overlap` of their side, spread evenly (3x2 on 3:2 or 16:9 photos, 3x3 on 4:3 or square):
    a face smaller than `overlap` * side lies whole inside some tile.
    """
    if max(width, height) < min_long_side:
        return []
    side = round(min(fraction * max(width, height), width, height))

    def starts(extent: int) -> list[int]:
        if extent <= side:
            return [0]
        # - 0.01: rounding the side to whole pixels must not add a row or column of tiles
        n = math.ceil((extent - side) / (side * (1 - overlap)) - 0.01) + 1
        return [round(i * (extent - side) / (n - 1)) for i in range(n)]

    return [(x, y, side) for y in starts(height) for x in starts(width)]


# ----------------------------------------------------------------------------- the analyzer


class BlazeFaceDetector(Analyzer):
    """BlazeFace full-range (MediaPipe): face boxes + 6 keypoints, CPU, via cv2.dnn.

    `min_score` applies to the whole-image pass (MediaPipe uses 0.6). Tiles enlarge texture, so
    their detections must also reach `tile_min_score`: on the samples, the back of a patterned
    beanie scored 0.60-0.64 in tiles, while real faces scored 0.77 and up.
    """

    capability: ClassVar[str] = "faces"
    name: ClassVar[str] = "blazeface-full-range"
    version: ClassVar[str] = "unknown"  # the npm package's version, set by _load()

    def __init__(
        self,
        min_score: float = 0.6,
        nms_iou: float = 0.3,
        tiling: bool = True,
        zoom_out: bool = True,
        tile_min_score: float = 0.7,
        tile_from: int = 480,
        model_dir: Path = MODEL_DIR,
    ) -> None:
        super().__init__()
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.tiling = tiling
        self.zoom_out = zoom_out
        self.tile_min_score = max(min_score, tile_min_score)
        self.tile_from = tile_from  # long side (px) from which tiles are added
        self.model_dir = Path(model_dir)
        self._anchors = anchor_centres()
        self._net_lock = threading.Lock()  # one cv2.dnn.Net; its forward() is not thread-safe
        self._net = None
        self._outputs: list[str] = []

    def check(self) -> None:
        path = self.model_dir / MODEL_FILE
        if not path.is_file():
            raise ModelUnavailable(
                f"BlazeFace weights not found at {path}: run make setup (it copies them from "
                "the npm package @mediapipe/face_detection); a deployment gets them from "
                "make package"
            )
        try:
            import cv2
        except ImportError as exc:
            raise ModelUnavailable(
                "OpenCV is not installed: run make setup (pip: opencv-python-headless)"
            ) from exc
        if not hasattr(cv2.dnn, "readNetFromTFLite"):
            raise ModelUnavailable(f"OpenCV {cv2.__version__} cannot read TFLite (needs 4.10+)")

    def _load(self) -> None:
        import cv2

        self.check()
        runtime_threads.configure(THREADS)  # cv2.dnn runs on OpenCV's process-wide pool
        package = json.loads((self.model_dir / "package.json").read_text(encoding="utf-8"))
        net = cv2.dnn.readNetFromTFLite(str(self.model_dir / MODEL_FILE))
        names = list(net.getUnconnectedOutLayersNames())
        net.setInput(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))
        outs = net.forward(names)  # also warms the net up
        # Logits have 1 value per anchor, regressors 16, whatever the layers are called.
        by_width = {o.shape[-1]: n for n, o in zip(names, outs, strict=True)}
        if set(by_width) != {1, 4 + 2 * NUM_KEYPOINTS} or outs[0].shape[1] != len(self._anchors):
            raise ModelUnavailable(f"{MODEL_FILE}: unexpected outputs {[o.shape for o in outs]}")
        self._outputs = [by_width[1], by_width[4 + 2 * NUM_KEYPOINTS]]
        self._net = net
        self.version = str(package["version"])

    def _run(
        self, image: np.ndarray, min_score: float, zoom_out: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One letterboxed pass on `image`; detections in `image` pixels, before NMS."""
        blob, scale, pad_x, pad_y = letterbox(image, zoom_out=zoom_out)
        with self._net_lock:
            self._net.setInput(blob)
            logits, regressors = self._net.forward(self._outputs)
        boxes, scores, kps = decode(logits, regressors, self._anchors, min_score)
        boxes[:, :2] = (boxes[:, :2] - (pad_x, pad_y)) / scale
        boxes[:, 2:] /= scale
        kps = (kps - (pad_x, pad_y)) / scale
        return boxes, scores, kps

    def windows(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """The tiles (x, y, side) run besides the whole image; none when tiling is off."""
        return tile_windows(width, height, self.tile_from) if self.tiling else []

    def _predict(self, image: np.ndarray) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        parts = [self._run(image, self.min_score)]
        if self.zoom_out:
            boxes, scores, kps = self._run(image, self.min_score, zoom_out=ZOOM_OUT)
            keep = boxes[:, 2:].max(axis=1) >= ZOOM_OUT_MIN_FACE * max(w, h)
            parts.append((boxes[keep], scores[keep], kps[keep]))
        for x, y, side in self.windows(w, h):
            boxes, scores, kps = self._run(image[y : y + side, x : x + side], self.tile_min_score)
            boxes[:, :2] += (x, y)
            kps += (x, y)
            keep = inside_tile(boxes, x, y, side, w, h)
            parts.append((boxes[keep], scores[keep], kps[keep]))
        boxes, scores, kps = weighted_nms(
            *(np.concatenate(p) for p in zip(*parts, strict=True)), self.nms_iou
        )
        faces = []
        for box, score, points in zip(boxes, scores, kps, strict=True):
            x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
            x1, y1 = min(float(w), float(box[0] + box[2])), min(float(h), float(box[1] + box[3]))
            if x1 <= x0 or y1 <= y0:
                continue
            faces.append(
                Face(
                    box=(x0, y0, x1 - x0, y1 - y0),
                    score=min(1.0, float(score)),
                    landmarks=[
                        (min(max(float(px), 0.0), float(w)), min(max(float(py), 0.0), float(h)))
                        for px, py in points
                    ],
                )
            )
        return faces
