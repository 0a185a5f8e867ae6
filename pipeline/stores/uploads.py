"""What an upload promised, and whether the blob that arrived keeps that promise.

An upload URL (create-only SAS) lets its holder write one blob name, but a SAS cannot pin what
is written there: its size, its content type, its blob type, or whether its bytes came from
the client at all (`PUT` with `x-ms-copy-source` is a server-side copy, Copy Blob or Put Blob
From URL, and a create-only SAS allows it). So `POST /api/uploads` (and the sync path) record
the promise server-side, in the API's table (`DARKROOM_LIMITS_TABLE`, partition `uploads`, one
row per image id); the blob's own metadata is the client's to set and proves nothing.

Ingest compares the blob with that record before any step reads it (`upload_problem`):
a block blob, never the destination of a copy (the `x-ms-copy-*` properties Azure and Azurite
keep on a copied blob — the same fact a BlobCreated event's `data.api` = `CopyBlob` tells, but
read from the blob, since the Functions blob trigger hands over the blob, not the event), within
the byte limit, and for an API upload exactly the declared size and content type. A refused
upload ends `rejected` with the reason and its bytes are deleted (`discard_upload`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobProperties, BlobType

from pipeline.framework.step_api import over_byte_limit
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.table_entities import change_entity

GRANTS = "uploads"  # partition of the API's table holding the upload promises


@dataclass(frozen=True)
class UploadPromise:
    """What the caller declared when it asked for the upload URL."""

    name: str
    size: int
    content_type: str


def record_promise(azure: AzureClients, image_id: str, promise: UploadPromise) -> None:
    """Before the URL (or the sync path's own write) exists, so ingest always finds it."""
    fields = {"name": promise.name, "size": promise.size, "content_type": promise.content_type}
    change_entity(
        azure.table_service, azure.settings.api.limits_table, GRANTS, image_id, lambda _: fields
    )


def promise_for(azure: AzureClients, image_id: str) -> UploadPromise | None:
    table = azure.table_service.get_table_client(azure.settings.api.limits_table)
    try:
        row = table.get_entity(GRANTS, image_id)
    except ResourceNotFoundError:
        return None
    return UploadPromise(str(row["name"]), int(row["size"]), str(row["content_type"]))


def _copied(props: BlobProperties) -> bool:
    copy = props.copy
    return bool(copy and (copy.id or copy.source or copy.status))


def upload_problem(
    props: BlobProperties, promise: UploadPromise | None, owned: bool, max_bytes: int
) -> str | None:
    """Why this blob is not a plain client upload of what was promised, or None.

    `owned`: the name is an API upload's (`<owner>/<upload id>/<file>`), which exists only
    through a promise; operators' uploads (other names) have none and skip that part. The
    reasons never state the blob's real size or type: after a copy those are another's."""
    if props.blob_type != BlobType.BLOCKBLOB:
        kind = getattr(props.blob_type, "value", props.blob_type)
        return f"a {kind} is not an upload: only block blobs are taken"
    if _copied(props):
        return "the blob was copied server-side (x-ms-copy-source), not uploaded: refused"
    if refusal := over_byte_limit(props.size, max_bytes):
        return refusal.reason
    if not owned:
        return None
    if promise is None or promise.name != props.name:
        return "no upload URL was issued for this blob"
    if props.size != promise.size:
        return f"the upload is not the {promise.size:,} bytes declared for it"
    if (props.content_settings.content_type or "") != promise.content_type:
        return f"the upload's content type is not the {promise.content_type} declared for it"
    return None


def discard_upload(azure: AzureClients, container: str, name: str, etag: str | None) -> None:
    """Delete a refused upload's bytes: only the version refused (`etag`), so a newer write of
    the name, which gets its own event and its own check, is not deleted by mistake."""
    blob = azure.blob_service.get_blob_client(container, name)
    conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
        blob.delete_blob(delete_snapshots="include", **conditions)
