"""Erasing an image (the GDPR path): the original, every blob made from it, and its document.

Order makes it safe against a step still working on the image:
1. an erasure marker (image id, owner, time; no image data) goes into the API's Table, so a
   message of the image that arrives later finds no document, sees the marker and is dropped;
2. the document is deleted: a step already running cannot record (the runner's record is
   conditional on the document it read, which is gone) and erases what it just wrote instead;
3. the original is deleted, so no step can read it again;
4. every blob under `<image id>/` in the derived, published and claims containers is deleted;
   its faces (embeddings) leave the faces store with the document.
Each part tolerates what is already gone, so erasing twice is erasing once.
"""

from __future__ import annotations

import contextlib
import logging

from azure.core.exceptions import ResourceNotFoundError

from pipeline.framework.contract import utc_now
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.embeddings import EmbeddingsStore
from pipeline.stores.faces import FacesStore
from pipeline.stores.results import ResultsStore
from pipeline.stores.table_entities import change_entity

log = logging.getLogger("darkroom.erase")
MARKERS = "erased"  # partition of the API's table (DARKROOM_LIMITS_TABLE) holding the markers


def _table(azure: AzureClients):
    return azure.table_service.get_table_client(azure.settings.api.limits_table)


def mark_erased(azure: AzureClients, image_id: str, owner: str | None) -> None:
    marker = {"owner": owner or "", "at": utc_now()}
    change_entity(
        azure.table_service, azure.settings.api.limits_table, MARKERS, image_id, lambda _: marker
    )


def erased_by(azure: AzureClients, image_id: str) -> str | None:
    """The owner recorded when the image was erased ("" if it had none), None if never erased."""
    try:
        return str(_table(azure).get_entity(MARKERS, image_id).get("owner", ""))
    except ResourceNotFoundError:
        return None


def erase_blob(azure: AzureClients, ref: dict | None) -> bool:
    """Delete one blob a document names (`{container, name}`); False if it was not there."""
    if not ref or not ref.get("container") or not ref.get("name"):
        return False
    blob = azure.blob_service.get_blob_client(ref["container"], ref["name"])
    try:
        blob.delete_blob(delete_snapshots="include")
    except ResourceNotFoundError:
        return False
    return True


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
    """Marker, document, blobs; the caller has checked ownership."""
    mark_erased(azure, image_id, document.get("owner"))
    faces = FacesStore(azure)
    owner = document.get("owner")
    faces.delete_faces(owner, [f["id"] for f in faces.faces_of(owner, image=image_id)])
    for spec in azure.settings.model_steps.values():
        if spec.container:  # an embedding step's vector of this image
            EmbeddingsStore(azure, spec.container).delete(image_id, owner)
    store.delete(image_id)
    count = erase_blobs(azure, image_id, document.get("source"))
    log.info("%s erased: %d blob(s)", image_id, count)
    return count
