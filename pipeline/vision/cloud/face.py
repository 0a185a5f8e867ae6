"""`faces` from Azure AI Face **detection** (Face API v1.2, GA): boxes and landmarks only.

Image Analysis 4.0 (which has no face detection anyway) retires on 2028-09-25; Microsoft names
the Face API for faces. Recognition stays ours: the recognize step aligns and embeds each face
on OUR model (pipeline.vision.local.face_embedding) from the boxes and landmarks given here.
Detection with `returnFaceId=false` creates no face ID, so it needs no Limited Access approval
(identification/verification do: their 403 `UnsupportedFeature` cannot happen here).

One image = `POST {endpoint}/face/v1.2/detect?detectionModel=detection_03&returnFaceId=false
&returnFaceLandmarks=true` with the image bytes as `application/octet-stream`; the answer is a
JSON array, largest face first, of `{faceRectangle: {top, left, width, height},
faceLandmarks: {pupilLeft: {x, y}, … 27 points}}` in pixels of the image sent. Nothing else is
asked: `recognitionModel`, `returnRecognitionModel` and `faceIdTimeToLive` only concern face IDs
(`returnFaceId` defaults to true, so it is set to false explicitly). `detection_03` (the
default) and `detection_01` return landmarks; `detection_02` returns none, so the setting does
not offer it.

The image: the analysis image the analyze step passes (long side about 1920 px, ~2 MP; the
service finds faces down to 36x36 px in an image up to 1920x1080). The service takes JPEG, PNG,
GIF and BMP of 1 KB to 6 MB: sent as JPEG (quality 90, then 75); one still over 6 MB is
downscaled until it fits (and the answer scaled back); one under 1 KB (a tiny, flat image) is
sent as BMP. An image with a side under 36 px can hold no face the service finds: no call,
no faces. The service returns at most 100 faces (the largest).

Landmarks, mapped to OUR convention (BlazeFace's keypoints, faces_blazeface, which alignment
and the quality gate read): [subject's right eye, subject's left eye, nose tip, mouth centre],
in pixels of the image passed to `predict`, clamped to it. The Face API names points from the
viewer's side: on an upright face `pupilLeft` is on the image's left, i.e. the subject's RIGHT
eye (every published response has pupilLeft.x < pupilRight.x and eyebrowLeftOuter left of
eyeLeftInner). So: right eye = `pupilLeft`, left eye = `pupilRight`, nose = `noseTip`, mouth
centre = mean of `mouthLeft`, `mouthRight`, `upperLipBottom`, `underLipTop` (the corners' and
the lips' midpoints). The service gives no ears, so there are four points, not BlazeFace's six
(nothing reads the ears). Names, not x order, decide: a face on its side keeps its eyes.

Score: the Face API returns no detection confidence; it reports only faces past its own
threshold. Every face carries `score` 1.0, meaning "reported by the service", not a calibrated
probability (so `DARKROOM_FACES_MIN_SCORE` has nothing to filter, and drift on face scores is
flat for this provider).

Failures, through the model steps' HTTP client (pipeline.vision.model_step.remote: one
azure-core PipelineClient, key header or Entra token, timeouts): no answer / timeout, 408, 429,
502-504 → `TryLater` with the service's `Retry-After`; other 5xx → a plain (transient) error;
400 `InvalidImage`/`InvalidImageSize`, 413, 415 → `StepFailed` with the service's message (the
analyze step records it for this image); 401/403 and other 4xx → `FaceConfigError` (a
`ModelUnavailable`) saying what to fix — the key, or the identity's role. The key travels in the
`Ocp-Apim-Subscription-Key` header only; it is never logged, raised or written.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from typing import Any

import numpy as np
from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest, HttpResponse
from PIL import Image

from pipeline.engine.compute_slots import network_wait
from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.faces import Face
from pipeline.vision.model_step.remote import (
    RemoteModel,
    azure_ai_service,
    keyless_over_plain_http,
    short_message,
)
from pipeline.vision.settings import FaceSettings

log = logging.getLogger(__name__)

ROLE = "Cognitive Services User"
SERVICE = "Azure AI Face"
SCORE = 1.0  # the service gives no confidence: 1.0 = "reported by the service"
MIN_BYTES, MAX_BYTES = 1024, 6_000_000  # the service takes 1 KB to 6 MB
MIN_SIDE = 36  # the smallest face the service detects, in pixels
MAX_FACES = 100  # the service returns at most this many faces, largest first
JPEG_QUALITIES = (90, 75)
CONCURRENCY = 8  # calls in flight per process
BUSY_STATUSES = (408, 429, 502, 503, 504)
IMAGE_ERROR_CODES = frozenset({"InvalidImage", "InvalidImageSize"})


class FaceConfigError(ModelUnavailable):
    """The service refuses the request, not the image: key, role, endpoint, API version."""


# --------------------------------------------------------------------------------------------
# The image sent


def encode(image: np.ndarray) -> tuple[bytes, float, float] | None:
    """The bytes to send for `image` (RGB uint8 HxWx3) within the service's limits, with the
    scale (sent / given, per axis) of what is sent; None when no face can be found in it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if min(width, height) < MIN_SIDE:
        return None
    original = Image.fromarray(np.ascontiguousarray(image), "RGB")
    picture = original
    while True:
        for quality in JPEG_QUALITIES:
            data = _save(picture, "JPEG", quality=quality)
            if len(data) <= MAX_BYTES:
                break
        else:
            factor = math.sqrt(MAX_BYTES / len(data)) * 0.9
            size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
            picture = original.resize(size, Image.Resampling.LANCZOS)
            continue
        break
    if len(data) < MIN_BYTES:
        data = _save(picture, "BMP")  # uncompressed: 36x36 px is already 3.9 KB
    return data, picture.width / width, picture.height / height


def _save(picture: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# The answer


def _point(landmarks: dict, name: str) -> tuple[float, float]:
    point = landmarks[name]
    return float(point["x"]), float(point["y"])


def our_landmarks(face_landmarks: Any) -> list[tuple[float, float]] | None:
    """The Face API's 27 named points → ours: [subject's right eye, subject's left eye, nose
    tip, mouth centre] (see the module docstring), in the answer's pixels; None without them."""
    if not isinstance(face_landmarks, dict):
        return None
    try:
        mouth = [
            _point(face_landmarks, name)
            for name in ("mouthLeft", "mouthRight", "upperLipBottom", "underLipTop")
        ]
        return [
            _point(face_landmarks, "pupilLeft"),  # on the image's left: the subject's right eye
            _point(face_landmarks, "pupilRight"),
            _point(face_landmarks, "noseTip"),
            (sum(x for x, _ in mouth) / 4, sum(y for _, y in mouth) / 4),
        ]
    except (KeyError, TypeError, ValueError):
        return None


def read_faces(
    answer: Any, width: int, height: int, sx: float = 1.0, sy: float = 1.0
) -> list[Face]:
    """The detect answer (a JSON array) → our faces, in pixels of the `width` x `height` image
    whose scaled copy (`sx`, `sy`: sent / given) was sent; boxes and points clamped to it."""
    if not isinstance(answer, list):
        raise StepFailed(f"{SERVICE} answered something that is not a list of faces")
    faces: list[Face] = []
    for item in answer:
        rectangle = item.get("faceRectangle") if isinstance(item, dict) else None
        try:
            left, top = float(rectangle["left"]) / sx, float(rectangle["top"]) / sy
            right = left + float(rectangle["width"]) / sx
            bottom = top + float(rectangle["height"]) / sy
        except (KeyError, TypeError, ValueError) as exc:
            raise StepFailed(f"{SERVICE} answered a face without a faceRectangle") from exc
        x0, y0 = max(0.0, left), max(0.0, top)
        x1, y1 = min(float(width), right), min(float(height), bottom)
        if x1 <= x0 or y1 <= y0:
            continue
        points = our_landmarks(item.get("faceLandmarks"))
        faces.append(
            Face(
                box=(x0, y0, x1 - x0, y1 - y0),
                score=SCORE,
                landmarks=None
                if points is None
                else [
                    (min(max(x / sx, 0.0), float(width)), min(max(y / sy, 0.0), float(height)))
                    for x, y in points
                ],
            )
        )
    if len(answer) >= MAX_FACES:
        log.info(
            "%s returned %d faces, its maximum: smaller ones may be missing", SERVICE, len(answer)
        )
    return faces


def _error(response: HttpResponse) -> tuple[str | None, str]:
    """(code, message) of the service's `{"error": {"code", "message"}}`, else its own words."""
    try:
        body = response.json()
    except Exception:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code")
        return (str(code) if code else None), " ".join(str(error["message"]).split())[:300]
    return None, short_message(response)


def _retry_after(response: HttpResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date: the chain's own backoff is as good


# --------------------------------------------------------------------------------------------
# The analyzer


class FaceDetector(Analyzer):
    """Azure AI Face detection as the `face` provider of `faces`."""

    capability = "faces"

    def __init__(
        self, settings: FaceSettings | None = None, min_score: float = 0.0, **options: Any
    ) -> None:
        super().__init__()
        self.settings = settings or FaceSettings()
        self.min_score = min_score  # every face scores SCORE: nothing to filter
        self._remote: RemoteModel | None = None
        self._slots = threading.BoundedSemaphore(CONCURRENCY)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"azure-face-{self.settings.detection_model}"

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.settings.api_version

    def check(self) -> None:
        endpoint = self.settings.endpoint
        if not endpoint:
            raise ModelUnavailable(
                "DARKROOM_FACE_ENDPOINT is not set (the endpoint of an Azure AI Face resource, "
                "https://<name>.cognitiveservices.azure.com)"
            )
        setting = "DARKROOM_FACE_ENDPOINT"
        if problem := keyless_over_plain_http(endpoint, self.settings.key, setting):
            raise ModelUnavailable(problem)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TryLater | ConnectionError | TimeoutError) or (
            isinstance(exc, RuntimeError) and not isinstance(exc, ModelUnavailable)
        )

    def _load(self) -> None:
        self.check()
        self._remote = azure_ai_service(
            self.settings.endpoint or "",
            self.settings.timeout,
            self.settings.key,
            concurrency=CONCURRENCY,
        )

    def _predict(self, image: np.ndarray) -> list[Face]:
        encoded = encode(image)
        if encoded is None:
            return []
        body, sx, sy = encoded
        height, width = image.shape[:2]
        faces = read_faces(self._detect(body), width, height, sx, sy)
        return [face for face in faces if face.score >= self.min_score]

    def _detect(self, body: bytes) -> Any:
        """One detect call: the parsed answer, or the classified error (module docstring)."""
        remote = self._remote
        assert remote is not None
        path = (
            f"/face/{self.settings.api_version}/detect"
            f"?detectionModel={self.settings.detection_model}"
            "&returnFaceId=false&returnFaceLandmarks=true"
        )
        request = HttpRequest(
            "POST",
            remote.base_url + path,
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        # The model steps' client, but the statuses read here: 401/403 name the key or role.
        with network_wait(), self._slots:
            try:
                response = remote.client.send_request(
                    request, connection_timeout=remote.timeout, read_timeout=remote.timeout
                )
                response.read()
            except ClientAuthenticationError as exc:
                raise FaceConfigError(
                    f"{SERVICE}: the app's identity got no token ({self._clean(exc)}); give it "
                    f"{ROLE} on the Face resource, or set DARKROOM_FACE_KEY"
                ) from exc
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise TryLater(f"{SERVICE} did not answer: {self._clean(exc)}") from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as exc:
                raise StepFailed(f"{SERVICE} answered something that is not JSON") from exc
        code, message = _error(response)
        detail = f"HTTP {status}{f' {code}' if code and code != str(status) else ''}: "
        detail += self._clean(message)
        if status in BUSY_STATUSES:
            raise TryLater(f"{SERVICE} is busy ({detail})", _retry_after(response))
        if status >= 500:
            raise RuntimeError(f"{SERVICE} failed ({detail})")
        if status in (413, 415) or (status == 400 and code in IMAGE_ERROR_CODES):
            raise StepFailed(f"{SERVICE} cannot read this image ({detail})")
        if status in (401, 403):
            how = (
                "check DARKROOM_FACE_KEY (a key of this resource) and DARKROOM_FACE_ENDPOINT"
                if self.settings.key
                else f"give the app's identity {ROLE} on the Face resource, whose endpoint "
                "must be its custom subdomain"
            )
            raise FaceConfigError(f"{SERVICE} refused the credentials ({detail}); {how}")
        raise FaceConfigError(
            f"{SERVICE} refused the request ({detail}); check DARKROOM_FACE_ENDPOINT, "
            "DARKROOM_FACE_API_VERSION and DARKROOM_FACE_DETECTION_MODEL"
        )

    def _clean(self, value: object) -> str:
        """Short, one line, and never the key (should a service or library ever echo it)."""
        text = " ".join(str(value).split())[:300] or type(value).__name__
        return text.replace(self.settings.key, "***") if self.settings.key else text
