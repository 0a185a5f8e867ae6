"""Ingest: a BlobCreated event for the upload container starts an image on its route.

Only metadata is read (the SDK-type binding hands us a BlobClient, not the bytes). The route is
copied into the message here, so a change of `PIPELINE_STEPS` never re-routes images in flight.
Event Grid delivers at least once: the document is written (`queued`) before the first message,
by a conditional write, so of many deliveries of one event exactly one starts the image; a
repeated event for the same blob version changes nothing.

Before anything reads the bytes, the blob must be a plain client upload of what was promised
(pipeline.stores.uploads): otherwise the image ends `rejected` with the reason and the blob is
deleted.
An API upload URL stands for one blob version: its etag is pinned here (prepare reads with
If-Match on it), and a second version of the name (concurrent PUTs that Azurite lets through
although the SAS is create-only) replaces the first only while no step has taken the first;
after that it is deleted unread, so one upload is processed once and announced once.
"""

from __future__ import annotations

import logging

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient

from pipeline.engine.runner import StepRunner, runner
from pipeline.framework.contract import (
    PipelineMessage,
    SourceBlob,
    blob_name_problem,
    image_id,
    owner_of,
)
from pipeline.framework.registry import step_name, validate_route
from pipeline.observability import metrics, telemetry
from pipeline.stores.results import WriteConflict, refused_upload
from pipeline.stores.uploads import discard_upload, promise_for, upload_problem

log = logging.getLogger("darkroom.ingest")


def _root_attributes(message: PipelineMessage) -> dict:
    return {
        "darkroom.image.id": message.id,
        "darkroom.source.bytes": message.source.size,
        "darkroom.route": ",".join(step_name(s) for s in message.route),
    }


def start_image(blob: BlobClient, pipeline: StepRunner | None = None) -> str | None:
    """Queue the uploaded blob for the configured route; returns the image id (None if skipped)."""
    pipeline = pipeline or runner()
    settings = pipeline.settings
    if blob.container_name != settings.upload_container:
        log.warning("ignoring blob outside the upload container: %r", blob.url)
        return None
    route = tuple(settings.pipeline_steps)
    validate_route(route, check_steps=False)  # a step that cannot run fails its images there
    if problem := blob_name_problem(blob.blob_name):
        # Refused before any request names the blob: a client would resolve `..` in the URL.
        log.warning("refusing upload %r: %s", blob.blob_name, problem)
        source = {
            "id": image_id(blob.container_name, blob.blob_name),
            "container": blob.container_name,
            "name": blob.blob_name,
            "size": None,
            "content_type": None,
            "etag": None,
        }
        pipeline.finish_document(refused_upload(source, list(route), problem))
        metrics.record_image("rejected", "live", None)  # final without any step span
        return source["id"]
    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        # Deleted (or erased through the API) before its event arrived: nothing to start.
        log.info("ignoring an event for %r: the blob is gone", blob.blob_name)
        return None
    source = SourceBlob(
        container=blob.container_name,
        name=blob.blob_name,
        size=props.size,
        content_type=props.content_settings.content_type,
        etag=props.etag,
    )
    message = PipelineMessage.starting(source, route)
    owned = owner_of(source.name) is not None
    problem = upload_problem(
        props,
        promise_for(pipeline.azure, message.id) if owned else None,
        owned,
        settings.limits.max_bytes,
    )
    for _ in range(5):
        existing, version = pipeline.results.get_versioned(message.id)
        if existing and existing["source"].get("etag") == source.etag:
            # Event Grid delivers at least once (and may deliver one event many times at once):
            # this upload already has its document, and with it its first message. A message
            # lost after the write is found by the stall sweep, not by a second delivery.
            log.info("duplicate event for %s (already %s)", message.id, existing["status"])
            if existing["status"] == "rejected":  # a refusal whose delete did not happen yet
                discard_upload(pipeline.azure, source.container, source.name, source.etag)
            return message.id
        if owned and existing and _taken(existing):
            # One upload URL, one blob: this is a second write of the name (concurrent PUTs),
            # and the first is already being processed or done. Its bytes are not what the
            # document describes, so nobody may read them: deleted, the document unchanged.
            log.warning(
                "%s: a second write of %r after the first was taken; deleted",
                message.id,
                source.name,
            )
            discard_upload(pipeline.azure, source.container, source.name, source.etag)
            return message.id
        try:
            if problem is not None:
                _refuse(pipeline, message, problem, version)
                return message.id
            # The image's trace starts here; its first message carries it to the first step.
            with telemetry.span("ingest", _root_attributes(message), root=True):
                pipeline.dispatch(message, "queued", version=version)
        except WriteConflict:
            continue  # a concurrent delivery (or a newer upload) wrote first: look again
        log.info("queued %r as %s for %s", source.name, message.id, [step_name(s) for s in route])
        return message.id
    raise RuntimeError(f"{message.id}: document kept changing while ingesting; Event Grid retries")


def _taken(document: dict) -> bool:
    """Has a step started on the document's upload (or the image ended)? Until then a newer
    version of the name may replace it: no step has read the older one's bytes yet."""
    return document["status"] != "queued" or bool(document.get("steps"))


def _refuse(pipeline: StepRunner, message: PipelineMessage, reason: str, version) -> None:
    """End the image `rejected` before any step reads it, then delete its bytes. The document
    first: a crash between the two leaves a rejected document whose redelivered event finds it
    and deletes the bytes then."""
    source = message.source
    log.warning("refusing upload %s (%r): %s", message.id, source.name, reason)
    document = refused_upload(
        {"id": message.id, **source.model_dump()}, list(message.route), reason
    )
    pipeline.finish_document(document, version)
    discard_upload(pipeline.azure, source.container, source.name, source.etag)
    metrics.record_image("rejected", "live", None)  # final without any step span
