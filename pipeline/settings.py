"""App settings: the only place that reads the environment.

Azure Functions hands app settings to the worker as environment variables; Core Tools (and our
local host) load `local.settings.json` "Values" into the environment first. Everything is read
here, once, into frozen dataclasses, through one `_Reader` that also records every name it was
asked for. That record is the settings catalog (`setting_catalog()`): the infra tests check the
Bicep against it, so the list of knobs is derived from the code, never kept by hand twice.

A bad value is reported with one line per setting (`SettingsError`), never a traceback, and the
app still indexes (see `pipeline.startup`): health names the setting to fix.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.engine.compute_slots import slots_for

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


class SettingsError(ValueError):
    """One or more settings are invalid: each line names a setting and what it must be."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SettingSpec:
    """One app setting as the code reads it (the catalog entry)."""

    name: str
    default: str | None  # None: no default (unset means "off" or, if required, an error)
    required: bool = False  # must be set on Azure: no usable default, or a %binding% expression
    local_only: bool = False  # only the laptop (local host, emulators) reads it
    secret: bool = False  # never logged, never printed, never set by Bicep in plain text


class _Reader:
    """Reads typed settings from one mapping, collecting problems and the catalog as it goes."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.catalog: dict[str, SettingSpec] = {}

    def _raw(self, name: str, default: object, **flags: bool) -> str:
        self.catalog.setdefault(
            name, SettingSpec(name, None if default is None else str(default), **flags)
        )
        return str(self.env.get(name, "")).strip()

    def text(self, name: str, default: str, choices: tuple[str, ...] = (), **flags: bool) -> str:
        value = self._raw(name, default, **flags) or default
        if choices and value.lower() not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value.lower() if choices else value

    def optional(self, name: str, **flags: bool) -> str | None:
        return self._raw(name, None, **flags) or None

    def flag(self, name: str, default: bool, **flags: bool) -> bool:
        raw = self._raw(name, str(default).lower(), **flags).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name} must be true or false, not {raw!r}")
        return default

    def number(
        self,
        name: str,
        default: float,
        cast: type = int,
        minimum: float | None = None,
        maximum: float | None = None,
        **flags: bool,
    ):
        raw = self._raw(name, default, **flags)
        if not raw:
            return default
        try:
            value = cast(raw)
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            self.problems.append(f"{name} must be {kind}, not {raw!r}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.problems.append(f"{name} must be a finite number, not {raw!r}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.problems.append(f"{name} must be {bounds}, not {raw}")
            return default
        return value


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STORAGE_SERVICES = ("blob", "queue", "table")


def parse_connection_string(value: str) -> dict[str, str]:
    """`Key=Value;…` → dict; the development-storage shortcut expands to Azurite's endpoints."""
    if value.strip() == "UseDevelopmentStorage=true":
        return {
            "BlobEndpoint": "http://127.0.0.1:10000/devstoreaccount1",
            "QueueEndpoint": "http://127.0.0.1:10001/devstoreaccount1",
            "TableEndpoint": "http://127.0.0.1:10002/devstoreaccount1",
        }
    parts = (p.split("=", 1) for p in value.split(";") if "=" in p)
    return {k.strip(): v.strip() for k, v in parts}


def _is_local_connection_string(value: str) -> bool:
    parts = parse_connection_string(value)
    endpoints = [v for k, v in parts.items() if k.endswith("Endpoint")]
    return bool(endpoints) and all(urlsplit(e).hostname in LOCAL_HOSTS for e in endpoints)


@dataclass(frozen=True)
class Connection:
    """A connection as the Functions host reads it: a connection string, or identity-based.

    Identity-based settings are the host's own format: `<NAME>__blobServiceUri`,
    `__queueServiceUri`, `__tableServiceUri` (or `__accountName`, or the blob-only legacy
    `__serviceUri`) for storage, `<NAME>__accountEndpoint` for Cosmos DB, with
    `<NAME>__credential=managedidentity` and `<NAME>__clientId` for a user-assigned identity.
    Precedence: there is none — setting both forms is refused, so what a deployment uses is
    never decided by which setting happens to win.
    """

    name: str
    connection_string: str | None = field(default=None, repr=False)
    endpoints: Mapping[str, str] = field(default_factory=dict)  # blob/queue/table/account → URI
    credential: str | None = None  # "managedidentity", or None for DefaultAzureCredential
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None and bool(self.endpoints)

    @property
    def configured(self) -> bool:
        return self.connection_string is not None or bool(self.endpoints)

    def endpoint(self, service: str) -> str | None:
        return self.endpoints.get(service)

    def describe(self, service: str) -> str:
        """What to set for this service, for error messages."""
        setting = "accountEndpoint" if service == "account" else f"{service}ServiceUri"
        return f"{self.name} (connection string) or {self.name}__{setting} (managed identity)"


def _read_connection(
    reader: _Reader, name: str, services: tuple[str, ...], on_azure: bool
) -> Connection:
    conn_string = reader.optional(name, secret=True)
    endpoints: dict[str, str] = {}
    for service in services:
        key = "accountEndpoint" if service == "account" else f"{service}ServiceUri"
        # The identity-based URI is what Azure deploys; it is "required" in the catalog sense.
        required = service in ("blob", "queue", "table", "account")
        if uri := reader.optional(f"{name}__{key}", required=required):
            endpoints[service] = uri
    if "blob" in services:
        if legacy := reader.optional(f"{name}__serviceUri"):
            endpoints.setdefault("blob", legacy)
        if account := reader.optional(f"{name}__accountName"):
            for service in services:
                endpoints.setdefault(service, f"https://{account}.{service}.core.windows.net")
    credential = reader.optional(f"{name}__credential")
    client_id = reader.optional(f"{name}__clientId")
    for service, uri in endpoints.items():
        parts = urlsplit(uri)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            reader.problems.append(f"{name}: {service} endpoint {uri!r} is not an https:// URL")
    if credential is not None and credential.lower() != "managedidentity":
        reader.problems.append(f"{name}__credential must be managedidentity, not {credential!r}")
    if conn_string and endpoints:
        reader.problems.append(
            f"{name} is set both as a connection string and as identity-based settings "
            f"({name}__…): keep one (on Azure, the identity-based ones)"
        )
    if conn_string and on_azure and _is_local_connection_string(conn_string):
        reader.problems.append(
            f"{name} points at a local emulator but this app runs in Azure: remove it and set "
            f"{name}__…ServiceUri / __accountEndpoint with __credential=managedidentity "
            "(infra/bicep sets them)"
        )
    return Connection(
        name=name,
        connection_string=conn_string,
        endpoints=endpoints,
        credential=credential.lower() if credential else None,
        client_id=client_id,
    )


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

    @classmethod
    def read(cls, r: _Reader) -> ImageLimits:
        return cls(
            max_bytes=r.number("DARKROOM_MAX_BYTES", cls.max_bytes, minimum=1),
            max_width=r.number("DARKROOM_MAX_WIDTH", cls.max_width, minimum=1),
            max_height=r.number("DARKROOM_MAX_HEIGHT", cls.max_height, minimum=1),
            max_pixels=r.number("DARKROOM_MAX_PIXELS", cls.max_pixels, minimum=1),
            max_full_decode_pixels=r.number(
                "DARKROOM_MAX_DECODE_PIXELS", cls.max_full_decode_pixels, minimum=1
            ),
        )


KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_KEY_ENTRY = re.compile(r"^([^:]+):([0-9a-f]{64})$")
SYNC_CAPABILITIES = "tags,faces,objects,moderation"


def _key_entries(r: _Reader, name: str) -> dict[str, str]:
    """`name:sha256hex,…` → {sha256hex: name}. Only hashes are kept: a leaked setting (a log,
    a screenshot of the portal) does not leak a key."""
    entries: dict[str, str] = {}
    for raw in filter(None, (e.strip() for e in r.text(name, "", secret=True).split(","))):
        match = _KEY_ENTRY.match(raw)
        if not match or not KEY_NAME.match(match.group(1)):
            r.problems.append(
                f"{name}: each entry must be NAME:SHA256 (NAME letters, digits, _ or -, up to "
                "40; SHA256 the key's 64 lowercase hex digits): "
                "`python -m pipeline keys add NAME` prints one"
            )
            continue
        key_name, digest = match.groups()
        if key_name in entries.values():
            r.problems.append(f"{name}: the name {key_name!r} is used twice")
        entries[digest] = key_name
    return entries


@dataclass(frozen=True)
class ApiSettings:
    """Who may call the HTTP API, how much, and what the upload and read URLs allow."""

    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # sha256 → name
    admin_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    entra_tenant_id: str | None = None
    entra_audiences: tuple[str, ...] = ()
    entra_authority: str = "https://login.microsoftonline.com"
    entra_admin_role: str = "Darkroom.Admin"
    cors_origins: tuple[str, ...] = ()
    upload_url_minutes: int = 10
    read_url_minutes: int = 15
    requests_per_minute: int = 120
    request_burst: int = 60
    images_per_day: int = 1000
    failed_sign_ins_per_minute: int = 20  # per client address: enough for a typo, not to guess
    # Proxies in front of the platform's front end (Azure's, or the local host) whose
    # X-Forwarded-For entries are believed: 0 = the address the front end itself saw.
    trusted_proxies: int = 0
    face_searches_per_day: int = 500  # face searches by image per caller per UTC day
    sync_concurrency: int = 2
    sync_max_bytes: int = 8 * 1024 * 1024
    sync_capabilities: tuple[str, ...] = tuple(SYNC_CAPABILITIES.split(","))
    limits_table: str = "darkroomlimits"

    @property
    def entra_enabled(self) -> bool:
        return bool(self.entra_tenant_id and self.entra_audiences)

    @classmethod
    def read(cls, r: _Reader) -> ApiSettings:
        def listed(name: str, default: str = "") -> tuple[str, ...]:
            return tuple(v.strip() for v in r.text(name, default).split(",") if v.strip())

        api_keys = _key_entries(r, "DARKROOM_API_KEYS")
        admin_keys = _key_entries(r, "DARKROOM_ADMIN_KEYS")
        if clash := set(api_keys.values()) & set(admin_keys.values()):
            r.problems.append(
                f"key names {sorted(clash)} are in both DARKROOM_API_KEYS and DARKROOM_ADMIN_KEYS"
            )
        tenant = r.optional("DARKROOM_ENTRA_TENANT_ID")
        audiences = listed("DARKROOM_ENTRA_AUDIENCE")
        if bool(tenant) != bool(audiences):
            r.problems.append(
                "Entra ID sign-in needs both DARKROOM_ENTRA_TENANT_ID and DARKROOM_ENTRA_AUDIENCE"
            )
        origins = listed("DARKROOM_CORS_ORIGINS")
        for origin in origins:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                r.problems.append(
                    f"DARKROOM_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
                )
        capabilities = listed("DARKROOM_SYNC_CAPABILITIES", SYNC_CAPABILITIES)
        if unknown := set(capabilities) - set(CAPABILITY_NAMES):
            r.problems.append(
                f"DARKROOM_SYNC_CAPABILITIES names unknown capabilities {sorted(unknown)}; "
                f"known: {', '.join(CAPABILITY_NAMES)}"
            )
        table = r.text("DARKROOM_LIMITS_TABLE", cls.limits_table)
        if not re.match(r"^[A-Za-z][A-Za-z0-9]{2,62}$", table):
            r.problems.append(
                f"DARKROOM_LIMITS_TABLE must be 3-63 letters and digits, not {table!r}"
            )
        return cls(
            api_keys=api_keys,
            admin_keys=admin_keys,
            entra_tenant_id=tenant,
            entra_audiences=audiences,
            entra_authority=r.text("DARKROOM_ENTRA_AUTHORITY", cls.entra_authority).rstrip("/"),
            entra_admin_role=r.text("DARKROOM_ENTRA_ADMIN_ROLE", cls.entra_admin_role),
            cors_origins=origins,
            upload_url_minutes=r.number(
                "DARKROOM_UPLOAD_URL_MINUTES", cls.upload_url_minutes, minimum=1, maximum=60
            ),
            read_url_minutes=r.number(
                "DARKROOM_READ_URL_MINUTES", cls.read_url_minutes, minimum=1, maximum=24 * 60
            ),
            requests_per_minute=r.number(
                "DARKROOM_RATE_PER_MINUTE", cls.requests_per_minute, minimum=1
            ),
            request_burst=r.number("DARKROOM_RATE_BURST", cls.request_burst, minimum=1),
            images_per_day=r.number("DARKROOM_IMAGES_PER_DAY", cls.images_per_day, minimum=1),
            failed_sign_ins_per_minute=r.number(
                "DARKROOM_FAILED_SIGN_INS_PER_MINUTE", cls.failed_sign_ins_per_minute, minimum=1
            ),
            trusted_proxies=r.number(
                "DARKROOM_TRUSTED_PROXIES", cls.trusted_proxies, minimum=0, maximum=10
            ),
            face_searches_per_day=r.number(
                "DARKROOM_FACE_SEARCHES_PER_DAY", cls.face_searches_per_day, minimum=1
            ),
            sync_concurrency=r.number(
                "DARKROOM_SYNC_CONCURRENCY", cls.sync_concurrency, minimum=1, maximum=64
            ),
            sync_max_bytes=r.number("DARKROOM_SYNC_MAX_BYTES", cls.sync_max_bytes, minimum=1),
            sync_capabilities=tuple(c for c in capabilities if c in CAPABILITY_NAMES),
            limits_table=table,
        )


@dataclass(frozen=True)
class AzureVisionSettings:
    """Azure AI Vision (Image Analysis 4.0): endpoint, optional key (else managed identity)."""

    endpoint: str | None = None
    key: str | None = field(default=None, repr=False)
    model_version: str | None = None  # None: the service's "latest"
    timeout: float = 30.0  # read timeout of one HTTP attempt, seconds
    retries: int = 2  # the SDK's own retries of 429/5xx/connection errors before raising

    @classmethod
    def read(cls, r: _Reader) -> AzureVisionSettings:
        model_version = r.optional("DARKROOM_AZURE_VISION_MODEL_VERSION")
        return cls(
            endpoint=r.optional("DARKROOM_AZURE_VISION_ENDPOINT"),
            key=r.optional("DARKROOM_AZURE_VISION_KEY", secret=True),
            model_version=None if model_version == "latest" else model_version,
            timeout=r.number("DARKROOM_AZURE_VISION_TIMEOUT", 30.0, float, minimum=1),
            retries=r.number("DARKROOM_AZURE_VISION_RETRIES", 2, minimum=0, maximum=10),
        )


CAPABILITY_NAMES = ("tags", "objects", "faces", "text", "moderation")
# Provider names per capability: every capability has `local` (offline, in-process, what
# deploys) and `azure`; text also keeps Tesseract, which needs the apt package (laptop only).
PROVIDER_CHOICES: Mapping[str, tuple[str, ...]] = {
    **{c: ("local", "azure") for c in CAPABILITY_NAMES},
    "text": ("local", "azure", "tesseract"),
}


@dataclass(frozen=True)
class AnalysisSettings:
    """Which capabilities the analyze step runs, who answers each, and their thresholds."""

    capabilities: tuple[str, ...] = CAPABILITY_NAMES
    providers: Mapping[str, str] = field(default_factory=dict)  # capability -> provider name
    tags_top_k: int = 5
    tags_min_score: float = 0.05
    objects_min_score: float = 0.3
    faces_min_score: float = 0.6
    text_language: str = "eng"
    moderation_threshold: float = 0.8
    azure: AzureVisionSettings = field(default_factory=AzureVisionSettings)

    def provider(self, capability: str) -> str:
        return self.providers.get(capability, "local")

    @classmethod
    def read(cls, r: _Reader) -> AnalysisSettings:
        raw = r.text("DARKROOM_ANALYZERS", ",".join(CAPABILITY_NAMES))
        capabilities = tuple(c.strip().lower() for c in raw.split(",") if c.strip())
        if unknown := [c for c in capabilities if c not in CAPABILITY_NAMES]:
            r.problems.append(
                f"DARKROOM_ANALYZERS names unknown capabilities {unknown}; known: "
                f"{', '.join(CAPABILITY_NAMES)}"
            )
            capabilities = tuple(c for c in capabilities if c in CAPABILITY_NAMES)
        providers = {
            capability: r.text(
                f"DARKROOM_{capability.upper()}_PROVIDER", "local", PROVIDER_CHOICES[capability]
            )
            for capability in CAPABILITY_NAMES
        }
        score = {"cast": float, "minimum": 0.0, "maximum": 1.0}
        return cls(
            capabilities=capabilities,
            providers={c: providers[c] for c in capabilities},
            tags_top_k=r.number("DARKROOM_TAGS_TOP_K", 5, minimum=1, maximum=100),
            tags_min_score=r.number("DARKROOM_TAGS_MIN_SCORE", 0.05, **score),
            objects_min_score=r.number("DARKROOM_OBJECTS_MIN_SCORE", 0.3, **score),
            faces_min_score=r.number("DARKROOM_FACES_MIN_SCORE", 0.6, **score),
            text_language=r.text("DARKROOM_TEXT_LANGUAGE", "eng"),
            moderation_threshold=r.number("DARKROOM_MODERATION_THRESHOLD", 0.8, **score),
            azure=AzureVisionSettings.read(r),
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
    results_ttl_seconds: int = 7 * 86_400
    eventgrid_endpoint: str | None = None
    eventgrid_key: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)  # may carry credentials
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 3
    webhook_timeout: float = 10.0
    retain_originals_days: int = 30
    retain_derived_days: int = 365
    retain_claims_days: int = 7

    @classmethod
    def read(cls, r: _Reader) -> PublishSettings:
        raw_keep = r.text("DARKROOM_PUBLISH_KEEP_METADATA", "icc_profile")
        keep = tuple(k.strip().lower() for k in raw_keep.split(",") if k.strip())
        if unknown := set(keep) - set(PUBLISHABLE_METADATA):
            r.problems.append(
                f"DARKROOM_PUBLISH_KEEP_METADATA may name {', '.join(PUBLISHABLE_METADATA)} "
                f"only, not {sorted(unknown)} (GPS and camera serials are never published)"
            )
            keep = tuple(k for k in keep if k in PUBLISHABLE_METADATA)
        webhook_url = r.optional("DARKROOM_WEBHOOK_URL", secret=True)
        webhook_secret = r.optional("DARKROOM_WEBHOOK_SECRET", secret=True)
        if webhook_url and not webhook_secret:
            r.problems.append("DARKROOM_WEBHOOK_URL needs DARKROOM_WEBHOOK_SECRET to sign events")
        return cls(
            container=r.text("DARKROOM_PUBLISHED_CONTAINER", "published"),
            faces=r.text("DARKROOM_ANONYMIZE_FACES", "blur", ("off", "blur", "pixelate")),
            redact_text=r.flag("DARKROOM_REDACT_TEXT", False),
            max_side=r.number("DARKROOM_PUBLISH_MAX_SIDE", 2048, minimum=16, maximum=30_000),
            format=r.text("DARKROOM_PUBLISH_FORMAT", "jpeg", ("jpeg", "webp")),
            quality=r.number("DARKROOM_PUBLISH_QUALITY", 85, minimum=1, maximum=100),
            keep_metadata=keep,
            results_queue=r.text("DARKROOM_RESULTS_QUEUE", "results"),
            # nobody may read the results queue (locally, often nobody does): events expire
            results_ttl_seconds=r.number(
                "DARKROOM_RESULTS_TTL_SECONDS", 7 * 86_400, minimum=60, maximum=7 * 86_400
            ),
            eventgrid_endpoint=r.optional("DARKROOM_EVENTGRID_TOPIC_ENDPOINT"),
            eventgrid_key=r.optional("DARKROOM_EVENTGRID_TOPIC_KEY", secret=True),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_attempts=r.number("DARKROOM_WEBHOOK_ATTEMPTS", 3, minimum=1, maximum=20),
            webhook_timeout=r.number("DARKROOM_WEBHOOK_TIMEOUT", 10.0, float, 0.1, 60),
            retain_originals_days=r.number("DARKROOM_RETAIN_ORIGINALS_DAYS", 30, minimum=1),
            retain_derived_days=r.number("DARKROOM_RETAIN_DERIVED_DAYS", 365, minimum=1),
            retain_claims_days=r.number("DARKROOM_RETAIN_CLAIMS_DAYS", 7, minimum=1),
        )


@dataclass(frozen=True)
class PeopleSettings:
    """Face matching: where faces and people live, and when two faces are one person."""

    faces_container: str = "faces"
    people_container: str = "people"
    match_distance: float = 0.6  # dlib ResNet's documented euclidean threshold (measured: 11)
    min_faces: int = 3  # similar unassigned faces needed before they become a new person
    similar_hamming: int = 10  # perceptual-hash bits apart for /api/images/{id}/similar

    @classmethod
    def read(cls, r: _Reader) -> PeopleSettings:
        return cls(
            faces_container=r.text("DARKROOM_FACES_CONTAINER", cls.faces_container),
            people_container=r.text("DARKROOM_PEOPLE_CONTAINER", cls.people_container),
            match_distance=r.number(
                "DARKROOM_FACE_MATCH_DISTANCE", cls.match_distance, float, 0.05, 2.0
            ),
            min_faces=r.number("DARKROOM_PERSON_MIN_FACES", cls.min_faces, minimum=1, maximum=50),
            similar_hamming=r.number(
                "DARKROOM_SIMILAR_HAMMING", cls.similar_hamming, minimum=0, maximum=64
            ),
        )


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry tracing (pipeline.observability.telemetry): on by default; to Application
    Insights when
    its connection string is set, else to the local collector file in the data folder."""

    enabled: bool = True
    connection_string: str | None = field(default=None, repr=False)

    @classmethod
    def read(cls, r: _Reader) -> TracingSettings:
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
    def read(cls, r: _Reader) -> MetricsSettings:
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
    def read(cls, r: _Reader) -> DriftSettings:
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


def _route(r: _Reader) -> tuple[str, ...]:
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


def _read(env: dict[str, str]) -> tuple[Settings, _Reader]:
    r = _Reader(env)
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
    _read_connection(r, HOST_STORAGE_CONNECTION, STORAGE_SERVICES, on_azure)
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
        storage=_read_connection(r, STORAGE_CONNECTION, STORAGE_SERVICES, on_azure),
        cosmos=_read_connection(r, COSMOS_CONNECTION, ("account",), on_azure),
        identity_client_id=r.optional("AZURE_CLIENT_ID"),
        on_azure=on_azure,
        step_concurrency=r.number(
            "DARKROOM_STEP_CONCURRENCY", _default_slots(env, on_azure), minimum=1, maximum=64
        ),
        settings_file=local_settings_file(r.text(SETTINGS_FILE, "", local_only=True)),
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
    return _route(_Reader(os.environ if env is None else env))


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
