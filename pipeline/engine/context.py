"""The StepContext the queue path hands to a step: blob storage behind a small protocol."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from pipeline.engine.compute_slots import ComputeSlots
from pipeline.framework.contract import PipelineMessage, owner_of
from pipeline.framework.step_api import (
    ArtifactMissing,
    BlobRef,
    FaceBook,
    FaceEntry,
    FaceVerdict,
    over_byte_limit,
)
from pipeline.people.matching import PeopleBook
from pipeline.settings import Settings
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.embeddings import EmbeddingsStore
from pipeline.stores.erase import erase_blob
from pipeline.stores.faces import FacesStore
from pipeline.stores.storage import get_blob, get_source_blob, put_blob


class BlobStepContext:
    def __init__(
        self,
        clients: AzureClients,
        message: PipelineMessage,
        attempt: int,
        max_attempts: int,
        slots: ComputeSlots | None = None,
    ) -> None:
        self._clients = clients
        # Storage calls give the step's compute slot up while they wait on the network.
        self._slots = slots or ComputeSlots(1)
        self._message = message
        self.image_id = message.id
        self.source_name = message.source.name
        self.source_size = message.source.size
        self.source_content_type = message.source.content_type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.fields: Mapping[str, Any] = message.fields
        self.settings: Settings = clients.settings

    @cached_property
    def faces(self) -> FaceBook:
        """The faces store, as the owner of this image sees it (see pipeline.people.matching); its
        calls are Cosmos round trips, so they give the compute slot up like storage I/O."""
        return _SlotFreeFaceBook(
            PeopleBook(
                FacesStore(self._clients),
                self.settings.people,
                owner_of(self._message.source.name),
                self.image_id,
            ),
            self._slots,
        )

    def read_source(self) -> bytes:
        source = self._message.source
        with self._slots.released():
            return get_source_blob(
                self._clients,
                source.container,
                source.name,
                source.etag,
                self.settings.limits.max_bytes,
            )

    def read_artifact(self, ref: BlobRef | Mapping[str, Any]) -> bytes:
        ref = ref if isinstance(ref, BlobRef) else BlobRef.model_validate(ref)
        try:
            with self._slots.released():
                return get_blob(self._clients, ref.container, ref.name)
        except ResourceNotFoundError as exc:
            raise ArtifactMissing(ref) from exc

    def put_artifact(
        self, name: str, data: bytes, content_type: str, public: bool = False
    ) -> BlobRef:
        # <image id>/<artifact>: deterministic, so a redelivered step overwrites its own output.
        with self._slots.released():
            return put_blob(
                self._clients,
                self.settings.artifact_container(public),
                f"{self.image_id}/{name}",
                data,
                content_type,
            )

    def drop_artifact(self, ref: BlobRef | Mapping[str, Any]) -> None:
        ref = ref if isinstance(ref, BlobRef) else BlobRef.model_validate(ref)
        with self._slots.released():
            erase_blob(self._clients, ref.model_dump())

    def save_vector(self, container: str, model: str, vector: list[float]) -> None:
        owner = owner_of(self._message.source.name)
        with self._slots.released():
            EmbeddingsStore(self._clients, container).save(self.image_id, owner, model, vector)


class _SlotFreeFaceBook:
    def __init__(self, book: FaceBook, slots: ComputeSlots) -> None:
        self._book, self._slots = book, slots

    def record(self, model: str, faces: list[FaceEntry]) -> list[FaceVerdict]:
        with self._slots.released():
            return self._book.record(model, faces)


class MemoryStepContext:
    """A StepContext over bytes in memory: runs a step on a file with no storage at all.

    Used for the synchronous HTTP path (answer at once, nothing written yet) and for testing a
    step on a plain image. Artifacts stay in `artifacts`, keyed by blob name.
    """

    def __init__(
        self,
        settings: Settings,
        image_id: str,
        source_name: str,
        data: bytes,
        fields: Mapping[str, Any] | None = None,
        attempt: int = 1,
        max_attempts: int = 1,
        content_type: str | None = None,
    ) -> None:
        self.settings = settings
        self.image_id = image_id
        self.source_name = source_name
        self.source_size = len(data)
        self.source_content_type = content_type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.fields: Mapping[str, Any] = dict(fields or {})
        self.faces: FaceBook | None = None  # no faces store: faces are embedded, not matched
        self.artifacts: dict[str, bytes] = {}
        self.vectors: dict[str, tuple[str, list[float]]] = {}  # container → (model, vector)
        self._data = data

    def read_source(self) -> bytes:
        if refusal := over_byte_limit(len(self._data), self.settings.limits.max_bytes):
            raise refusal
        return self._data

    def read_artifact(self, ref: BlobRef | Mapping[str, Any]) -> bytes:
        ref = ref if isinstance(ref, BlobRef) else BlobRef.model_validate(ref)
        if ref.name not in self.artifacts:
            raise ArtifactMissing(ref)
        return self.artifacts[ref.name]

    def put_artifact(
        self, name: str, data: bytes, content_type: str, public: bool = False
    ) -> BlobRef:
        blob_name = f"{self.image_id}/{name}"
        self.artifacts[blob_name] = data
        return BlobRef(
            container=self.settings.artifact_container(public),
            name=blob_name,
            content_type=content_type,
            size=len(data),
        )

    def drop_artifact(self, ref: BlobRef | Mapping[str, Any]) -> None:
        ref = ref if isinstance(ref, BlobRef) else BlobRef.model_validate(ref)
        self.artifacts.pop(ref.name, None)

    def save_vector(self, container: str, model: str, vector: list[float]) -> None:
        self.vectors[container] = (model, vector)
