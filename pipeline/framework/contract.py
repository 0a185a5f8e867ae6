"""The message contract between steps: versioned JSON, validated on receipt.

A message carries everything the next step needs — the image's identity, its source blob, the
route it was given at ingest, and the document fields gathered so far — so that a step never has
to read Cosmos to do its work and in-flight messages keep their route when `PIPELINE_STEPS`
changes. Messages over the queue limit travel by claim check (see `pipeline.engine.claim_check`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.framework.step_api import step_name

SCHEMA_VERSION = 1

# A storage-queue message holds 64 KiB; base64 inflates by 4/3, so 48 KiB of JSON is the most
# a message may carry before it must go by claim check.
MAX_MESSAGE_JSON_BYTES = 49_152

StepStatus = Literal["done", "rejected", "failed", "retrying"]


class InvalidMessage(ValueError):
    """The bytes on the queue are not a message of this contract: retrying cannot help."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def image_id(container: str, name: str) -> str:
    """One image per uploaded blob: the same upload path always maps to the same document.

    Derived from the path rather than random so that a redelivered Event Grid event, a second
    `submit` of the same file, and `show <name>` all land on the same id.
    """
    return hashlib.sha256(f"{container}/{name}".encode()).hexdigest()[:32]


# Uploads made through the API are named `<owner>/<upload id>/<file name>`, the owner being the
# caller (`key-<name>` or `entra-<object id>`): the name is fixed by the SAS the API issued, so
# it is a record of who uploaded the blob that the uploader cannot change.
OWNED_NAME = re.compile(r"^((?:key|entra)-[A-Za-z0-9_-]{1,64})/[0-9a-f]{32}/[^/]+$")


def owner_of(blob_name: str) -> str | None:
    """The caller that owns an upload, or None (uploaded by an operator, not through the API)."""
    match = OWNED_NAME.match(blob_name)
    return match.group(1) if match else None


_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))


def blob_name_problem(name: str) -> str | None:
    """Why a blob name cannot be an upload's name, or None.

    `.`/`..` segments would let a name reach outside the upload container once a client joins
    it into a URL (`uploads/../derived/x` is `derived/x`); control characters are refused by
    Azure's listings and forge log lines."""
    if not name or len(name) > 1024:
        return "blob name must have 1 to 1024 characters"
    if name.startswith("/") or "\\" in name:
        return "blob name must not start with / or contain a backslash"
    if any(segment in (".", "..") for segment in name.split("/")):
        return "blob name must not contain . or .. path segments"
    if _CONTROL.intersection(name):
        return "blob name contains control characters"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceBlob(_Strict):
    container: str
    name: str
    size: int = Field(ge=0)
    content_type: str | None = None
    etag: str

    @model_validator(mode="after")
    def _safe_name(self) -> SourceBlob:
        if problem := blob_name_problem(self.name):
            raise ValueError(problem)
        return self


class StepRecord(_Strict):
    status: StepStatus
    # Wall time of the delivery minus waiting for a compute slot (pipeline.engine.compute_slots).
    duration_ms: float = Field(ge=0)
    # CPU time of the step's thread, storage I/O inside the step, and time spent waiting for a
    # compute slot; absent on records written before they were measured.
    cpu_ms: float | None = Field(None, ge=0)
    io_ms: float | None = Field(None, ge=0)
    wait_ms: float | None = Field(None, ge=0)
    attempts: int = Field(ge=1)
    version: str
    reason: str | None = None
    finished_at: str


class PipelineMessage(_Strict):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    id: str = Field(min_length=1, max_length=128)
    source: SourceBlob
    route: tuple[str, ...] = Field(min_length=1)
    step: str
    attempt: int = Field(1, ge=1)
    lane: Literal["live", "backfill"] = "live"
    fields: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    ingested_at: str
    # Which send this is: the document names the one message that may move the image on
    # (`pending.token`); a copy left over from before a resume or a redelivery is dropped.
    token: str | None = Field(None, max_length=64)
    # How often the image went back to an earlier step to rebuild a missing artifact.
    rewinds: int = Field(0, ge=0)
    # The image's trace (pipeline.observability.telemetry): the W3C `traceparent` of the span that
    # sent this
    # message, and its `tracestate`. Optional, so messages from before tracing stay valid; a
    # malformed value is ignored on receipt (the step starts a new trace), never poison.
    trace: str | None = Field(None, max_length=256)
    tracestate: str | None = Field(None, max_length=512)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _step_on_route(self) -> PipelineMessage:
        if self.step not in self.route:
            raise ValueError(f"step {self.step!r} is not on the message's route {self.route}")
        if self.id != image_id(self.source.container, self.source.name):
            raise ValueError("id is not the image id of its source blob")
        return self

    @classmethod
    def starting(cls, source: SourceBlob, route: tuple[str, ...]) -> PipelineMessage:
        """The first message of a new upload: its route's first step, ingested now."""
        return cls(
            id=image_id(source.container, source.name),
            source=source,
            route=route,
            step=route[0],
            ingested_at=utc_now(),
        )

    def next_step(self) -> str | None:
        i = self.route.index(self.step)
        return self.route[i + 1] if i + 1 < len(self.route) else None

    def with_result(self, record: StepRecord, fields: dict[str, Any]) -> PipelineMessage:
        return self.model_copy(
            update={
                "fields": {**self.fields, **fields},
                "steps": {**self.steps, step_name(self.step): record},
            }
        )

    def routed_to(self, step: str) -> PipelineMessage:
        return self.model_copy(update={"step": step, "attempt": 1})

    def retried(self, record: StepRecord) -> PipelineMessage:
        """The same step again, one attempt later (attempts include host redeliveries)."""
        return self.model_copy(
            update={
                "attempt": record.attempts + 1,
                "steps": {**self.steps, step_name(self.step): record},
            }
        )

    def rewound_to(self, step: str) -> PipelineMessage:
        """Back to an earlier step of the route, whose output must be made again."""
        return self.model_copy(update={"step": step, "attempt": 1, "rewinds": self.rewinds + 1})

    def with_trace(self, carrier: dict[str, str]) -> PipelineMessage:
        """Carry the trace context in `carrier` (W3C headers); {} keeps the message's own."""
        if not carrier.get("traceparent"):
            return self
        return self.model_copy(
            update={"trace": carrier["traceparent"], "tracestate": carrier.get("tracestate")}
        )

    def with_new_token(self) -> PipelineMessage:
        return self.model_copy(update={"token": uuid.uuid4().hex})

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> PipelineMessage:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise InvalidMessage(f"message does not match schema {SCHEMA_VERSION}: {exc}") from exc


class ClaimCheck(_Strict):
    """What travels on the queue instead of a message too large for it."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    claim_check: str  # blob name in the claims container
    id: str
    step: str
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
