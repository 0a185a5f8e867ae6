"""What a published derivative may look like and carry, how long things are kept, and who hears
about finished images (the results queue, Event Grid, a signed webhook)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.setting_reader import SettingReader

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
    def read(cls, r: SettingReader) -> PublishSettings:
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
