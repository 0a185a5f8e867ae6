"""Stand-in for Event Grid: watch the upload container, post BlobCreated events to the webhook.

Azurite raises no events, so new blobs are found by listing. An event counts as delivered only
when the webhook answered 2xx (as Event Grid does), and the delivered (name, etag) pairs are kept
on disk, so a restart neither loses an upload nor announces it twice.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
import uuid
from pathlib import Path

from azure.storage.blob import ContainerClient

from pipeline.contract import utc_now

log = logging.getLogger("darkroom.host.eventgrid")


def blob_created_event(
    account: str,
    container: str,
    name: str,
    url: str,
    etag: str,
    content_type: str | None,
    size: int,
) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "topic": f"/subscriptions/local/resourceGroups/local/providers/"
        f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": utc_now(),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {
            "api": "PutBlob",
            "eTag": etag.strip('"'),
            "contentType": content_type or "application/octet-stream",
            "contentLength": size,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": "0",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
    }


class BlobEventSource(threading.Thread):
    def __init__(
        self,
        container: ContainerClient,
        webhook: str,
        state_file: Path,
        stop: threading.Event,
        interval: float = 0.5,
    ) -> None:
        super().__init__(name=f"eventgrid-{container.container_name}", daemon=True)
        self.container, self.webhook, self.state_file = container, webhook, state_file
        self.stop, self.interval = stop, interval
        self.delivered: dict[str, str] = (
            json.loads(state_file.read_text()) if state_file.exists() else {}
        )

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:  # emulator restarting, host busy: try on the next tick
                log.warning("event source for %s: %s", self.container.container_name, exc)

    def poll_once(self) -> int:
        sent = 0
        try:
            blobs = list(self.container.list_blobs())
        except Exception as exc:
            if "ContainerNotFound" in str(exc):
                return 0
            raise
        try:
            for blob in blobs:
                if self.stop.is_set():
                    break
                if self.delivered.get(blob.name) == blob.etag:
                    continue
                url = self.container.get_blob_client(blob.name).url
                event = blob_created_event(
                    self.container.account_name,
                    self.container.container_name,
                    blob.name,
                    url,
                    blob.etag,
                    blob.content_settings.content_type,
                    blob.size,
                )
                self._post([event])
                self.delivered[blob.name] = blob.etag
                sent += 1
        finally:
            if sent:
                self._save()
        return sent

    def _post(self, events: list[dict]) -> None:
        request = urllib.request.Request(
            self.webhook,
            data=json.dumps(events).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.delivered))
        tmp.replace(self.state_file)
