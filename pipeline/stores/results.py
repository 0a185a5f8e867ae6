"""The results store: one Cosmos DB document per image, partitioned by its id.

The document is a projection of the message (`render`), written after every step: whatever
message a redelivery replays, the same document comes out, so duplicates are impossible by
construction and no read-modify-write is needed on the hot path.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from pipeline.framework.contract import SCHEMA_VERSION, PipelineMessage, owner_of, utc_now
from pipeline.framework.step_api import step_name
from pipeline.settings import FINAL_STATUSES
from pipeline.vision.search_words import search_text

ImageStatus = Literal["queued", "processing", "done", "rejected", "failed"]
IMAGE_STATUSES: tuple[ImageStatus, ...] = ("queued", "processing", "done", "rejected", "failed")

# What GET /api/images?q= searches (pipeline.api.search), both written by `render`: the words an
# image is found by (`search.text`: the images container's full-text policy and index, ranked
# with FullTextScore) and, with an embedding deployment, its caption's meaning (`search.vector`:
# its vector policy and index, ranked with VectorDistance, cosine similarity).
SEARCH_TEXT_PATH = "/search/text"
SEARCH_LANGUAGE = "en-US"
SEARCH_VECTOR_PATH = "/search/vector"


def images_container_policies(dimensions: int | None) -> dict[str, dict]:
    """The images container's full-text, vector embedding and indexing policies, as keyword
    arguments of `create_container_if_not_exists`. The full-text policy and index on
    /search/text are always there; `dimensions` is the text embedding deployment's
    (DARKROOM_OPENAI_EMBEDDING_DIMENSIONS), None (or 0) without one: then no vector embedding
    policy, no vector index and no excluded vector path. All are fixed when the container is
    created, and Cosmos DB cannot add a vector policy to an existing container, so the vector part
    exists only when a deployment is configured. local/provision.py creates the container with
    these on the laptop, infra/bicep/modules/cosmos.bicep the same on Azure (tests/test_infra.py
    compares the two, with and without embeddings)."""
    full_text = {
        "defaultLanguage": SEARCH_LANGUAGE,
        "fullTextPaths": [{"path": SEARCH_TEXT_PATH, "language": SEARCH_LANGUAGE}],
    }
    indexing: dict[str, Any] = {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        # Large free-form subtrees are never filtered on; not indexing them saves write RUs.
        # The full-text path stays in: its own index (fullTextIndexes) serves the search.
        "excludedPaths": [
            {"path": "/analysis/text/*"},
            {"path": "/analysis/faces/*"},
            {"path": "/exif/*"},
            # the vector is read by its vector index only
            *([{"path": f"{SEARCH_VECTOR_PATH}/*"}] if dimensions else []),
            {"path": '/"_etag"/?'},
        ],
        "fullTextIndexes": [{"path": SEARCH_TEXT_PATH}],
    }
    policies: dict[str, dict] = {"full_text_policy": full_text, "indexing_policy": indexing}
    if dimensions:
        policies["vector_embedding_policy"] = {
            "vectorEmbeddings": [
                {
                    "path": SEARCH_VECTOR_PATH,
                    "dataType": "float32",
                    "distanceFunction": "cosine",
                    "dimensions": dimensions,
                }
            ]
        }
        # exact scan of compressed vectors (flat allows at most 505 dimensions), as the faces
        indexing["vectorIndexes"] = [{"path": SEARCH_VECTOR_PATH, "type": "quantizedFlat"}]
    return policies


def render(message: PipelineMessage, status: ImageStatus, reason: str | None = None) -> dict:
    """The image's document as of this message: fixed fields first, step output after."""
    fields = dict(message.fields)
    gps = fields.pop("gps", None)
    analysis = fields.pop("analysis", {})
    vector = fields.pop("search_vector", None)
    document: dict[str, Any] = {
        "id": message.id,
        "schema": SCHEMA_VERSION,
        "status": status,
        "reason": reason,
        "source": message.source.model_dump(),
        "owner": owner_of(message.source.name),
        "route": list(message.route),
        "image": fields.pop("image", None),
        "exif": fields.pop("exif", {}),
        "steps": {name: record.model_dump() for name, record in message.steps.items()},
        "derived": fields.pop("derived", {}),
        "analysis": analysis,
        **fields,
        "search": {
            "text": search_text(analysis, fields),
            **({"vector": vector} if vector else {}),
        },
        "ingested_at": message.ingested_at,
        "updated_at": utc_now(),
        "pending": None,  # set by the runner when it sends the image's next message
    }
    if gps:
        document["gps"] = gps
    return document


def pending_document(message: PipelineMessage, status: ImageStatus, delay: float | None) -> dict:
    """The document of an image whose next message is `message`, sent now with `delay`.

    `pending` is what the stall sweep reads: which queue the image waits on, from when the
    message could be received, and its token."""
    document = render(message, status)
    visible = datetime.now(UTC) + timedelta(seconds=delay or 0)
    document["pending"] = {
        "step": step_name(message.step),
        "lane": message.lane,
        "token": message.token,
        "visible_at": visible.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return document


def refused_upload(source: dict, route: list[str], reason: str) -> dict:
    """The document of an upload refused before it became a message (its name is unsafe):
    the same shape as `render`'s, so `failed`, `show` and the API list it like any other."""
    now = utc_now()
    return {
        "id": source["id"],
        "schema": SCHEMA_VERSION,
        "status": "rejected",
        "reason": reason,
        "source": {k: v for k, v in source.items() if k != "id"},
        "owner": owner_of(source["name"]),
        "route": route,
        "image": None,
        "exif": {},
        "steps": {},
        "derived": {},
        "analysis": {},
        "ingested_at": now,
        "updated_at": now,
    }


def is_settled(document: dict | None, etag: str | None = None) -> bool:
    """Final, announced (its completion event went out), and for this upload if `etag` given.

    The final document is written before the event and once more with `notifications`; only
    the second write is the last one."""
    return bool(
        document
        and document["status"] in FINAL_STATUSES
        and "notifications" in document
        and (etag is None or document["source"]["etag"] == etag)
    )


def _public(item: dict) -> dict:
    """Drop Cosmos system properties (_rid, _etag, _ts…) from what callers see."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


# Ids a point read can carry in its URL: image ids are 32 hex digits (contract.image_id).
_POINT_READABLE = re.compile(r"[A-Za-z0-9_.-]{1,255}")


class WriteConflict(Exception):
    """A conditional write lost: someone else created or changed the document first."""


class ResultsStore:
    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    def save(self, document: dict) -> None:
        self._container.upsert_item(document)

    def get_versioned(self, image_id: str) -> tuple[dict | None, str | None]:
        """The document and its Cosmos `_etag`, for a conditional write after it."""
        items = self._query_id(image_id)
        return (_public(items[0]), items[0].get("_etag")) if items else (None, None)

    def save_if_unchanged(self, document: dict, etag: str | None) -> str | None:
        """Create the document if `etag` is None, else replace it only if still at `etag`;
        returns the new `_etag`.

        Raises WriteConflict when another writer got there first: concurrent deliveries of the
        same event must not each start the image (a read-then-write would let them all)."""
        try:
            if etag is None:
                written = self._container.create_item(document)
            else:
                written = self._container.replace_item(
                    document["id"],
                    document,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (
            CosmosResourceExistsError,
            CosmosAccessConditionFailedError,
            CosmosResourceNotFoundError,  # replacing a document deleted meanwhile (erased)
        ) as exc:
            raise WriteConflict(str(exc)[:200]) from exc
        return written.get("_etag")

    def delete(self, image_id: str) -> None:
        """Delete the document; a document already gone is not an error."""
        if not _POINT_READABLE.fullmatch(image_id):
            return  # no document has such an id (see _query_id), and its URL would be refused
        with contextlib.suppress(CosmosResourceNotFoundError):
            self._container.delete_item(image_id, partition_key=image_id)

    def get(self, image_id: str) -> dict | None:
        items = self._query_id(image_id)
        return _public(items[0]) if items else None

    def _query_id(self, image_id: str) -> list[dict]:
        """The document as a one-item list (empty if there is none), by a point read: 1 RU
        for a document of up to 1 KB, where the query by id this used to be costs ~2.8 (six
        of them per image: 19 % of an image's RU, bench/measure_ru.py). The local emulator
        answers a missing item with 404, as Cosmos DB does (it once answered 500, hence the
        query)."""
        if not _POINT_READABLE.fullmatch(image_id):
            # Anything a caller typed (`show <name>`, an API path): characters such as / ? #
            # or spaces cannot go into a point read's URL (Cosmos DB and the emulator answer
            # 400 or 401, not 404); no image id has them, the query answers "none" correctly.
            return list(
                self._container.query_items(
                    "SELECT * FROM c WHERE c.id = @id",
                    parameters=[{"name": "@id", "value": image_id}],
                    partition_key=image_id,
                )
            )
        try:
            return [self._container.read_item(image_id, partition_key=image_id)]
        except CosmosResourceNotFoundError:
            return []

    def query(self, query: str, parameters: dict[str, object]) -> Iterator[dict]:
        """Documents matching a cross-partition query (valid on real Cosmos DB and the emulator)."""
        for item in self._container.query_items(
            query,
            parameters=[{"name": k, "value": v} for k, v in parameters.items()],
            enable_cross_partition_query=True,
        ):
            yield _public(item)

    def page(
        self, query: str, parameters: dict[str, object], size: int, continuation: str | None
    ) -> tuple[list[dict], str | None]:
        """One page of a cross-partition query and the token for the next (None at the end).

        Raises ValueError for a token Cosmos does not accept (a client's garbage)."""
        pages = self._container.query_items(
            query,
            parameters=[{"name": k, "value": v} for k, v in parameters.items()],
            enable_cross_partition_query=True,
            max_item_count=size,
        ).by_page(continuation)
        try:
            items = [_public(item) for item in next(pages, [])]
        except CosmosHttpResponseError as exc:
            if continuation and exc.status_code == 400:
                raise ValueError("invalid continuation token") from exc
            raise
        return items, pages.continuation_token

    def final_since(self, since: int) -> tuple[list[dict], int]:
        """Final documents last written at or after `since` (Cosmos `_ts`, epoch seconds), and
        the newest `_ts` among them: polled with that as the next `since`, each poll reads only
        what changed, however many images are being waited for. `>=` because `_ts` has
        one-second resolution; the caller ignores what it already has."""
        newest, docs = since, []
        for item in self._container.query_items(
            "SELECT * FROM c WHERE c._ts >= @since AND ARRAY_CONTAINS(@final, c.status)",
            parameters=[
                {"name": "@since", "value": since},
                {"name": "@final", "value": sorted(FINAL_STATUSES)},
            ],
            enable_cross_partition_query=True,
        ):
            newest = max(newest, int(item.get("_ts", since)))
            docs.append(_public(item))
        return docs, newest

    def find(self, status: str | None = None) -> Iterator[dict]:
        query, params = "SELECT * FROM c", []
        if status:
            query += " WHERE c.status = @status"
            params = [{"name": "@status", "value": status}]
        for item in self._container.query_items(
            query, parameters=params, enable_cross_partition_query=True
        ):
            yield _public(item)

    def count_by_status(self) -> dict[str, int]:
        counts = {}
        for status in IMAGE_STATUSES:
            result = self._container.query_items(
                "SELECT VALUE COUNT(1) FROM c WHERE c.status = @status",
                parameters=[{"name": "@status", "value": status}],
                enable_cross_partition_query=True,
            )
            counts[status] = sum(int(n) for n in result)
        return counts
