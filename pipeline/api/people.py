"""Routes for people and faces: list, look at, rename, merge, take a face out, search, erase.

Ownership as everywhere in the API: a caller sees only the people found in its own images.
The faces store is the truth about who is whom (documents record the person at recognition
time; merges and corrections happen in the store), so views of an image read it from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.api.deps import CallerDep, services
from pipeline.api.errors import api_error, responses, too_many, validation_message
from pipeline.api.images import UPLOAD_TYPES
from pipeline.api.limits import LimitExceeded
from pipeline.engine.compute_slots import on_compute_thread
from pipeline.framework.step_api import ImageRejected
from pipeline.people import consent, matching
from pipeline.people.face_search import largest_face
from pipeline.stores.faces import FacesStore, NoSuchPerson, PeopleChanged

router = APIRouter(prefix="/api", responses=responses(401, 429))
PersonId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The person id.")]
FaceId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The face id.")]


class Person(BaseModel):
    id: str
    name: str | None = Field(description="Given by a user; null until then.")
    model: str = Field(description="The embedding model its faces come from.")
    faces: int = Field(0, description="Faces in the store that are this person.")
    images: int = Field(0, description="Images showing this person.")
    cover: str | None = Field(None, description="A face id to show for the person.")
    created_at: str | None = None
    updated_at: str | None = None


class PeopleList(BaseModel):
    items: list[Person]


class PersonFace(BaseModel):
    face_id: str
    image: str
    face: int = Field(description="Index into the image's analysis.faces.")
    box: list[float] = Field(description="[x, y, w, h] in original-image pixels.")


class PersonDetail(Person):
    face_list: list[PersonFace] = Field(description="Its faces, with their images.")
    image_ids: list[str]


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(min_length=1, max_length=100)


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    other: str = Field(pattern=r"^[0-9a-f]{32}$", description="Merged into this person.")


class MergeResult(BaseModel):
    id: str
    moved: int


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    limit: int = Field(10, ge=1, le=100, strict=True)


class SearchHit(BaseModel):
    face_id: str
    image: str
    face: int
    person: str | None
    distance: float = Field(description="Embedding distance (smaller is more alike).")
    same_person: bool = Field(description="Within DARKROOM_FACE_MATCH_DISTANCE.")


class SearchResult(BaseModel):
    model: str
    results: list[SearchHit]


class Recluster(BaseModel):
    joined: int


class Withdrawn(BaseModel):
    faces_deleted: int
    images_remade: int


def _store() -> FacesStore:
    return FacesStore(services().azure)


def _person(store: FacesStore, caller, person: str) -> dict:
    try:
        return store.live_person(caller.id, person)
    except NoSuchPerson:
        raise api_error(404, "no such person") from None


@contextmanager
def _changing() -> Iterator[None]:
    """A change of people, made under the owner's lease: a person gone meanwhile (a merge the
    other way came first) is a 404; a lease or records others kept busy, a 409 to retry."""
    try:
        yield
    except NoSuchPerson:
        raise api_error(404, "no such person") from None
    except (PeopleChanged, TimeoutError):
        raise api_error(409, "this owner's people are being changed; try again") from None


@router.get("/people", response_model=PeopleList, summary="The caller's people")
def list_people(caller: CallerDep) -> PeopleList:
    return PeopleList(items=matching.people_with_counts(_store(), caller.id))


@router.get(
    "/people/{person}",
    response_model=PersonDetail,
    responses=responses(404),
    summary="A person, with their faces and images",
)
def get_person(person: PersonId, caller: CallerDep) -> PersonDetail:
    store = _store()
    record = _person(store, caller, person)
    faces = store.faces_of(caller.id, person=person)
    return PersonDetail(
        **{k: record.get(k) for k in ("id", "name", "model", "created_at", "updated_at")},
        faces=len(faces),
        images=len({f["image"] for f in faces}),
        cover=faces[0]["id"] if faces else None,
        face_list=[
            PersonFace(face_id=f["id"], image=f["image"], face=f["face"], box=f["box"])
            for f in faces
        ],
        image_ids=sorted({f["image"] for f in faces}),
    )


@router.patch(
    "/people/{person}",
    response_model=Person,
    responses=responses(400, 404, 409),
    summary="Name a person",
)
def rename(person: PersonId, body: Rename, caller: CallerDep) -> Person:
    with _changing():
        record = matching.rename(_store(), caller.id, person, body.name)
    return Person(**{k: record.get(k) for k in Person.model_fields if k in record})


@router.post(
    "/people/{person}/merge",
    response_model=MergeResult,
    responses=responses(400, 404, 409),
    summary="Merge another person into this one",
)
def merge(person: PersonId, body: MergeRequest, caller: CallerDep) -> MergeResult:
    store = _store()
    keep, other = _person(store, caller, person), _person(store, caller, body.other)
    if keep["id"] == other["id"]:
        raise api_error(409, "a person cannot be merged into itself")
    if keep["model"] != other["model"]:
        raise api_error(409, "the two people come from different embedding models")
    with _changing():
        moved = matching.merge(store, caller.id, person, body.other)
    return MergeResult(id=person, moved=moved)


@router.delete(
    "/people/{person}/faces/{face}",
    status_code=204,
    responses=responses(404, 409),
    summary="Take a face out of a person (it is never matched to them again)",
)
def take_out(person: PersonId, face: FaceId, caller: CallerDep) -> Response:
    store = _store()
    _person(store, caller, person)
    with _changing():
        taken = matching.take_out(store, caller.id, person, face)
    if not taken:
        raise api_error(404, "no such face in this person")
    return Response(status_code=204)


@router.post(
    "/people/recluster",
    response_model=Recluster,
    responses=responses(409),
    summary="Match unassigned faces again",
)
def recluster(caller: CallerDep) -> Recluster:
    svc = services()
    with _changing():
        joined = matching.recluster(_store(), svc.settings.people, caller.id)
    return Recluster(joined=joined)


@router.delete(
    "/people/{person}",
    response_model=Withdrawn,
    responses=responses(404, 409),
    summary="Consent erasure: delete every embedding of the person, hide them from now on",
)
def withdraw(person: PersonId, caller: CallerDep) -> Withdrawn:
    svc = services()
    store = _store()
    _person(store, caller, person)
    with _changing():
        shown = consent.withdraw(store, caller.id, person)
    remade = consent.hide_in_derivatives(svc.azure, svc.store, shown)
    deleted = sum(len(ids) for ids in shown.values())
    return Withdrawn(faces_deleted=deleted, images_remade=remade)


def _hits(store: FacesStore, caller, model: str, embedding: list[float], limit: int, skip=None):
    svc = services()
    rows = store.nearest(caller.id, model, embedding, limit + 1)
    return [
        SearchHit(
            face_id=r["id"],
            image=r["image"],
            face=r["face"],
            person=r.get("person"),
            distance=round(float(r["distance"]), 4),
            same_person=r["distance"] <= svc.settings.people.match_distance,
        )
        for r in rows
        if r["id"] != skip
    ][:limit]


@router.post(
    "/faces/search",
    response_model=SearchResult,
    responses=responses(400, 404, 413, 415, 422, 429),
    summary="The most similar faces to a stored face (JSON) or to the largest face in an image",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                **{t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES},
            }
        }
    },
)
async def search(request: Request, caller: CallerDep) -> SearchResult:
    svc = services()
    store = _store()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > svc.settings.api.sync_max_bytes:
        raise api_error(413, f"body over {svc.settings.api.sync_max_bytes:,} bytes")
    body = await request.body()
    if len(body) > svc.settings.api.sync_max_bytes:
        raise api_error(413, f"body over {svc.settings.api.sync_max_bytes:,} bytes")
    if content_type == "application/json":
        try:
            query = SearchRequest.model_validate_json(body)
        except ValidationError as exc:
            raise api_error(400, validation_message(exc.errors())) from None
        row = store.get_faces(caller.id, [query.face_id]).get(query.face_id)
        if not row:
            raise api_error(404, "no such face")
        if not row.get("embedding"):
            return SearchResult(model=row["model"], results=[])
        hits = _hits(store, caller, row["model"], row["embedding"], query.limit, row["id"])
        return SearchResult(model=row["model"], results=hits)
    if content_type not in UPLOAD_TYPES:
        raise api_error(415, 'send JSON {"face_id"} or an image')
    if not body:
        raise api_error(400, "the body must hold the image")
    model, embedding = await run_in_threadpool(_embed_largest_face, caller.id, body)
    return SearchResult(model=model, results=_hits(store, caller, model, embedding, 10))


# Above every step's route position: a caller is waiting on this one.
SEARCH_PRIORITY = 1_000


def _embed_largest_face(caller: str, data: bytes) -> tuple[str, list[float]]:
    """Decode, detect and embed, within three bounds: one of the caller's sync slots (shared
    with POST /api/analyze: both decode an image in the request), one of the caller's face
    searches today, and one of the process's compute slots on its compute threads, so however
    many callers search at once, only as many images as there are slots are decoded at a time
    (each at most DARKROOM_MAX_DECODE_PIXELS, or reduced for JPEG: pipeline.imaging.decode), in
    memory those threads reuse. Issue 17: 12 concurrent 49 MP PNGs grew the host by 0.7-2.8 GB
    (bench/bench_face_search_memory.py)."""
    svc = services()
    try:
        with svc.limits.sync_slot(caller):
            svc.limits.count_face_search(caller)
            found = on_compute_thread(
                svc.settings.step_concurrency,
                SEARCH_PRIORITY,
                lambda: largest_face(data, svc.settings),
            )
    except LimitExceeded as over:
        raise too_many(over.what, over.retry_after) from None
    except ImageRejected as exc:
        raise api_error(422, exc.reason) from None
    if found is None:
        raise api_error(422, "no usable face in the image")
    return found
