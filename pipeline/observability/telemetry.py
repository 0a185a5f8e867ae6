"""Tracing: one OpenTelemetry trace per image, across every queue hop.

The trace context travels in the message (`PipelineMessage.trace`: the W3C `traceparent`,
`tracestate` beside it). Ingest, the sync path and the stall sweep's resume open the image's
root span; every `dispatch` writes the current span's context into the message it sends; the
runner continues that context on receipt and opens one span per step delivery (`step <name>`).
Steps know nothing of this: the runner annotates the span from what a step returned (the
analyze step's per-capability `analysis.duration_ms` become child spans `analyzer <name>`).

Where spans go (`configure`, once per process, from the runner):
- `APPLICATIONINSIGHTS_CONNECTION_STRING` set: Azure Monitor (Application Insights), batched,
  with the app's managed identity on Azure (Bicep disables key-based ingestion);
- otherwise the local collector: `<DARKROOM_DATA_DIR>/traces/spans.jsonl`, one JSON line per
  finished span, written when the span ends (the local host's workers are processes of their
  own; `python -m pipeline trace ID` reads the file).
`DARKROOM_TRACING=false` turns tracing off: spans are not recorded and messages carry on
whatever context they had.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pipeline.framework.step_api import step_name
from pipeline.observability import metrics
from pipeline.observability.drift import Observation, observations
from pipeline.observability.jsonlines import MAX_FILE_BYTES, AppendOnlyLines
from pipeline.settings import Settings

log = logging.getLogger("darkroom.telemetry")

SERVICE_NAME = "darkroom"
SPANS_FILE = "spans.jsonl"
ROTATED_FILE = "spans.1.jsonl"  # the previous file; `trace` reads both

_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None
_configured_pid: int | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


def traces_dir(settings: Settings) -> Path:
    return settings.data_dir / "traces"


class JsonLinesExporter(SpanExporter):
    """Finished spans as JSON lines appended to one file (the local collector): each export is
    one write of whole lines (pipeline.observability.jsonlines), so the host's worker processes
    never
    interleave within a line; at about MAX_FILE_BYTES the file becomes `spans.1.jsonl`."""

    def __init__(self, folder: Path, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.file = AppendOnlyLines(folder, SPANS_FILE, ROTATED_FILE, "spans.lock", max_bytes)
        self.path = self.file.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.file.append(span_record(span) for span in spans)
        except OSError as exc:
            log.warning("cannot write spans to %s: %s", self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every export is written at once


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "pid": os.getpid(),
    }


def _azure_exporter(settings: Settings) -> SpanExporter:
    # Imported only when used: it pulls in msrest and psutil, ~0.3 s of start-up.
    from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

    return AzureMonitorTraceExporter(**metrics.azure_monitor_options(settings))


def _otlp_exporter(settings: Settings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{settings.metrics.otlp_endpoint}/v1/traces")


def configure(settings: Settings) -> None:
    """Set up this process's tracer and meter once (later calls, with any settings, change
    nothing)."""
    global _provider, _configured_pid, _tracer
    metrics.configure(settings)
    if _configured_pid == os.getpid():
        return
    with _lock:
        if _configured_pid == os.getpid():
            return
        _configured_pid = os.getpid()
        if not settings.tracing.enabled:
            _tracer = trace.NoOpTracer()
            return
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        try:
            if settings.tracing.connection_string:
                exporter = _azure_exporter(settings)
                processor = BatchSpanProcessor(exporter, schedule_delay_millis=2000)
            elif settings.metrics.otlp_endpoint:
                processor = BatchSpanProcessor(_otlp_exporter(settings), schedule_delay_millis=2000)
            else:
                processor = SimpleSpanProcessor(JsonLinesExporter(traces_dir(settings)))
        except Exception as exc:  # tracing must never stop an image
            log.warning("tracing is off: cannot set up its exporter: %s", exc)
            _tracer = trace.NoOpTracer()
            return
        provider.add_span_processor(processor)
        _provider = provider  # its atexit hook flushes what is batched at shutdown
        _tracer = provider.get_tracer("darkroom.pipeline")


def shutdown() -> None:
    """Flush and stop this process's exporter (tests; atexit does the same on exit)."""
    global _provider, _configured_pid, _tracer
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider, _configured_pid, _tracer = None, None, trace.NoOpTracer()
    metrics.shutdown()


def tracer() -> trace.Tracer:
    return _tracer


def parent_context(traceparent: str | None, tracestate: str | None = None):
    """The context a message carries, or None when it carries none or a malformed one (then
    the span opened under it starts a new trace: never an error for the image)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    try:
        ctx = _propagator.extract(carrier)
    except Exception:
        return None
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def current_carrier() -> dict[str, str]:
    """The current span's context as W3C headers ({} when no span is being recorded)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


@dataclass
class _Measure:
    """What a span's metrics need, kept beside it while it runs (tracing may be off)."""

    name: str
    attributes: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    span: Span | None = None
    outcome: str | None = None
    total_ms: float | None = None
    analysis: tuple[list[Observation], Mapping[str, Any]] | None = None
    escaped: bool = False


_measures: contextvars.ContextVar[tuple[_Measure, ...]] = contextvars.ContextVar(
    "darkroom_measures", default=()
)


def _measure_of(current: Span) -> _Measure | None:
    for measure in reversed(_measures.get()):
        if measure.span is current:
            return measure
    return None


def _record(measure: _Measure) -> None:
    """A step delivery's metrics, when its span ends: its duration and outcome, the image's
    final status, the analyze step's answers (only when the delivery recorded them)."""
    if not measure.name.startswith("step ") or "darkroom.step" not in measure.attributes:
        return
    attributes = measure.attributes
    outcome = measure.outcome or ("error" if measure.escaped else "dropped")
    lane = attributes.get("darkroom.lane")
    duration = (time.perf_counter() - measure.started) * 1000
    try:
        metrics.record_delivery(str(attributes["darkroom.step"]), lane, outcome, duration)
        if _is_final(outcome, attributes) and not measure.escaped:
            metrics.record_image(outcome, lane, measure.total_ms)
        if outcome == "done" and measure.analysis is not None:
            metrics.record_analysis(*measure.analysis)
    except Exception as exc:  # metrics must never stop an image
        log.warning("cannot record metrics: %s", exc)


def _is_final(outcome: str, attributes: Mapping[str, Any]) -> bool:
    return outcome in ("rejected", "failed") or (
        outcome == "done" and bool(attributes.get("darkroom.step.last"))
    )


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    root: bool = False,
) -> Iterator[Span]:
    """A span made current for the block: under the message's context when it carries a valid
    one, else under the current span, or a new trace when `root`. An exception escaping the
    block marks the span an error and goes on. A step delivery's span (`step <name>`) records
    its metrics as it ends (pipeline.observability.metrics), tracing on or off."""
    ctx = parent_context(traceparent, tracestate)
    if ctx is None and root:
        ctx = otel_context.Context()  # no parent, whatever is current
    measure = _Measure(name, dict(attributes or {}))
    token = _measures.set((*_measures.get(), measure))
    try:
        with _tracer.start_as_current_span(
            name, context=ctx, attributes=dict(attributes or {}), record_exception=True
        ) as current:
            measure.span = current
            yield current
    except BaseException:
        measure.escaped = True
        raise
    finally:
        _measures.reset(token)
        _record(measure)


def set_attributes(current: Span, attributes: Mapping[str, Any]) -> None:
    current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def mark(current: Span, outcome: str, reason: str | None = None) -> None:
    """The delivery's outcome on its span: `done` is OK; rejected, failed and retrying are
    errors with the reason (a retry is a failed attempt), also in `darkroom.reason`. The span
    of the delivery that ends the image also gets `darkroom.image.total_ms`, the time since
    ingest."""
    current.set_attribute("darkroom.outcome", outcome)
    if outcome == "done":
        current.set_status(Status(StatusCode.OK))
    elif outcome in ("rejected", "failed", "retrying"):
        current.set_status(Status(StatusCode.ERROR, (reason or outcome)[:1000]))
        # also as an attribute: Application Insights keeps attributes, not a span's status text
        current.set_attribute("darkroom.reason", (reason or outcome)[:1000])
    if (measure := _measure_of(current)) is None:
        return
    measure.outcome = outcome
    if _is_final(outcome, measure.attributes):
        measure.total_ms = _since(measure.attributes.get("darkroom.image.ingested_at"))
        if measure.total_ms is not None:
            current.set_attribute("darkroom.image.total_ms", round(measure.total_ms, 1))


def _since(iso: Any) -> float | None:
    """Milliseconds from an ISO-8601 UTC moment to now (None if it is not one)."""
    if not isinstance(iso, str):
        return None
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (datetime.now(UTC) - moment).total_seconds() * 1000)


def mark_current(outcome: str, reason: str | None = None) -> None:
    mark(trace.get_current_span(), outcome, reason)


def image_pixels(fields: Mapping[str, Any]) -> int | None:
    image = fields.get("image")
    if isinstance(image, Mapping):
        width, height = image.get("width"), image.get("height")
        if isinstance(width, int) and isinstance(height, int):
            return width * height
    return None


def step_attributes(message: Any, attempt: int, version: str | None = None) -> dict[str, Any]:
    """A step delivery's span attributes, from its message (a PipelineMessage)."""
    attributes = {
        "darkroom.image.id": message.id,
        "darkroom.step": step_name(message.step),
        "darkroom.step.version": version,
        "darkroom.attempt": attempt,
        "darkroom.lane": message.lane,
        "darkroom.source.bytes": message.source.size,
        "darkroom.image.pixels": image_pixels(message.fields),
        # what the metrics need when the span ends: the image's age, whether this step ends
        # the route, and which capabilities a sync-path image left to this analyze
        "darkroom.image.ingested_at": message.ingested_at,
        "darkroom.step.last": message.next_step() is None,
        "darkroom.analysis.deferred": _deferred(message.fields),
    }
    return {k: v for k, v in attributes.items() if v is not None}


def _deferred(fields: Mapping[str, Any]) -> tuple[str, ...] | None:
    analysis = fields.get("analysis")
    deferred = analysis.get("deferred") if isinstance(analysis, Mapping) else None
    return tuple(str(c) for c in deferred) if isinstance(deferred, list) else None


def annotate(attributes: Mapping[str, Any]) -> None:
    """Attributes on the current span (nothing when none is recorded)."""
    set_attributes(trace.get_current_span(), attributes)


def record_step_output(fields: Mapping[str, Any]) -> None:
    """What a step returned, on its span: the image's pixels once prepare knows them, and the
    analyze step's per-capability durations as child spans ending when the step returned
    (their start is back-dated by their duration; the capabilities ran one after another)."""
    current = trace.get_current_span()
    analysis = fields.get("analysis")
    if isinstance(analysis, Mapping) and (measure := _measure_of(current)) is not None:
        only = measure.attributes.get("darkroom.analysis.deferred")
        durations = analysis.get("duration_ms")
        measure.analysis = (
            observations(analysis, only),
            durations if isinstance(durations, Mapping) else {},
        )
    if not current.is_recording():
        return
    if (pixels := image_pixels(fields)) is not None:
        current.set_attribute("darkroom.image.pixels", pixels)
    analysis = fields.get("analysis")
    durations = analysis.get("duration_ms") if isinstance(analysis, Mapping) else None
    if not isinstance(durations, Mapping):
        return
    end = time.time_ns()
    parent = trace.set_span_in_context(current)
    errors = analysis.get("errors") or {}
    models = analysis.get("models") or {}
    for capability, ms in reversed(list(durations.items())):
        if not isinstance(ms, int | float) or ms < 0:
            continue
        start = end - int(ms * 1_000_000)
        child = _tracer.start_span(
            f"analyzer {capability}",
            context=parent,
            start_time=start,
            attributes={"darkroom.capability": str(capability), "darkroom.duration_ms": ms},
        )
        if isinstance(models, Mapping) and models.get(capability):
            child.set_attribute("darkroom.model", str(models[capability]))
        if isinstance(errors, Mapping) and errors.get(capability):
            child.set_status(Status(StatusCode.ERROR, str(errors[capability])[:1000]))
        child.end(end_time=end)
        end = start


# ------------------------------------------------------------------ reading the local file


def read_spans(settings: Settings, image: str) -> list[dict[str, Any]]:
    """Every span of the image's traces in the local collector, oldest first.

    A trace belongs to the image when any of its spans names the image (`darkroom.image.id`);
    the analyzer spans, which do not, come along with their trace."""
    folder = traces_dir(settings)
    records: list[dict[str, Any]] = []
    for name in (ROTATED_FILE, SPANS_FILE):
        path = folder / name
        if not path.exists():
            continue
        with open(path, "rb") as lines:
            for line in lines:
                if image.encode() not in line and b'"analyzer ' not in line:
                    continue  # cheap filter before parsing
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                if isinstance(record, dict) and "trace_id" in record:
                    records.append(record)
    traces = {
        r["trace_id"]
        for r in records
        if (r.get("attributes") or {}).get("darkroom.image.id") == image
    }
    chosen = [r for r in records if r["trace_id"] in traces]
    chosen.sort(key=lambda r: (r.get("start_ns") or 0, r.get("end_ns") or 0))
    return chosen


def timeline(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """An image's timeline from its spans: per step delivery, the queue wait (from the end of
    the span that sent it, the dispatch, to this one's start), the wait for a compute slot in
    the worker, the work (its duration without that wait) and the CPU time of that work."""
    by_id = {s["span_id"]: s for s in spans}
    rows = []
    for s in spans:
        attributes = s.get("attributes") or {}
        if s["name"].startswith("analyzer "):
            continue  # shown under its step
        parent = by_id.get(s.get("parent_id") or "")
        start, end = s.get("start_ns") or 0, s.get("end_ns") or 0
        wait = None
        slot_wait = attributes.get("darkroom.step.wait_ms")
        if parent and parent.get("end_ns") and "darkroom.step" in attributes:
            wait = max(0.0, (start - parent["end_ns"]) / 1e6)
        rows.append(
            {
                "span": s["name"],
                "step": attributes.get("darkroom.step"),
                "attempt": attributes.get("darkroom.attempt"),
                "lane": attributes.get("darkroom.lane"),
                "version": attributes.get("darkroom.step.version"),
                "outcome": attributes.get("darkroom.outcome"),
                "status": s.get("status"),
                "reason": s.get("status_description"),
                "trace_id": s["trace_id"],
                "span_id": s["span_id"],
                "parent_id": s.get("parent_id"),
                "start_ns": start,
                "queue_wait_ms": None if wait is None else round(wait, 1),
                # Waiting for a compute slot inside the worker is queueing too, not work.
                "slot_wait_ms": slot_wait,
                "work_ms": round(max(0.0, (end - start) / 1e6 - (slot_wait or 0.0)), 1),
                "cpu_ms": attributes.get("darkroom.step.cpu_ms"),
                "analyzers": {
                    c["attributes"].get("darkroom.capability"): c["attributes"].get(
                        "darkroom.duration_ms"
                    )
                    for c in spans
                    if c.get("parent_id") == s["span_id"] and c["name"].startswith("analyzer ")
                },
            }
        )
    if spans:
        first = min(s.get("start_ns") or 0 for s in spans)
        last = max(s.get("end_ns") or 0 for s in spans)
        total = round((last - first) / 1e6, 1)
    else:
        total = None
    steps = [r for r in rows if r["step"]]
    return {
        "traces": sorted({s["trace_id"] for s in spans}),
        "rows": rows,
        "total_ms": total,
        "work_ms": round(sum(r["work_ms"] for r in steps), 1),
        "queue_wait_ms": round(sum(r["queue_wait_ms"] or 0 for r in steps), 1),
        "slot_wait_ms": round(sum(r["slot_wait_ms"] or 0 for r in steps), 1),
        "attempts": {
            step: max(r["attempt"] or 1 for r in steps if r["step"] == step)
            for step in dict.fromkeys(r["step"] for r in steps)
        },
    }
