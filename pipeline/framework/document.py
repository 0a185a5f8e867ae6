"""The image document as a typed model, composed from what each step of a route declares.

`results.render` writes the document; this module says what it holds: the pipeline's own fields
(id, status, steps, bookkeeping) plus every field each step's manifest declares in its `output`
model. One place for the API schema, the completion event's summary lines, the CLI's printout
and the page — none of them needs to know any step's fields.

A step's fields are optional in the document: the image may not have reached the step yet, or
stopped before it (rejected, failed). `render` then leaves the field out, null, or `{}`
(`exif`, `derived`, `analysis`), and the model accepts each of those.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache, reduce
from operator import or_
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from pipeline.framework.contract import SCHEMA_VERSION, StepRecord
from pipeline.framework.registry import RouteError, load_step
from pipeline.framework.step_api import StepManifest
from pipeline.stores.results import ImageStatus

log = logging.getLogger("darkroom.document")

SUMMARY_MAX_CHARS = 200


class NotWritten(BaseModel):
    """`{}`: the step that writes this field has not run for this image (or stopped early)."""

    model_config = ConfigDict(extra="forbid")


class DocumentSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    container: str = Field(description="Upload container.")
    name: str = Field(description="Blob name of the upload.")
    size: int | None = Field(
        description="Size in bytes; null for an upload refused by name before it was read."
    )
    content_type: str | None = Field(description="Content type the upload was stored with.")
    etag: str | None = Field(
        description="ETag of the upload this document is for; null for an upload refused by name."
    )


class Pending(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str = Field(description="Step whose queue the image waits on.")
    lane: Literal["live", "backfill"] = Field(description="Queue lane.")
    token: str | None = Field(description="The one message that may move the image on.")
    visible_at: str = Field(description="When the message becomes receivable (UTC, ISO 8601).")


class ChannelOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["sent", "delivered", "failed"] = Field(description="What the channel did.")
    queue: str | None = Field(None, description="Results queue the event went to.")
    attempts: int | None = Field(None, description="Webhook calls made.")
    http_status: int | None = Field(None, description="Webhook receiver's answer.")
    error: str | None = Field(None, description="Why the channel failed.")


class Notifications(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results_queue: ChannelOutcome = Field(description="The results queue (always).")
    event_grid: ChannelOutcome | None = Field(None, description="The Event Grid topic, if set.")
    webhook: ChannelOutcome | None = Field(None, description="The signed webhook, if set.")


class SearchWords(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(
        description="What `GET /api/images?q=` searches: the caption, tag and object names, "
        "read text and model-step labels, as phrases (pipeline.vision.search_words)."
    )
    vector: list[float] | None = Field(
        None,
        description="The caption's meaning (a text embedding), when one is configured; not "
        "in the API's answers.",
    )


class DocumentBase(BaseModel):
    """The fields every image document has, whatever its route."""

    # Open at the top: a document made on an older route keeps the fields of steps this
    # deployment no longer runs. Every declared field is typed; nested models are closed.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(description="Image id: hash of the upload's container and name.")
    schema_version: int = Field(
        alias="schema", description=f"Version of the document format ({SCHEMA_VERSION})."
    )
    status: ImageStatus = Field(
        description="queued → processing → done, or rejected (never retried) or failed."
    )
    reason: str | None = Field(description="Why the image was rejected or failed.")
    source: DocumentSource = Field(description="The uploaded blob.")
    route: list[str] = Field(description="The steps this image goes through, in order.")
    steps: dict[str, StepRecord] = Field(description="Every step as it ran, by step name.")
    ingested_at: str = Field(description="When the upload was taken in (UTC, ISO 8601).")
    updated_at: str = Field(description="Last write of this document (UTC, ISO 8601).")
    pending: Pending | None = Field(
        None, description="The message the image waits for; null once final."
    )
    notifications: Notifications | None = Field(
        None, description="What each completion channel answered; absent until final."
    )
    owner: str | None = Field(None, description="The caller that uploaded the image.")
    search: SearchWords | None = Field(None, description="The words the image is found by.")


def _manifests(route: Iterable[str]) -> list[StepManifest]:
    """The manifests of the route's steps that load. One that does not is left out (its
    fields pass as extra fields): the API must come up to say what is wrong (health)."""
    manifests = []
    for spec in route:
        try:
            manifests.append(load_step(spec).manifest)
        except RouteError as exc:
            log.warning("document model without step %s: %s", spec, exc)
    return manifests


def _document_field(owners: list[tuple[StepManifest, FieldInfo]]) -> tuple[Any, FieldInfo]:
    types = [info.annotation for _, info in owners]
    annotation = reduce(or_, [*types, NotWritten, None])  # type: ignore[arg-type]
    names = ", ".join(f"`{manifest.name}`" for manifest, _ in owners)
    described = " ".join(info.description for _, info in owners if info.description)
    return annotation, Field(
        None, description=f"{described} Written by step {names}; absent, null or {{}} before."
    )


@lru_cache(maxsize=16)
def _document_model(route: tuple[str, ...]) -> type[BaseModel]:
    owners: dict[str, list[tuple[StepManifest, FieldInfo]]] = {}
    for manifest in _manifests(route):
        assert manifest.output is not None
        for key, info in manifest.output.model_fields.items():
            owners.setdefault(info.alias or key, []).append((manifest, info))
    fields = {key: _document_field(found) for key, found in owners.items()}
    return create_model(
        "ImageDocument",
        __base__=DocumentBase,
        __doc__="One image's result: the pipeline's fields and each step's output.",
        **fields,
    )


def document_model(route: Iterable[str]) -> type[BaseModel]:
    """The document model of images on `route` (step names or module paths), e.g.
    `document_model(settings.pipeline_steps)`. A step that does not load is left out.

    For the API schema: `model_json_schema(mode="serialization",
    ref_template="#/components/schemas/{model}")`; dump with `by_alias=True,
    exclude_unset=True` to give back a document exactly as stored."""
    return _document_model(tuple(route))


def _hidden(fields: dict[str, Any], path: str) -> dict[str, Any]:
    """`fields` without the value at dotted `path` (`gps`, `analysis.text`); copies, never
    changes the document."""
    head, _, rest = path.partition(".")
    if head not in fields:
        return fields
    if not rest:
        return {k: v for k, v in fields.items() if k != head}
    inner = fields[head]
    if not isinstance(inner, dict):
        return fields
    return {**fields, head: _hidden(inner, rest)}


def summaries(
    document: Mapping[str, Any], route: Iterable[str] | None = None, hide: Iterable[str] = ()
) -> dict[str, str]:
    """One line per step that has output in `document`, from each manifest's `summarize`.

    `route` defaults to the document's own. `hide`: dotted paths no summary may see (the
    completion event hides `gps` and the OCR text). A step that does not load or whose summary
    raises is left out: a summary is never worth failing an image or an event."""
    lines: dict[str, str] = {}
    for spec in route if route is not None else document.get("route", ()):
        try:
            manifest = load_step(spec).manifest
        except (RouteError, ValueError) as exc:
            log.warning("no summary for step %s: %s", spec, exc)
            continue
        fields = {
            key: document[key] for key in manifest.writes if document.get(key) not in (None, {})
        }
        for path in hide:
            fields = _hidden(fields, path)
        if not fields:
            continue
        try:
            line = manifest.summarize(fields)
        except Exception as exc:  # a custom step's summary must not break its image
            log.warning("summary of step %s failed: %s: %s", manifest.name, type(exc).__name__, exc)
            continue
        if line:
            line = " ".join(str(line).split())
            lines[manifest.name] = (
                line if len(line) <= SUMMARY_MAX_CHARS else line[: SUMMARY_MAX_CHARS - 1] + "…"
            )
    return lines
