"""The queue chain end to end on real Azurite + the Cosmos emulator, driven by the local host."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request

from PIL import Image

from local.host.event_grid import blob_created_event
from pipeline.framework.contract import MAX_MESSAGE_JSON_BYTES, PipelineMessage, SourceBlob
from pipeline.stores.storage import send_to_queue
from tests.harness import SAMPLES, eventually


def test_uploaded_image_reaches_done_with_every_step_recorded(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    data = fixture_bytes("dog.jpg")
    image, etag = pipeline.upload("dog.jpg", data)

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "done" and doc["reason"] is None
    assert doc["route"] == ["prepare", "store"]
    assert set(doc["steps"]) == {"prepare", "store"}
    for record in doc["steps"].values():
        assert record["status"] == "done"
        assert record["attempts"] == 1
        assert record["duration_ms"] > 0
    assert doc["source"]["name"] == "dog.jpg" and doc["source"]["size"] == len(data)
    assert doc["image"]["format"] == "JPEG"
    assert (doc["image"]["width"], doc["image"]["height"]) == (768, 576)
    assert doc["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(doc["image"]["phash"]) == 16
    for kind in ("analysis", "thumbnail"):
        ref = doc["derived"][kind]
        decoded = Image.open(io.BytesIO(pipeline.blob_bytes(ref["container"], ref["name"])))
        assert decoded.size == (ref["width"], ref["height"])
    assert max(doc["derived"]["thumbnail"]["width"], doc["derived"]["thumbnail"]["height"]) == 320
    archive = json.loads(pipeline.blob_bytes(doc["archive"]["container"], doc["archive"]["name"]))
    assert archive["id"] == image and archive["image"]["sha256"] == doc["image"]["sha256"]


def test_gps_and_camera_from_exif_are_recorded(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("holiday/gps.jpg", fixture_bytes("gps.jpg"))

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "done"
    assert abs(doc["gps"]["lat"] - 48.8584) < 1e-4 and abs(doc["gps"]["lon"] - 2.2945) < 1e-4
    assert doc["gps"]["alt"] == 35.0
    assert doc["exif"]["make"] == "Darkroom Test" and doc["exif"]["model"] == "Fixture Cam"
    assert doc["exif"]["datetime_original"] == "2024:05:01 12:00:00"


def test_custom_step_from_a_test_module_runs_in_the_chain(make_pipeline, fixture_bytes):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.brightness,store")
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "done"
    assert list(doc["steps"]) == ["prepare", "brightness", "store"]
    assert doc["steps"]["brightness"]["version"] == "0.1.0"
    assert 20 < doc["brightness"]["mean"] < 235


def _snapshot(pipeline, image: str) -> tuple[dict, dict[str, str]]:
    doc = pipeline.results.get(image)
    derived = pipeline.settings.derived_container
    blobs = {
        name: hashlib.sha256(pipeline.blob_bytes(derived, name)).hexdigest()
        for name in pipeline.blob_names(derived, f"{image}/")
    }
    return doc, blobs


def _stable(doc: dict) -> dict:
    """The document without what legitimately changes on a rerun (timings, timestamps)."""
    doc = json.loads(json.dumps(doc))
    doc.pop("updated_at")
    for record in doc["steps"].values():
        record.pop("duration_ms"), record.pop("finished_at")
    return doc


def test_redelivered_message_leaves_one_document_and_the_same_blobs(make_pipeline, fixture_bytes):
    reference = make_pipeline()
    first, first_etag = reference.upload("portrait.jpg", fixture_bytes("portrait.jpg"))
    once_doc, once_blobs = _snapshot(reference, reference.wait_final(first, first_etag)["id"])

    # The same prepare message delivered twice, as an at-least-once queue may do.
    pipeline = make_pipeline(host=False)
    image, etag = _ingest_without_host(pipeline, "portrait.jpg", fixture_bytes("portrait.jpg"))
    queue = pipeline.settings.queue_name("prepare")
    (body,) = pipeline.queue_messages(queue)
    send_to_queue(pipeline.azure, queue, body)
    pipeline.start_host()
    doc = pipeline.wait_final(image, etag)
    eventually(
        lambda: (
            not pipeline.queue_messages(queue)
            and not pipeline.queue_messages(pipeline.settings.queue_name("store"))
        )
    )
    twice_doc, twice_blobs = _snapshot(pipeline, image)

    assert doc["status"] == "done"
    assert [d["id"] for d in pipeline.results.find()] == [image]
    # the same blobs as a single delivery makes, byte for byte (ids differ per pipeline prefix)
    assert {n.split("/", 1)[1]: h for n, h in twice_blobs.items() if "result.json" not in n} == {
        n.split("/", 1)[1]: h for n, h in once_blobs.items() if "result.json" not in n
    }
    assert _stable(twice_doc)["image"] == _stable(once_doc)["image"]
    assert twice_doc["steps"]["prepare"]["status"] == "done"


def test_duplicate_message_after_the_image_is_done_is_dropped(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    done = pipeline.wait_final(image, etag)
    source = SourceBlob.model_validate(
        {k: done["source"][k] for k in ("container", "name", "size", "content_type", "etag")}
    )
    late = PipelineMessage(
        id=image,
        source=source,
        route=tuple(done["route"]),
        step="prepare",
        ingested_at=done["ingested_at"],
    )
    send_to_queue(pipeline.azure, pipeline.settings.queue_name("prepare"), late.to_json())

    eventually(lambda: not pipeline.queue_messages(pipeline.settings.queue_name("prepare")))
    assert pipeline.results.get(image)["updated_at"] == done["updated_at"]
    events = pipeline.queue_messages(pipeline.settings.results_queue_name())
    assert len(events) == 1  # no second completion event


def test_duplicate_event_grid_delivery_does_not_restart_the_image(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    done = pipeline.wait_final(image, etag)
    blob = pipeline.azure.blob_service.get_blob_client(
        pipeline.settings.upload_container, "cat.jpg"
    )
    event = blob_created_event(
        "devstoreaccount1",
        pipeline.settings.upload_container,
        "cat.jpg",
        blob.url,
        etag,
        "image/jpeg",
        done["source"]["size"],
    )
    request = urllib.request.Request(
        pipeline.webhook_url(),
        data=json.dumps([event]).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    # The webhook only queues the event; wait until ingest has run it.
    eventually(lambda: f"duplicate event for {image}" in pipeline.log_tail(10**6), timeout=30)

    after = pipeline.results.get(image)
    assert after["status"] == "done" and after["updated_at"] == done["updated_at"]
    assert pipeline.queue_messages(pipeline.settings.queue_name("prepare")) == []


def test_transient_failure_is_retried_with_backoff_and_succeeds(make_pipeline, fixture_bytes):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.flaky,store")
    image, etag = pipeline.upload("dog.jpg", fixture_bytes("dog.jpg"))

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "done"
    assert doc["steps"]["flaky"]["status"] == "done"
    assert doc["steps"]["flaky"]["attempts"] == 2
    assert doc["flaky"] == {"succeeded_on_attempt": 2}
    assert pipeline.queue_messages(pipeline.settings.poison_queue_name("flaky")) == []


def test_step_that_always_fails_ends_in_poison_and_document_says_failed(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.broken,store")
    image, etag = pipeline.upload("dog.jpg", fixture_bytes("dog.jpg"))

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "failed"
    assert "disk on fire" in doc["reason"] and "after 5 attempts" in doc["reason"]
    assert doc["steps"]["broken"]["status"] == "failed"
    assert doc["steps"]["broken"]["attempts"] == 5
    assert doc["steps"]["prepare"]["status"] == "done"
    assert "store" not in doc["steps"]
    poisoned = pipeline.queue_messages(pipeline.settings.poison_queue_name("broken"))
    assert [json.loads(body)["id"] for body in poisoned] == [image]


def test_non_image_is_rejected_at_prepare_without_touching_poison(make_pipeline):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("notes.jpg", b"these are my holiday notes, not a photo\n")

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "rejected"
    assert doc["reason"] == "not an image: the file is plain text"
    assert doc["steps"]["prepare"]["status"] == "rejected"
    assert doc["steps"]["prepare"]["attempts"] == 1
    assert "store" not in doc["steps"]
    for step in ("prepare", "store"):
        assert pipeline.queue_messages(pipeline.settings.poison_queue_name(step)) == []


def test_message_over_the_queue_limit_round_trips_by_claim_check(make_pipeline):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.profile,store")
    data = (SAMPLES / "aloe-plant-indoor.jpg").read_bytes()
    image, etag = pipeline.upload("aloe.jpg", data)

    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "done"
    width, height = doc["derived"]["analysis"]["width"], doc["derived"]["analysis"]["height"]
    assert len(doc["profile"]["rows"]) == height and len(doc["profile"]["cols"]) == width
    claims = pipeline.blob_names(pipeline.settings.claims_container, f"{image}/")
    assert claims, "the message to store should have travelled by claim check"
    sizes = [len(pipeline.blob_bytes(pipeline.settings.claims_container, c)) for c in claims]
    assert max(sizes) > MAX_MESSAGE_JSON_BYTES
    assert doc["steps"]["store"]["status"] == "done"


def test_malformed_message_goes_to_poison_at_once(make_pipeline):
    pipeline = make_pipeline()
    send_to_queue(pipeline.azure, pipeline.settings.queue_name("prepare"), b'{"schema": 1}')
    poison = pipeline.settings.poison_queue_name("prepare")
    assert eventually(lambda: pipeline.queue_messages(poison)) == [b'{"schema": 1}']


def _ingest_without_host(pipeline, name: str, data: bytes) -> tuple[str, str]:
    """Upload and run the ingest function directly, as one Event Grid delivery would."""
    from pipeline.engine.ingest import start_image
    from pipeline.engine.runner import StepRunner

    image, etag = pipeline.upload(name, data)
    blob = pipeline.azure.blob_service.get_blob_client(pipeline.settings.upload_container, name)
    assert start_image(blob, StepRunner(pipeline.azure)) == image
    return image, etag


def test_upload_replaced_while_in_flight_finishes_as_the_newer_image(make_pipeline, fixture_bytes):
    pipeline = make_pipeline(host=False)
    image, _ = _ingest_without_host(pipeline, "pet.jpg", fixture_bytes("dog.jpg"))
    same_image, newer_etag = _ingest_without_host(pipeline, "pet.jpg", fixture_bytes("cat.jpg"))
    assert same_image == image
    assert len(pipeline.queue_messages(pipeline.settings.queue_name("prepare"))) == 2

    pipeline.start_host()
    doc = pipeline.wait_final(image, newer_etag)

    assert doc["status"] == "done"
    assert doc["image"]["sha256"] == hashlib.sha256(fixture_bytes("cat.jpg")).hexdigest()
    eventually(lambda: not pipeline.queue_messages(pipeline.settings.queue_name("store")))
    assert [d["id"] for d in pipeline.results.find()] == [image]
    assert pipeline.results.get(image)["image"]["sha256"] == doc["image"]["sha256"]


def test_upload_deleted_before_processing_is_rejected_with_a_reason(make_pipeline, fixture_bytes):
    pipeline = make_pipeline(host=False)
    image, etag = _ingest_without_host(pipeline, "gone.jpg", fixture_bytes("dog.jpg"))
    pipeline.azure.blob_service.get_blob_client(
        pipeline.settings.upload_container, "gone.jpg"
    ).delete_blob()

    pipeline.start_host()
    doc = pipeline.wait_final(image, etag)

    assert doc["status"] == "rejected"
    assert doc["reason"] == "the upload was deleted before it could be processed"


def test_analysis_runs_in_the_chain_with_boxes_in_original_coordinates(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,analyze,store", DARKROOM_ANALYSIS_MAX_SIDE="256")
    image, etag = pipeline.upload("people/astronaut.jpg", fixture_bytes("portrait.jpg"))

    doc = pipeline.wait_final(image, etag, timeout=240)

    assert doc["status"] == "done" and doc["steps"]["analyze"]["status"] == "done"
    analysis = doc["analysis"]
    assert analysis["errors"] == {}
    assert set(analysis["models"]) == {"tags", "objects", "faces", "text", "moderation"}
    assert doc["derived"]["analysis"]["width"] == 256  # analysed at half size…
    (face,) = analysis["faces"]
    x, y, w, h = face["box"]  # …but reported in the 512x512 original's pixels
    assert 160 < x < 200 and 55 < y < 95 and 70 < w < 110 and 80 < h < 130
    assert analysis["moderation"]["verdict"] == "safe"


class WebhookReceiver:
    """A real HTTP server that checks signatures the way a subscriber would."""

    def __init__(self, secret: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from pipeline.engine.notify import SIGNATURE_HEADER, verify_signature

        self.accepted: list[dict] = []
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if verify_signature(secret, body, self.headers.get(SIGNATURE_HEADER)):
                    receiver.accepted.append(json.loads(body))
                    self.send_response(204)
                else:
                    receiver.rejected += 1
                    self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/darkroom"

    def close(self) -> None:
        self.server.shutdown()


def test_full_route_publishes_anonymised_derivative_and_notifies_once_per_image(
    make_pipeline, fixture_bytes
):
    receiver = WebhookReceiver("hook-secret")
    try:
        pipeline = make_pipeline(
            "prepare,analyze,transform,store",
            DARKROOM_WEBHOOK_URL=receiver.url,
            DARKROOM_WEBHOOK_SECRET="hook-secret",
        )
        uploads = [pipeline.upload(n, fixture_bytes(n)) for n in ("portrait.jpg", "gps.jpg")]
        docs = [pipeline.wait_final(image, etag, timeout=240) for image, etag in uploads]

        for doc in docs:
            assert doc["status"] == "done"
            published = doc["published"]
            blob = Image.open(
                io.BytesIO(pipeline.blob_bytes(published["container"], published["name"]))
            )
            assert not blob.getexif().get_ifd(0x8825)  # no GPS in what is published
            assert doc["notifications"]["webhook"]["status"] == "delivered"
            assert doc["notifications"]["results_queue"]["status"] == "sent"
        assert docs[0]["published"]["anonymised"]["faces"] == 1

        eventually(lambda: len(receiver.accepted) == 2)
        assert sorted(e["image_id"] for e in receiver.accepted) == sorted(d["id"] for d in docs)
        events = [
            json.loads(b) for b in pipeline.queue_messages(pipeline.settings.results_queue_name())
        ]
        assert sorted(e["image_id"] for e in events) == sorted(d["id"] for d in docs)
        assert all(
            "48.858" not in json.dumps(e) and '"lat"' not in json.dumps(e)
            for e in events + receiver.accepted
        )

        # A forged delivery is refused by the receiver's check.
        forged = urllib.request.Request(
            receiver.url,
            data=json.dumps(events[0]).encode(),
            method="POST",
            headers={"X-Darkroom-Signature": "t=1,v1=00"},
        )
        try:
            urllib.request.urlopen(forged, timeout=10)
            raise AssertionError("forged request accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        assert receiver.rejected == 1 and len(receiver.accepted) == 2

        # Redelivery of the transform message leaves one derivative, overwritten in place.
        image = docs[0]["id"]
        before = pipeline.blob_names(pipeline.settings.publish.container, f"{image}/")
        replay = PipelineMessage.model_validate(
            {
                "schema": 1,
                "id": image,
                "source": {
                    k: docs[0]["source"][k]
                    for k in ("container", "name", "size", "content_type", "etag")
                },
                "route": docs[0]["route"],
                "step": "transform",
                "ingested_at": docs[0]["ingested_at"],
                "fields": {k: docs[0][k] for k in ("image", "exif", "derived", "analysis")},
            }
        )
        # (while the image is still in flight: a duplicate of a finished image is dropped)
        in_flight = pipeline.results.get(image)
        pipeline.results.save({**in_flight, "status": "processing"})
        send_to_queue(pipeline.azure, pipeline.settings.queue_name("transform"), replay.to_json())
        eventually(lambda: len(receiver.accepted) == 3, timeout=120)
        assert pipeline.blob_names(pipeline.settings.publish.container, f"{image}/") == before
        assert len(before) == 1
    finally:
        receiver.close()
