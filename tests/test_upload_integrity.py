"""An upload URL writes one plain upload of what was declared, processed once (issue 17, 1 and 5).

Replayed against the local stack (real Azurite, the Cosmos emulator, the local host and its
Event Grid stand-in): a create-only SAS that copies another caller's blobs server-side, a size
or type other than declared, page and append blobs, uploads over the byte limit, an original
whose stored type is HTML, and concurrent PUTs to one URL that Azurite lets through.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from azure.storage.blob import ContentSettings

from local.host.event_grid import BlobEventSource
from pipeline.framework.contract import image_id
from tests.harness import Pipeline, eventually
from tests.test_api import Client, api  # noqa: F401  (the fixture: two callers and an admin)

ROUTE = "prepare,store"
COPY_HEADERS = {"x-ms-version": "2021-08-06"}


def grant_for(client: Client, size: int, name: str = "photo.jpg", content_type="image/jpeg"):
    answer = client.call(
        "POST", "/api/uploads", json={"name": name, "content_type": content_type, "size": size}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def blob_url(pipeline: Pipeline, container: str, name: str) -> str:
    return pipeline.azure.blob_service.get_blob_client(container, name).url


def upload_exists(pipeline: Pipeline, name: str) -> bool:
    return name in pipeline.blob_names(pipeline.settings.upload_container, name)


def completion_events(pipeline: Pipeline, image: str) -> list[dict]:
    bodies = pipeline.queue_messages(pipeline.settings.results_queue_name())
    return [e for e in map(json.loads, bodies) if e["image_id"] == image]


def test_an_upload_url_cannot_copy_another_callers_blobs_into_its_upload(api, fixture_bytes):  # noqa: F811
    pipeline, callers = api(ROUTE)
    a, b = callers["web"], callers["other"]
    photo = fixture_bytes("gps.jpg")
    mine = a.upload(photo, "home.jpg")
    done = a.wait_final(mine["id"])
    assert done["status"] == "done" and done["gps"]
    settings = pipeline.settings
    targets = {
        "archive": (done["archive"]["container"], done["archive"]["name"]),
        "analysis image": (settings.derived_container, f"{mine['id']}/analysis.jpg"),
        "original": (settings.upload_container, mine["blob_name"]),
    }
    secrets_of_a = {key: pipeline.blob_bytes(*where) for key, where in targets.items()}

    for what, where in targets.items():
        grant = grant_for(b, len(secrets_of_a[what]))
        copy = requests.put(
            grant["upload_url"],
            headers={**COPY_HEADERS, "x-ms-copy-source": blob_url(pipeline, *where)},
            timeout=30,
        )
        # Azurite copies without checking the source's authorisation (Azure asks for it):
        # the copy lands, and the pipeline must refuse it.
        assert copy.status_code == 202, (what, copy.status_code, copy.text)
        doc = b.wait_final(grant["id"])
        for name, link in (doc.get("links") or {}).items():
            if link:
                read = requests.get(link, timeout=10)
                leaked = read.status_code == 200 and read.content == secrets_of_a[what]
                assert not leaked, f"B's links.{name} serves A's {what}"
        assert doc["status"] == "rejected", (what, doc["status"], doc.get("reason"))
        assert "copied" in doc["reason"], doc["reason"]
        assert not doc.get("steps"), "refused before any step read it"
        assert not upload_exists(pipeline, grant["blob_name"]), f"{what}: bytes not deleted"
        assert "gps" not in doc and not doc.get("exif")
    # A's own image is untouched.
    original = requests.get(a.call("GET", f"/api/images/{mine['id']}").json()["links"]["original"])
    assert original.status_code == 200 and original.content == photo


def test_the_event_grid_stand_in_says_which_operation_made_the_blob(make_pipeline, tmp_path):
    pipeline = make_pipeline(ROUTE, host=False)
    container = pipeline.azure.blob_service.get_container_client(pipeline.settings.upload_container)
    container.get_blob_client("put.jpg").upload_blob(b"\xff\xd8plain", overwrite=True)
    copied = container.get_blob_client("copied.jpg")
    copied.start_copy_from_url(container.get_blob_client("put.jpg").url)
    eventually(lambda: copied.get_blob_properties().copy.status == "success", 10)
    container.get_blob_client("paged.jpg").create_page_blob(1 << 20)
    source = BlobEventSource(
        container, "http://127.0.0.1:9/unused", tmp_path / "state.json", threading.Event()
    )
    events = {
        e["subject"].rsplit("/", 1)[-1]: e["data"] for e in map(source._event, source._listing())
    }
    assert (events["put.jpg"]["api"], events["put.jpg"]["blobType"]) == ("PutBlob", "BlockBlob")
    assert (events["copied.jpg"]["api"], events["copied.jpg"]["blobType"]) == (
        "CopyBlob",
        "BlockBlob",
    )
    assert events["paged.jpg"]["blobType"] == "PageBlob"


def test_what_the_upload_declared_is_enforced_and_refused_bytes_are_deleted(api, fixture_bytes):  # noqa: F811
    pipeline, callers = api(ROUTE, DARKROOM_MAX_BYTES=str(2_000_000))
    web = callers["web"]
    photo = fixture_bytes("dog.jpg")
    cases = {}

    # declared 10 bytes, sent a whole photo
    grant = grant_for(web, 10)
    put = requests.put(grant["upload_url"], headers=grant["headers"], data=photo, timeout=30)
    assert put.status_code == 201
    cases["size"] = (grant, "not the 10 bytes declared")

    # declared a PNG, sent as text/html
    grant = grant_for(web, len(photo), "p.png", "image/png")
    headers = {**grant["headers"], "Content-Type": "text/html"}
    assert requests.put(grant["upload_url"], headers=headers, data=photo, timeout=30).ok
    cases["type"] = (grant, "content type is not the image/png declared")

    # a 1 TB page blob and an append blob through the create-only URL
    for kind, extra in (
        ("PageBlob", {"x-ms-blob-content-length": str(1 << 40)}),
        ("AppendBlob", {}),
    ):
        grant = grant_for(web, 1 << 20)
        headers = {"x-ms-blob-type": kind, "Content-Length": "0", **extra}
        answer = requests.put(grant["upload_url"], headers=headers, timeout=30)
        assert answer.status_code == 201, answer.text
        cases[kind] = (grant, f"a {kind} is not an upload")

    # not an image, with the size and type declared: refused by prepare, bytes deleted too
    page = b"<html><script>alert(document.domain)</script></html>"
    grant = grant_for(web, len(page))
    assert requests.put(grant["upload_url"], headers=grant["headers"], data=page, timeout=30).ok
    cases["not an image"] = (grant, "")

    for what, (grant, reason) in cases.items():
        doc = web.wait_final(grant["id"])
        assert doc["status"] == "rejected", (what, doc["status"])
        assert reason in doc["reason"], (what, doc["reason"])
        if what != "not an image":
            assert not doc.get("steps"), (what, "refused before any step read it")
        eventually(lambda g=grant: not upload_exists(pipeline, g["blob_name"]), 20)

    # over the byte limit (an operator's upload has no declaration; the limit holds for all)
    big = b"\xff\xd8" + b"\0" * 2_000_001
    image, etag = pipeline.upload("ops/too-big.jpg", big)
    doc = pipeline.wait_final(image, etag)
    assert doc["status"] == "rejected" and "over the limit of 2,000,000" in doc["reason"]
    assert not doc.get("steps")
    assert not upload_exists(pipeline, "ops/too-big.jpg")


def test_an_original_is_served_as_a_download_of_a_safe_type(api, fixture_bytes):  # noqa: F811
    pipeline, callers = api(ROUTE)
    web = callers["web"]
    grant = web.upload(fixture_bytes("cat.jpg"))
    doc = web.wait_final(grant["id"])
    assert doc["status"] == "done"
    # The stored type is the uploader's to set; make it HTML, as a hostile upload would.
    blob = pipeline.azure.blob_service.get_blob_client(
        pipeline.settings.upload_container, grant["blob_name"]
    )
    blob.set_http_headers(ContentSettings(content_type="text/html"))
    assert blob.get_blob_properties().content_settings.content_type == "text/html"
    link = web.call("GET", f"/api/images/{grant['id']}").json()["links"]["original"]
    answer = requests.get(link, timeout=10)
    assert answer.status_code == 200 and answer.content == fixture_bytes("cat.jpg")
    assert answer.headers["Content-Type"] == "image/jpeg"  # what prepare read from the bytes
    assert answer.headers["Content-Disposition"] == 'attachment; filename="photo.jpg"'
    # the thumbnail and published links are our own JPEGs, shown inline
    thumb = requests.get(doc["links"]["thumbnail"], timeout=10)
    assert thumb.headers["Content-Type"] == "image/jpeg"


def _bodies(photo: bytes, count: int) -> list[bytes]:
    """`count` different files of one size: the photo with a numbered tail after its EOI."""
    return [photo + b"darkroom-%06d" % i for i in range(count)]


def test_concurrent_puts_to_one_upload_url_are_processed_once(api, fixture_bytes):  # noqa: F811
    pipeline, callers = api(ROUTE)
    web = callers["web"]
    bodies = _bodies(fixture_bytes("cat.jpg"), 11)
    grant = grant_for(web, len(bodies[0]))
    start = threading.Barrier(10)

    def put(body: bytes) -> int:
        start.wait()
        answer = requests.put(grant["upload_url"], headers=grant["headers"], data=body, timeout=30)
        return answer.status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(put, bodies[:10]))
    assert codes.count(201) >= 1 and set(codes) <= {201, 403, 409}, codes
    print(f"concurrent PUTs to one create-only URL: {codes.count(201)} x 201 of 10")

    doc = web.wait_final(grant["id"])
    assert doc["status"] == "done"
    digests = {hashlib.sha256(b).hexdigest(): b for b in bodies}
    assert doc["image"]["sha256"] in digests  # the document describes one of the PUTs
    time.sleep(3)  # events of the other versions, if any, had time to arrive
    assert len(completion_events(pipeline, grant["id"])) == 1
    container = pipeline.settings.upload_container
    if upload_exists(pipeline, grant["blob_name"]):  # the bytes kept are the bytes processed
        kept = pipeline.blob_bytes(container, grant["blob_name"])
        assert hashlib.sha256(kept).hexdigest() == doc["image"]["sha256"]

    # A write that raced the first but is seen after it was processed (Event Grid's order and
    # timing are not guaranteed): Azurite let it through, so write it as the emulator did.
    late = pipeline.azure.blob_service.get_blob_client(container, grant["blob_name"])
    late.upload_blob(
        bodies[10], overwrite=True, content_settings=ContentSettings(content_type="image/jpeg")
    )
    eventually(lambda: not upload_exists(pipeline, grant["blob_name"]), 30)
    after = web.call("GET", f"/api/images/{grant['id']}").json()
    assert after["source"]["etag"] == doc["source"]["etag"]
    assert after["image"]["sha256"] == doc["image"]["sha256"]
    assert after["updated_at"] == doc["updated_at"] and after["status"] == "done"
    time.sleep(2)
    assert len(completion_events(pipeline, grant["id"])) == 1
    assert image_id(container, grant["blob_name"]) == grant["id"]
