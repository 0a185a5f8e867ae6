"""`text` from Azure AI Document Intelligence's `prebuilt-read` (the v4.0 GA API, 2024-11-30):
the replacement Microsoft names for Image Analysis' OCR, which retires on 2028-09-25.

One image = `POST {endpoint}/documentintelligence/documentModels/prebuilt-read:analyze` with the
JPEG as `base64Source` (202 and an `Operation-Location`), then `GET` that location until the
analysis `succeeded` (waiting what `Retry-After` says). For an image the page's unit is the
pixel: each line's `polygon` (four corners) becomes its box, its confidence the mean of its
words' (lines carry none of their own). Through the model steps' HTTP client, so auth (an Entra
token from the app's identity, or `Ocp-Apim-Subscription-Key`), timeouts and the treatment of
429/5xx/4xx are the same everywhere.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
from azure.core.rest import HttpRequest
from PIL import Image

from pipeline.engine.compute_slots import network_wait
from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.text import Text, TextLine
from pipeline.vision.model_step.remote import (
    RemoteModel,
    azure_ai_service,
    keyless_over_plain_http,
)
from pipeline.vision.settings import DocIntelSettings

MODEL = "prebuilt-read"
JPEG_QUALITY = 90
POLL_SECONDS = 1.0  # when the service says nothing


class DocIntelReader(Analyzer):
    capability = "text"
    name = "docintel-prebuilt-read"

    def __init__(self, settings: DocIntelSettings | None = None, **options: Any) -> None:
        super().__init__()
        self.settings = settings or DocIntelSettings()
        self._remote: RemoteModel | None = None

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.settings.api_version

    def check(self) -> None:
        if not self.settings.endpoint:
            raise ModelUnavailable("DARKROOM_DOCINTEL_ENDPOINT is not set")
        setting = "DARKROOM_DOCINTEL_ENDPOINT"
        if problem := keyless_over_plain_http(self.settings.endpoint, self.settings.key, setting):
            raise ModelUnavailable(problem)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TryLater | ConnectionError | TimeoutError) or (
            isinstance(exc, RuntimeError) and not isinstance(exc, StepFailed | ModelUnavailable)
        )

    def _load(self) -> None:
        self.check()
        self._remote = azure_ai_service(
            self.settings.endpoint or "", self.settings.timeout, self.settings.key
        )

    def _predict(self, image: np.ndarray) -> Text:
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
        body = {"base64Source": base64.b64encode(out.getvalue()).decode("ascii")}
        with network_wait():  # the polling, its pauses included, holds no compute slot
            return self._analyze(body)

    def _analyze(self, body: dict) -> Text:
        assert self._remote is not None
        path = (
            f"/documentintelligence/documentModels/{MODEL}:analyze"
            f"?api-version={self.settings.api_version}"
        )
        started = self._remote.call(HttpRequest("POST", path, json=body), "Document Intelligence")
        location = started.headers.get("Operation-Location", "")
        if not location.startswith(self._remote.base_url):
            raise StepFailed("Document Intelligence answered no Operation-Location of its own")
        relative = location[len(self._remote.base_url) :]
        deadline = time.monotonic() + self.settings.timeout
        while True:
            answer = self._remote.call(HttpRequest("GET", relative), "Document Intelligence")
            result = answer.json()
            status = result.get("status")
            if status == "succeeded":
                return read_lines(result.get("analyzeResult") or {})
            if status == "failed":
                error = (result.get("error") or {}).get("message", "no reason given")
                raise StepFailed(f"Document Intelligence could not read the image: {error}")
            if time.monotonic() > deadline:
                raise TryLater(
                    f"Document Intelligence still {status} after {self.settings.timeout} s"
                )
            wait = answer.headers.get("Retry-After")
            time.sleep(min(float(wait) if wait and wait.isdigit() else POLL_SECONDS, 5.0))


def _box(polygon: list[float]) -> tuple[float, float, float, float]:
    xs, ys = polygon[0::2], polygon[1::2]
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def read_lines(analysis: dict) -> Text:
    """An `analyzeResult` → the `text` result: lines in reading order with pixel boxes."""
    pages = analysis.get("pages") or []
    lines: list[TextLine] = []
    for page in pages:
        words = page.get("words") or []
        for line in page.get("lines") or []:
            polygon = line.get("polygon") or []
            if len(polygon) < 8 or not (line.get("content") or "").strip():
                continue
            spans = line.get("spans") or []
            inside = [
                w.get("confidence", 0.0)
                for w in words
                if any(
                    s["offset"] <= w["span"]["offset"] < s["offset"] + s["length"] for s in spans
                )
            ]
            confidence = sum(inside) / len(inside) if inside else 1.0
            lines.append(
                TextLine(
                    text=line["content"].strip(),
                    box=_box(polygon),
                    confidence=min(max(confidence, 0.0), 1.0),
                )
            )
    return Text(full="\n".join(line.text for line in lines), lines=lines)
