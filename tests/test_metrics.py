"""Metrics: recorded where the step spans end, exported to the local file, to Application
Insights' ingestion protocol and to OTLP; queue gauges on Azurite; a chain on the local host."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.framework.contract import PipelineMessage, SourceBlob, image_id, utc_now
from pipeline.observability import metrics, telemetry
from pipeline.settings import Settings
from tests.harness import eventually

ANALYSIS = {
    "tags": [{"name": "dog", "score": 0.93}, {"name": "bicycle", "score": 0.41}],
    "faces": [],
    "text": {"full": "STOP", "lines": [{"text": "STOP", "box": [1, 2, 3, 4], "confidence": 0.88}]},
    "errors": {"moderation": "RuntimeError: session died"},
    "models": {"tags": "tagger@1", "faces": "blazeface@1", "text": "ppocr@1", "moderation": "n@1"},
    "duration_ms": {"tags": 21.5, "faces": 99.0, "text": 350.0, "moderation": 2.0},
}


def _message(step: str, route=("prepare", "analyze"), fields=None) -> PipelineMessage:
    source = SourceBlob(container="uploads", name="m.jpg", size=3, etag="0x1")
    return PipelineMessage(
        id=image_id("uploads", "m.jpg"),
        source=source,
        route=route,
        step=step,
        ingested_at=utc_now(),
        fields=fields or {},
    )


@pytest.fixture
def local(tmp_path) -> Iterator[Settings]:
    """This process's telemetry pointed at a folder of the test's own, exported on flush."""
    settings = Settings.from_env({"DARKROOM_DATA_DIR": str(tmp_path)})
    telemetry.shutdown()
    telemetry.configure(settings)
    yield settings
    telemetry.shutdown()


def _points(settings: Settings, name: str) -> list[dict]:
    metrics.flush()
    return list(metrics.read_metrics(settings, name))


def test_a_delivery_that_ends_the_image_records_its_status_durations_and_analysis(local):
    message = _message("analyze")
    time.sleep(0.02)
    with telemetry.span("step analyze", telemetry.step_attributes(message, 1)) as span:
        telemetry.record_step_output({"analysis": ANALYSIS})
        telemetry.mark(span, "done")

    (step,) = _points(local, metrics.STEP_DURATION)
    assert step["attributes"] == {
        "darkroom.step": "analyze",
        "darkroom.lane": "live",
        "darkroom.outcome": "done",
    }
    assert step["kind"] == "histogram" and step["count"] == 1 and step["sum"] >= 0
    (image,) = _points(local, metrics.IMAGES)
    assert image["value"] == 1 and image["attributes"]["darkroom.status"] == "done"
    (total,) = _points(local, metrics.IMAGE_DURATION)
    assert total["sum"] >= 20  # ingested before the sleep
    outcomes = {
        p["attributes"]["darkroom.capability"]: p["attributes"]["darkroom.analysis.outcome"]
        for p in _points(local, metrics.ANALYSIS_OUTCOMES)
    }
    assert outcomes == {"tags": "found", "faces": "none", "text": "found", "moderation": "error"}
    scores = {
        (p["attributes"]["darkroom.capability"], p["attributes"]["darkroom.score.bin"]): p["value"]
        for p in _points(local, metrics.ANALYSIS_SCORES)
    }
    assert scores == {("tags", "0.9"): 1, ("text", "0.8"): 1}  # the top tag only
    timed = {
        p["attributes"]["darkroom.capability"]: (p["sum"], p["attributes"]["darkroom.outcome"])
        for p in _points(local, metrics.ANALYZER_DURATION)
    }
    assert timed["text"] == (350.0, "ok") and timed["moderation"] == (2.0, "error")
    # the span says how long the image took, for the p95 in Application Insights
    spans = telemetry.read_spans(local, message.id)
    (recorded,) = [s for s in spans if s["name"] == "step analyze"]
    assert recorded["attributes"]["darkroom.image.total_ms"] == pytest.approx(total["sum"], abs=5)


def test_retries_failures_and_escaped_errors_are_told_apart(local):
    with telemetry.span("step prepare", telemetry.step_attributes(_message("prepare"), 1)) as s:
        telemetry.mark(s, "retrying", "model server down")
    with telemetry.span("step prepare", telemetry.step_attributes(_message("prepare"), 2)) as s:
        telemetry.mark(s, "failed", "prepare: boom (after 5 attempts)")
    attributes = telemetry.step_attributes(_message("analyze"), 1)
    # recording failed: the host redelivers, nothing is final
    with pytest.raises(RuntimeError), telemetry.span("step analyze", attributes):
        raise RuntimeError("cosmos down")
    with telemetry.span("step analyze", telemetry.step_attributes(_message("analyze"), 1)) as s:
        telemetry.record_step_output({"analysis": ANALYSIS})
        telemetry.mark(s, "lost_race")  # its result was not recorded: neither are its answers

    outcomes = sorted(
        (p["attributes"]["darkroom.step"], p["attributes"]["darkroom.outcome"], p["count"])
        for p in _points(local, metrics.STEP_DURATION)
    )
    assert outcomes == [
        ("analyze", "error", 1),
        ("analyze", "lost_race", 1),
        ("prepare", "failed", 1),
        ("prepare", "retrying", 1),
    ]
    reasons = [
        s["attributes"].get("darkroom.reason")
        for s in telemetry.read_spans(local, _message("prepare").id)
    ]
    assert "model server down" in reasons  # the reason Application Insights can show
    (retry,) = _points(local, metrics.RETRIES)
    assert retry["value"] == 1 and retry["attributes"]["darkroom.step"] == "prepare"
    (image,) = _points(local, metrics.IMAGES)
    assert image["attributes"]["darkroom.status"] == "failed"  # the only final one
    assert _points(local, metrics.ANALYSIS_OUTCOMES) == []


def test_the_queue_analyze_of_a_sync_image_counts_only_the_deferred_capabilities(local):
    earlier = {k: v for k, v in ANALYSIS.items() if k != "text"} | {"deferred": ["text"]}
    message = _message("analyze", fields={"analysis": earlier})
    attributes = telemetry.step_attributes(message, 1)
    assert attributes["darkroom.analysis.deferred"] == ("text",)
    assert attributes["darkroom.step.last"] is True
    with telemetry.span("step analyze", attributes) as span:
        telemetry.record_step_output({"analysis": ANALYSIS})  # the whole analysis comes back
        telemetry.mark(span, "done")
    (text,) = _points(local, metrics.ANALYSIS_OUTCOMES)
    assert text["attributes"]["darkroom.capability"] == "text"


def test_metrics_are_recorded_with_tracing_off(tmp_path):
    settings = Settings.from_env({"DARKROOM_DATA_DIR": str(tmp_path), "DARKROOM_TRACING": "false"})
    telemetry.shutdown()
    telemetry.configure(settings)
    try:
        with telemetry.span("step prepare", telemetry.step_attributes(_message("prepare"), 1)):
            telemetry.mark_current("rejected", "not an image")
        (image,) = _points(settings, metrics.IMAGES)
        assert image["attributes"]["darkroom.status"] == "rejected"
        assert not (tmp_path / "traces").exists()
    finally:
        telemetry.shutdown()
    off = Settings.from_env({"DARKROOM_DATA_DIR": str(tmp_path / "off"), "DARKROOM_METRICS": "0"})
    telemetry.configure(off)
    try:
        with telemetry.span("step prepare", telemetry.step_attributes(_message("prepare"), 1)) as s:
            telemetry.mark(s, "done")
        metrics.flush()
        assert not (tmp_path / "off" / "metrics").exists()
    finally:
        telemetry.shutdown()


# ------------------------------------------------------------------ exporters on the wire


class _Receiver(ThreadingHTTPServer):
    """An HTTP endpoint on loopback that keeps every POST (path, body) and answers 200."""

    def __init__(self, answer=lambda body: b"") -> None:
        self.posts: list[tuple[str, bytes]] = []
        self.answer = answer
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.posts.append((self.path, body))
                answer = receiver.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _one_final_delivery() -> None:
    message = _message("analyze")
    with telemetry.span("step analyze", telemetry.step_attributes(message, 1)) as span:
        telemetry.record_step_output({"analysis": ANALYSIS})
        telemetry.mark(span, "done")


def _export_one_delivery(tmp_path, receiver, **exporter: str) -> None:
    """Telemetry configured to export to `receiver`, one final delivery recorded and flushed."""
    settings = Settings.from_env({"DARKROOM_DATA_DIR": str(tmp_path), **exporter})
    telemetry.shutdown()
    telemetry.configure(settings)
    try:
        _one_final_delivery()
        metrics.flush()
    finally:
        telemetry.shutdown()
    receiver.shutdown()


def test_application_insights_gets_custom_metrics_with_the_names_the_alerts_query(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")  # no calls out
    monkeypatch.setenv("APPLICATIONINSIGHTS_SDKSTATS_DISABLED", "true")

    def accepted(body: bytes) -> bytes:  # the ingestion service's answer: all items taken
        count = len(json.loads(body))
        return json.dumps({"itemsReceived": count, "itemsAccepted": count, "errors": []}).encode()

    receiver = _Receiver(accepted)
    connection = (
        f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={receiver.url}/"
    )
    _export_one_delivery(tmp_path, receiver, APPLICATIONINSIGHTS_CONNECTION_STRING=connection)
    envelopes = [e for path, body in receiver.posts if "/track" in path for e in json.loads(body)]
    metric_items = [e for e in envelopes if e["data"]["baseType"] == "MetricData"]
    by_name = {
        m["name"]: (m, e["data"]["baseData"]["properties"])
        for e in metric_items
        for m in e["data"]["baseData"]["metrics"]
    }
    # customMetrics.name / AppMetrics.Name, customDimensions / Properties, as the Kusto reads them
    images, dims = by_name[metrics.IMAGES]
    assert images["value"] == 1 and dims == {"darkroom.status": "done", "darkroom.lane": "live"}
    step, dims = by_name[metrics.STEP_DURATION]
    assert step["count"] == 1 and dims["darkroom.outcome"] == "done"
    assert by_name[metrics.ANALYSIS_SCORES][1]["darkroom.score.bin"] in ("0.9", "0.8")
    roles = {  # the exporter's own self-metrics, if any, are not ours
        e["tags"].get("ai.cloud.role")
        for e in metric_items
        if e["data"]["baseData"]["metrics"][0]["name"].startswith("darkroom.")
    }
    assert roles == {"darkroom"}  # AppRoleName, which every alert filters on
    # the span lands in dependencies / AppDependencies with its total in customDimensions
    spans = [e for e in envelopes if e["data"]["baseType"] == "RemoteDependencyData"]
    (final,) = [s for s in spans if s["data"]["baseData"]["name"] == "step analyze"]
    assert "darkroom.image.total_ms" in final["data"]["baseData"]["properties"]


def test_otlp_collector_gets_metrics_and_spans(tmp_path):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    receiver = _Receiver()
    _export_one_delivery(tmp_path, receiver, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url + "/")
    names, spans = set(), set()
    for path, body in receiver.posts:
        if path == "/v1/metrics":
            request = ExportMetricsServiceRequest.FromString(body)
            for resource in request.resource_metrics:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                assert service["service.name"] == "darkroom"
                names |= {m.name for s in resource.scope_metrics for m in s.metrics}
        elif path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            spans |= {
                s.name for r in request.resource_spans for sc in r.scope_spans for s in sc.spans
            }
    assert {metrics.IMAGES, metrics.STEP_DURATION, metrics.ANALYSIS_OUTCOMES} <= names
    assert "step analyze" in spans and not (tmp_path / "metrics").exists()


def test_a_bad_otlp_endpoint_is_a_setting_problem():
    from pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


# ------------------------------------------------------------------ on the local stack


def test_queue_gauges_show_depth_and_the_oldest_message_age(make_pipeline, tmp_path):
    from pipeline.stores.storage import send_to_queue

    pipeline = make_pipeline("prepare,store", host=False, DARKROOM_DATA_DIR=str(tmp_path))
    settings = pipeline.settings
    for n in range(3):
        send_to_queue(pipeline.azure, settings.queue_name("prepare"), f"m{n}".encode())
    send_to_queue(pipeline.azure, settings.poison_queue_name("store"), b"bad bytes")
    time.sleep(1.5)
    telemetry.shutdown()
    metrics.observe_queues(pipeline.azure)  # what the stall sweep does at each run
    try:
        depths = {
            p["attributes"]["darkroom.queue"]: p for p in _points(settings, metrics.QUEUE_DEPTH)
        }
        ages = {p["attributes"]["darkroom.queue"]: p for p in _points(settings, metrics.QUEUE_AGE)}
        poisoned = _points(settings, metrics.POISONED)
    finally:
        telemetry.shutdown()
    prepare = settings.queue_name("prepare")
    assert depths[prepare]["value"] == 3
    assert depths[prepare]["attributes"] == {
        "darkroom.queue": prepare,
        "darkroom.queue.kind": "step",
        "darkroom.step": "prepare",
        "darkroom.lane": "live",
    }
    assert ages[prepare]["value"] >= 1.0
    assert ages[settings.queue_name("store")]["value"] == 0  # empty
    store_poison = settings.poison_queue_name("store")
    assert depths[store_poison]["value"] == 1
    assert depths[store_poison]["attributes"]["darkroom.queue.kind"] == "poison"
    assert settings.results_queue_name() in depths
    # the poisoning was sent from this process before its meter was configured: not counted
    assert poisoned == []


def test_a_chain_on_the_local_host_writes_its_metrics(make_pipeline, fixture_bytes, tmp_path):
    pipeline = make_pipeline(
        "prepare,tests.pipeline_steps.flaky,store",
        DARKROOM_DATA_DIR=str(tmp_path),
        DARKROOM_METRICS_INTERVAL_SECONDS="1",
        DARKROOM_SWEEP_SCHEDULE="*/2 * * * * *",  # the sweep (and the queue gauges) every 2 s
    )
    image, etag = pipeline.upload("metered/flaky.jpg", fixture_bytes("dog.jpg"))
    junk, junk_etag = pipeline.upload("metered/junk.jpg", b"\x00" * 100)
    assert pipeline.wait_final(image, etag)["status"] == "done"
    assert pipeline.wait_final(junk, junk_etag)["status"] == "rejected"
    settings = pipeline.settings

    def written(name: str, enough) -> list[dict]:
        return eventually(lambda: enough(p := list(metrics.read_metrics(settings, name))) and p)

    images = written(metrics.IMAGES, lambda p: sum(x["value"] for x in p) >= 2)
    assert sorted(x["attributes"]["darkroom.status"] for x in images) == ["done", "rejected"]
    retries = written(metrics.RETRIES, lambda p: p)
    assert retries[0]["attributes"]["darkroom.step"] == "flaky"
    expected = {
        ("prepare", "done"),
        ("prepare", "rejected"),
        ("flaky", "retrying"),
        ("flaky", "done"),
        ("store", "done"),
    }

    def outcomes(points: list[dict]) -> set:
        return {
            (x["attributes"]["darkroom.step"], x["attributes"]["darkroom.outcome"]) for x in points
        }

    # each worker process exports on its own interval: wait until every delivery is in
    written(metrics.STEP_DURATION, lambda p: expected <= outcomes(p))
    gauges = written(metrics.QUEUE_DEPTH, lambda p: p)
    assert {x["attributes"]["darkroom.queue"] for x in gauges} >= {
        settings.queue_name("prepare"),
        settings.poison_queue_name("flaky"),
    }
    # the host process runs the sweep's timer: it alone looks at the queues, not the workers
    assert {x["pid"] for x in gauges} == {pipeline.host.pid}
