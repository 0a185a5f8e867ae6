"""caption, tags, objects and text from a GPT vision deployment (Azure OpenAI / Azure AI Foundry):
the replacement Microsoft names for Image Analysis' captions and tags, which retire on
2028-09-25.

ONE chat-completions call per image (`POST {endpoint}/openai/v1/chat/completions`, the v1 API,
or the dated `/openai/deployments/{deployment}/…` when DARKROOM_OPENAI_API_VERSION names a date)
answers every capability configured with `openai`
(`DARKROOM_<CAPABILITY>_PROVIDER=openai`): the image as a data URL, a fixed prompt, and a JSON
schema as the structured output (`response_format: json_schema`, strict), so the answer parses
into our result models or the call is an error. The analyzers of one process share a client
(`shared_vision`); the first `predict` of an image makes the call, the others read its answer
(kept a few minutes, keyed by the pixels), as the Image Analysis provider does.

- Identity: `azure-openai/<deployment>@<model>/<api-version>/prompt-<digest>`: the model the
  service says answered (e.g. gpt-4.1-mini-2025-04-14; `DARKROOM_OPENAI_MODEL` until the first
  answer), the API version and a digest of the prompt and schema, so a changed prompt is a new
  model for drift and reprocessing.
- Usage: the call's tokens and its estimated cost (`DARKROOM_OPENAI_INPUT_PRICE` /
  `_OUTPUT_PRICE`, USD per million tokens) go in `analysis.usage.openai`.
- Boxes: none. GPT vision models place objects and text lines poorly (OpenAI's vision guide
  lists precise spatial localisation among their limitations), and a box drawn in the wrong
  place misleads more than none: objects and text lines come with `box: null`, names and text
  only. Read text is good (detail `high`); object names are free words, lower-cased.
- Failures: 429 (with `Retry-After`), 5xx and timeouts are transient (`TryLater`, through the
  model steps' client); a content-filter refusal — 400 `content_filter` on the prompt, or
  `finish_reason: content_filter` / a `refusal` in the answer — is a recorded result for this
  image (`ContentFiltered`, in `analysis.errors`), never retried; other 4xx are configuration
  errors with the service's message. Auth: the app's managed identity (Entra token, scope
  cognitiveservices, role Cognitive Services OpenAI User), or `api-key` when a key is set. The
  key travels in a header only: never logged, never in a document.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from azure.core.rest import HttpRequest
from PIL import Image

from pipeline.engine.compute_slots import network_wait
from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.vision.base import Analyzer, ModelUnavailable, Usage
from pipeline.vision.capabilities.caption import Caption
from pipeline.vision.capabilities.objects import DetectedObject
from pipeline.vision.capabilities.tags import Tag
from pipeline.vision.capabilities.text import Text, TextLine
from pipeline.vision.cloud.azure_vision import image_key
from pipeline.vision.cloud.openai_embedding import azure_openai_client
from pipeline.vision.model_step.remote import (
    RemoteModel,
    keyless_over_plain_http,
    openai_path,
)
from pipeline.vision.settings import OpenAISettings

SERVICE = "openai"  # its key under analysis.usage
JPEG_QUALITY = 90
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 16

PROMPT = (
    "You describe photographs for a searchable photo library. Answer only from what is visible "
    "in the image. caption: one plain sentence saying what the photo shows (who or what, doing "
    "what, where), without guessing names of people. tags: up to 15 single words or short "
    "phrases for what the photo shows (objects, animals, scene, activity, colours), lower case, "
    "best first, each with your confidence from 0 to 1. objects: the distinct physical things "
    "you can see (lower case singular names, e.g. 'dog', 'car'), one entry per kind, with your "
    "confidence. text: every line of text written in the image, in reading order, exactly as "
    "written; an empty list when there is none."
)


def _named(item: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(item),
        "properties": item,
    }


_SCORED = _named({"name": {"type": "string"}, "confidence": {"type": "number"}})
# Each capability's part of the answer (strict structured outputs: every property required,
# no additional ones). The call asks for the parts of the capabilities configured with openai.
PARTS: dict[str, dict] = {
    "caption": {"type": "string"},
    "tags": {"type": "array", "items": _SCORED},
    "objects": {"type": "array", "items": _SCORED},
    "text": {"type": "array", "items": {"type": "string"}},
}


def answer_schema(capabilities: frozenset[str]) -> dict:
    return _named({name: PARTS[name] for name in sorted(capabilities)})


def prompt_digest() -> str:
    """Names the prompt and schema: a change to either is a new model identity."""
    text = PROMPT + json.dumps(PARTS, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class ContentFiltered(StepFailed):
    """The service's content filter (or the model) refused this image: a result, not a fault."""


@dataclass(frozen=True)
class Answer:
    """One image's answer: the parsed JSON, what it cost, the model that wrote it."""

    parts: dict[str, Any]
    usage: Usage
    model: str


def _cost(settings: OpenAISettings, prompt_tokens: int, completion_tokens: int) -> float:
    return round(
        (prompt_tokens * settings.input_price + completion_tokens * settings.output_price) / 1e6, 8
    )


def _filtered(categories: Any) -> str:
    """`sexual (high), violence (medium)` from a content_filter_result(s) object."""
    if not isinstance(categories, dict):
        return "no category given"
    hits = [
        f"{name} ({value.get('severity', 'filtered')})" if "severity" in value else name
        for name, value in categories.items()
        if isinstance(value, dict) and (value.get("filtered") or value.get("detected"))
    ]
    return ", ".join(hits) or "no category given"


def read_answer(body: dict, settings: OpenAISettings) -> Answer:
    """A chat-completions response → the parsed answer, or ContentFiltered / StepFailed."""
    choices = body.get("choices") or []
    if not choices:
        raise StepFailed("Azure OpenAI answered without a choice")
    choice = choices[0]
    message = choice.get("message") or {}
    if choice.get("finish_reason") == "content_filter":
        why = _filtered(choice.get("content_filter_results"))
        raise ContentFiltered(f"Azure OpenAI's content filter withheld the answer: {why}")
    if message.get("refusal"):
        refusal = " ".join(str(message["refusal"]).split())[:200]
        raise ContentFiltered(f"the model declined to describe this image: {refusal}")
    if choice.get("finish_reason") == "length":
        raise StepFailed(
            "Azure OpenAI's answer was cut at DARKROOM_OPENAI_MAX_OUTPUT_TOKENS: raise it"
        )
    try:
        parts = json.loads(message.get("content") or "")
    except ValueError:
        raise StepFailed("Azure OpenAI answered something that is not the JSON asked for") from None
    if not isinstance(parts, dict):
        raise StepFailed("Azure OpenAI answered JSON that is not an object")
    used = body.get("usage") or {}
    prompt_tokens = int(used.get("prompt_tokens") or 0)
    completion_tokens = int(used.get("completion_tokens") or 0)
    usage = Usage(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        cost_usd=_cost(settings, prompt_tokens, completion_tokens),
    )
    return Answer(parts, usage, str(body.get("model") or settings.model or "unknown"))


def _score(value: Any) -> float:
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return 0.0


def _name(value: Any) -> str:
    return " ".join(str(value).split()).lower()[:100]


def map_caption(parts: dict) -> Caption:
    return Caption(text=" ".join(str(parts.get("caption") or "").split())[:500])


def map_tags(parts: dict, top_k: int, min_score: float) -> list[Tag]:
    best: dict[str, float] = {}
    for item in parts.get("tags") or []:
        if isinstance(item, dict) and (name := _name(item.get("name", ""))):
            score = _score(item.get("confidence"))
            if score >= min_score and score > best.get(name, -1.0):
                best[name] = score
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    return [Tag(name=name, score=score) for name, score in ranked]


def map_objects(parts: dict, min_score: float) -> list[DetectedObject]:
    found = map_tags({"tags": parts.get("objects")}, 100, min_score)
    return [DetectedObject(name=t.name, score=t.score, box=None) for t in found]


def map_text(parts: dict) -> Text:
    lines = [" ".join(str(line).split()) for line in parts.get("text") or []]
    lines = [line[:1000] for line in lines if line]
    # The model reports no confidence per line; 1.0 says "read", not "measured".
    return Text(
        full="\n".join(lines), lines=[TextLine(text=t, box=None, confidence=1.0) for t in lines]
    )


@dataclass
class _Entry:
    future: Future
    created: float


class OpenAIVision:
    """The process's client for one deployment, and the one-call-per-image cache."""

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._remote: RemoteModel | None = None
        self.calls = 0  # requests sent (tests and logs)
        self.model = settings.model

    def require(self, capability: str) -> None:
        with self._lock:
            self._wanted.add(capability)

    def check(self) -> None:
        missing = [
            name
            for name, value in (
                ("DARKROOM_OPENAI_ENDPOINT", self.settings.endpoint),
                ("DARKROOM_OPENAI_DEPLOYMENT", self.settings.deployment),
            )
            if not value
        ]
        if missing:
            raise ModelUnavailable(f"{' and '.join(missing)} not set")
        setting = "DARKROOM_OPENAI_ENDPOINT"
        if problem := keyless_over_plain_http(self.settings.endpoint, self.settings.key, setting):
            raise ModelUnavailable(problem)

    def connect(self) -> RemoteModel:
        with self._lock:
            if self._remote is None:
                self.check()
                self._remote = azure_openai_client(self.settings)
            return self._remote

    def answer(self, image: np.ndarray) -> Answer:
        """This image's answer: from the cache, from a call in flight, or from a new call."""
        key = image_key(image)
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(key)
            owner = entry is None or now - entry.created >= CACHE_SECONDS
            if owner:
                entry = _Entry(Future(), now)
                self._cache[key] = entry
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            wanted = frozenset(self._wanted)
        assert entry is not None
        if owner:
            try:
                entry.future.set_result(self._call(image, wanted))
            except BaseException as exc:
                entry.future.set_exception(exc)
                if not isinstance(exc, ContentFiltered):  # a refusal stands; faults are retried
                    with self._lock:
                        if self._cache.get(key) is entry:
                            del self._cache[key]
        return entry.future.result()

    def _call(self, image: np.ndarray, wanted: frozenset[str]) -> Answer:
        remote = self.connect()
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
        url = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
        body = {
            "messages": [
                {"role": "system", "content": PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this photo."},
                        {
                            "type": "image_url",
                            "image_url": {"url": url, "detail": self.settings.detail},
                        },
                    ],
                },
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "photo_description",
                    "strict": True,
                    "schema": answer_schema(wanted),
                },
            },
            # No temperature: reasoning models accept only the default; the schema keeps the
            # answer's shape fixed whatever the wording.
            "max_completion_tokens": self.settings.max_output_tokens,
        }
        path, named = openai_path(
            self.settings.api_version, self.settings.deployment or "", "chat/completions"
        )
        body.update(named)
        with self._lock:
            self.calls += 1
        response = remote.call(HttpRequest("POST", path, json=body), "Azure OpenAI", accept=(400,))
        result = response.json()
        if response.status_code == 400:
            error = result.get("error") if isinstance(result, dict) else None
            error = error if isinstance(error, dict) else {}
            message = " ".join(str(error.get("message") or "no message").split())[:300]
            if error.get("code") == "content_filter":
                inner = error.get("innererror") or {}
                why = _filtered(inner.get("content_filter_result"))
                raise ContentFiltered(f"Azure OpenAI's content filter refused the image: {why}")
            raise StepFailed(f"Azure OpenAI refused the request (400): {message}")
        answer = read_answer(result, self.settings)
        self.model = answer.model
        return answer


_shared_lock = threading.Lock()
_shared: dict[OpenAISettings, OpenAIVision] = {}


def shared_vision(settings: OpenAISettings) -> OpenAIVision:
    """The process-wide client for these settings: every openai analyzer shares its calls."""
    with _shared_lock:
        if settings not in _shared:
            _shared[settings] = OpenAIVision(settings)
        return _shared[settings]


class _OpenAIAnalyzer(Analyzer):
    capability: ClassVar[str]

    def __init__(self, settings: OpenAISettings | None = None, **options: Any) -> None:
        super().__init__()
        self.client = shared_vision(settings or OpenAISettings())
        self.client.require(self.capability)
        self._local = threading.local()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"azure-openai/{self.client.settings.deployment}"

    @property
    def version(self) -> str:  # type: ignore[override]
        model = self.client.model or "unknown"
        return f"{model}/{self.client.settings.api_version}/prompt-{prompt_digest()}"

    def check(self) -> None:
        self.client.check()

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TryLater | ConnectionError | TimeoutError) or (
            isinstance(exc, RuntimeError) and not isinstance(exc, StepFailed | ModelUnavailable)
        )

    def _load(self) -> None:
        self.client.connect()

    def _parts(self, image: np.ndarray) -> dict:
        # Without its compute slot while it waits, for the service or for another thread's
        # call for the same image: a waiter holding the only slot would block that call's end.
        with network_wait():
            answer = self.client.answer(image)
        self._local.usage = answer.usage
        return answer.parts

    def usage(self) -> tuple[str, Usage] | None:
        """What the call that answered this thread's last image cost."""
        spent = getattr(self._local, "usage", None)
        return (SERVICE, spent) if spent is not None else None


class OpenAICaptioner(_OpenAIAnalyzer):
    capability = "caption"

    def _predict(self, image: np.ndarray) -> Caption:
        return map_caption(self._parts(image))


class OpenAITagger(_OpenAIAnalyzer):
    capability = "tags"

    def __init__(
        self, settings: OpenAISettings | None = None, top_k: int = 10, min_score: float = 0.0
    ) -> None:
        super().__init__(settings)
        self.top_k, self.min_score = top_k, min_score

    def _predict(self, image: np.ndarray) -> list[Tag]:
        return map_tags(self._parts(image), self.top_k, self.min_score)


class OpenAIObjectNamer(_OpenAIAnalyzer):
    capability = "objects"

    def __init__(self, settings: OpenAISettings | None = None, min_score: float = 0.0) -> None:
        super().__init__(settings)
        self.min_score = min_score

    def _predict(self, image: np.ndarray) -> list[DetectedObject]:
        return map_objects(self._parts(image), self.min_score)


class OpenAIReader(_OpenAIAnalyzer):
    capability = "text"

    def _predict(self, image: np.ndarray) -> Text:
        return map_text(self._parts(image))
