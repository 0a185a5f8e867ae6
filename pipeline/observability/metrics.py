"""Metrics: OpenTelemetry instruments for what the pipeline does, and where they are exported.

Recorded by pipeline.observability.telemetry where the spans end (a step delivery, an image's final
status,
the analyze step's output), so steps and the runner know nothing of them:

- `darkroom.images` (counter): images that reached a final status; `darkroom.status` (done,
  rejected, failed), `darkroom.lane`;
- `darkroom.image.duration` (histogram, ms): ingest to final status; status, lane;
- `darkroom.step.duration` (histogram, ms): a step delivery's span; `darkroom.step`,
  `darkroom.outcome` (done, rejected, failed, retrying, lost_race, dropped, error), lane;
- `darkroom.step.retries` (counter): deliveries to be retried; step, lane;
- `darkroom.poisoned` (counter): messages the app sent to a `-poison` queue; `darkroom.queue`;
- `darkroom.queue.depth` (observable gauge): approximate messages; `darkroom.queue`,
  `darkroom.queue.kind` (step, poison, results), step, lane;
- `darkroom.queue.oldest_age` (observable gauge, s): the oldest visible message; the same;
- `darkroom.analyzer.duration` (histogram, ms): one capability; `darkroom.capability`,
  `darkroom.model`, outcome (ok, error);
- `darkroom.analysis.outcomes` (counter): images per capability and what it found; capability,
  model, `darkroom.analysis.outcome` (found, none, safe, unsafe, error);
- `darkroom.analysis.scores` (counter): scores per tenth of [0, 1]; capability,
  `darkroom.score.bin` ("0.0" … "0.9").

The last two are pipeline.observability.drift's observations: the drift alert computes its verdict
from them.
Queue gauges are observed by the process that runs the stall sweep (`observe_queues`, called
by it): one instance, not every worker, looks at the queues at each export.

Where they go (`configure`, once per process, from pipeline.observability.telemetry.configure):
- `APPLICATIONINSIGHTS_CONNECTION_STRING` set: Azure Monitor (`customMetrics` / `AppMetrics`),
  with the app's managed identity on Azure;
- else `OTEL_EXPORTER_OTLP_ENDPOINT` set: OTLP over HTTP (`<endpoint>/v1/metrics`);
- else the local collector `<DARKROOM_DATA_DIR>/metrics/metrics.jsonl`, one JSON line per data
  point at each export (`read_metrics`).
Counters and histograms are exported as deltas (what Azure Monitor takes), every
`DARKROOM_METRICS_INTERVAL_SECONDS`; `DARKROOM_METRICS=false` turns them off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions
from opentelemetry.metrics import Observation as Measurement
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from pipeline.observability.drift import Observation, score_bin
from pipeline.observability.jsonlines import MAX_FILE_BYTES, AppendOnlyLines
from pipeline.settings import LANES, Settings

log = logging.getLogger("darkroom.metrics")

SERVICE_NAME = "darkroom"
METRICS_FILE = "metrics.jsonl"
ROTATED_FILE = "metrics.1.jsonl"

IMAGES = "darkroom.images"
IMAGE_DURATION = "darkroom.image.duration"
STEP_DURATION = "darkroom.step.duration"
RETRIES = "darkroom.step.retries"
POISONED = "darkroom.poisoned"
QUEUE_DEPTH = "darkroom.queue.depth"
QUEUE_AGE = "darkroom.queue.oldest_age"
ANALYZER_DURATION = "darkroom.analyzer.duration"
ANALYSIS_OUTCOMES = "darkroom.analysis.outcomes"
ANALYSIS_SCORES = "darkroom.analysis.scores"

# Milliseconds, from a 5 ms step to a 10 min image (the default buckets stop at 10 s).
DURATION_BUCKETS_MS = (
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000,
    300_000, 600_000,
)  # fmt: skip
# Delta for what is summed per interval, as Azure Monitor's exporter asks (gauges stay as they are).
DELTA = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}
QUEUE_OBSERVER_TTL_SECONDS = 900  # a process observes queues this long after its last sweep
QUEUE_SAMPLE_SECONDS = 5.0  # both queue gauges share one round of queue calls
PEEK_LIMIT = 32  # the most messages one peek returns


def metrics_dir(settings: Settings) -> Path:
    return settings.data_dir / "metrics"


# ------------------------------------------------------------------ the local collector


def point_record(name: str, unit: str, point: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name,
        "unit": unit,
        "time_ns": point.time_unix_nano,
        "start_ns": getattr(point, "start_time_unix_nano", None),
        "attributes": dict(point.attributes or {}),
        "pid": os.getpid(),
    }
    if isinstance(point, HistogramDataPoint):
        record.update(
            kind="histogram",
            count=point.count,
            sum=point.sum,
            min=point.min,
            max=point.max,
            bounds=list(point.explicit_bounds),
            buckets=list(point.bucket_counts),
        )
    elif isinstance(point, NumberDataPoint):
        record.update(kind="number", value=point.value)
    return record


class JsonLinesMetricExporter(MetricExporter):
    """Each export's data points as JSON lines appended to `metrics.jsonl` (rotated at about
    MAX_FILE_BYTES to `metrics.1.jsonl`), deltas like Azure Monitor's, for local tools."""

    def __init__(self, folder: Path, max_bytes: int = MAX_FILE_BYTES) -> None:
        super().__init__(preferred_temporality=DELTA)
        self.file = AppendOnlyLines(folder, METRICS_FILE, ROTATED_FILE, "metrics.lock", max_bytes)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        records = [
            point_record(metric.name, metric.unit or "", point)
            for resource in metrics_data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        ]
        try:
            self.file.append(records)
        except OSError as exc:
            log.warning("cannot write metrics to %s: %s", self.file.path, exc)
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True  # every export is written at once

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.file.close()


def read_metrics(settings: Settings, name: str | None = None) -> Iterator[dict[str, Any]]:
    """Data points in the local collector, oldest file first (all, or one instrument's)."""
    file = AppendOnlyLines(metrics_dir(settings), METRICS_FILE, ROTATED_FILE, "metrics.lock")
    needle = None if name is None else f'"name":"{name}"'.encode()
    for record in file.records(needle):
        if name is None or record.get("name") == name:
            yield record


# ------------------------------------------------------------------ exporters


def azure_monitor_options(settings: Settings) -> dict[str, Any]:
    """What the Azure Monitor exporters need: the connection string and, on Azure, the app's
    identity (Application Insights takes telemetry from it only: local auth is off)."""
    options: dict[str, Any] = {"connection_string": settings.tracing.connection_string}
    if settings.on_azure:
        from pipeline.stores.azure_clients import credential_for

        options["credential"] = credential_for("managedidentity", settings.identity_client_id)
    return options


def _exporter(settings: Settings) -> MetricExporter:
    if settings.tracing.connection_string:
        # Imported only when used: it pulls in msrest and psutil, ~0.3 s of start-up.
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

        return AzureMonitorMetricExporter(**azure_monitor_options(settings))
    if settings.metrics.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=f"{settings.metrics.otlp_endpoint}/v1/metrics", preferred_temporality=DELTA
        )
    return JsonLinesMetricExporter(metrics_dir(settings))


# ------------------------------------------------------------------ queues


@dataclass(frozen=True)
class QueueSample:
    queue: str
    step: str | None
    lane: str | None
    kind: str  # "step", "poison" or "results"
    depth: int | None  # None: the queue cannot be read (not created yet)
    oldest_age_seconds: float | None  # of the visible messages a peek shows; None when empty

    @property
    def attributes(self) -> dict[str, str]:
        attributes = {"darkroom.queue": self.queue, "darkroom.queue.kind": self.kind}
        if self.step:
            attributes["darkroom.step"] = self.step
        if self.lane:
            attributes["darkroom.lane"] = self.lane
        return attributes


def sample_queue(azure: Any, queue: str, now: datetime | None = None) -> tuple[int | None, float]:
    """(approximate depth, age in seconds of its oldest visible message; 0 when none).

    Queues are not FIFO and a peek shows at most 32 visible messages, so the age is that of the
    oldest of those: exact for short queues, a lower bound for a backlog (which the depth shows).
    Messages waiting out a retry delay or held by a worker are not visible, so not counted."""
    client = azure.queue_service.get_queue_client(queue)
    try:
        depth = client.get_queue_properties().approximate_message_count or 0
    except Exception as exc:  # a queue not created yet holds nothing
        log.debug("queue %s: %s", queue, exc)
        return None, 0.0
    if not depth:
        return 0, 0.0
    try:
        peeked = list(client.peek_messages(max_messages=PEEK_LIMIT))
    except Exception as exc:
        log.debug("peeking %s: %s", queue, exc)
        return depth, 0.0
    oldest = min((m.inserted_on for m in peeked if m.inserted_on), default=None)
    if oldest is None:
        return depth, 0.0
    return depth, max(0.0, ((now or datetime.now(UTC)) - oldest).total_seconds())


def queue_samples(azure: Any) -> list[QueueSample]:
    """Every queue of the app: each registered step's two lanes, their poison queues, results."""
    from pipeline.framework.registry import registered_step_specs, step_name

    settings = azure.settings
    wanted: list[tuple[str, str | None, str | None, str]] = []
    for spec in registered_step_specs(settings.pipeline_steps):
        name = step_name(spec)
        for lane in LANES:
            wanted.append((settings.queue_name(name, lane), name, lane, "step"))
            wanted.append((settings.poison_queue_name(name, lane), name, lane, "poison"))
    wanted.append((settings.results_queue_name(), None, None, "results"))
    now = datetime.now(UTC)
    samples = []
    for queue, step, lane, kind in wanted:
        depth, age = sample_queue(azure, queue, now)
        samples.append(QueueSample(queue, step, lane, kind, depth, age))
    return samples


class QueueObserver:
    """The queue gauges' source: samples taken at most every QUEUE_SAMPLE_SECONDS, and only
    while this process ran the stall sweep within QUEUE_OBSERVER_TTL_SECONDS (an instance the
    timer left stops reporting, so two instances do not both report for long)."""

    def __init__(self) -> None:
        self.azure: Any = None
        self.until = 0.0
        self._taken = 0.0
        self._samples: list[QueueSample] = []
        self._lock = threading.Lock()

    def watch(self, azure: Any, ttl: float = QUEUE_OBSERVER_TTL_SECONDS) -> None:
        with self._lock:
            self.azure, self.until = azure, time.monotonic() + ttl

    def samples(self) -> list[QueueSample]:
        with self._lock:
            now = time.monotonic()
            if self.azure is None or now > self.until:
                return []
            if now - self._taken >= QUEUE_SAMPLE_SECONDS:
                try:
                    self._samples = queue_samples(self.azure)
                except Exception as exc:  # metrics never stop the sweep or the exporter
                    log.warning("cannot look at the queues for metrics: %s", exc)
                    self._samples = []
                self._taken = now
            return list(self._samples)


# ------------------------------------------------------------------ instruments

_lock = threading.Lock()
_configured_pid: int | None = None
_provider: MeterProvider | None = None
_instruments: dict[str, Any] = {}
_queues = QueueObserver()


def _depths(options: CallbackOptions) -> Iterable[Measurement]:
    return [Measurement(s.depth, s.attributes) for s in _queues.samples() if s.depth is not None]


def _ages(options: CallbackOptions) -> Iterable[Measurement]:
    return [
        Measurement(round(s.oldest_age_seconds, 3), s.attributes)
        for s in _queues.samples()
        if s.depth is not None and s.oldest_age_seconds is not None
    ]


def _create_instruments(meter: otel_metrics.Meter) -> dict[str, Any]:
    buckets = {"explicit_bucket_boundaries_advisory": DURATION_BUCKETS_MS}
    return {
        IMAGES: meter.create_counter(IMAGES, "{image}", "Images that reached a final status."),
        IMAGE_DURATION: meter.create_histogram(
            IMAGE_DURATION, "ms", "From ingest to the image's final status.", **buckets
        ),
        STEP_DURATION: meter.create_histogram(
            STEP_DURATION, "ms", "A step delivery: the step, its record and the send.", **buckets
        ),
        RETRIES: meter.create_counter(RETRIES, "{delivery}", "Step deliveries to be retried."),
        POISONED: meter.create_counter(POISONED, "{message}", "Messages sent to poison queues."),
        ANALYZER_DURATION: meter.create_histogram(
            ANALYZER_DURATION, "ms", "One capability of the analyze step.", **buckets
        ),
        ANALYSIS_OUTCOMES: meter.create_counter(
            ANALYSIS_OUTCOMES, "{image}", "Images per capability and what it found."
        ),
        ANALYSIS_SCORES: meter.create_counter(
            ANALYSIS_SCORES, "{score}", "Analyzer scores per tenth of [0, 1]."
        ),
        QUEUE_DEPTH: meter.create_observable_gauge(
            QUEUE_DEPTH, [_depths], "{message}", "Approximate messages in the queue."
        ),
        QUEUE_AGE: meter.create_observable_gauge(
            QUEUE_AGE, [_ages], "s", "Age of the oldest visible message in the queue."
        ),
    }


def configure(settings: Settings) -> None:
    """Set up this process's meter once (later calls, with any settings, change nothing)."""
    global _configured_pid, _provider, _instruments
    if _configured_pid == os.getpid():
        return
    with _lock:
        if _configured_pid == os.getpid():
            return
        _configured_pid, _instruments = os.getpid(), {}
        if not settings.metrics.enabled:
            return
        try:
            reader = PeriodicExportingMetricReader(
                _exporter(settings),
                export_interval_millis=settings.metrics.interval_seconds * 1000,
            )
        except Exception as exc:  # metrics must never stop an image
            log.warning("metrics are off: cannot set up their exporter: %s", exc)
            return
        provider = MeterProvider(
            metric_readers=[reader], resource=Resource.create({"service.name": SERVICE_NAME})
        )
        _provider = provider  # its atexit hook exports what is left at shutdown
        _instruments = _create_instruments(provider.get_meter("darkroom.pipeline"))


def flush() -> None:
    """Export now what was recorded (tests, and short-lived commands before they print)."""
    if _provider is not None:
        _provider.force_flush()


def shutdown() -> None:
    """Export what is left and stop this process's meter (tests; atexit does it on exit)."""
    global _provider, _configured_pid, _instruments
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider, _configured_pid, _instruments = None, None, {}
        _queues.watch(None, 0)


def observe_queues(azure: Any) -> None:
    """Report the queue gauges from this process for the next QUEUE_OBSERVER_TTL_SECONDS (the
    stall sweep calls it at every run)."""
    configure(azure.settings)
    _queues.watch(azure)


def _add(name: str, value: float, attributes: Mapping[str, Any]) -> None:
    if instrument := _instruments.get(name):
        instrument.add(value, {k: v for k, v in attributes.items() if v is not None})


def _record(name: str, value: float, attributes: Mapping[str, Any]) -> None:
    if instrument := _instruments.get(name):
        instrument.record(value, {k: v for k, v in attributes.items() if v is not None})


def record_delivery(step: str, lane: str | None, outcome: str, duration_ms: float) -> None:
    """A step delivery ended (its span did); a `retrying` one also counts as a retry."""
    attributes = {"darkroom.step": step, "darkroom.lane": lane}
    _record(STEP_DURATION, duration_ms, {**attributes, "darkroom.outcome": outcome})
    if outcome == "retrying":
        _add(RETRIES, 1, attributes)


def record_image(status: str, lane: str | None, duration_ms: float | None) -> None:
    """An image reached its final status (`duration_ms`: since ingest, when known)."""
    attributes = {"darkroom.status": status, "darkroom.lane": lane}
    _add(IMAGES, 1, attributes)
    if duration_ms is not None:
        _record(IMAGE_DURATION, duration_ms, attributes)


def count_poisoned(queue: str) -> None:
    _add(POISONED, 1, {"darkroom.queue": queue})


def record_analysis(observed: Iterable[Observation], durations: Mapping[str, Any]) -> None:
    """The analyze step's answers: per capability its outcome, scores (binned) and time."""
    for observation in observed:
        capability = {"darkroom.capability": observation.capability}
        _add(
            ANALYSIS_OUTCOMES,
            1,
            {
                **capability,
                "darkroom.model": observation.model,
                "darkroom.analysis.outcome": observation.outcome,
            },
        )
        bins: dict[str, int] = {}
        for score in observation.scores:
            bins[score_bin(score)] = bins.get(score_bin(score), 0) + 1
        for label, count in bins.items():
            _add(ANALYSIS_SCORES, count, {**capability, "darkroom.score.bin": label})
        ms = durations.get(observation.capability)
        if isinstance(ms, int | float) and ms >= 0:
            outcome = "error" if observation.outcome == "error" else "ok"
            _record(
                ANALYZER_DURATION,
                ms,
                {**capability, "darkroom.model": observation.model, "darkroom.outcome": outcome},
            )
