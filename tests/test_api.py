"""The HTTP API against the running local host: uploads by URL, results, ownership, limits,
erasure, the sync path, and the API's own description (schemathesis)."""

from __future__ import annotations

import hashlib
import secrets
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from pipeline.api.limits import Limits
from pipeline.settings import Settings, SettingsError
from tests.harness import Pipeline, eventually

ROUTE = "prepare,analyze,transform,store"
FINAL = ("done", "rejected", "failed")


def new_key() -> tuple[str, str]:
    key = "drk_" + secrets.token_urlsafe(24)
    return key, hashlib.sha256(key.encode()).hexdigest()


class Client:
    """A caller of one pipeline's API, with its key."""

    def __init__(self, pipeline: Pipeline, key: str | None) -> None:
        self.base = f"http://127.0.0.1:{pipeline.settings.host_port}"
        self.headers = {"x-api-key": key} if key else {}

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def upload(self, data: bytes, name: str = "photo.jpg", content_type="image/jpeg") -> dict:
        grant = self.call(
            "POST",
            "/api/uploads",
            json={"name": name, "content_type": content_type, "size": len(data)},
        )
        assert grant.status_code == 201, grant.text
        grant = grant.json()
        put = requests.request(
            grant["method"], grant["upload_url"], headers=grant["headers"], data=data, timeout=30
        )
        assert put.status_code == 201, put.text
        return grant

    def wait_final(self, image: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.call("GET", f"/api/images/{image}")
            body = response.json() if response.status_code == 200 else {}
            if body.get("status") in FINAL and body.get("notifications") is not None:
                return body
            time.sleep(0.3)
        raise AssertionError(f"{image} not final: {response.status_code} {response.text[:500]}")


@pytest.fixture
def api(make_pipeline):
    """A full-route pipeline with two callers and an admin."""
    keys = {who: new_key() for who in ("web", "other", "ops")}

    def make(steps: str = ROUTE, **extra: str):
        pipeline = make_pipeline(
            steps,
            DARKROOM_API_KEYS=f"web:{keys['web'][1]},other:{keys['other'][1]}",
            DARKROOM_ADMIN_KEYS=f"ops:{keys['ops'][1]}",
            **extra,
        )
        return pipeline, {who: Client(pipeline, key) for who, (key, _) in keys.items()}

    return make


def test_an_upload_through_its_url_reaches_done_and_reads_back_with_links(api, fixture_bytes):
    _pipeline, callers = api()
    web = callers["web"]
    grant = web.upload(fixture_bytes("gps.jpg"), "holiday/../Gps photo.jpg")
    assert grant["blob_name"].startswith("key-web/") and grant["blob_name"].endswith(
        "/Gps_photo.jpg"
    )
    doc = web.wait_final(grant["id"])
    assert doc["status"] == "done" and doc["owner"] == "key-web"
    assert "gps" in doc  # its owner sees where it was taken
    assert doc["analysis"]["models"] and doc["published"]["width"] > 0
    thumbnail = requests.get(doc["links"]["thumbnail"], timeout=10)
    published = requests.get(doc["links"]["published"], timeout=10)
    original = requests.get(doc["links"]["original"], timeout=10)
    assert thumbnail.status_code == published.status_code == original.status_code == 200
    assert thumbnail.content[:2] == published.content[:2] == b"\xff\xd8"
    assert original.content == fixture_bytes("gps.jpg")
    assert b"GPS" not in published.content  # the derivative carries no position

    first = web.call("GET", f"/api/images/{grant['id']}")
    etag = first.headers["ETag"]
    again = web.call("GET", f"/api/images/{grant['id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag and not again.content
    # an admin sees the document (operations), never its GPS
    admin_view = callers["ops"].call("GET", f"/api/images/{grant['id']}").json()
    assert "gps" not in admin_view and admin_view["links"]["original"] is None


def test_an_upload_url_creates_one_blob_once_and_reads_nothing(api, fixture_bytes):
    pipeline, callers = api()
    data = fixture_bytes("cat.jpg")
    grant = callers["web"].upload(data)
    url, headers = grant["upload_url"], grant["headers"]
    overwrite = requests.put(url, headers=headers, data=b"not the photo", timeout=10)
    assert overwrite.status_code == 403
    read = requests.get(url, timeout=10)
    assert read.status_code == 403
    base, _, query = url.partition("?")
    second = requests.put(
        base.rsplit("/", 1)[0] + "/second.jpg?" + query, headers=headers, data=data, timeout=10
    )
    assert second.status_code == 403
    container_list = requests.get(
        base.rsplit("/", 3)[0] + "?restype=container&comp=list&" + query, timeout=10
    )
    assert container_list.status_code == 403
    names = pipeline.blob_names(pipeline.settings.upload_container, "key-web/")
    assert names == [grant["blob_name"]]
    assert pipeline.blob_bytes(pipeline.settings.upload_container, grant["blob_name"]) == data
    assert grant["expires_at"] and grant["method"] == "PUT"


def test_who_may_call(api, fixture_bytes):
    pipeline, callers = api()
    grant = callers["web"].upload(fixture_bytes("cat.jpg"))
    callers["web"].wait_final(grant["id"])
    anonymous = Client(pipeline, None)

    nobody = anonymous.call("GET", f"/api/images/{grant['id']}")
    assert nobody.status_code == 401 and nobody.json()["error"]
    wrong = Client(pipeline, "drk_not-a-key").call("GET", "/api/images")
    assert wrong.status_code == 401 and wrong.json() == {"error": "unknown API key"}
    both = callers["web"].call("GET", "/api/images", headers={"Authorization": "Bearer x.y.z"})
    assert both.status_code == 401
    bearer = anonymous.call("GET", "/api/images", headers={"Authorization": "Bearer x.y.z"})
    assert bearer.status_code == 401 and "Entra ID is not configured" in bearer.json()["error"]

    other = callers["other"]
    assert other.call("GET", f"/api/images/{grant['id']}").status_code == 404
    assert other.call("DELETE", f"/api/images/{grant['id']}").status_code == 404
    assert other.call("GET", "/api/images").json()["items"] == []
    assert other.call("GET", "/api/ops/queues").status_code == 403
    assert callers["ops"].call("GET", "/api/ops/queues").status_code == 200
    assert anonymous.call("GET", "/api/health").status_code == 200  # the probe stays open
    assert anonymous.call("GET", "/api/openapi.json").status_code == 200
    unknown = callers["web"].call("GET", "/api/nothing-here")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no such route"}
    malformed = callers["web"].call("GET", "/api/images/not-an-id")
    assert malformed.status_code == 400 and "error" in malformed.json()


def test_size_and_type_are_checked_before_any_url_is_given(api):
    _pipeline, callers = api(DARKROOM_MAX_BYTES="1000", DARKROOM_SYNC_MAX_BYTES="500")
    web = callers["web"]
    big = web.call(
        "POST", "/api/uploads", json={"name": "a.jpg", "content_type": "image/jpeg", "size": 1001}
    )
    assert big.status_code == 413 and "1,000" in big.json()["error"]
    svg = web.call(
        "POST", "/api/uploads", json={"name": "a.svg", "content_type": "image/svg+xml", "size": 10}
    )
    assert svg.status_code == 400
    body = web.call(
        "POST", "/api/analyze", data=b"\xff" * 501, headers={"Content-Type": "image/jpeg"}
    )
    assert body.status_code == 413
    text = web.call("POST", "/api/analyze", data=b"hello", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415


def test_limits_answer_429_with_retry_after_and_recover(api, fixture_bytes):
    pipeline, callers = api(
        DARKROOM_RATE_PER_MINUTE="60", DARKROOM_RATE_BURST="3", DARKROOM_IMAGES_PER_DAY="2"
    )
    web, other = callers["web"], callers["other"]
    answers = [web.call("GET", "/api/me") for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert answers[3].status_code == 429
    wait = int(answers[3].headers["Retry-After"])
    assert 1 <= wait <= 2
    assert other.call("GET", "/api/me").status_code == 200  # per caller, not global
    time.sleep(wait)
    assert web.call("GET", "/api/me").status_code == 200

    # images per day: counted when an upload URL is issued
    time.sleep(3)  # refill the bucket
    request = {"name": "a.jpg", "content_type": "image/jpeg", "size": 10}
    codes = [web.call("POST", "/api/uploads", json=request).status_code for _ in range(3)]
    assert codes == [201, 201, 429]

    # failed sign-ins are limited per client address
    stranger = Client(pipeline, "drk_guess")
    codes = [stranger.call("GET", "/api/me").status_code for _ in range(25)]
    assert codes.count(401) == 20 and codes[-1] == 429


def test_concurrent_sync_analyses_per_caller_are_limited(api, fixture_bytes):
    pipeline, callers = api(DARKROOM_SYNC_CONCURRENCY="1")
    web = callers["web"]
    limits = Limits(pipeline.azure.table_service, pipeline.settings.api)
    photo = {"data": fixture_bytes("cat.jpg"), "headers": {"Content-Type": "image/jpeg"}}
    with limits.sync_slot("key-web"):  # another instance holds the caller's only slot
        busy = web.call("POST", "/api/analyze", **photo)
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
        assert callers["other"].call("POST", "/api/analyze", **photo).status_code == 200
    assert web.call("POST", "/api/analyze", **photo).status_code == 200


def test_delete_erases_every_blob_and_the_document(api, fixture_bytes):
    pipeline, callers = api()
    web = callers["web"]
    grant = web.upload(fixture_bytes("portrait.jpg"))
    doc = web.wait_final(grant["id"])
    image = doc["id"]
    settings = pipeline.settings
    containers = (settings.derived_container, settings.publish.container, settings.claims_container)
    assert any(pipeline.blob_names(c, f"{image}/") for c in containers)

    assert web.call("DELETE", f"/api/images/{image}").status_code == 204
    assert web.call("DELETE", f"/api/images/{image}").status_code == 204  # idempotent
    assert callers["other"].call("DELETE", f"/api/images/{image}").status_code == 404
    assert pipeline.results.get(image) is None
    for container in containers:
        assert pipeline.blob_names(container, f"{image}/") == []
    assert pipeline.blob_names(settings.upload_container, grant["blob_name"]) == []
    assert web.call("GET", f"/api/images/{image}").status_code == 404
    assert web.call("GET", "/api/images").json()["items"] == []


def test_delete_while_the_image_is_in_flight_leaves_nothing_behind(api, fixture_bytes):
    pipeline, callers = api()
    web = callers["web"]
    grant = web.upload(fixture_bytes("dog.jpg"))
    image = grant["id"]
    eventually(lambda: web.call("GET", f"/api/images/{image}").status_code == 200, timeout=30)
    assert web.call("DELETE", f"/api/images/{image}").status_code == 204
    settings = pipeline.settings
    containers = (settings.derived_container, settings.publish.container, settings.claims_container)
    time.sleep(8)  # whatever step was running has finished and found the image gone
    assert pipeline.results.get(image) is None
    for container in containers:
        assert pipeline.blob_names(container, f"{image}/") == []


def test_analyze_answers_at_once_and_the_image_finishes_once(api, fixture_bytes):
    pipeline, callers = api(DARKROOM_SYNC_CAPABILITIES="tags,faces,objects")
    web = callers["web"]
    answer = web.call(
        "POST",
        "/api/analyze?name=portrait.jpg",
        data=fixture_bytes("portrait.jpg"),
        headers={"Content-Type": "image/jpeg"},
    )
    assert answer.status_code == 200, answer.text
    now = answer.json()
    analysis = now["analysis"]
    assert {"tags", "faces", "objects"} <= set(analysis) and "text" not in analysis
    assert analysis["deferred"] == ["text", "moderation"]
    assert now["status"] == "processing" and now["steps"]["prepare"]["status"] == "done"
    assert now["links"]["thumbnail"]

    final = web.wait_final(now["id"])
    assert final["status"] == "done"
    assert {"tags", "faces", "objects", "text", "moderation"} <= set(final["analysis"])
    assert "deferred" not in final["analysis"]
    assert final["analysis"]["faces"] == analysis["faces"]  # kept, not analysed again
    assert final["steps"]["transform"]["status"] == final["steps"]["store"]["status"] == "done"
    # exactly once: one completion event, prepare ran once (its attempts say so)
    events = [
        e
        for e in pipeline.queue_messages(pipeline.settings.results_queue_name())
        if now["id"].encode() in e
    ]
    assert len(events) == 1
    assert final["steps"]["prepare"]["attempts"] == 1
    assert final["steps"]["prepare"]["finished_at"] == now["steps"]["prepare"]["finished_at"]


def test_analyze_rejects_what_is_not_an_image_with_its_reason(api):
    _pipeline, callers = api()
    answer = callers["web"].call(
        "POST", "/api/analyze", data=b"GIF89a-but-not-really", headers={"Content-Type": "image/gif"}
    )
    assert answer.status_code == 422 and answer.json()["error"]


def test_listing_filters_and_pages_with_queries_cosmos_accepts(api, fixture_bytes):
    _pipeline, callers = api()
    web = callers["web"]
    ids = [web.upload(fixture_bytes(n), n)["id"] for n in ("dog.jpg", "cat.jpg", "text-clean.png")]
    docs = {i: web.wait_final(i) for i in ids}
    tag = docs[ids[0]]["analysis"]["tags"][0]["name"]

    everything = web.call("GET", "/api/images", params={"limit": 2})
    assert everything.status_code == 200
    first = everything.json()
    assert len(first["items"]) == 2 and first["continuation"]
    rest = web.call(
        "GET", "/api/images", params={"limit": 2, "continuation": first["continuation"]}
    ).json()
    seen = [d["id"] for d in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(ids) and rest["continuation"] is None
    ingested = [d["ingested_at"] for d in first["items"] + rest["items"]]
    assert ingested == sorted(ingested, reverse=True)

    tagged = web.call("GET", "/api/images", params={"tag": tag}).json()["items"]
    assert ids[0] in [d["id"] for d in tagged]
    assert all(tag in [t["name"] for t in d["analysis"]["tags"]] for d in tagged)
    word = docs[ids[2]]["analysis"]["text"]["full"].split()[0]
    found = web.call("GET", "/api/images", params={"text": word.upper()}).json()["items"]
    assert [d["id"] for d in found] == [ids[2]]
    done = web.call("GET", "/api/images", params={"status": "done"}).json()["items"]
    assert len(done) == 3
    bad = web.call("GET", "/api/images", params={"continuation": "garbage"})
    assert bad.status_code == 400


def test_operations_routes_show_and_replay_a_poisoned_image(api, fixture_bytes, tmp_path):
    marker = tmp_path / "outage"
    marker.write_text("model server down")
    _pipeline, callers = api("prepare,tests.pipeline_steps.fickle,store", FICKLE_MARKER=str(marker))
    web, ops = callers["web"], callers["ops"]
    grant = web.upload(fixture_bytes("cat.jpg"))
    failed = web.wait_final(grant["id"])
    assert failed["status"] == "failed"
    listed = ops.call("GET", "/api/ops/failed").json()["items"]
    assert grant["id"] in [row["id"] for row in listed]
    poison = ops.call("GET", "/api/ops/poison").json()["items"]
    assert [p["image_id"] for p in poison] == [grant["id"]]
    queues = ops.call("GET", "/api/ops/queues").json()["queues"]
    assert {(q["step"], q["lane"]): q["poison"] for q in queues}[("fickle", "live")] == 1
    assert web.call("POST", "/api/ops/replay", json={}).status_code == 403
    marker.unlink()  # the operator fixes the dependency, then replays
    replayed = ops.call("POST", "/api/ops/replay", json={"image": grant["id"]}).json()
    assert replayed["replayed"] == 1
    eventually(lambda: web.call("GET", f"/api/images/{grant['id']}").json()["status"] == "done")


def test_the_api_answers_its_own_description_without_server_errors(api):
    """schemathesis: every documented route, fuzzed from /api/openapi.json, never a 500 and
    never a response its schema does not describe."""
    _pipeline, callers = api(
        DARKROOM_RATE_PER_MINUTE="100000",
        DARKROOM_RATE_BURST="100000",
        DARKROOM_FAILED_SIGN_INS_PER_MINUTE="100000",
    )
    base = callers["web"].base
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    failures = []

    def check(case):
        try:
            # Every check but "schema-valid data is accepted": a size within the schema may
            # still be over the deployment's byte limit (413, documented).
            case.call_and_validate(
                headers=callers["web"].headers,
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
            )
        except Exception as exc:
            failures.append(f"{case.method} {case.path}: {exc}"[:800])

    for operation in schema.get_all_operations():
        op = operation.ok()
        strategy = op.as_strategy()

        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=strategy)
        def run(case):
            check(case)

        run()
    assert not failures, "\n".join(failures[:10])


def test_settings_validate_key_entries():
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"DARKROOM_API_KEYS": "web:abc"})
    assert "NAME:SHA256" in str(error.value)
    digest = hashlib.sha256(b"k").hexdigest()
    settings = Settings.from_env({"DARKROOM_API_KEYS": f"web:{digest}, app2:{'0' * 64}"})
    assert settings.api.api_keys == {digest: "web", "0" * 64: "app2"}
    assert "abc" not in repr(settings.api) and digest not in repr(settings)
    with pytest.raises(SettingsError, match="both"):
        Settings.from_env(
            {"DARKROOM_API_KEYS": f"a:{digest}", "DARKROOM_ADMIN_KEYS": f"a:{'1' * 64}"}
        )
