"""The faces store: one Cosmos DB document per detected face, searched by vector distance.

Containers (partition key `/owner`, so one caller's search stays in one partition):
- `faces` (DARKROOM_FACES_CONTAINER): `{id: face id, owner, image, face (index into
  analysis.faces), box, embedding, model, person, usable, reason, created_at}`; the embedding
  lives here only — never in the image document, a message, the published derivative or an
  event. The vector embedding policy and index on `/embedding` are declared in Bicep (and by
  `local/provision.py` for the emulator, which evaluates the same query).
- `people` (DARKROOM_PEOPLE_CONTAINER): `{id, owner, model, name, created_at, updated_at}`, and
  for a person who withdrew consent, `erased: true` with `template` (see pipeline.people).

Every search names the model version: embeddings of different models are never compared
(a model upgrade re-embeds through `reprocess`). Face ids are derived from (image, face index,
model), so a redelivered recognition message rewrites the same documents.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from azure.cosmos import ContainerProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from pipeline.azure_clients import AzureClients
from pipeline.contract import utc_now
from pipeline.table_entities import Contended, change_entity

LOCK_SECONDS = 30  # longer than matching one image's faces takes
NO_OWNER = "_"  # the partition of images uploaded without the API (operators)
METRIC = "euclidean"  # the embedder's distance on raw vectors (pipeline.analyzers.face_embedding)
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


def _public(item: dict) -> dict:
    return {k: v for k, v in item.items() if not k.startswith("_")}


class _Held(Exception):
    pass


@contextlib.contextmanager
def owner_lock(azure: AzureClients, owner: str | None, wait: float = 30.0) -> Iterator[None]:
    """One matcher at a time per owner, across every instance: two images of the same new
    person recognised at the same moment would otherwise each start a person of their own.

    A lease entity in the app's table (`until`), taken only when free or expired, so a matcher
    that died frees the owner after `LOCK_SECONDS`."""
    tables, table = azure.table_service, azure.settings.api.limits_table
    pk, rk = "facelock", partition(owner)
    deadline = time.monotonic() + wait

    def claim(current: dict | None) -> dict:
        now = time.time()
        if current is not None and float(current.get("until", 0)) > now:
            raise _Held
        return {"until": now + LOCK_SECONDS}

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
        change_entity(tables, table, pk, rk, lambda current: {"until": 0.0})


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
        self, container: ContainerProxy, sql: str, params: dict[str, Any], owner: str | None
    ) -> list[dict]:
        """A query within the owner's partition (the SQL names `c.owner = @owner` too: the
        local emulator takes the partition key from the WHERE clause)."""
        return [
            _public(item)
            for item in container.query_items(
                sql,
                parameters=[{"name": k, "value": v} for k, v in params.items()],
                partition_key=partition(owner),
            )
        ]

    def get_faces(self, owner: str | None, ids: Iterable[str]) -> dict[str, dict]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self.query(
            self.faces,
            "SELECT * FROM c WHERE c.owner = @owner AND ARRAY_CONTAINS(@ids, c.id)",
            {"@owner": partition(owner), "@ids": ids},
            owner,
        )
        return {row["id"]: row for row in rows}

    def upsert_face(self, document: dict) -> None:
        self.faces.upsert_item(document)

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

    def set_person(self, owner: str | None, ids: Iterable[str], person: str | None) -> int:
        changed = 0
        for row in self.get_faces(owner, ids).values():
            if row.get("person") != person:
                self.faces.upsert_item({**row, "person": person, "updated_at": utc_now()})
                changed += 1
        return changed

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
    def get_person(self, owner: str | None, person: str) -> dict | None:
        rows = self.query(
            self.people,
            "SELECT * FROM c WHERE c.owner = @owner AND c.id = @id",
            {"@owner": partition(owner), "@id": person},
            owner,
        )
        return rows[0] if rows else None

    def save_person(self, document: dict) -> None:
        self.people.upsert_item(document)

    def delete_person(self, owner: str | None, person: str) -> None:
        with contextlib.suppress(CosmosResourceNotFoundError):
            self.people.delete_item(person, partition_key=partition(owner))

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
