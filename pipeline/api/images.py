"""Routes for an app's own images: upload URLs, the sync analysis, results, listing, erasure."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from azure.cosmos.exceptions import CosmosHttpResponseError
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pipeline.api import search
from pipeline.api.deps import CallerDep, Services, services
from pipeline.api.errors import api_error, responses, too_many
from pipeline.api.limits import LimitExceeded
from pipeline.api.links import ROUND_SECONDS, Download
from pipeline.engine import sync_path
from pipeline.framework.contract import image_id
from pipeline.framework.document import document_model
from pipeline.settings import route_setting
from pipeline.stores import erase
from pipeline.stores.embeddings import EmbeddingsStore
from pipeline.stores.faces import FacesStore
from pipeline.stores.results import IMAGE_STATUSES
from pipeline.stores.uploads import UploadPromise, record_promise
from pipeline.vision.cloud.openai_embedding import text_embedder

router = APIRouter(prefix="/api")
log = logging.getLogger("darkroom.api")
ImageId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The image id.")]
UPLOAD_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "image/avif",
    "image/heic",
    "image/heif",
)
UploadType = Literal[UPLOAD_TYPES]  # type: ignore[valid-type]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="The file's name (kept, cleaned).")
    content_type: UploadType = Field(description="The file's media type.")
    # strict: "10" or true is not a size (pydantic's lax mode would take both)
    size: int = Field(ge=1, strict=True, description="The file's size in bytes.")


class UploadGrant(BaseModel):
    id: str = Field(description="The image id: poll GET /api/images/{id}.")
    upload_url: str = Field(description="Send the bytes here, with `method` and `headers` only.")
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="Headers the upload request must carry.")
    expires_at: datetime = Field(description="The URL works until then (UTC).")
    blob_name: str = Field(description="The upload's name in the upload container.")
    max_bytes: int = Field(description="Larger files are refused when processed.")


class Links(BaseModel):
    thumbnail: str | None = Field(None, description="Read URL of the thumbnail, short-lived.")
    published: str | None = Field(None, description="Read URL of the published derivative.")
    original: str | None = Field(None, description="Read URL of the original (its owner only).")
    masks: dict[str, str] | None = Field(
        None, description="Read URLs of the masks segmenting model steps made, by step."
    )


Document = document_model(route_setting())


class ImageView(Document):  # type: ignore[misc, valid-type]
    """The image's document, as its owner sees it, with short-lived read links."""

    links: Links


class ImageList(BaseModel):
    items: list[ImageView]
    continuation: str | None = Field(None, description="Pass back to get the next page.")


def _file_name(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "image"
    return cleaned[:100]


def _owned(svc: Services, image: str, caller, admin_ok: bool = True) -> dict:
    document = svc.store.get(image)
    if document is None:
        raise api_error(404, "no such image")
    if document.get("owner") != caller.id and not (admin_ok and caller.admin):
        raise api_error(404, "no such image")  # others' images do not exist for this caller
    return document


def _view(svc: Services, document: dict, caller, current_people: bool = False) -> dict:
    """The document as `caller` may see it, with read links. `current_people`: who the faces
    are now, from the faces store (two queries; for one image, not for every row of a list,
    where the person recorded at recognition is shown)."""
    minutes = svc.settings.api.read_url_minutes
    view = dict(document)
    view.pop("pending", None)
    if isinstance(view.get("search"), dict):  # the vector is for ranking, not for callers
        view["search"] = {k: v for k, v in view["search"].items() if k != "vector"}
    if document.get("owner") != caller.id:
        view.pop("gps", None)  # GPS only to its owner, even for admins

    def link(ref: Any) -> str | None:
        if isinstance(ref, dict) and ref.get("container") and ref.get("name"):
            return svc.signer.read_url(ref["container"], ref["name"], minutes).url
        return None

    if current_people and (recognition := document.get("recognition")):
        view["recognition"] = _current_people(svc, document, recognition)
    view["links"] = {
        "thumbnail": link((document.get("derived") or {}).get("thumbnail")),
        "published": link(document.get("published")),
        "original": _original_link(svc, document, minutes)
        if document.get("owner") == caller.id
        else None,
        "masks": {
            name: url
            for name, spec in svc.settings.model_steps.items()
            if spec.task == "segment"
            and isinstance(document.get(name), dict)
            and (url := link(document[name].get("mask")))
        }
        or None,
    }
    return view


def _original_link(svc: Services, document: dict, minutes: int) -> str | None:
    """The original as a download: its stored content type is the uploader's to choose (HTML
    would run as a page of the storage origin), so the link overrides it with the type prepare
    read from the bytes, or application/octet-stream, and `attachment` disposition."""
    source = document.get("source") or {}
    if not source.get("container") or not source.get("name"):
        return None
    mime = (document.get("image") or {}).get("mime")
    return svc.signer.read_url(
        source["container"],
        source["name"],
        minutes,
        download=Download(
            content_type=mime if mime in UPLOAD_TYPES else "application/octet-stream",
            file_name=_file_name(source["name"]),
        ),
    ).url


def _current_people(svc: Services, document: dict, recognition: dict) -> dict:
    """Who the faces are now: merges and corrections happen in the faces store after the
    document was written, so the store answers (and names them)."""
    owner = document.get("owner")
    store = FacesStore(svc.azure)
    current = {f["id"]: f.get("person") for f in store.faces_of(owner, image=document["id"])}
    names = {p["id"]: p.get("name") for p in store.people_of(owner)}
    faces = []
    for face in recognition.get("faces", []):
        person = current.get(face.get("face_id"), face.get("person"))
        if person not in names:
            person = None  # merged away or withdrawn
        faces.append({**face, "person": person, "person_name": names.get(person)})
    return {**recognition, "faces": faces}


def _count_image(svc: Services, caller) -> None:
    try:
        svc.limits.count_image(caller.id)
    except LimitExceeded as over:
        raise too_many(over.what, over.retry_after) from None


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadGrant,
    responses=responses(400, 401, 413, 429),
    summary="An upload URL for one new image",
)
def create_upload(body: UploadRequest, caller: CallerDep) -> UploadGrant:
    svc = services()
    settings = svc.settings
    if body.size > settings.limits.max_bytes:
        raise api_error(413, f"file is over the limit of {settings.limits.max_bytes:,} bytes")
    _count_image(svc, caller)
    name = f"{caller.id}/{uuid.uuid4().hex}/{_file_name(body.name)}"
    image = image_id(settings.upload_container, name)
    # A SAS cannot pin size or type: ingest holds the blob to this promise
    # (pipeline.stores.uploads).
    record_promise(svc.azure, image, UploadPromise(name, body.size, body.content_type))
    signed = svc.signer.upload_url(settings.upload_container, name, settings.api.upload_url_minutes)
    return UploadGrant(
        id=image,
        upload_url=signed.url,
        headers={"x-ms-blob-type": "BlockBlob", "Content-Type": body.content_type},
        expires_at=signed.expires_at,
        blob_name=name,
        max_bytes=settings.limits.max_bytes,
    )


@router.post(
    "/analyze",
    response_model=ImageView,
    response_model_exclude_unset=True,
    responses={
        202: {"model": ImageView, "description": "Accepted; it goes on asynchronously."},
        **responses(400, 401, 413, 415, 422, 429),
    },
    summary="Analyse an image now (prepare + analyze in-process), the rest asynchronously",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES
            },
        }
    },
)
async def analyze(
    request: Request,
    caller: CallerDep,
    response: Response,
    name: Annotated[str, Query(min_length=1, max_length=200)] = "image",
):
    svc = services()
    api = svc.settings.api
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in UPLOAD_TYPES:
        raise api_error(415, f"content type must be one of {', '.join(UPLOAD_TYPES)}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.sync_max_bytes:
        raise api_error(413, f"body over {api.sync_max_bytes:,} bytes")
    data = await request.body()
    if len(data) > api.sync_max_bytes:
        raise api_error(413, f"body over {api.sync_max_bytes:,} bytes")
    if not data:
        raise api_error(400, "the body must hold the image")
    blob_name = f"{caller.id}/{uuid.uuid4().hex}/{_file_name(name)}"

    def run() -> sync_path.SyncResult:
        with svc.limits.sync_slot(caller.id):
            _count_image(svc, caller)
            return sync_path.analyze_now(svc.runner, blob_name, data, content_type)

    try:
        result = await run_in_threadpool(run)
    except LimitExceeded as over:
        raise too_many(over.what, over.retry_after) from None
    if result.status == 422:
        raise api_error(422, result.document.get("reason") or "the image was rejected")
    response.status_code = result.status
    return _view(svc, result.document, caller)


def _etag(document: dict, caller) -> str:
    # The links in a view are stable for `links.ROUND_SECONDS`: fold that window in.
    window = int(datetime.now().timestamp()) // ROUND_SECONDS
    raw = f"{document.get('updated_at')}|{document.get('status')}|{window}|{caller.id}"
    return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


@router.get(
    "/images/{image}",
    response_model=ImageView,
    responses={
        304: {"description": "Not modified since the ETag sent."},
        **responses(400, 401, 404, 429),
    },
    summary="An image's document, with read links",
)
def get_image(image: ImageId, request: Request, caller: CallerDep):
    svc = services()
    document = _owned(svc, image, caller)
    tag = _etag(document, caller)
    if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": tag})
    view = ImageView.model_validate(_view(svc, document, caller, current_people=True))
    return Response(
        view.model_dump_json(by_alias=True, exclude_unset=True),
        media_type="application/json",
        headers={"ETag": tag, "Cache-Control": "private, no-cache"},
    )


@router.get(
    "/images",
    response_model=ImageList,
    response_model_exclude_unset=True,
    responses=responses(400, 401, 403, 429, 503),
    summary="The caller's images, newest first (or best match first for `q`), filtered",
)
def list_images(
    caller: CallerDep,
    q: Annotated[
        str | None,
        Query(
            max_length=search.MAX_QUERY_CHARS,
            description="Words to search for in the images' captions, tags, objects, read "
            "text and model-step labels, e.g. `dog on a beach`: the images with any of them, "
            "best match first (BM25). Combines with the other filters.",
        ),
    ] = None,
    status: Literal[IMAGE_STATUSES] | None = None,  # type: ignore[valid-type]
    tag: Annotated[str | None, Query(max_length=100)] = None,
    text: Annotated[str | None, Query(max_length=100, description="OCR text contains")] = None,
    uploaded_from: Annotated[datetime | None, Query(alias="from")] = None,
    uploaded_to: Annotated[datetime | None, Query(alias="to")] = None,
    object_name: Annotated[str | None, Query(alias="object", max_length=100)] = None,
    person: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    faces_min: Annotated[int | None, Query(ge=0, le=1000)] = None,
    faces_max: Annotated[int | None, Query(ge=0, le=1000)] = None,
    taken_from: Annotated[datetime | None, Query(description="EXIF date taken, from")] = None,
    taken_to: Annotated[datetime | None, Query(description="EXIF date taken, before")] = None,
    moderation: Literal["safe", "unsafe"] | None = None,
    label: Annotated[
        str | None,
        Query(
            max_length=170,
            pattern=r"^[a-z][a-z0-9_]{0,63}:.+$",
            description="`STEP:NAME`: a model step's label or object name (any case), e.g. "
            "`defects:scratch`.",
        ),
    ] = None,
    owner: Annotated[
        Literal["me", "none"],
        Query(
            description="`me`: the caller's images. `none` (admins): images with no owner, "
            "uploaded with storage access rather than through the API (`make run`, "
            "`python -m pipeline submit`)."
        ),
    ] = "me",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    continuation: Annotated[str | None, Query(max_length=4000)] = None,
) -> ImageList:
    svc = services()
    if owner == "none" and not caller.admin:
        raise api_error(403, "owner=none needs an admin key")
    # Unowned documents carry `owner: null`; NOT IS_STRING also covers a missing field.
    where, params = (
        (["c.owner = @owner"], {"@owner": caller.id})
        if owner == "me"
        else (["NOT IS_STRING(c.owner)"], {})
    )
    if status:
        where.append("c.status = @status")
        params["@status"] = status
    if tag:
        # What a photo shows is named by the classifier (tags: ImageNet classes, so a dog is
        # "golden retriever") or by the detector (objects: COCO, "dog"): a tag search asks
        # both, ignoring case. One query, valid Cosmos DB SQL, that the emulator runs as well.
        where.append(
            "(EXISTS(SELECT VALUE t FROM t IN c.analysis.tags WHERE LOWER(t.name) = @tag)"
            " OR EXISTS(SELECT VALUE o FROM o IN c.analysis.objects WHERE LOWER(o.name) = @tag))"
        )
        params["@tag"] = tag.lower()
    if label:
        step, _, name = label.partition(":")
        if step not in svc.settings.model_steps:
            known = ", ".join(sorted(svc.settings.model_steps)) or "none is configured"
            raise api_error(400, f"label: {step!r} is not a model step here ({known})")
        # `step` is one of the configured names (checked above), never the caller's text.
        where.append(
            f"(EXISTS(SELECT VALUE l FROM l IN c.{step}.labels WHERE LOWER(l.name) = @label)"
            f" OR EXISTS(SELECT VALUE o FROM o IN c.{step}.objects WHERE LOWER(o.name) = @label))"
        )
        params["@label"] = name.lower()
    if text:
        # LOWER rather than CONTAINS' ignore-case argument: the local emulator lacks the
        # latter, and both are valid Cosmos DB SQL, so one query runs in both places.
        where.append("CONTAINS(LOWER(c.analysis.text.full), @text)")
        params["@text"] = text.lower()
    if uploaded_from:
        where.append("c.ingested_at >= @from")
        params["@from"] = _iso(uploaded_from)
    if uploaded_to:
        where.append("c.ingested_at < @to")
        params["@to"] = _iso(uploaded_to)
    if object_name:
        where.append("EXISTS(SELECT VALUE o FROM o IN c.analysis.objects WHERE o.name = @object)")
        params["@object"] = object_name
    if person:
        # The faces store knows who is in which image now (merges happen there).
        shown = {f["image"] for f in FacesStore(svc.azure).faces_of(caller.id, person=person)}
        where.append("ARRAY_CONTAINS(@shown, c.id)")
        params["@shown"] = sorted(shown)
    if faces_min is not None:
        where.append("ARRAY_LENGTH(c.analysis.faces) >= @faces_min")
        params["@faces_min"] = faces_min
    if faces_max is not None:
        where.append("ARRAY_LENGTH(c.analysis.faces) <= @faces_max")
        params["@faces_max"] = faces_max
    if taken_from:  # EXIF writes "YYYY:MM:DD HH:MM:SS": compared as text in that form
        where.append("c.exif.datetime_original >= @taken_from")
        params["@taken_from"] = taken_from.strftime("%Y:%m:%d %H:%M:%S")
    if taken_to:
        where.append("c.exif.datetime_original < @taken_to")
        params["@taken_to"] = taken_to.strftime("%Y:%m:%d %H:%M:%S")
    if moderation:
        where.append("c.analysis.moderation.verdict = @verdict")
        params["@verdict"] = moderation
    if q is not None:
        return _search(svc, caller, q, where, params, limit, continuation)
    query = f"SELECT * FROM c WHERE {' AND '.join(where)} ORDER BY c.ingested_at DESC"
    bound = hashlib.sha256(f"{query}|{sorted(params.items())}|{limit}".encode()).hexdigest()[:16]
    try:
        cosmos_token = _unwrap(continuation, bound) if continuation else None
        items, token = svc.store.page(query, params, limit, cosmos_token)
    except ValueError:
        raise api_error(400, "invalid continuation token") from None
    return ImageList(
        items=[ImageView.model_validate(_view(svc, d, caller)) for d in items],
        continuation=_wrap(token, bound) if token else None,
    )


def _search(
    svc: Services,
    caller,
    q: str,
    where: list[str],
    params: dict[str, Any],
    limit: int,
    continuation: str | None,
) -> ImageList:
    """`list_images` for `q`: ranked by the words, paged by position (a ranked query has no
    Cosmos continuation: each page is the same ranking, OFFSET further)."""
    found = search.words(q)
    if not found:  # nothing searchable (punctuation, symbols): nothing matches
        return ImageList(items=[])
    query = search.ranked_query(where, params, found, _query_vector(svc, q))
    bound = hashlib.sha256(f"{query}|{sorted(params.items())}|{limit}".encode()).hexdigest()[:16]
    try:
        offset = int(_unwrap(continuation, bound)) if continuation else 0
    except ValueError:
        raise api_error(400, "invalid continuation token") from None
    try:
        items = list(svc.store.query(search.page_of(query, offset, limit), params))
    except CosmosHttpResponseError as exc:
        if exc.status_code != 400:
            raise
        # A container made before search existed has no full-text index on Azure.
        log.error("search by words refused by Cosmos DB: %s", str(exc)[:300])
        raise api_error(
            503, "search by words is not set up here (the images container's full-text index)"
        ) from None
    following = offset + limit
    more = len(items) == limit and following < search.MAX_RANKED
    return ImageList(
        items=[ImageView.model_validate(_view(svc, d, caller)) for d in items],
        continuation=_wrap(str(following), bound) if more else None,
    )


def _query_vector(svc: Services, q: str) -> list[float] | None:
    """The query's meaning, when a text-embedding deployment is configured; None (words
    alone) when not, or when the service cannot answer now: a search never fails for it."""
    embedder = text_embedder(svc.settings.analysis.openai)
    if not embedder.configured:
        return None
    try:
        return embedder.embed(q)
    except Exception as exc:
        log.warning("search by words alone: the embedding deployment did not answer: %s", exc)
        return None


def _wrap(token: str, bound: str) -> str:
    """Cosmos's continuation token, bound to the query it continues (a token of another
    caller or filter is refused) and URL-safe."""
    return base64.urlsafe_b64encode(json.dumps([bound, token]).encode()).decode().rstrip("=")


def _unwrap(continuation: str, bound: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(continuation + "=" * (-len(continuation) % 4))
        tag, token = json.loads(raw)
    except (ValueError, TypeError):
        raise ValueError("not a continuation token") from None
    if tag != bound or not isinstance(token, str):
        raise ValueError("a continuation token of another query")
    return token


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@router.delete(
    "/images/{image}",
    status_code=204,
    responses=responses(400, 401, 404, 429),
    summary="Erase the image: original, every derived blob, the archive and the document",
)
def delete_image(image: ImageId, caller: CallerDep) -> Response:
    svc = services()
    document = svc.store.get(image)
    if document is None:
        # Erased already: the same answer again to its owner (idempotent), 404 to anyone else.
        owner = erase.erased_by(svc.azure, image)
        if owner is None or (owner != caller.id and not caller.admin):
            raise api_error(404, "no such image")
        erase.erase_blobs(svc.azure, image, None)
    elif document.get("owner") != caller.id and not caller.admin:
        raise api_error(404, "no such image")
    else:
        erase.erase_image(svc.azure, svc.store, image, document)
    return Response(status_code=204)


class SimilarImage(BaseModel):
    id: str
    distance: int | None = Field(
        description="Perceptual-hash bits that differ (0: the same picture); null with `by`."
    )
    similarity: float | None = Field(
        None, description="With `by`: cosine similarity of the model step's embeddings (1: alike)."
    )
    name: str | None
    links: Links


class SimilarList(BaseModel):
    items: list[SimilarImage]


@router.get(
    "/images/{image}/similar",
    response_model=SimilarList,
    responses=responses(400, 401, 404, 429),
    summary="Images like this one among the caller's: near-duplicates, or by a model's embedding",
)
def similar_images(
    image: ImageId,
    caller: CallerDep,
    max_distance: Annotated[int | None, Query(ge=0, le=64)] = None,
    by: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z][a-z0-9_]{0,63}$",
            description="An embedding model step: rank by its vectors (vector search) instead.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="With `by`: how many.")] = 20,
) -> SimilarList:
    """Without `by`: Hamming distance of the 64-bit pHash (prepare's `image.phash`) to every
    other image of the caller's — Cosmos SQL has no popcount, so the hashes are read (one small
    projection query) and compared here. With `by`: one vector query on that step's container,
    most alike first."""
    svc = services()
    document = _owned(svc, image, caller, admin_ok=False)
    if by is not None:
        return _similar_by_embedding(svc, document, caller, by, limit)
    mine = (document.get("image") or {}).get("phash")
    if not mine:
        return SimilarList(items=[])
    limit = svc.settings.people.similar_hamming if max_distance is None else max_distance
    rows = svc.store.query(
        "SELECT c.id, c.image.phash AS phash, c.source.name AS name, c.derived.thumbnail "
        "AS thumbnail FROM c WHERE c.owner = @owner AND IS_STRING(c.image.phash)",
        {"@owner": caller.id},
    )
    found = []
    for row in rows:
        if row["id"] == image:
            continue
        distance = bin(int(mine, 16) ^ int(row["phash"], 16)).count("1")
        if distance <= limit:
            found.append(
                SimilarImage(
                    id=row["id"],
                    distance=distance,
                    name=(row.get("name") or "").rsplit("/", 1)[-1] or None,
                    links=Links(thumbnail=_thumbnail_link(svc, row.get("thumbnail"))),
                )
            )
    return SimilarList(items=sorted(found, key=lambda s: s.distance))


def _thumbnail_link(svc: Services, thumb: dict | None) -> str | None:
    if not thumb or not thumb.get("name"):
        return None
    return svc.signer.read_url(
        thumb["container"], thumb["name"], svc.settings.api.read_url_minutes
    ).url


def _similar_by_embedding(svc: Services, document: dict, caller, step: str, limit: int):
    spec = svc.settings.model_steps.get(step)
    if spec is None or spec.task != "embed" or not spec.container:
        embedders = sorted(n for n, s in svc.settings.model_steps.items() if s.task == "embed")
        raise api_error(
            400,
            f"by: {step!r} is not an embedding model step here ({', '.join(embedders) or 'none'})",
        )
    store = EmbeddingsStore(svc.azure, spec.container)
    mine = store.get(document["id"], caller.id)
    if mine is None:
        return SimilarList(items=[])
    rows = store.nearest(caller.id, mine["model"], mine["vector"], limit, document["id"])
    docs = {
        row["id"]: row
        for row in svc.store.query(
            "SELECT c.id, c.source.name AS name, c.derived.thumbnail AS thumbnail FROM c "
            "WHERE c.owner = @owner AND ARRAY_CONTAINS(@ids, c.id)",
            {"@owner": caller.id, "@ids": [r["image"] for r in rows]},
        )
    }
    found = []
    for row in rows:
        meta = docs.get(row["image"])
        if meta is None:  # erased meanwhile
            continue
        found.append(
            SimilarImage(
                id=row["image"],
                distance=None,
                similarity=round(float(row["similarity"]), 6),
                name=(meta.get("name") or "").rsplit("/", 1)[-1] or None,
                links=Links(thumbnail=_thumbnail_link(svc, meta.get("thumbnail"))),
            )
        )
    return SimilarList(items=found)
