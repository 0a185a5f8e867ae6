"""Tracing, metrics and model-drift settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.setting_reader import SettingReader


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry tracing (pipeline.observability.telemetry): on by default; to Application
    Insights when
    its connection string is set, else to the local collector file in the data folder."""

    enabled: bool = True
    connection_string: str | None = field(default=None, repr=False)

    @classmethod
    def read(cls, r: SettingReader) -> TracingSettings:
        return cls(
            enabled=r.flag("DARKROOM_TRACING", True),
            # Not a secret in the catalog's sense: Bicep sets it in plain text (it names the
            # resource; ingestion needs the app's identity, local auth is off). Never printed.
            connection_string=r.optional("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        )


@dataclass(frozen=True)
class MetricsSettings:
    """OpenTelemetry metrics (pipeline.observability.metrics): on by default, exported every
    `interval_seconds` to Application Insights when its connection string is set (the tracing
    setting), else to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else to the
    local file `<DARKROOM_DATA_DIR>/metrics/metrics.jsonl`."""

    enabled: bool = True
    interval_seconds: float = 60.0  # the Azure Monitor exporter's own default export interval
    otlp_endpoint: str | None = None

    @classmethod
    def read(cls, r: SettingReader) -> MetricsSettings:
        endpoint = r.optional("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            r.problems.append(
                f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL, not {endpoint!r}"
            )
            endpoint = None
        return cls(
            enabled=r.flag("DARKROOM_METRICS", True),
            interval_seconds=r.number(
                "DARKROOM_METRICS_INTERVAL_SECONDS", cls.interval_seconds, float, 0.5, 3600
            ),
            otlp_endpoint=endpoint.rstrip("/") if endpoint else None,
        )


@dataclass(frozen=True)
class DriftSettings:
    """Model monitoring (pipeline.observability.drift): the latest `window_hours` of analysed
    images against
    the `baseline_hours` before them. The defaults add up to 48 h, the longest range an Azure
    log search alert may query, so `python -m pipeline status` and the Bicep drift alert judge
    the same windows with the same thresholds."""

    window_hours: float = 12.0
    baseline_hours: float = 36.0
    # Population stability index of a score distribution: < 0.1 stable, 0.1-0.25 a shift worth a
    # look, > 0.25 a different population (the usual reading); 0.2 alerts before the last.
    psi_threshold: float = 0.2
    share_threshold: float = 0.15  # absolute change in the share of images with a finding
    error_rate_threshold: float = 0.05  # a capability failing on more than 5 % of images
    min_images: int = 30  # fewer analysed images in either window: no verdict, too noisy

    @classmethod
    def read(cls, r: SettingReader) -> DriftSettings:
        return cls(
            window_hours=r.number("DARKROOM_DRIFT_WINDOW_HOURS", cls.window_hours, float, 0.1, 720),
            baseline_hours=r.number(
                "DARKROOM_DRIFT_BASELINE_HOURS", cls.baseline_hours, float, 0.1, 8760
            ),
            psi_threshold=r.number(
                "DARKROOM_DRIFT_PSI_THRESHOLD", cls.psi_threshold, float, 0.001, 10
            ),
            share_threshold=r.number(
                "DARKROOM_DRIFT_SHARE_THRESHOLD", cls.share_threshold, float, 0.001, 1
            ),
            error_rate_threshold=r.number(
                "DARKROOM_DRIFT_ERROR_RATE_THRESHOLD", cls.error_rate_threshold, float, 0.0, 1
            ),
            min_images=r.number("DARKROOM_DRIFT_MIN_IMAGES", cls.min_images, minimum=1),
        )
