"""Erasing an image (the GDPR path): the original, every blob made from it, and its document.

Order makes it safe against a step still working on the image:
1. the document becomes a tombstone (`status: deleted`, no source etag, no personal data) — so
   every message of the image is stale from now on, and a step that finishes after this cannot
   record (the runner's record is conditional on the document it read; see `pipeline.runner`),
   and erases what it just wrote instead;
2. the original is deleted, so no step can read it again;
3. every blob under `<image id>/` in the derived, published and claims containers is deleted.
Each part tolerates what is already gone, so erasing twice is erasing once.
The tombstone keeps the id and the owner only; `TOMBSTONE_TTL_SECONDS` lets Cosmos drop it where the
container has TTL enabled.
"""

from __future__ import annotations

import contextlib
import logging

from azure.core.exceptions import ResourceNotFoundError

from pipeline.azure_clients import AzureClients
from pipeline.contract import SCHEMA_VERSION, utc_now
from pipeline.results import ResultsStore

log = logging.getLogger("darkroom.erase")
TOMBSTONE_TTL_SECONDS = 30 * 86_400
DELETED = "deleted"


def tombstone(image_id: str, owner: str | None) -> dict:
    """What is left: the id and its owner (so erasing again answers the same), nothing else."""
    return {
        "id": image_id,
        "owner": owner,
        "schema": SCHEMA_VERSION,
        "status": DELETED,
        "reason": "erased on request",
        "source": {},
        "deleted_at": utc_now(),
        "pending": None,
        "ttl": TOMBSTONE_TTL_SECONDS,
    }


def erase_blobs(azure: AzureClients, image_id: str, source: dict | None) -> int:
    """Delete the original (if named) and every blob under `<image id>/`; returns the count."""
    settings = azure.settings
    deleted = 0
    if source and source.get("container") and source.get("name"):
        blob = azure.blob_service.get_blob_client(source["container"], source["name"])
        with contextlib.suppress(ResourceNotFoundError):
            blob.delete_blob(delete_snapshots="include")
            deleted += 1
    containers = {settings.derived_container, settings.publish.container, settings.claims_container}
    for container in containers:
        client = azure.blob_service.get_container_client(container)
        try:
            names = [b.name for b in client.list_blobs(name_starts_with=f"{image_id}/")]
        except ResourceNotFoundError:
            continue
        for name in names:
            with contextlib.suppress(ResourceNotFoundError):
                client.delete_blob(name, delete_snapshots="include")
                deleted += 1
    return deleted


def erase_image(azure: AzureClients, store: ResultsStore, image_id: str, document: dict) -> int:
    """Tombstone, then blobs; the caller has checked ownership."""
    store.save(tombstone(image_id, document.get("owner")))
    count = erase_blobs(azure, image_id, document.get("source"))
    log.info("%s erased: %d blob(s)", image_id, count)
    return count
