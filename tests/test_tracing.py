"""One trace per image across the queue hops, in the local collector file, and `trace ID`."""

from __future__ import annotations

import json

import pytest

from pipeline.framework.contract import InvalidMessage, PipelineMessage, SourceBlob, image_id
from pipeline.observability import telemetry
from pipeline.settings import Settings
from tests.harness import eventually

ROUTE = ("prepare", "analyze", "transform", "store")


def _message(**extra) -> dict:
    source = {"container": "uploads", "name": "a.jpg", "size": 3, "etag": "0x1"}
    return {
        "schema": 1,
        "id": image_id("uploads", "a.jpg"),
        "source": source,
        "route": ["prepare", "store"],
        "step": "prepare",
        "ingested_at": "2024-01-01T00:00:00.000Z",
        **extra,
    }


def test_a_message_without_trace_is_valid_and_a_malformed_one_is_ignored(tmp_path):
    old = PipelineMessage.from_json(json.dumps(_message()))
    assert old.trace is None and old.tracestate is None
    garbage = PipelineMessage.from_json(json.dumps(_message(trace="00-not-a-trace-01")))
    assert garbage.trace == "00-not-a-trace-01"  # valid contract; ignored by tracing
    with pytest.raises(InvalidMessage):  # bounded like every other field
        PipelineMessage.from_json(json.dumps(_message(trace="0" * 257)))
    for bad in ("", "00-not-a-trace-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "x" * 256):
        assert telemetry.parent_context(bad) is None

    telemetry.shutdown()  # this process's tracer, pointed at a folder of this test's own
    telemetry.configure(Settings.from_env({"DARKROOM_DATA_DIR": str(tmp_path)}))
    try:
        with telemetry.span("step prepare", {"darkroom.image.id": "x"}, "00-garbage-01") as span:
            carrier = telemetry.current_carrier()
            assert span.get_span_context().is_valid
        with telemetry.span("step store", {"darkroom.image.id": "x"}, carrier["traceparent"]):
            pass
    finally:
        telemetry.shutdown()
    first, second = telemetry.read_spans(
        Settings.from_env({"DARKROOM_DATA_DIR": str(tmp_path)}), "x"
    )
    assert first["parent_id"] is None  # a new trace, not a crash
    assert second["trace_id"] == first["trace_id"] and second["parent_id"] == first["span_id"]
    assert old.with_trace(carrier).trace == carrier["traceparent"]
    assert old.with_trace({}) is old


def test_rotation_keeps_whole_lines(tmp_path):
    exporter = telemetry.JsonLinesExporter(tmp_path, max_bytes=2000)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(60):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    provider.shutdown()
    current = (tmp_path / telemetry.SPANS_FILE).read_text().splitlines()
    rotated = (tmp_path / telemetry.ROTATED_FILE).read_text().splitlines()
    assert rotated and current
    assert all(json.loads(line)["name"].startswith("s") for line in current + rotated)
    assert len((tmp_path / telemetry.SPANS_FILE).read_bytes()) < 2000 + 1000


def _step_spans(pipeline, image: str, count: int) -> list[dict]:
    def enough():
        spans = telemetry.read_spans(pipeline.settings, image)
        steps = [s for s in spans if "darkroom.step" in s["attributes"]]
        return spans if len(steps) >= count else None

    return eventually(enough, timeout=30)


def test_one_image_is_one_trace_with_a_span_per_step_in_order(make_pipeline, fixture_bytes):
    pipeline = make_pipeline(",".join(ROUTE), DARKROOM_ANALYZERS="tags")
    data = fixture_bytes("dog.jpg")
    image, etag = pipeline.upload("traced/dog.jpg", data)
    doc = pipeline.wait_final(image, etag, timeout=180)
    assert doc["status"] == "done", doc.get("reason")

    spans = _step_spans(pipeline, image, len(ROUTE))
    assert len({s["trace_id"] for s in spans}) == 1
    by_name = {s["name"]: s for s in spans}
    steps = [by_name[f"step {name}"] for name in ROUTE]
    assert [s for s in spans if s["name"].startswith("step ")] == steps  # one each, in order
    parent = by_name["ingest"]
    assert parent["parent_id"] is None and parent["attributes"]["darkroom.image.id"] == image
    for name, span in zip(ROUTE, steps, strict=True):
        assert span["parent_id"] == parent["span_id"], name
        assert span["start_ns"] >= parent["end_ns"] - 5_000_000  # sent at the parent's end
        attributes = span["attributes"]
        assert attributes["darkroom.image.id"] == image
        assert attributes["darkroom.step"] == name
        assert attributes["darkroom.step.version"] == doc["steps"][name]["version"]
        assert attributes["darkroom.attempt"] == 1
        assert attributes["darkroom.lane"] == "live"
        assert attributes["darkroom.source.bytes"] == len(data)
        assert span["status"] == "OK" and attributes["darkroom.outcome"] == "done"
        parent = span
    pixels = doc["image"]["width"] * doc["image"]["height"]
    assert all(s["attributes"]["darkroom.image.pixels"] == pixels for s in steps)
    analyzers = [s for s in spans if s["name"] == "analyzer tags"]
    assert len(analyzers) == 1 and analyzers[0]["parent_id"] == by_name["step analyze"]["span_id"]
    assert (
        analyzers[0]["attributes"]["darkroom.duration_ms"] == doc["analysis"]["duration_ms"]["tags"]
    )

    shown = pipeline.cli("trace", "traced/dog.jpg")
    assert shown.returncode == 0, shown.stderr
    for name in ROUTE:
        assert f"step {name}" in shown.stdout
    assert "analyzer tags" in shown.stdout and "end to end" in shown.stdout
    report = json.loads(pipeline.cli("trace", image, "--json").stdout)
    assert report["image"] == image and len(report["traces"]) == 1
    rows = [r for r in report["rows"] if r["step"]]
    assert [r["step"] for r in rows] == list(ROUTE)
    assert all(r["queue_wait_ms"] is not None and r["work_ms"] > 0 for r in rows)
    assert report["total_ms"] >= report["work_ms"]
    missing = pipeline.cli("trace", "no-such-image.jpg")
    assert missing.returncode == 1 and "no spans" in missing.stderr


def test_a_retried_step_shows_its_attempts_in_the_same_trace(make_pipeline, fixture_bytes):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.flaky,store")
    image, etag = pipeline.upload("traced/flaky.jpg", fixture_bytes("dog.jpg"))
    assert pipeline.wait_final(image, etag)["status"] == "done"

    spans = _step_spans(pipeline, image, 4)
    assert len({s["trace_id"] for s in spans}) == 1
    flaky = [s for s in spans if s["name"] == "step flaky"]
    assert [s["attributes"]["darkroom.attempt"] for s in flaky] == [1, 2]
    assert (
        flaky[0]["status"] == "ERROR" and flaky[0]["attributes"]["darkroom.outcome"] == "retrying"
    )
    assert "model server not reachable" in flaky[0]["status_description"]
    assert flaky[1]["status"] == "OK" and flaky[1]["parent_id"] == flaky[0]["span_id"]
    store = next(s for s in spans if s["name"] == "step store")
    assert store["parent_id"] == flaky[1]["span_id"]

    report = json.loads(pipeline.cli("trace", image, "--json").stdout)
    assert report["attempts"] == {"prepare": 1, "flaky": 2, "store": 1}
    retry = [r for r in report["rows"] if r["step"] == "flaky"][1]
    assert retry["queue_wait_ms"] >= 150  # the backoff (DARKROOM_RETRY_BASE_SECONDS=0.2)


def test_a_message_with_a_malformed_trace_runs_in_a_new_trace(make_pipeline, fixture_bytes):
    from pipeline.engine.runner import StepRunner

    pipeline = make_pipeline("prepare,store", host=False)  # the step runs here, in-process
    settings = pipeline.settings
    name = "traced/garbage.jpg"
    blob = pipeline.azure.blob_service.get_blob_client(settings.upload_container, name)
    data = fixture_bytes("dog.jpg")
    etag = blob.upload_blob(data, overwrite=True)["etag"]
    message = PipelineMessage(
        id=image_id(settings.upload_container, name),
        source=SourceBlob(
            container=settings.upload_container, name=name, size=len(data), etag=etag
        ),
        route=("prepare", "store"),
        step="prepare",
        ingested_at="2024-01-01T00:00:00.000Z",
        trace="00-zz-zz-01",
        tracestate="garbage=,,",
    )
    StepRunner(pipeline.azure).handle("prepare", message.to_json(), 1)

    assert pipeline.queue_messages(settings.poison_queue_name("prepare")) == []
    assert pipeline.results.get(message.id)["steps"]["prepare"]["status"] == "done"
    (sent,) = [
        PipelineMessage.from_json(b) for b in pipeline.queue_messages(settings.queue_name("store"))
    ]
    assert sent.step == "store"
    if settings.tracing.enabled:  # the next message carries the new trace the step started
        assert telemetry.parent_context(sent.trace) is not None and sent.trace != message.trace
