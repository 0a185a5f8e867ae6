"""The StepContext the queue path hands to a step: blob storage behind a small protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.azure_clients import AzureClients
from pipeline.contract import PipelineMessage
from pipeline.settings import Settings
from pipeline.step_api import BlobRef
from pipeline.storage import get_blob, get_source_blob, put_blob


class BlobStepContext:
    def __init__(self, clients: AzureClients, message: PipelineMessage, attempt: int) -> None:
        self._clients = clients
        self._message = message
        self.image_id = message.id
        self.source_name = message.source.name
        self.source_size = message.source.size
        self.source_content_type = message.source.content_type
        self.attempt = attempt
        self.fields: Mapping[str, Any] = message.fields
        self.settings: Settings = clients.settings

    def read_source(self) -> bytes:
        source = self._message.source
        return get_source_blob(
            self._clients, source.container, source.name, source.etag,
            self.settings.limits.max_bytes,
        )

    def read_artifact(self, ref: BlobRef | Mapping[str, Any]) -> bytes:
        ref = ref if isinstance(ref, BlobRef) else BlobRef.model_validate(ref)
        return get_blob(self._clients, ref.container, ref.name)

    def put_artifact(self, name: str, data: bytes, content_type: str) -> BlobRef:
        # <image id>/<artifact>: deterministic, so a redelivered step overwrites its own output.
        return put_blob(
            self._clients, self.settings.derived_container, f"{self.image_id}/{name}",
            data, content_type,
        )
