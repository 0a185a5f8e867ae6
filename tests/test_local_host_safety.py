"""The local host's HTTP surface under hostile requests, and ingestion past a hostile blob name.

Every request goes over loopback to a real host process (the harness's `start_host`), as an
attacker on the machine would send it. Findings of issue 9: an unbounded hand-rolled server,
webhooks without a key, and one blob name that stopped all ingestion.
"""

from __future__ import annotations

import contextlib
import json
import socket
import stat
import threading
import time
import urllib.error
import urllib.request

import pytest
from azure.core.exceptions import ResourceNotFoundError

from local.host import server
from local.host.event_grid import LISTING_DUTY_FACTOR, blob_created_event, next_poll_in
from local.host.webhooks import trigger_queue_name
from pipeline.framework.contract import image_id
from tests.harness import eventually


def _raw(port: int, data: bytes, wait: float = 10.0, then: bytes = b"") -> tuple[bytes, float]:
    """Send raw bytes, and `then` (a body) from a second thread while reading, until the server
    closes or `wait` passes. Returns (what came back, seconds until it closed)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)

        def send_body() -> None:
            with contextlib.suppress(OSError):  # the server closed on us: what we want
                sock.sendall(then)

        sender = threading.Thread(target=send_body, daemon=True)
        if then:
            sender.start()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer, time.monotonic() - start


def _status(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else None


def _post(pipeline, body: bytes, content_type: str = "application/json", url: str | None = None):
    """POST to the webhook; returns (status, body) whatever the status."""
    request = urllib.request.Request(
        url or pipeline.webhook_url("blobs", "Host.Functions.ingest"),
        data=body,
        method="POST",
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _head(pipeline, extra: str) -> bytes:
    path = f"/runtime/webhooks/blobs?functionName=Host.Functions.ingest&code={pipeline.host_key}"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def _depth(pipeline, queue: str) -> int:
    """Messages on a queue, the leased ones included (0 if it does not exist)."""
    try:
        client = pipeline.azure.queue_service.get_queue_client(queue)
        return client.get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0


def _short_error(body: bytes) -> str:
    """A refusal is one short JSON message: no trace, no exception text."""
    assert len(body) < 200, body
    assert b"Traceback" not in body and b"Error:" not in body and b"Exception" not in body
    return json.loads(body)["error"]


# -- 1. the HTTP server is bounded -------------------------------------------------------------


def test_negative_or_non_numeric_content_length_is_a_400(make_pipeline):
    pipeline = make_pipeline()
    port = pipeline.settings.host_port
    # Before: -1 read 40 MB past the 10 MiB cap and answered 200; "abc" dropped the connection.
    negative, _ = _raw(port, _head(pipeline, "Content-Length: -1\r\n"), then=b"[" * 40_000_000)
    assert _status(negative) == 400
    letters, _ = _raw(port, _head(pipeline, "Content-Length: abc\r\n"), then=b"[]")
    assert _status(letters) == 400
    assert b"Traceback" not in negative + letters


def test_a_body_over_the_cap_is_a_413_declared_or_chunked(make_pipeline):
    pipeline = make_pipeline()
    port = pipeline.settings.host_port
    declared, _ = _raw(port, _head(pipeline, f"Content-Length: {server.MAX_BODY + 1}\r\n"))
    assert _status(declared) == 413
    assert _short_error(declared.split(b"\r\n\r\n", 1)[1]) == f"body over {server.MAX_BODY} bytes"
    chunk = b"x" * (1024 * 1024)
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 12 + b"0\r\n\r\n"
    chunked, _ = _raw(port, _head(pipeline, "Transfer-Encoding: chunked\r\n"), then=body)
    assert _status(chunked) == 413


def test_stalled_head_and_stalled_body_are_cut_off(make_pipeline):
    pipeline = make_pipeline()
    port = pipeline.settings.host_port
    results: dict[str, tuple[bytes, float]] = {}
    head_only = b"POST /runtime/webhooks/blobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never ends
    stalled_body = _head(pipeline, "Content-Length: 100\r\n") + b'[{"eventType":'
    timeout = server.BODY_SECONDS + 15
    threads = [
        threading.Thread(target=lambda: results.update(head=_raw(port, head_only, timeout))),
        threading.Thread(target=lambda: results.update(body=_raw(port, stalled_body, timeout))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Before: both connections stayed open as long as the client liked.
    head_answer, head_seconds = results["head"]
    assert head_seconds < server.HEAD_SECONDS + 5 and _status(head_answer) is None
    body_answer, body_seconds = results["body"]
    assert body_seconds < server.BODY_SECONDS + 5
    assert _status(body_answer) == 408


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json at all", "body is not JSON"),
        (b"\xff\xfe\x00garbage", "body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply"),
        (
            json.dumps([{"eventType": "Microsoft.Storage.BlobCreated"}]).encode(),
            "event 0: no subject",
        ),
        (
            json.dumps([{"eventType": "Microsoft.Storage.BlobCreated", "subject": "/x"}]).encode(),
            "event 0: not a blob subject",
        ),
        (json.dumps([1, 2]).encode(), "event 0: not an Event Grid event"),
        (b'"a string"', "body must be a JSON array of events"),
    ],
)
def test_malformed_events_are_a_short_400(make_pipeline, body, message):
    pipeline = make_pipeline()
    # Before: 500 with the exception's text.
    status, answer = _post(pipeline, body)
    assert status == 400
    assert _short_error(answer) == message


def test_ten_thousand_events_are_answered_at_once_and_ingested_by_the_queue(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    pipeline.wait_final(image, etag)
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
        10,
    )
    # Event Grid redelivers at least once; 10,000 deliveries of one event in one request.
    body = json.dumps([{**event, "id": str(n)} for n in range(10_000)]).encode()

    started = time.monotonic()
    status, _ = _post(pipeline, body)
    answered = time.monotonic() - started

    # Before: the request ran 10,000 ingests (233 s for 10,000 blobs); Event Grid waits 30 s.
    assert status == 200
    assert answered < 10, f"answered in {answered:.1f}s"
    # The accepted events are worked off by the listener: the queue drains, nothing poisons.
    queue = trigger_queue_name(pipeline.settings, "ingest")
    eventually(lambda: _depth(pipeline, queue) == 0, timeout=180)
    print(f"10,000 events answered in {answered:.2f}s, ingested {time.monotonic() - started:.1f}s")
    assert _depth(pipeline, f"{queue}-poison") == 0
    assert pipeline.results.get(image)["status"] == "done"


# -- 2. the webhooks need the blobs_extension key ----------------------------------------------


def test_webhooks_refuse_a_missing_or_wrong_key_and_a_non_json_type(make_pipeline):
    pipeline = make_pipeline()
    port = pipeline.settings.host_port
    keys_file = pipeline.settings.data_dir / "host" / "keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    validation = json.dumps(
        [
            {
                "id": "1",
                "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                "subject": "",
                "data": {"validationCode": "code-123"},
            }
        ]
    ).encode()
    for path, function in (("blobs", "Host.Functions.ingest"), ("EventGrid", "ingest")):
        base = f"http://127.0.0.1:{port}/runtime/webhooks/{path}?functionName={function}"
        # Before: 200 and the validation answer for anyone, with any content type.
        for url in (base, f"{base}&code=wrong", f"{base}&code="):
            status, answer = _post(pipeline, validation, url=url)
            assert status == 401, url
            assert b"code-123" not in answer
            assert "key" in _short_error(answer)
        right = f"{base}&code={pipeline.host_key}"
        status, answer = _post(pipeline, validation, content_type="text/plain", url=right)
        assert status == 415 and "application/json" in _short_error(answer)
        status, answer = _post(pipeline, validation, url=right)
        assert (status, json.loads(answer)) == (200, {"validationResponse": "code-123"})
    # The key also travels as a header, as Azure accepts it.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/runtime/webhooks/blobs?functionName=Host.Functions.ingest",
        data=validation,
        method="POST",
        headers={"Content-Type": "application/json", "x-functions-key": pipeline.host_key},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == {"validationResponse": "code-123"}


def test_the_key_is_kept_across_restarts_and_the_event_source_uses_it(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    key = pipeline.host_key
    pipeline.stop_host()
    pipeline.start_host()
    assert pipeline.host_key == key
    image, etag = pipeline.upload("dog.jpg", fixture_bytes("dog.jpg"))
    assert pipeline.wait_final(image, etag)["status"] == "done"  # announced with the key
    assert key not in pipeline.log_tail(10**6)


# -- 3. one blob name cannot stop ingestion ----------------------------------------------------


def test_a_blob_named_with_control_characters_does_not_block_other_uploads(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline()
    bad = "ctrl\x01\x1b[31mred.jpg"
    pipeline.upload(bad, fixture_bytes("cat.jpg"))
    # Names on both sides of the bad one in listing order, uploaded after it.
    first, first_etag = pipeline.upload("aaa.jpg", fixture_bytes("dog.jpg"))
    last, last_etag = pipeline.upload("zzz.jpg", fixture_bytes("cat.jpg"))
    # right after the unlistable range in Azurite's order ("ctrl\x01…" < "ctrl\t" < "ctrl ")
    near, near_etag = pipeline.upload("ctrl next.jpg", fixture_bytes("dog.jpg"))

    # Before: Azurite answered every listing 500 and nothing was ingested for anyone.
    assert pipeline.wait_final(first, first_etag, timeout=60)["status"] == "done"
    assert pipeline.wait_final(last, last_etag, timeout=60)["status"] == "done"
    assert pipeline.wait_final(near, near_etag, timeout=60)["status"] == "done"
    # The bad blob is recorded: escaped in the log, and rejected through ingest.
    refused = eventually(
        lambda: pipeline.results.get(image_id(pipeline.settings.upload_container, bad)), timeout=60
    )
    assert refused["status"] == "rejected"
    assert refused["reason"] == "blob name contains control characters"
    log = pipeline.log_tail(10**6)
    assert repr(bad) in log
    assert "\x1b" not in log and "\x01" not in log
    # …and later uploads keep flowing while it stays there.
    later, later_etag = pipeline.upload("later.jpg", fixture_bytes("dog.jpg"))
    assert pipeline.wait_final(later, later_etag, timeout=60)["status"] == "done"


def test_the_event_source_polls_less_often_as_listings_grow_slow():
    """Listing is the stand-in's only way to find uploads and costs in proportion to the
    container: the pause after a poll keeps it to about a tenth of the time, never below the
    interval."""
    assert next_poll_in(0.5, 0.01) == 0.5
    assert next_poll_in(0.5, 0.63) == pytest.approx(0.63 * LISTING_DUTY_FACTOR)
    duty = 0.63 / (0.63 + next_poll_in(0.5, 0.63))
    assert duty <= 0.1
