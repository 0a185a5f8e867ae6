"""The faces store: one Cosmos DB document per detected face, searched by vector distance.

Containers (partition key `/owner`, so one caller's search stays in one partition):
- `faces` (DARKROOM_FACES_CONTAINER): `{id: face id, owner, image, face (index into
  analysis.faces), box, embedding, model, person, usable, reason, created_at}`; the embedding
  lives here only — never in the image document, a message, the published derivative or an
  event. The vector embedding policy and index on `/embedding` are declared in Bicep (and by
  `local/provision.py` for the emulator, which evaluates the same query).
- `people` (DARKROOM_PEOPLE_CONTAINER): `{id, owner, model, name, created_at, updated_at}`, and
  for a person who withdrew consent, `template` and `withdrawn_at` instead (see
  pipeline.people.matching).

Every search names the model version: embeddings of different models are never compared
(a model upgrade re-embeds through `reprocess`). Face ids are derived from (image, face index,
model), so a redelivered recognition message rewrites the same documents.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from pipeline.framework.contract import utc_now
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.table_entities import Contended, change_entity

LOCK_SECONDS = 30  # longer than matching one image's faces or one merge takes
WRITE_ATTEMPTS = 8  # conditional writes of one face before giving up (PeopleChanged)
NO_OWNER = "_"  # the partition of images uploaded without the API (operators)
METRIC = (
    "euclidean"  # the embedder's distance on raw vectors (pipeline.vision.local.face_embedding)
)
EMBEDDING_PATH = "/embedding"
TEMPLATE_PATH = "/template"


def partition(owner: str | None) -> str:
    return owner or NO_OWNER


def vector_policies(path: str, dimensions: int, metric: str) -> tuple[dict, dict]:
    """(vector embedding policy, indexing policy) for a container searched on `path`."""
    embedding = {
        "vectorEmbeddings": [
            {
                "path": path,
                "dataType": "float32",
                "distanceFunction": metric,
                "dimensions": dimensions,
            }
        ]
    }
    indexing = {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": f"{path}/*"}, {"path": '/"_etag"/?'}],
        "vectorIndexes": [{"path": path, "type": "quantizedFlat"}],
    }
    return embedding, indexing


def ensure_containers(azure: AzureClients, dimensions: int, metric: str) -> None:
    """Create the faces and people containers with their vector policies (laptop; Bicep on
    Azure, where the identity has data-plane roles only)."""
    settings = azure.settings
    database = azure.cosmos.get_database_client(settings.cosmos_database)
    for name, path in (
        (settings.people.faces_container, EMBEDDING_PATH),
        (settings.people.people_container, TEMPLATE_PATH),
    ):
        embedding, indexing = vector_policies(path, dimensions, metric)
        database.create_container_if_not_exists(
            name,
            partition_key=PartitionKey(path="/owner"),
            indexing_policy=indexing,
            vector_embedding_policy=embedding,
        )


def _public(item: dict, etag: bool = False) -> dict:
    """Without Cosmos system properties; with `etag`, `_etag` stays for a conditional write."""
    return {k: v for k, v in item.items() if not k.startswith("_") or (etag and k == "_etag")}


class _Held(Exception):
    pass


class NoSuchPerson(LookupError):
    """The person does not exist (any more), or withdrew consent: nothing may point at it."""


class PeopleChanged(RuntimeError):
    """Others changed the same faces or people on every attempt: try again later."""


ANYONE = object()  # set_person's `only_from` default: whoever the face points at now


@contextlib.contextmanager
def owner_lock(azure: AzureClients, owner: str | None, wait: float = 30.0) -> Iterator[None]:
    """One writer of faces and people at a time per owner, across every instance: two images
    of the same new person recognised at the same moment would otherwise each start a person
    of their own, and two merges in opposite directions would each delete the other's person.

    A lease entity in the app's table (`until`, `holder`), taken only when free or expired
    (a write conditional on the entity's ETag: see pipeline.stores.table_entities), so a holder that
    died frees the owner after `LOCK_SECONDS`. Released only by its holder: a holder that
    outlived its lease must not free the lease another instance has taken since."""
    tables, table = azure.table_service, azure.settings.api.limits_table
    pk, rk = "facelock", partition(owner)
    me = uuid.uuid4().hex
    deadline = time.monotonic() + wait

    def claim(current: dict | None) -> dict:
        now = time.time()
        if current is not None and float(current.get("until", 0)) > now:
            raise _Held
        return {"until": now + LOCK_SECONDS, "holder": me}

    def release(current: dict | None) -> dict | None:
        if current is None or current.get("holder") != me:
            return None  # expired and taken by another: theirs now
        return {"until": 0.0, "holder": ""}

    while True:
        try:
            change_entity(tables, table, pk, rk, claim)
            break
        except (_Held, Contended):
            if time.monotonic() > deadline:
                raise TimeoutError(f"faces of {rk} are being matched elsewhere") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        change_entity(tables, table, pk, rk, release)


class FacesStore:
    def __init__(self, azure: AzureClients) -> None:
        self.azure = azure
        settings = azure.settings
        database = azure.cosmos.get_database_client(settings.cosmos_database)
        self.faces: ContainerProxy = database.get_container_client(settings.people.faces_container)
        self.people: ContainerProxy = database.get_container_client(
            settings.people.people_container
        )

    # -- faces -------------------------------------------------------------------------------
    def query(
        self,
        container: ContainerProxy,
        sql: str,
        params: dict[str, Any],
        owner: str | None,
        etag: bool = False,
    ) -> list[dict]:
        """A query within the owner's partition (the SQL names `c.owner = @owner` too: the
        local emulator takes the partition key from the WHERE clause). `etag`: rows keep
        `_etag`, for a write conditional on them."""
        return [
            _public(item, etag)
            for item in container.query_items(
                sql,
                parameters=[{"name": k, "value": v} for k, v in params.items()],
                partition_key=partition(owner),
            )
        ]

    def get_faces(
        self, owner: str | None, ids: Iterable[str], etag: bool = False
    ) -> dict[str, dict]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self.query(
            self.faces,
            "SELECT * FROM c WHERE c.owner = @owner AND ARRAY_CONTAINS(@ids, c.id)",
            {"@owner": partition(owner), "@ids": ids},
            owner,
            etag,
        )
        return {row["id"]: row for row in rows}

    def upsert_face(self, document: dict) -> None:
        self.faces.upsert_item(document)

    def write_face(self, document: dict, etag: str | None) -> None:
        """Create the face (`etag` None) or replace it only if unchanged since read with `etag`
        (PeopleChanged otherwise): the person a face points at is never overwritten by a
        write that did not see the last change to it."""
        try:
            if etag is None:
                self.faces.create_item(document)
            else:
                self.faces.replace_item(
                    document["id"],
                    document,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (
            CosmosAccessConditionFailedError,
            CosmosResourceExistsError,
            CosmosResourceNotFoundError,
        ):
            raise PeopleChanged(f"face {document['id']} changed meanwhile") from None

    def nearest(
        self,
        owner: str | None,
        model: str,
        embedding: list[float],
        k: int,
        assigned: bool | None = None,
        exclude_image: str | None = None,
    ) -> list[dict]:
        """The `k` most similar usable faces of the owner's, by one vector query that real
        Cosmos DB and the local emulator both evaluate. `distance` is VectorDistance's."""
        where = ["c.owner = @owner", "c.model = @model", "c.usable = true"]
        params: dict[str, Any] = {
            "@owner": partition(owner),
            "@model": model,
            "@q": embedding,
            "@k": k,
        }
        if assigned is True:
            where.append("IS_STRING(c.person)")
        elif assigned is False:
            where.append("NOT IS_STRING(c.person)")
        if exclude_image:
            where.append("c.image != @image")
            params["@image"] = exclude_image
        sql = (
            "SELECT TOP @k c.id, c.image, c.face, c.person, c.box, "
            "VectorDistance(c.embedding, @q) AS distance "
            f"FROM c WHERE {' AND '.join(where)} ORDER BY VectorDistance(c.embedding, @q)"
        )
        return self.query(self.faces, sql, params, owner)

    def faces_of(self, owner: str | None, *, image: str | None = None, person: str | None = None):
        where, params = ["c.owner = @owner"], {"@owner": partition(owner)}
        if image:
            where.append("c.image = @image")
            params["@image"] = image
        if person:
            where.append("c.person = @person")
            params["@person"] = person
        sql = (
            "SELECT c.id, c.image, c.face, c.box, c.person, c.model, c.usable, c.reason, "
            f"c.created_at FROM c WHERE {' AND '.join(where)}"
        )
        return self.query(self.faces, sql, params, owner)

    def set_person(
        self,
        owner: str | None,
        ids: Iterable[str],
        person: str | None,
        only_from: Any = ANYONE,
    ) -> int:
        """Point faces at `person` (`only_from`: only those still pointing at that person, None
        for only those pointing at no one).

        Each write is conditional on the face as read (If-Match on its `_etag`); a face changed
        meanwhile is read again and judged again. With the owner's lease held this loses no
        race on one instance, and on Cosmos DB's default session consistency (read-your-writes
        only within one client's session) it keeps a stale read on another instance from
        undoing a write it has not seen yet."""
        pending, changed = list(ids), 0
        for _ in range(WRITE_ATTEMPTS):
            lost = []
            for row in self.get_faces(owner, pending, etag=True).values():
                if row.get("person") == person:
                    continue
                if only_from is not ANYONE and row.get("person") != only_from:
                    continue
                etag = row.pop("_etag", None)
                try:
                    self.faces.replace_item(
                        row["id"],
                        {**row, "person": person, "updated_at": utc_now()},
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                    changed += 1
                except CosmosAccessConditionFailedError:
                    lost.append(row["id"])
                except CosmosResourceNotFoundError:
                    pass  # deleted meanwhile (its image erased): nothing to point anywhere
            if not lost:
                return changed
            pending = lost
        raise PeopleChanged(f"faces of {partition(owner)} changed {WRITE_ATTEMPTS} times in a row")

    def delete_faces(self, owner: str | None, ids: Iterable[str]) -> int:
        deleted = 0
        for face in ids:
            try:
                self.faces.delete_item(face, partition_key=partition(owner))
                deleted += 1
            except CosmosResourceNotFoundError:
                pass
        return deleted

    # -- people ------------------------------------------------------------------------------
    def get_person(self, owner: str | None, person: str, etag: bool = False) -> dict | None:
        rows = self.query(
            self.people,
            "SELECT * FROM c WHERE c.owner = @owner AND c.id = @id",
            {"@owner": partition(owner), "@id": person},
            owner,
            etag,
        )
        return rows[0] if rows else None

    def live_person(self, owner: str | None, person: str | None, etag: bool = False) -> dict:
        """The person's record; NoSuchPerson if it is gone or withdrew consent (a template)."""
        record = self.get_person(owner, person, etag) if person else None
        if record is None or "template" in record:
            raise NoSuchPerson(person)
        return record

    def exists(self, owner: str | None, person: str | None) -> bool:
        try:
            self.live_person(owner, person)
        except NoSuchPerson:
            return False
        return True

    def save_person(self, document: dict) -> None:
        self.people.upsert_item(document)

    def change_person(self, record: dict) -> dict:
        """Replace a person read with `etag=True`, only if nobody changed or deleted it since
        (NoSuchPerson if deleted, PeopleChanged if changed)."""
        body = {k: v for k, v in record.items() if k != "_etag"}
        try:
            return self.people.replace_item(
                body["id"],
                body,
                etag=record.get("_etag"),
                match_condition=MatchConditions.IfNotModified,
            )
        except CosmosResourceNotFoundError:
            raise NoSuchPerson(body["id"]) from None
        except CosmosAccessConditionFailedError:
            raise PeopleChanged(f"person {body['id']} changed meanwhile") from None

    def delete_person(self, owner: str | None, person: str) -> None:
        with contextlib.suppress(CosmosResourceNotFoundError):
            self.people.delete_item(person, partition_key=partition(owner))

    def has_withdrawn(self, owner: str | None) -> bool:
        """Whether anyone in the owner's photos withdrew consent (any model)."""
        rows = self.query(
            self.people,
            "SELECT TOP 1 c.id FROM c WHERE c.owner = @owner AND IS_DEFINED(c.template)",
            {"@owner": partition(owner)},
            owner,
        )
        return bool(rows)

    def people_of(self, owner: str | None) -> Iterator[dict]:
        yield from self.query(
            self.people,
            "SELECT c.id, c.name, c.model, c.created_at, c.updated_at FROM c "
            "WHERE c.owner = @owner AND NOT IS_DEFINED(c.template)",
            {"@owner": partition(owner)},
            owner,
        )

    def nearest_withdrawn(self, owner: str | None, model: str, embedding: list[float]):
        """The closest template of a person who withdrew consent (None if there is none)."""
        rows = self.query(
            self.people,
            "SELECT TOP 1 c.id, VectorDistance(c.template, @q) AS distance FROM c "
            "WHERE c.owner = @owner AND c.model = @model AND IS_DEFINED(c.template) "
            "ORDER BY VectorDistance(c.template, @q)",
            {"@owner": partition(owner), "@model": model, "@q": embedding},
            owner,
        )
        return rows[0] if rows else None
