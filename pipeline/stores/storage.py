"""Blob and queue operations the pipeline needs, with the Functions conventions built in.

Queue payloads are base64 (what the Functions queue trigger decodes by default). Containers and
queues are created on first use when missing, so a new custom step's queue or a first poison
message never fails an image; in Azure, Bicep creates the fixed ones up front.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from typing import TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from pipeline.framework.step_api import BlobRef, ImageRejected, SourceChanged, over_byte_limit
from pipeline.observability import metrics
from pipeline.stores.azure_clients import AzureClients

T = TypeVar("T")


def _create_and_retry(create: Callable[[], object], action: Callable[[], T]) -> T:
    try:
        return action()
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceExistsError):
            create()
        return action()


def put_blob(
    clients: AzureClients, container: str, name: str, data: bytes, content_type: str
) -> BlobRef:
    blob = clients.blob_service.get_blob_client(container, name)
    _create_and_retry(
        lambda: clients.blob_service.create_container(container),
        lambda: blob.upload_blob(
            data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        ),
    )
    return BlobRef(container=container, name=name, content_type=content_type, size=len(data))


def get_blob(clients: AzureClients, container: str, name: str) -> bytes:
    return clients.blob_service.get_blob_client(container, name).download_blob().readall()


def get_source_blob(
    clients: AzureClients, container: str, name: str, etag: str, max_bytes: int
) -> bytes:
    """Download the upload exactly as announced: same etag, within the byte limit."""
    blob = clients.blob_service.get_blob_client(container, name)
    try:
        props = blob.get_blob_properties(etag=etag, match_condition=MatchConditions.IfNotModified)
        if refusal := over_byte_limit(props.size, max_bytes):
            raise refusal
        return blob.download_blob(
            etag=etag, match_condition=MatchConditions.IfNotModified
        ).readall()
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        # If-Match on a deleted blob also answers 412, so ask which of the two it was.
        if not blob.exists():
            raise ImageRejected("the upload was deleted before it could be processed") from exc
        raise SourceChanged(f"{container}/{name} was replaced after this message was made") from exc


def encode_queue_payload(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def decode_queue_payload(content: str) -> bytes:
    return base64.b64decode(content, validate=True)


def send_to_queue(
    clients: AzureClients,
    queue: str,
    body: bytes,
    visibility_timeout: int | None = None,
    time_to_live: int | None = None,
) -> None:
    client = clients.queue_service.get_queue_client(queue)
    if queue.endswith("-poison"):
        metrics.count_poisoned(queue)  # every poisoning the app does passes here
    _create_and_retry(
        client.create_queue,
        lambda: client.send_message(
            encode_queue_payload(body),
            visibility_timeout=visibility_timeout or None,
            time_to_live=time_to_live,
        ),
    )
