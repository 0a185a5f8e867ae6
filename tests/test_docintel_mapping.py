"""`text` from Document Intelligence `prebuilt-read`, through the real HTTP client against a
loopback server speaking the service's REST protocol (v4.0, 2024-11-30): the long-running
analyze (202 + Operation-Location, then polling), the documented `analyzeResult` shape (lines
with 8-number polygons, words with confidences and spans), the key header, busy answers and the
key in no log or result."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.settings import Settings
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.providers import analyzer_for, check_configuration

KEY = "docintel-key-0123456789abcdef"
# One page of a photo, as prebuilt-read documents it (unit "pixel" for images).
RESULT = {
    "apiVersion": "2024-11-30",
    "modelId": "prebuilt-read",
    "stringIndexType": "textElements",
    "content": "NO PARKING\nTow away zone",
    "pages": [
        {
            "pageNumber": 1,
            "angle": 0.0,
            "width": 640,
            "height": 480,
            "unit": "pixel",
            "words": [
                {
                    "content": "NO",
                    "polygon": [100, 50, 150, 50, 150, 90, 100, 90],
                    "confidence": 0.995,
                    "span": {"offset": 0, "length": 2},
                },
                {
                    "content": "PARKING",
                    "polygon": [160, 50, 320, 50, 320, 90, 160, 90],
                    "confidence": 0.985,
                    "span": {"offset": 3, "length": 7},
                },
                {
                    "content": "Tow",
                    "polygon": [100, 100, 150, 100, 150, 130, 100, 130],
                    "confidence": 0.9,
                    "span": {"offset": 11, "length": 3},
                },
                {
                    "content": "away",
                    "polygon": [155, 100, 220, 100, 220, 130, 155, 130],
                    "confidence": 0.8,
                    "span": {"offset": 15, "length": 4},
                },
                {
                    "content": "zone",
                    "polygon": [225, 101, 290, 99, 291, 131, 226, 132],
                    "confidence": 0.7,
                    "span": {"offset": 20, "length": 4},
                },
            ],
            "lines": [
                {
                    "content": "NO PARKING",
                    "polygon": [100, 50, 320, 50, 320, 90, 100, 90],
                    "spans": [{"offset": 0, "length": 10}],
                },
                {
                    "content": "Tow away zone",
                    "polygon": [100, 100, 290, 99, 291, 131, 100, 132],
                    "spans": [{"offset": 11, "length": 13}],
                },
            ],
            "spans": [{"offset": 0, "length": 24}],
        }
    ],
    "paragraphs": [],
}


@pytest.fixture
def service():
    """Loopback Document Intelligence: POST analyze → 202 + Operation-Location; the first GET
    says running (Retry-After 0), the next succeeded. `answers` overrides the POST's reply."""
    state = {"requests": [], "polls": 0, "post": None}

    class Handler(BaseHTTPRequestHandler):
        def _json(self, status, body, headers=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append(
                {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body}
            )
            if state["post"]:
                status, headers, answer = state["post"]
                return self._json(status, answer, headers)
            location = (
                f"{state['url']}/documentintelligence/documentModels/prebuilt-read"
                "/analyzeResults/r1?api-version=2024-11-30"
            )
            self.send_response(202)
            self.send_header("Operation-Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            state["requests"].append(
                {"method": "GET", "path": self.path, "headers": dict(self.headers)}
            )
            state["polls"] += 1
            if state["polls"] == 1:
                return self._json(200, {"status": "running"}, {"Retry-After": "0"})
            return self._json(
                200,
                {
                    "status": "succeeded",
                    "createdDateTime": "2026-12-05T09:00:00Z",
                    "lastUpdatedDateTime": "2026-12-05T09:00:01Z",
                    "analyzeResult": RESULT,
                },
            )

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def reader(service, **extra):
    settings = Settings.from_env(
        {
            "DARKROOM_TEXT_PROVIDER": "docintel",
            "DARKROOM_DOCINTEL_ENDPOINT": service["url"],
            "DARKROOM_DOCINTEL_KEY": KEY,
            **extra,
        }
    )
    return analyzer_for("text", settings.analysis)


PIXELS = np.full((480, 640, 3), 200, np.uint8)


def test_read_lines_polygons_and_confidences_through_the_long_running_call(service, caplog):
    caplog.set_level(logging.DEBUG)
    text = reader(service).predict(PIXELS)
    assert text.full == "NO PARKING\nTow away zone"
    first, second = text.lines
    assert first.text == "NO PARKING" and first.box == (100, 50, 220, 40)
    assert first.confidence == pytest.approx(0.99)
    assert second.box == (100, 99, 191, 33) and second.confidence == pytest.approx(0.8)
    post, poll, done = service["requests"]
    assert (
        post["path"]
        == "/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30"
    )
    assert post["headers"]["Ocp-Apim-Subscription-Key"] == KEY
    assert set(post["body"]) == {"base64Source"}
    assert poll["method"] == done["method"] == "GET" and service["polls"] == 2
    assert poll["headers"]["Ocp-Apim-Subscription-Key"] == KEY
    assert KEY not in caplog.text and KEY not in text.model_dump_json()


def test_busy_is_transient_with_the_wait_and_a_refusal_is_not(service):
    service["post"] = (
        429,
        {"Retry-After": "12"},
        {"error": {"code": "429", "message": "Rate limit exceeded"}},
    )
    analyzer = reader(service)
    with pytest.raises(TryLater) as busy:
        analyzer.predict(PIXELS)
    assert busy.value.retry_after == 12.0 and analyzer.is_transient(busy.value)
    service["post"] = (400, {}, {"error": {"code": "InvalidRequest", "message": "Invalid image"}})
    with pytest.raises(StepFailed, match="Invalid image") as refused:
        analyzer.predict(PIXELS)
    assert not analyzer.is_transient(refused.value)


def test_without_an_endpoint_the_start_up_check_names_the_setting():
    settings = Settings.from_env({"DARKROOM_TEXT_PROVIDER": "docintel"})
    with pytest.raises(ModelUnavailable, match="DARKROOM_DOCINTEL_ENDPOINT"):
        check_configuration(settings.analysis)
