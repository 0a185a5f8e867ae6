"""Ingest: a BlobCreated event for the upload container starts an image on its route.

Only metadata is read (the SDK-type binding hands us a BlobClient, not the bytes). The route is
copied into the message here, so a change of `PIPELINE_STEPS` never re-routes images in flight.
Event Grid delivers at least once: the document is written (`queued`) before the first message,
and a repeated event for the same blob version is ignored once the image has moved on.
"""

from __future__ import annotations

import logging

from azure.storage.blob import BlobClient

from pipeline.contract import PipelineMessage, SourceBlob, image_id, utc_now
from pipeline.registry import step_name, validate_route
from pipeline.results import render
from pipeline.runner import StepRunner, runner

log = logging.getLogger("darkroom.ingest")


def start_image(blob: BlobClient, pipeline: StepRunner | None = None) -> str | None:
    """Queue the uploaded blob for the configured route; returns the image id (None if skipped)."""
    pipeline = pipeline or runner()
    settings = pipeline.settings
    if blob.container_name != settings.upload_container:
        log.warning("ignoring blob outside the upload container: %s", blob.url)
        return None
    props = blob.get_blob_properties()
    route = tuple(settings.pipeline_steps)
    validate_route(route, check_steps=False)  # a step that cannot run fails its images there
    source = SourceBlob(
        container=blob.container_name,
        name=blob.blob_name,
        size=props.size,
        content_type=props.content_settings.content_type,
        etag=props.etag,
    )
    message = PipelineMessage(
        id=image_id(source.container, source.name),
        source=source,
        route=route,
        step=route[0],
        ingested_at=utc_now(),
    )
    existing = pipeline.results.get(message.id)
    if (
        existing
        and existing["source"].get("etag") == source.etag
        and (existing["status"] != "queued")
    ):
        log.info("duplicate event for %s (already %s)", message.id, existing["status"])
        return message.id
    pipeline.results.save(render(message, "queued"))
    pipeline.send(message)
    log.info("queued %s as %s for %s", source.name, message.id, [step_name(s) for s in route])
    return message.id
