"""Who may call the HTTP API, how much, and what its upload and read URLs allow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.setting_reader import SettingReader
from pipeline.vision.capabilities import capabilities

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_KEY_ENTRY = re.compile(r"^([^:]+):([0-9a-f]{64})$")


def _key_entries(r: SettingReader, name: str) -> dict[str, str]:
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
    # what the sync path answers; default: the capabilities that declare themselves fast enough
    # model steps right after analyze in the route that the sync path runs too
    sync_model_steps: tuple[str, ...] = ()
    sync_capabilities: tuple[str, ...] = field(
        default_factory=lambda: tuple(c.name for c in capabilities().values() if c.sync)
    )
    limits_table: str = "darkroomlimits"

    @property
    def entra_enabled(self) -> bool:
        return bool(self.entra_tenant_id and self.entra_audiences)

    @classmethod
    def read(cls, r: SettingReader) -> ApiSettings:
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
        declared = capabilities()
        fast = ",".join(c.name for c in declared.values() if c.sync)
        sync = listed("DARKROOM_SYNC_CAPABILITIES", fast)
        if unknown := set(sync) - set(declared):
            r.problems.append(
                f"DARKROOM_SYNC_CAPABILITIES names unknown capabilities {sorted(unknown)}; "
                f"known: {', '.join(declared)}"
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
            sync_capabilities=tuple(c for c in sync if c in declared),
            sync_model_steps=listed("DARKROOM_SYNC_MODEL_STEPS"),
            limits_table=table,
        )
