"""App settings: the only place that reads the environment.

Azure Functions hands app settings to the worker as environment variables; Core Tools (and our
local host) load `local.settings.json` "Values" into the environment first. Reading everything
here, once, into a frozen dataclass keeps the rest of the code free of `os.environ` and makes the
full list of knobs visible in one file (mirrored by `local.settings.sample.json` and the README).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Connection names as the Functions bindings see them (`connection=` in function_app.py). A
# connection is either a connection string in the setting itself, or identity-based settings
# `<NAME>__blobServiceUri` / `__queueServiceUri` (storage) or `<NAME>__accountEndpoint` (Cosmos).
STORAGE_CONNECTION = "DARKROOM_STORAGE"
COSMOS_CONNECTION = "DARKROOM_COSMOS"

FINAL_STATUSES = ("done", "rejected", "failed")


LANES = ("live", "backfill")


def queue_binding(step_name: str, lane: str = "live") -> str:
    """A step's queue as a binding expression; storage queue names allow no underscores.

    Each step has two lanes: `live` for fresh uploads and `backfill` for reprocessing, so a
    large backfill never starves new images — each queue gets its own listener and batch."""
    suffix = "" if lane == "live" else f"-{lane}"
    return "%DARKROOM_QUEUE_PREFIX%" + step_name.replace("_", "-") + suffix


def _number(env: Mapping[str, str], name: str, default, cast=int):
    raw = env.get(name, "").strip()
    try:
        return cast(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"setting {name} must be a number, got {raw!r}") from exc


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


@dataclass(frozen=True)
class ImageLimits:
    """Refusal thresholds for prepare: bytes before download, dimensions before decode."""

    max_bytes: int = 50 * 1024 * 1024
    max_width: int = 30_000
    max_height: int = 30_000
    max_pixels: int = 120_000_000
    # Formats without reduced-size decoding (all but JPEG) are decoded in full: a 120 MP RGBA
    # PNG needs >1 GB and lossless WebP ~2 GB, so they get a lower ceiling.
    max_full_decode_pixels: int = 50_000_000


@dataclass(frozen=True)
class AnalysisSettings:
    """Which capabilities the analyze step runs, who answers each, and their thresholds."""

    capabilities: tuple[str, ...] = ("tags", "objects", "faces", "text", "moderation")
    providers: Mapping[str, str] = field(default_factory=dict)  # capability -> local|azure
    tags_top_k: int = 5
    tags_min_score: float = 0.05
    objects_min_score: float = 0.3
    faces_min_score: float = 0.6
    text_language: str = "eng"
    moderation_threshold: float = 0.8
    azure_endpoint: str | None = None
    azure_key: str | None = None

    def provider(self, capability: str) -> str:
        return self.providers.get(capability, "local")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AnalysisSettings:
        raw = env.get("DARKROOM_ANALYZERS", "").strip()
        capabilities = (
            tuple(c.strip() for c in raw.split(",") if c.strip()) if raw else (cls.capabilities)
        )
        providers = {}
        for capability in capabilities:
            value = env.get(f"DARKROOM_{capability.upper()}_PROVIDER", "").strip().lower()
            if value and value not in ("local", "azure"):
                raise ValueError(
                    f"DARKROOM_{capability.upper()}_PROVIDER must be local or azure, got {value!r}"
                )
            providers[capability] = value or "local"
        return cls(
            capabilities=capabilities,
            providers=providers,
            tags_top_k=_number(env, "DARKROOM_TAGS_TOP_K", 5),
            tags_min_score=_number(env, "DARKROOM_TAGS_MIN_SCORE", 0.05, float),
            objects_min_score=_number(env, "DARKROOM_OBJECTS_MIN_SCORE", 0.3, float),
            faces_min_score=_number(env, "DARKROOM_FACES_MIN_SCORE", 0.6, float),
            text_language=_str(env, "DARKROOM_TEXT_LANGUAGE", "eng"),
            moderation_threshold=_number(env, "DARKROOM_MODERATION_THRESHOLD", 0.8, float),
            azure_endpoint=env.get("DARKROOM_AZURE_VISION_ENDPOINT", "").strip() or None,
            azure_key=env.get("DARKROOM_AZURE_VISION_KEY", "").strip() or None,
        )


PUBLISHABLE_METADATA = ("icc_profile", "copyright", "artist", "datetime_original")


@dataclass(frozen=True)
class PublishSettings:
    """What a published derivative may look like and carry, and who hears about results."""

    container: str = "published"
    faces: str = "blur"  # off | blur | pixelate
    redact_text: bool = False
    max_side: int = 2048
    format: str = "jpeg"  # jpeg | webp
    quality: int = 85
    keep_metadata: tuple[str, ...] = ("icc_profile",)
    results_queue: str = "results"
    eventgrid_endpoint: str | None = None
    eventgrid_key: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_attempts: int = 3
    webhook_timeout: float = 10.0
    retain_originals_days: int = 30
    retain_derived_days: int = 365

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PublishSettings:
        faces = _str(env, "DARKROOM_ANONYMIZE_FACES", "blur").lower()
        if faces not in ("off", "blur", "pixelate"):
            raise ValueError(f"DARKROOM_ANONYMIZE_FACES must be off, blur or pixelate: {faces!r}")
        fmt = _str(env, "DARKROOM_PUBLISH_FORMAT", "jpeg").lower()
        if fmt not in ("jpeg", "webp"):
            raise ValueError(f"DARKROOM_PUBLISH_FORMAT must be jpeg or webp: {fmt!r}")
        raw_keep = env.get("DARKROOM_PUBLISH_KEEP_METADATA", "icc_profile")
        keep = tuple(k.strip().lower() for k in raw_keep.split(",") if k.strip())
        if unknown := set(keep) - set(PUBLISHABLE_METADATA):
            raise ValueError(
                f"DARKROOM_PUBLISH_KEEP_METADATA may name {PUBLISHABLE_METADATA} only, not "
                f"{sorted(unknown)} (GPS and camera serials are never published)"
            )
        if (
            bool(env.get("DARKROOM_WEBHOOK_URL", "").strip())
            and not env.get("DARKROOM_WEBHOOK_SECRET", "").strip()
        ):
            raise ValueError("DARKROOM_WEBHOOK_URL needs DARKROOM_WEBHOOK_SECRET to sign events")
        return cls(
            container=_str(env, "DARKROOM_PUBLISHED_CONTAINER", "published"),
            faces=faces,
            redact_text=_str(env, "DARKROOM_REDACT_TEXT", "false").lower() in ("1", "true", "yes"),
            max_side=_number(env, "DARKROOM_PUBLISH_MAX_SIDE", 2048),
            format=fmt,
            quality=_number(env, "DARKROOM_PUBLISH_QUALITY", 85),
            keep_metadata=keep,
            results_queue=_str(env, "DARKROOM_RESULTS_QUEUE", "results"),
            eventgrid_endpoint=env.get("DARKROOM_EVENTGRID_TOPIC_ENDPOINT", "").strip() or None,
            eventgrid_key=env.get("DARKROOM_EVENTGRID_TOPIC_KEY", "").strip() or None,
            webhook_url=env.get("DARKROOM_WEBHOOK_URL", "").strip() or None,
            webhook_secret=env.get("DARKROOM_WEBHOOK_SECRET", "").strip() or None,
            webhook_attempts=_number(env, "DARKROOM_WEBHOOK_ATTEMPTS", 3),
            webhook_timeout=_number(env, "DARKROOM_WEBHOOK_TIMEOUT", 10.0, float),
            retain_originals_days=_number(env, "DARKROOM_RETAIN_ORIGINALS_DAYS", 30),
            retain_derived_days=_number(env, "DARKROOM_RETAIN_DERIVED_DAYS", 365),
        )


@dataclass(frozen=True)
class Settings:
    pipeline_steps: tuple[str, ...]
    queue_prefix: str
    upload_container: str
    derived_container: str
    claims_container: str
    cosmos_database: str
    cosmos_container: str
    limits: ImageLimits
    analysis_max_side: int
    analysis_max_pixels: int
    thumbnail_side: int
    retry_base_seconds: float
    retry_max_seconds: float
    host_workers: int
    host_port: int
    host_lease_seconds: int
    data_dir: Path
    analysis: AnalysisSettings
    publish: PublishSettings
    env: Mapping[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        steps = tuple(
            s.strip()
            for s in env.get("PIPELINE_STEPS", "prepare,analyze,transform,store").split(",")
        )
        data_dir = Path(_str(env, "DARKROOM_DATA_DIR", ".darkroom"))
        if not data_dir.is_absolute():
            data_dir = PROJECT_ROOT / data_dir
        return cls(
            pipeline_steps=tuple(s for s in steps if s),
            queue_prefix=env.setdefault("DARKROOM_QUEUE_PREFIX", "darkroom-"),
            upload_container=env.setdefault("DARKROOM_UPLOAD_CONTAINER", "uploads"),
            derived_container=_str(env, "DARKROOM_DERIVED_CONTAINER", "derived"),
            claims_container=_str(env, "DARKROOM_CLAIMS_CONTAINER", "claims"),
            cosmos_database=_str(env, "DARKROOM_COSMOS_DATABASE", "darkroom"),
            cosmos_container=_str(env, "DARKROOM_COSMOS_CONTAINER", "images"),
            limits=ImageLimits(
                max_bytes=_number(env, "DARKROOM_MAX_BYTES", ImageLimits.max_bytes),
                max_width=_number(env, "DARKROOM_MAX_WIDTH", ImageLimits.max_width),
                max_height=_number(env, "DARKROOM_MAX_HEIGHT", ImageLimits.max_height),
                max_pixels=_number(env, "DARKROOM_MAX_PIXELS", ImageLimits.max_pixels),
                max_full_decode_pixels=_number(
                    env, "DARKROOM_MAX_DECODE_PIXELS", ImageLimits.max_full_decode_pixels
                ),
            ),
            analysis_max_side=_number(env, "DARKROOM_ANALYSIS_MAX_SIDE", 1920),
            analysis_max_pixels=_number(env, "DARKROOM_ANALYSIS_MAX_PIXELS", 2_100_000),
            thumbnail_side=_number(env, "DARKROOM_THUMBNAIL_SIDE", 320),
            retry_base_seconds=_number(env, "DARKROOM_RETRY_BASE_SECONDS", 5.0, float),
            retry_max_seconds=_number(env, "DARKROOM_RETRY_MAX_SECONDS", 600.0, float),
            host_workers=_number(env, "DARKROOM_HOST_WORKERS", os.cpu_count() or 2),
            host_port=_number(env, "DARKROOM_HOST_PORT", 7071),
            host_lease_seconds=_number(env, "DARKROOM_HOST_LEASE_SECONDS", 30),
            data_dir=data_dir,
            analysis=AnalysisSettings.from_env(env),
            publish=PublishSettings.from_env(env),
            env=env,
        )

    def results_queue_name(self) -> str:
        return f"{self.queue_prefix}{self.publish.results_queue}"

    def artifact_container(self, public: bool) -> str:
        return self.publish.container if public else self.derived_container

    def queue_name(self, step_name: str, lane: str = "live") -> str:
        return self.resolve(queue_binding(step_name, lane))

    def poison_queue_name(self, step_name: str, lane: str = "live") -> str:
        return f"{self.queue_name(step_name, lane)}-poison"

    def resolve(self, value: str) -> str:
        """Resolve `%SETTING%` binding expressions the way the Functions host does."""
        parts = value.split("%")
        if len(parts) % 2 == 0:
            raise ValueError(f"unbalanced % in binding expression {value!r}")
        out = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                out.append(part)
            elif part not in self.env:
                raise KeyError(f"binding expression {value!r} names unknown setting {part}")
            else:
                out.append(self.env[part])
        return "".join(out)


def load_local_settings(path: Path | None = None) -> dict[str, str]:
    """Put local.settings.json "Values" into os.environ without overriding what is already set.

    This is what Core Tools does before it starts the worker; the local host and the CLI do the
    same so that `python -m pipeline` behaves like `func start`.
    """
    path = path or PROJECT_ROOT / "local.settings.json"
    if not path.exists():
        path = PROJECT_ROOT / "local.settings.sample.json"
    values = json.loads(path.read_text()).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))
    get_settings.cache_clear()
    return values


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def read_host_json() -> dict:
    return json.loads((PROJECT_ROOT / "host.json").read_text())


def queue_host_options() -> dict:
    """host.json `extensions.queues`, with the Functions host's defaults filled in."""
    opts = read_host_json().get("extensions", {}).get("queues", {})
    return {
        "batchSize": int(opts.get("batchSize", 16)),
        "newBatchThreshold": int(opts.get("newBatchThreshold", opts.get("batchSize", 16) // 2)),
        "maxDequeueCount": int(opts.get("maxDequeueCount", 5)),
        "visibilityTimeout": _timespan_seconds(opts.get("visibilityTimeout", "00:00:00")),
        "maxPollingInterval": _timespan_seconds(opts.get("maxPollingInterval", "00:00:02")),
    }


def _timespan_seconds(value: str | int | float) -> float:
    """host.json writes durations as .NET TimeSpans ("hh:mm:ss[.fff]") or milliseconds."""
    if isinstance(value, int | float):
        return float(value) / 1000.0
    h, m, s = value.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)
