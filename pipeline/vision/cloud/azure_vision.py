"""Azure AI Vision Image Analysis 4.0 as an analyzer provider (tags, objects, text).

Three parts:

- `AzureVisionClient`: one `ImageAnalysisClient` per process and endpoint (`shared_client`),
  checked by `check()` and built by `load()` (start-up) from the settings:
  `DARKROOM_AZURE_VISION_ENDPOINT` (required), `DARKROOM_AZURE_VISION_KEY` (optional; without
  it `DefaultAzureCredential`, the managed identity in Azure, which needs the "Cognitive
  Services User" role and the resource's custom-subdomain endpoint).
- Pure mapping functions from the SDK's `ImageAnalysisResult` to our result schema, tested on
  recorded responses (tests/fixtures/azure/).
- One analyzer class per capability: `AzureTagger`, `AzureObjectDetector`, `AzureReader`, and
  `AzureFaceDetector`, `AzureModerator`, which refuse (see below). They share the client, and
  the client makes ONE analyze call per image for all of them: each analyzer registers its
  visual features when built, every call asks for the union of what is registered, and the
  result is kept for a few minutes keyed by a hash of the pixels. The analyze step keeps
  calling `predict(image)` per capability, as it does for local providers; the second and
  third `predict` of the same image are answered from the first call. Concurrent callers for
  the same image wait for the one call in flight.

Not supported through this provider, on purpose (both raise `ModelUnavailable` in `check()`
and `load()`, i.e. at start-up):
- faces: Image Analysis 4.0 has no face detection. Its PEOPLE feature gives whole-body boxes,
  which are not faces (a face schema filled with body boxes would mislead blurring, cropping,
  counting). Faces need the local provider, or `face` (Azure AI Face detection,
  pipeline/vision/cloud/face.py; detection needs no Limited Access approval).
  `AzureObjectDetector(people=True)` does use PEOPLE, as objects named "person".
- moderation: Image Analysis 4.0 has no adult-content feature (3.2 had one); Azure AI Content
  Safety is the service for that.

Failures: throttling (429), server errors (5xx), timeouts and connection errors are raised as
they are, so the runner retries with backoff after the SDK's own few retries. An image the
service refuses (400 InvalidImageFormat/InvalidImageSize…) raises `AzureVisionImageError`, an
`ImageRejected`: the runner ends the image as rejected instead of retrying it. Other 4xx
(bad key, role missing, a feature the resource's region lacks) raise `AzureVisionConfigError`.

The SDK (`azure-ai-vision-imageanalysis`) is imported only by `check()` and when the client is
built, so a deployment without it fails at start-up with the package to install, not at import.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from azure.core.exceptions import HttpResponseError
from PIL import Image

from pipeline.engine.compute_slots import network_wait
from pipeline.framework.step_api import ImageRejected
from pipeline.settings import Settings
from pipeline.vision.base import Analyzer, Box, ModelUnavailable
from pipeline.vision.capabilities.caption import Caption
from pipeline.vision.capabilities.objects import DetectedObject
from pipeline.vision.capabilities.tags import Tag
from pipeline.vision.capabilities.text import Text, TextLine
from pipeline.vision.settings import AzureVisionSettings

if TYPE_CHECKING:
    from azure.ai.vision.imageanalysis import ImageAnalysisClient
    from azure.ai.vision.imageanalysis.models import ImageAnalysisResult

SDK_PACKAGE = "azure-ai-vision-imageanalysis"
API_VERSION = "4.0"  # Image Analysis 4.0, REST api-version 2023-10-01 (the SDK's default)

ENDPOINT_SETTING = "DARKROOM_AZURE_VISION_ENDPOINT"  # named in error messages

# Visual feature names as the REST API and the SDK's `VisualFeatures` enum spell them; the SDK
# accepts the plain strings, which keeps this module importable without it.
TAGS, OBJECTS, PEOPLE, READ, CAPTION = "tags", "objects", "people", "read", "caption"

# The service's documented input limits (Image Analysis 4.0): checked before the call.
MIN_SIDE, MAX_SIDE, MAX_BYTES = 50, 16_000, 20 * 1024 * 1024
JPEG_QUALITY = 90
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 16


# --------------------------------------------------------------------------------------------
# Settings and errors


class AzureVisionImageError(ImageRejected, ValueError):
    """The service refuses this image (format, size): the same bytes will always be refused."""


class AzureVisionConfigError(ModelUnavailable):
    """The service refuses the request, not the image: key, role, region, model version."""


ErrorKind = Literal["transient", "image", "config"]

# innererror codes that blame the image (Image Analysis 4.0 / Computer Vision error codes).
_IMAGE_ERROR_CODES = frozenset(
    {
        "InvalidImageFormat",
        "InvalidImageSize",
        "InvalidImageDimension",
        "NotSupportedImage",
        "UnsupportedMediaType",
    }
)


def _service_error(exc: HttpResponseError) -> tuple[str | None, str | None, str]:
    """(code, innererror code, message) of the service's JSON error body, if any."""
    error = exc.error
    if error is None:
        return None, None, exc.message or str(exc)
    inner = error.innererror or {}
    message = inner.get("message") or error.message or exc.message or str(exc)
    return error.code, inner.get("code"), message


def classify_error(exc: BaseException) -> ErrorKind:
    """What a failed analyze call means for the pipeline.

    - "transient": 408, 429, 5xx, and errors without a response (connection, timeouts): retry.
    - "image": the service refuses this image (400 with an image error code, 413, 415): retrying
      cannot help; the image is rejected.
    - "config": any other 4xx (401/403 credentials or role, 404 wrong endpoint, 400 feature not
      available in the resource's region or unknown model version): the image is fine, the
      deployment is not.
    """
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        if status in (408, 429) or status >= 500:
            return "transient"
        if status in (413, 415):
            return "image"
        if status == 400:
            _, inner_code, message = _service_error(exc)
            if inner_code in _IMAGE_ERROR_CODES:
                return "image"
            # A body over 20 MB gets a 400 InvalidRequest without an innererror.
            if inner_code is None and "image" in message.lower():
                return "image"
        if 400 <= status < 500:
            return "config"
    # Connection errors and timeouts (ServiceRequestError, ServiceResponseError), other
    # AzureErrors and anything unexpected: let the runner retry.
    return "transient"


def translate_error(exc: BaseException) -> BaseException:
    """The exception to raise for a failed call: transient ones unchanged, others explained."""
    kind = classify_error(exc)
    if kind == "transient":
        return exc
    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError):
        code, inner_code, message = _service_error(exc)
    else:  # pragma: no cover - only HTTP errors are classified otherwise
        code, inner_code, message = None, None, str(exc)
    codes = "/".join(c for c in (code, inner_code) if c)
    detail = f"HTTP {status}{f' {codes}' if codes else ''}: {message}"
    if kind == "image":
        return AzureVisionImageError(f"Azure AI Vision cannot analyze this image ({detail})")
    return AzureVisionConfigError(
        f"Azure AI Vision refused the request ({detail}); check {ENDPOINT_SETTING}, the key or "
        "the identity's role, and that the resource's region offers the requested features"
    )


# --------------------------------------------------------------------------------------------
# Pure mapping: ImageAnalysisResult -> our schema


def _name(raw: str) -> str:
    """Object and tag names in one style across providers: lower case ("Land vehicle" too)."""
    return " ".join(raw.split()).lower()


def _clamp_box(x: float, y: float, w: float, h: float, result: ImageAnalysisResult) -> Box:
    """Keep a box inside the image the service saw (polygons can poke out by a pixel)."""
    meta = getattr(result, "metadata", None)
    if meta is None or not meta.width or not meta.height:
        return (float(x), float(y), float(max(w, 0)), float(max(h, 0)))
    x0, y0 = min(max(x, 0), meta.width), min(max(y, 0), meta.height)
    x1, y1 = min(max(x + w, 0), meta.width), min(max(y + h, 0), meta.height)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _score(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def map_tags(result: ImageAnalysisResult, top_k: int = 20, min_score: float = 0.0) -> list[Tag]:
    """Tags at or above `min_score`, best first, at most `top_k`; a repeated name kept once."""
    if result.tags is None:
        return []
    best: dict[str, float] = {}
    for tag in result.tags.list:
        name, score = _name(tag.name), _score(tag.confidence)
        if name and score >= min_score and score > best.get(name, -1.0):
            best[name] = score
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    return [Tag(name=name, score=score) for name, score in ranked[:top_k]]


def map_objects(result: ImageAnalysisResult, min_score: float = 0.0) -> list[DetectedObject]:
    """Each detected object as its best tag (`tags[0]`) and box [x, y, w, h], best first."""
    if result.objects is None:
        return []
    found = []
    for obj in result.objects.list:
        if not obj.tags:
            continue
        top = max(obj.tags, key=lambda t: t.confidence)  # tags[0] in every response seen
        score = _score(top.confidence)
        if score < min_score:
            continue
        b = obj.bounding_box
        box = _clamp_box(b.x, b.y, b.width, b.height, result)
        found.append(DetectedObject(name=_name(top.name), score=score, box=box))
    return sorted(found, key=lambda o: -o.score)


def map_people(result: ImageAnalysisResult, min_score: float = 0.5) -> list[DetectedObject]:
    """PEOPLE boxes as objects named "person": whole bodies, not faces (see module docstring).

    The service returns many near-zero candidates (confidence ~0.001), hence the threshold.
    """
    if result.people is None:
        return []
    found = []
    for person in result.people.list:
        score = _score(person.confidence)
        if score < min_score:
            continue
        b = person.bounding_box
        box = _clamp_box(b.x, b.y, b.width, b.height, result)
        found.append(DetectedObject(name="person", score=score, box=box))
    return sorted(found, key=lambda o: -o.score)


def polygon_box(points: Iterable[Any], result: ImageAnalysisResult | None = None) -> Box:
    """The axis-aligned rectangle [x, y, w, h] around a polygon of points with .x and .y."""
    pts = list(points)
    if not pts:
        return (0.0, 0.0, 0.0, 0.0)
    xs, ys = [p.x for p in pts], [p.y for p in pts]
    x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    if result is None:
        return (float(x), float(y), float(w), float(h))
    return _clamp_box(x, y, w, h, result)


def map_read(result: ImageAnalysisResult) -> Text:
    """All lines of all blocks in reading order; `full` joins them with newlines.

    A line's confidence is the mean of its words' (the service gives none per line); a line
    without words, which the service does not produce, gets 0.
    """
    lines: list[TextLine] = []
    if result.read is not None:
        for block in result.read.blocks:
            for line in block.lines:
                words = line.words or []
                confidence = sum(_score(w.confidence) for w in words) / len(words) if words else 0.0
                lines.append(
                    TextLine(
                        text=line.text,
                        box=polygon_box(line.bounding_polygon, result),
                        confidence=_score(confidence),
                    )
                )
    return Text(full="\n".join(line.text for line in lines), lines=lines)


def map_caption(result: ImageAnalysisResult) -> str | None:
    if result.caption is None or not (result.caption.text or "").strip():
        return None
    return result.caption.text.strip()


# --------------------------------------------------------------------------------------------
# The client: one per process, one analyze call per image


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 (H, W, 3) to JPEG bytes in memory, after the service's size limits."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        raise AzureVisionImageError(
            f"Azure AI Vision cannot analyze this image: {width}x{height} is outside its "
            f"limits of {MIN_SIDE} to {MAX_SIDE} pixels per side"
        )
    out = io.BytesIO()
    Image.fromarray(image, "RGB").save(out, "JPEG", quality=quality)
    data = out.getvalue()
    if len(data) > MAX_BYTES:
        raise AzureVisionImageError(
            f"Azure AI Vision cannot analyze this image: {len(data):,} bytes as JPEG, over "
            f"its limit of {MAX_BYTES:,}"
        )
    return data


def image_key(image: np.ndarray) -> str:
    """Identity of an image by content: shape and a hash of the pixels (~5 ms for 2 MP)."""
    digest = hashlib.blake2b(memoryview(np.ascontiguousarray(image)), digest_size=16)
    return f"{image.shape}:{image.dtype}:{digest.hexdigest()}"


def _feature(feature: Any) -> str:
    """A visual feature name from a plain string or the SDK's `VisualFeatures` member."""
    return str(getattr(feature, "value", feature))


@dataclass
class _Entry:
    features: frozenset[str]
    future: Future
    created: float


class AzureVisionClient:
    """The shared `ImageAnalysisClient` and the one-call-per-image result cache.

    `transport` and `credential` exist for tests and special hosting; normally both come from
    the settings.
    """

    def __init__(
        self,
        settings: AzureVisionSettings | Settings,
        *,
        transport: Any = None,
        credential: Any = None,
    ) -> None:
        if isinstance(settings, Settings):
            settings = settings.analysis.azure
        self.settings = settings
        self._transport = transport
        self._credential = credential
        self._client: ImageAnalysisClient | None = None
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self.calls = 0  # analyze requests sent (tests and logs)

    def require(self, features: Iterable[str]) -> None:
        """Ask for these visual features in every call from now on (analyzers when built;
        e.g. `require([CAPTION])` at start-up, then `map_caption(analyze(image))`)."""
        with self._lock:
            self._wanted.update(_feature(f) for f in features)

    def check(self) -> None:
        """Start-up check without network: the endpoint is set and the SDK is installed."""
        if not self.settings.endpoint:
            raise ModelUnavailable(
                f"{ENDPOINT_SETTING} is not set: give the Azure AI Vision (or AI services) "
                "resource endpoint, e.g. https://<resource>.cognitiveservices.azure.com, or "
                "choose the local provider"
            )
        try:
            import azure.ai.vision.imageanalysis  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailable(
                f"the Azure provider needs the {SDK_PACKAGE} package: pip install {SDK_PACKAGE}"
            ) from exc

    def connect(self) -> ImageAnalysisClient:
        """Build the SDK client once; a missing endpoint or SDK is a start-up error."""
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _build(self) -> ImageAnalysisClient:
        self.check()
        from azure.ai.vision.imageanalysis import ImageAnalysisClient

        s = self.settings
        credential = self._credential
        if credential is None and s.key:
            from azure.core.credentials import AzureKeyCredential

            credential = AzureKeyCredential(s.key)
        elif credential is None:
            from pipeline.stores.azure_clients import default_credential

            credential = default_credential()  # managed identity in Azure
        options: dict[str, Any] = {
            "retry_total": s.retries,
            "connection_timeout": 10,
            "read_timeout": s.timeout,
        }
        if self._transport is not None:
            options["transport"] = self._transport
        return ImageAnalysisClient(
            endpoint=s.endpoint.rstrip("/"), credential=credential, **options
        )

    def analyze(self, image: np.ndarray, features: Iterable[str] = ()) -> ImageAnalysisResult:
        """The analysis of `image` with at least `features` plus every registered feature.

        Answered from the cache when the same pixels were analyzed with those features in the
        last few minutes; otherwise one request for the union of all registered features.
        """
        key = image_key(image)
        now = time.monotonic()
        with self._lock:
            needed = frozenset(self._wanted.union(_feature(f) for f in features))
            entry = self._cache.get(key)
            fresh = entry is not None and now - entry.created < CACHE_SECONDS
            if fresh and needed <= entry.features:
                self._cache.move_to_end(key)
                owner = False
            else:
                entry = _Entry(needed, Future(), now)
                self._cache[key] = entry
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
                owner = True
        if owner:
            try:
                entry.future.set_result(self._call(image, entry.features))
            except BaseException as exc:
                entry.future.set_exception(exc)
                with self._lock:
                    if self._cache.get(key) is entry:
                        del self._cache[key]  # a failure is not remembered: retries call again
        return entry.future.result()

    def _call(self, image: np.ndarray, features: frozenset[str]) -> ImageAnalysisResult:
        client = self.connect()
        data = encode_jpeg(image)
        with self._lock:
            self.calls += 1
        try:
            return client.analyze(
                image_data=data,
                visual_features=sorted(features),
                gender_neutral_caption=True,
                model_version=self.settings.model_version,
            )
        except HttpResponseError as exc:
            translated = translate_error(exc)
            if translated is exc:
                raise
            raise translated from exc

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._cache.clear()


_shared_lock = threading.Lock()
_shared: dict[AzureVisionSettings, AzureVisionClient] = {}


def shared_client(
    endpoint: str | None = None, key: str | None = None, settings: Settings | None = None
) -> AzureVisionClient:
    """The process-wide client for these settings: every analyzer of one endpoint shares it.

    `endpoint` and `key`, when given, override the app settings' (the registry passes them).
    """
    from pipeline.settings import get_settings

    base = (settings or get_settings()).analysis.azure
    vision = replace(base, endpoint=endpoint or base.endpoint, key=key or base.key)
    with _shared_lock:
        if vision not in _shared:
            _shared[vision] = AzureVisionClient(vision)
        return _shared[vision]


# --------------------------------------------------------------------------------------------
# Analyzers (class names as pipeline/vision/providers.py imports them)


class _AzureAnalyzer(Analyzer):
    name: ClassVar[str] = SDK_PACKAGE
    # "4.0/<model>": the model part is the pinned DARKROOM_AZURE_VISION_MODEL_VERSION, or else
    # "latest" until the first response says which model answered (e.g. "4.0/2023-10-01").
    version: ClassVar[str] = f"{API_VERSION}/latest"
    features: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        endpoint: str | None = None,
        key: str | None = None,
        *,
        client: AzureVisionClient | None = None,
    ) -> None:
        super().__init__()
        self._endpoint, self._key, self._client = endpoint, key, client
        self._register()

    def _register(self) -> None:
        """Tell the shared client which features to ask for. Done at construction (the registry
        builds only enabled analyzers), so that the first image, before any `load()`, already
        gets one call for all capabilities."""
        if self.features:
            self.client.require(self.features)

    @property
    def client(self) -> AzureVisionClient:
        if self._client is None:
            self._client = shared_client(self._endpoint, self._key)
        return self._client

    def is_transient(self, exc: BaseException) -> bool:
        return classify_error(exc) == "transient"

    def check(self) -> None:
        self.client.check()

    def _load(self) -> None:
        self._register()
        self.client.connect()
        if pinned := self.client.settings.model_version:
            self.version = f"{API_VERSION}/{pinned}"

    def _analyze(self, image: np.ndarray) -> ImageAnalysisResult:
        with network_wait():  # the step's compute slot is free while the service works
            result = self.client.analyze(image, self.features)
        if result.model_version:
            self.version = f"{API_VERSION}/{result.model_version}"
        return result


class AzureCaptioner(_AzureAnalyzer):
    capability = "caption"
    features = frozenset({CAPTION})

    def _predict(self, image: np.ndarray) -> Caption:
        result = self._analyze(image)
        text = map_caption(result)
        if text is None:
            return Caption(text="")
        confidence = getattr(result.caption, "confidence", None)
        return Caption(text=text, confidence=None if confidence is None else float(confidence))


class AzureTagger(_AzureAnalyzer):
    capability = "tags"
    features = frozenset({TAGS})

    def __init__(
        self,
        endpoint: str | None = None,
        key: str | None = None,
        *,
        client: AzureVisionClient | None = None,
        top_k: int = 20,
        min_score: float = 0.5,
    ) -> None:
        super().__init__(endpoint, key, client=client)
        self.top_k, self.min_score = top_k, min_score

    def _predict(self, image: np.ndarray) -> list[Tag]:
        return map_tags(self._analyze(image), self.top_k, self.min_score)


class AzureObjectDetector(_AzureAnalyzer):
    """OBJECTS boxes; with `people=True` the "person" boxes come from the PEOPLE model instead
    (a dedicated person detector; it costs one more feature per call, so it is off by default)."""

    capability = "objects"
    features = frozenset({OBJECTS})

    def __init__(
        self,
        endpoint: str | None = None,
        key: str | None = None,
        *,
        client: AzureVisionClient | None = None,
        min_score: float = 0.5,
        people: bool = False,
        people_min_score: float = 0.5,
    ) -> None:
        super().__init__(endpoint, key, client=client)
        self.min_score, self.people, self.people_min_score = min_score, people, people_min_score
        if people:
            self.features = frozenset({OBJECTS, PEOPLE})
            self._register()

    def _predict(self, image: np.ndarray) -> list[DetectedObject]:
        result = self._analyze(image)
        found = map_objects(result, self.min_score)
        if self.people:
            found = [o for o in found if o.name != "person"]
            found += map_people(result, self.people_min_score)
        return sorted(found, key=lambda o: -o.score)


class AzureReader(_AzureAnalyzer):
    capability = "text"
    features = frozenset({READ})

    def _predict(self, image: np.ndarray) -> Text:
        return map_read(self._analyze(image))


FACES_UNSUPPORTED = (
    "face detection is not available from Azure AI Vision Image Analysis 4.0 (its PEOPLE "
    "feature finds whole bodies, not faces): use DARKROOM_FACES_PROVIDER=local, or =face "
    "(Azure AI Face detection, DARKROOM_FACE_ENDPOINT)"
)
MODERATION_UNSUPPORTED = (
    "Azure AI Vision Image Analysis 4.0 has no adult-content feature: use the local provider "
    "for moderation, or Azure AI Content Safety"
)


class AzureFaceDetector(_AzureAnalyzer):
    """Unsupported on purpose (see the module docstring): fails the start-up check."""

    capability = "faces"

    def __init__(self, endpoint: str | None = None, key: str | None = None, **options: Any):
        super().__init__(endpoint, key, client=options.get("client"))  # min_score etc. moot

    def check(self) -> None:
        raise ModelUnavailable(FACES_UNSUPPORTED)

    def _load(self) -> None:
        raise ModelUnavailable(FACES_UNSUPPORTED)

    def _predict(self, image: np.ndarray) -> list:  # pragma: no cover - _load always raises
        raise NotImplementedError


class AzureModerator(_AzureAnalyzer):
    """Unsupported on purpose (see the module docstring): fails the start-up check."""

    capability = "moderation"

    def __init__(self, endpoint: str | None = None, key: str | None = None, **options: Any):
        super().__init__(endpoint, key, client=options.get("client"))

    def check(self) -> None:
        raise ModelUnavailable(MODERATION_UNSUPPORTED)

    def _load(self) -> None:
        raise ModelUnavailable(MODERATION_UNSUPPORTED)

    def _predict(self, image: np.ndarray) -> Any:  # pragma: no cover - _load always raises
        raise NotImplementedError
