"""App settings: the only place that reads the environment, as one `Settings`.

Azure Functions hands app settings to the worker as environment variables; Core Tools (and our
local host) load `local.settings.json` "Values" into the environment first. Everything is read
here, once, into frozen dataclasses, through one `SettingReader` (pipeline.setting_reader) that
records every name it is asked for: that record is the settings catalog (`setting_catalog()`),
which the infra tests hold the Bicep to, so the list of knobs is derived from the code.

Each area's settings live beside the area — `pipeline/api/settings.py`,
`pipeline/vision/settings.py` (with each capability's own options, declared in its module),
`pipeline/people/settings.py`, `pipeline/observability/settings.py`,
`pipeline/imaging/settings.py`, `pipeline/engine/publish_settings.py`,
`pipeline/stores/connections.py` — and this module composes them, with the chain's own
settings (route, queues, containers, retries, the local host).

We kept our reader rather than move to pydantic-settings: it would read the same environment,
but the catalog (every name, its default, whether it is secret, required on Azure or local
only) is recorded by reading, which pydantic-settings does not do, and problems are collected
one line per setting for health instead of raised at the first.

A bad value is reported with one line per setting (`SettingsError`), never a traceback, and the
app still indexes: health names the setting to fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pipeline.api.settings import ApiSettings
from pipeline.engine.compute_slots import slots_for
from pipeline.engine.publish_settings import PublishSettings
from pipeline.imaging.settings import ImageLimits
from pipeline.observability.settings import DriftSettings, MetricsSettings, TracingSettings
from pipeline.people.settings import PeopleSettings
from pipeline.setting_reader import SettingReader, SettingsError, SettingSpec
from pipeline.stores.connections import (
    STORAGE_SERVICES,
    Connection,
    read_connection,
)
from pipeline.vision.model_step.spec import ModelStepSpec, model_step_names, read_spec
from pipeline.vision.settings import AnalysisSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Connection names as the Functions bindings see them (`connection=` in function_app.py).
STORAGE_CONNECTION = "DARKROOM_STORAGE"
COSMOS_CONNECTION = "DARKROOM_COSMOS"
HOST_STORAGE_CONNECTION = "AzureWebJobsStorage"

FINAL_STATUSES = ("done", "rejected", "failed")

LANES = ("live", "backfill")

DEFAULT_ROUTE = "prepare,analyze,recognize,transform,store"
SETTINGS_FILE = "DARKROOM_SETTINGS_FILE"  # local only: which local settings file to load
SWEEP_SCHEDULE = "0 */2 * * * *"  # NCRONTAB (with seconds): the stall sweep every 2 minutes

# Settings the Azure platform sets on every app (App Service / Flex Consumption): their presence
# means "this process runs in Azure", where a local emulator connection string is a mistake.
AZURE_MARKERS = ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME")


def queue_binding(step_name: str, lane: str = "live") -> str:
    """A step's queue as a binding expression; storage queue names allow no underscores.

    Each step has two lanes: `live` for fresh uploads and `backfill` for reprocessing, so a
    large backfill never starves new images — each queue gets its own listener and batch."""
    suffix = "" if lane == "live" else f"-{lane}"
    return "%DARKROOM_QUEUE_PREFIX%" + step_name.replace("_", "-") + suffix


def _route(r: SettingReader) -> tuple[str, ...]:
    raw = r.text("PIPELINE_STEPS", DEFAULT_ROUTE, required=True)
    return tuple(s.strip() for s in raw.split(",") if s.strip())


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
    stall_seconds: float
    host_workers: int
    host_port: int
    host_lease_seconds: int
    data_dir: Path
    log_level: str
    analysis: AnalysisSettings
    publish: PublishSettings
    api: ApiSettings = field(default_factory=ApiSettings)
    people: PeopleSettings = field(default_factory=PeopleSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    storage: Connection = field(default_factory=lambda: Connection(STORAGE_CONNECTION))
    cosmos: Connection = field(default_factory=lambda: Connection(COSMOS_CONNECTION))
    identity_client_id: str | None = None  # user-assigned identity for Vision, Event Grid…
    on_azure: bool = False
    # Steps computing at once per worker process (pipeline.engine.compute_slots).
    step_concurrency: int = 1
    # The local settings file (`load_local_settings`); the local host re-reads its API keys.
    settings_file: Path = PROJECT_ROOT / "local.settings.json"
    # Model steps (pipeline.vision.model_step): route entries described by DARKROOM_MODEL_<NAME>__*
    model_steps: Mapping[str, ModelStepSpec] = field(default_factory=dict)
    # The raw settings: `%SETTING%` binding expressions resolve against them, and a team's own
    # step may read its own settings here. Never printed.
    env: Mapping[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        settings, reader = _read(dict(os.environ if env is None else env))
        if reader.problems:
            raise SettingsError(reader.problems)
        return settings

    def connection(self, name: str) -> Connection:
        """A binding's `connection=` name → the connection it names, as the host resolves it."""
        known = {STORAGE_CONNECTION: self.storage, COSMOS_CONNECTION: self.cosmos}
        if name not in known:
            raise KeyError(f"unknown connection {name!r}; known: {', '.join(known)}")
        return known[name]

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


def _read(env: dict[str, str]) -> tuple[Settings, SettingReader]:
    r = SettingReader(env)
    on_azure = any(env.get(marker) for marker in AZURE_MARKERS)
    data_dir = Path(r.text("DARKROOM_DATA_DIR", ".darkroom", local_only=True))
    if not data_dir.is_absolute():
        data_dir = PROJECT_ROOT / data_dir
    binding = {"required": True}  # %SETTING% in function_app.py: the host resolves them itself
    queue_prefix = r.text("DARKROOM_QUEUE_PREFIX", "darkroom-", **binding)
    upload_container = r.text("DARKROOM_UPLOAD_CONTAINER", "uploads", **binding)
    sweep_schedule = r.text("DARKROOM_SWEEP_SCHEDULE", SWEEP_SCHEDULE, **binding)
    env["DARKROOM_QUEUE_PREFIX"], env["DARKROOM_UPLOAD_CONTAINER"] = queue_prefix, upload_container
    env["DARKROOM_SWEEP_SCHEDULE"] = sweep_schedule
    r.optional(HOST_STORAGE_CONNECTION, secret=True)  # read by the host; checked here
    read_connection(r, HOST_STORAGE_CONNECTION, STORAGE_SERVICES, on_azure)
    settings = Settings(
        pipeline_steps=_route(r),
        queue_prefix=queue_prefix,
        upload_container=upload_container,
        derived_container=r.text("DARKROOM_DERIVED_CONTAINER", "derived"),
        claims_container=r.text("DARKROOM_CLAIMS_CONTAINER", "claims"),
        cosmos_database=r.text("DARKROOM_COSMOS_DATABASE", "darkroom"),
        cosmos_container=r.text("DARKROOM_COSMOS_CONTAINER", "images"),
        limits=ImageLimits.read(r),
        analysis_max_side=r.number("DARKROOM_ANALYSIS_MAX_SIDE", 1920, minimum=64),
        analysis_max_pixels=r.number("DARKROOM_ANALYSIS_MAX_PIXELS", 2_100_000, minimum=4096),
        thumbnail_side=r.number("DARKROOM_THUMBNAIL_SIDE", 320, minimum=16),
        retry_base_seconds=r.number("DARKROOM_RETRY_BASE_SECONDS", 5.0, float, 0.0, 3600),
        retry_max_seconds=r.number("DARKROOM_RETRY_MAX_SECONDS", 600.0, float, 0.0, 86_400),
        # Longer than a step may run (host.json functionTimeout, 10 min): see
        # pipeline.engine.recovery.
        stall_seconds=r.number("DARKROOM_STALL_SECONDS", 900, float, 1.0, 7 * 86_400),
        host_workers=r.number(
            "DARKROOM_HOST_WORKERS", os.cpu_count() or 2, minimum=1, maximum=64, local_only=True
        ),
        host_port=r.number("DARKROOM_HOST_PORT", 7071, minimum=1, maximum=65535, local_only=True),
        host_lease_seconds=r.number(
            "DARKROOM_HOST_LEASE_SECONDS", 30, minimum=2, maximum=600, local_only=True
        ),
        data_dir=data_dir,
        log_level=r.text(
            "DARKROOM_LOG_LEVEL", "INFO", ("debug", "info", "warning", "error"), local_only=True
        ).upper(),
        analysis=AnalysisSettings.read(r),
        publish=PublishSettings.read(r),
        api=ApiSettings.read(r),
        people=PeopleSettings.read(r),
        tracing=TracingSettings.read(r),
        metrics=MetricsSettings.read(r),
        drift=DriftSettings.read(r),
        storage=read_connection(r, STORAGE_CONNECTION, STORAGE_SERVICES, on_azure),
        cosmos=read_connection(r, COSMOS_CONNECTION, ("account",), on_azure),
        identity_client_id=r.optional("AZURE_CLIENT_ID"),
        on_azure=on_azure,
        step_concurrency=r.number(
            "DARKROOM_STEP_CONCURRENCY", _default_slots(env, on_azure), minimum=1, maximum=64
        ),
        settings_file=local_settings_file(r.text(SETTINGS_FILE, "", local_only=True)),
        model_steps={
            name: spec
            for name in sorted(model_step_names(env))
            if (spec := read_spec(r, name, PROJECT_ROOT)) is not None
        },
        env=env,
    )
    return settings, r


def _default_slots(env: Mapping[str, str], on_azure: bool) -> int:
    """Compute slots per worker process (pipeline.engine.compute_slots): the cores shared out among
    the worker processes — the local host's DARKROOM_HOST_WORKERS, Azure's
    FUNCTIONS_WORKER_PROCESS_COUNT (1 unless set)."""
    name = "FUNCTIONS_WORKER_PROCESS_COUNT" if on_azure else "DARKROOM_HOST_WORKERS"
    try:
        processes = int(env.get(name) or (1 if on_azure else os.cpu_count() or 1))
    except ValueError:  # reported by the setting's own check (local), or Azure's
        processes = 1
    return slots_for(processes)


def setting_catalog() -> dict[str, SettingSpec]:
    """Every setting the app reads, with its default and flags: derived by reading, not listed.

    Custom steps may read settings of their own from `Settings.env`; those are theirs to
    document."""
    return dict(_read({})[1].catalog)


def route_setting(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """`PIPELINE_STEPS` alone: what indexing needs even when other settings are invalid."""
    return _route(SettingReader(os.environ if env is None else env))


def local_settings_file(name: str | None = None) -> Path:
    """The local settings file: `DARKROOM_SETTINGS_FILE` (read from the environment only: the
    file cannot name itself), relative to the project, else local.settings.json, else the
    sample when set-up has not written one yet."""
    raw = (os.environ.get(SETTINGS_FILE, "") if name is None else name).strip()
    path = Path(raw or "local.settings.json")
    path = path if path.is_absolute() else PROJECT_ROOT / path
    return path if path.exists() else PROJECT_ROOT / "local.settings.sample.json"


def read_local_settings(path: Path) -> dict[str, str]:
    """A local settings file's "Values", as strings."""
    values = json.loads(path.read_text()).get("Values", {})
    return {key: str(value) for key, value in values.items()}


def load_local_settings(path: Path | None = None) -> dict[str, str]:
    """Put local.settings.json "Values" into os.environ without overriding what is already set.

    This is what Core Tools does before it starts the worker; the local host and the CLI do the
    same so that `python -m pipeline` behaves like `func start`.
    """
    values = read_local_settings(path or local_settings_file())
    for key, value in values.items():
        os.environ.setdefault(key, str(value))
    get_settings.cache_clear()
    return values


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (raises SettingsError, one line per bad setting)."""
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
