"""Model steps whose model is a service, through the real HTTP client against loopback servers
that speak each service's protocol: Azure ML's AutoML-for-images contract and Custom Vision's
prediction API on their documented JSON, and how every client treats a busy, refusing, broken
or absent server. (The real model servers, MLServer and the Azure ML inference server, run in
tests/test_model_servers.py.)"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.vision.model_step.decoders import MalformedOutput
from pipeline.vision.model_step.step import model_step
from tests.harness import SAMPLES
from tests.oip_server import LoopbackOipServer

KEY = "s3cr3t-prediction-key-0123456789"


class Recorded:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict, object]] = []  # status, headers, JSON body


@pytest.fixture
def service():
    """A loopback HTTP server answering, in order, what the test queued."""
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            recorded.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": body}
            )
            status, headers, answer = recorded.answers.pop(0)
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorded.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield recorded
    server.shutdown()
    server.server_close()


def step_for(env: dict[str, str]):
    settings = Settings.from_env(env)
    (spec,) = settings.model_steps.values()
    return model_step(spec, PROJECT_ROOT)


PHOTO = Image.new("RGB", (400, 300), (90, 120, 150))


def test_azureml_classifier_answer_is_mapped_and_the_key_sent_as_a_bearer(service):
    # AutoML for images, multi-class: one result per image, probs aligned with labels
    service.answers.append(
        (200, {}, [{"probs": [0.02, 0.91, 0.07], "labels": ["can", "carton", "milk_bottle"]}])
    )
    step = step_for(
        {
            "DARKROOM_MODEL_FRIDGE__TASK": "classify",
            "DARKROOM_MODEL_FRIDGE__AZUREML_URL": f"{service.url}/score",
            "DARKROOM_MODEL_FRIDGE__AZUREML_KEY": KEY,
            "DARKROOM_MODEL_FRIDGE__AZUREML_DEPLOYMENT": "blue",
            "DARKROOM_MODEL_FRIDGE__TOP_K": "2",
            "DARKROOM_MODEL_FRIDGE__MIN_SCORE": "0.05",
        }
    )
    prediction = step.predict(PHOTO)
    assert prediction.labels == [("carton", 0.91), ("milk_bottle", 0.07)]
    (request,) = service.requests
    assert request["path"] == "/score"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["azureml-model-deployment"] == "blue"
    body = json.loads(request["body"])
    assert body["input_data"]["columns"] == ["image"] and body["input_data"]["index"] == [0]
    sent = Image.open(io.BytesIO(base64.b64decode(body["input_data"]["data"][0])))
    assert sent.format == "JPEG" and sent.size == (400, 300)


def test_azureml_detector_boxes_are_normalised_corners(service):
    service.answers.append(
        (
            200,
            {},
            [
                {
                    "boxes": [
                        {
                            "box": {"topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6},
                            "label": "can",
                            "score": 0.93,
                        },
                        {
                            "box": {"topX": 0.6, "topY": 0.1, "bottomX": 0.9, "bottomY": 0.3},
                            "label": "carton",
                            "score": 0.12,
                        },
                    ]
                }
            ],
        )
    )
    step = step_for(
        {
            "DARKROOM_MODEL_FRIDGE__TASK": "detect",
            "DARKROOM_MODEL_FRIDGE__AZUREML_URL": f"{service.url}/score",
            "DARKROOM_MODEL_FRIDGE__AZUREML_KEY": KEY,
            "DARKROOM_MODEL_FRIDGE__MIN_SCORE": "0.25",
        }
    )
    (found,) = step.predict(PHOTO).objects
    name, score, box = found
    assert (name, score) == ("can", 0.93)
    assert box == pytest.approx([40.0, 60.0, 160.0, 120.0])


def test_custom_vision_detection_and_its_key_header(service):
    # Custom Vision prediction API v3.0, object detection: normalised left/top/width/height
    service.answers.append(
        (
            200,
            {},
            {
                "id": "7796df8e-acbc-45fc-90b4-1b0c81b73639",
                "project": "64b822c5-8082-4b36-a426-27225f4aa18c",
                "iteration": "59ec199d-f3fb-443a-b708-4bca79e1b7f7",
                "created": "2026-12-05T07:00:00.000Z",
                "predictions": [
                    {
                        "probability": 0.94,
                        "tagId": "d9cb3fa5",
                        "tagName": "dent",
                        "boundingBox": {"left": 0.25, "top": 0.5, "width": 0.5, "height": 0.25},
                    },
                    {
                        "probability": 0.03,
                        "tagId": "d9cb3fa5",
                        "tagName": "dent",
                        "boundingBox": {"left": 0.0, "top": 0.0, "width": 0.1, "height": 0.1},
                    },
                ],
            },
        )
    )
    url = f"{service.url}/customvision/v3.0/Prediction/64b822c5/detect/iterations/cars-v3/image"
    step = step_for(
        {
            "DARKROOM_MODEL_DENTS__TASK": "detect",
            "DARKROOM_MODEL_DENTS__CUSTOMVISION_URL": url,
            "DARKROOM_MODEL_DENTS__CUSTOMVISION_KEY": KEY,
        }
    )
    assert step.identity == "customvision@cars-v3"
    (found,) = step.predict(PHOTO).objects
    assert found[0] == "dent" and found[2] == pytest.approx([100.0, 150.0, 200.0, 75.0])
    (request,) = service.requests
    assert request["headers"]["Prediction-Key"] == KEY
    assert request["headers"]["Content-Type"] == "application/octet-stream"
    assert Image.open(io.BytesIO(request["body"])).format == "JPEG"


def _azureml(service) -> object:
    return step_for(
        {
            "DARKROOM_MODEL_FRIDGE__TASK": "classify",
            "DARKROOM_MODEL_FRIDGE__AZUREML_URL": f"{service.url}/score",
            "DARKROOM_MODEL_FRIDGE__AZUREML_KEY": KEY,
            "DARKROOM_MODEL_FRIDGE__TIMEOUT_MS": "2000",
        }
    )


def test_busy_is_transient_with_the_servers_wait(service):
    service.answers.append((429, {"Retry-After": "7"}, {"error": {"message": "Rate limit"}}))
    with pytest.raises(TryLater) as busy:
        _azureml(service).predict(PHOTO)
    assert busy.value.retry_after == 7.0 and "busy (429): Rate limit" in str(busy.value)
    service.answers.append((503, {}, {"message": "warming up"}))
    with pytest.raises(TryLater, match=r"busy \(503\): warming up"):
        _azureml(service).predict(PHOTO)


def test_a_refusal_fails_once_and_a_server_error_is_retried(service):
    service.answers.append((400, {}, {"message": "image too large for this endpoint"}))
    with pytest.raises(StepFailed, match=r"refused the request \(400\): image too large"):
        _azureml(service).predict(PHOTO)
    service.answers.append((500, {}, {"message": "scoring script raised"}))
    with pytest.raises(RuntimeError, match=r"failed \(500\)") as failed:
        _azureml(service).predict(PHOTO)
    assert not isinstance(failed.value, StepFailed | TryLater)


def test_an_absent_server_is_transient():
    step = step_for(
        {
            "DARKROOM_MODEL_FRIDGE__TASK": "classify",
            "DARKROOM_MODEL_FRIDGE__AZUREML_URL": "http://127.0.0.1:9/score",  # discard port
            "DARKROOM_MODEL_FRIDGE__AZUREML_KEY": KEY,
            "DARKROOM_MODEL_FRIDGE__TIMEOUT_MS": "1000",
        }
    )
    with pytest.raises(TryLater, match="did not answer"):
        step.predict(PHOTO)


@pytest.mark.parametrize(
    "answer",
    [
        {"probs": [0.5], "labels": ["a", "b"]},
        [{"probs": [1.7, 0.1], "labels": ["a", "b"]}],
        [{"probs": ["x", 0.1], "labels": ["a", "b"]}],
        [{"boxes": "none"}],
    ],
)
def test_a_malformed_answer_is_named(service, answer):
    service.answers.append((200, {}, answer))
    with pytest.raises(MalformedOutput):
        _azureml(service).predict(PHOTO)


def test_the_key_is_in_no_log_and_no_result(service, caplog):
    caplog.set_level(logging.DEBUG)
    service.answers.append((200, {}, [{"probs": [1.0], "labels": ["carton"]}]))
    step = _azureml(service)
    prediction = step.predict(PHOTO)
    assert KEY not in caplog.text
    assert KEY not in json.dumps(prediction.labels) and KEY not in step.identity
    assert KEY not in repr(
        Settings.from_env(
            {
                "DARKROOM_MODEL_X__TASK": "classify",
                "DARKROOM_MODEL_X__AZUREML_URL": service.url,
                "DARKROOM_MODEL_X__AZUREML_KEY": KEY,
            }
        )
    )


# ------------------------------------------------------------------ the sync path, on the stack


def test_the_sync_path_runs_a_model_step_once(make_pipeline, tmp_path):
    """DARKROOM_SYNC_MODEL_STEPS=toy: POST /api/analyze answers with the model step's result;
    the queue then runs analyze for the deferred OCR, and the model step keeps that answer
    without calling its server again."""
    from tests.test_api import Client, new_key
    from tests.test_model_step import pooled_classifier

    server = LoopbackOipServer(pooled_classifier(tmp_path / "toy.onnx"))
    key, digest = new_key()
    try:
        pipeline = make_pipeline(
            "prepare,analyze,toy,store",
            DARKROOM_API_KEYS=f"web:{digest}",
            DARKROOM_ANALYZERS="tags,text",
            DARKROOM_SYNC_MODEL_STEPS="toy",
            DARKROOM_MODEL_TOY__TASK="classify",
            DARKROOM_MODEL_TOY__OIP_URL=server.url,
            DARKROOM_MODEL_TOY__OIP_MODEL="toy",
            DARKROOM_MODEL_TOY__LABELS="red,green,blue",
            DARKROOM_MODEL_TOY__MIN_SCORE="0",
        )
        web = Client(pipeline, key)
        before = server.inferences
        answer = web.call(
            "POST",
            "/api/analyze?name=sign.jpg",
            data=(SAMPLES / "shopfront-sign.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        assert answer.status_code == 200, answer.text
        now = answer.json()
        assert now["toy"]["model"] == "toy@3" and now["toy"]["labels"][0]["name"] == "blue"
        assert now["analysis"]["deferred"] == ["text"]
        assert server.inferences == before + 1
        final = web.wait_final(now["id"])
        assert final["status"] == "done" and "text" in final["analysis"]
        assert final["toy"] == now["toy"]
        assert server.inferences == before + 1  # not called again on the queue
    finally:
        server.close()


def test_a_server_gone_is_retried_then_failed_and_replayable_and_a_400_fails_once(
    make_pipeline, tmp_path
):
    from tests.test_model_step import pooled_classifier

    model = pooled_classifier(tmp_path / "toy.onnx")
    server = LoopbackOipServer(model)
    pipeline = make_pipeline(
        "prepare,toy,store",
        DARKROOM_MODEL_TOY__TASK="classify",
        DARKROOM_MODEL_TOY__OIP_URL=server.url,
        DARKROOM_MODEL_TOY__OIP_MODEL="toy",
        DARKROOM_MODEL_TOY__TIMEOUT_MS="1000",
    )
    port = server.port
    server.close()  # gone after start-up
    image, etag = pipeline.upload("gone/cat.jpg", (SAMPLES / "cat-chelsea.jpg").read_bytes())
    doc = pipeline.wait_final(image, etag, timeout=180)
    assert doc["status"] == "failed"
    assert "did not answer" in doc["reason"] and "after 5 attempts" in doc["reason"]
    assert doc["steps"]["toy"]["attempts"] == 5
    server = LoopbackOipServer(model, port=port)  # back
    try:
        replayed = pipeline.cli("poison", "replay", "--image", image)
        assert replayed.returncode == 0, replayed.stderr
        assert pipeline.wait_final(image, timeout=120)["status"] == "done"

        server.status = 400  # the server refuses this request: the same every time
        image, etag = pipeline.upload("refused/cat.jpg", (SAMPLES / "cat-chelsea.jpg").read_bytes())
        doc = pipeline.wait_final(image, etag)
        assert doc["status"] == "failed", json.dumps(doc)[:3000]
        assert doc["steps"]["toy"]["attempts"] == 1
        assert "refused the request (400): input too large for this model" in doc["reason"]
    finally:
        server.close()
