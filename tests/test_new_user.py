"""What a new user meets after `make run` (issue 17, findings 14-16), on the real local stack:
the page's URL and key as the running host has them, keys that work without a restart, the
operator's photos on the page, a tag search that finds the dog, and CLI output that says what
it cut and prints "nothing" where a script reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from pipeline.framework.contract import image_id
from pipeline.settings import DEFAULT_ROUTE, PROJECT_ROOT
from tests.harness import SAMPLES, emulator_env, free_port
from tests.test_api import api, new_key  # noqa: F401  (`api` is a fixture)
from tests.test_web_page import WAIT_MS, browser, open_session, sessions  # noqa: F401

# ------------------------------------------------------------------ 14: the page line


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _me(port: int, key: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}/api/me", headers={"x-api-key": key}, timeout=10)


@pytest.mark.timeout(400)
def test_up_and_status_print_the_running_hosts_page_url_and_the_key_that_opens_it(tmp_path):
    """A stack of its own (`up --detach` starts emulators and host), on a port that is not 7071;
    then again with an admin key configured, when the page key must not be offered."""
    port = free_port()
    env = {
        **emulator_env(tmp_path / "data"),
        "DARKROOM_HOST_PORT": str(port),
        "PIPELINE_STEPS": "prepare,store",
        "DARKROOM_HOST_WORKERS": "1",
    }
    data_dir = Path(env["DARKROOM_DATA_DIR"])
    try:
        up = _cli(env, "up", "--detach")
        assert up.returncode == 0, up.stderr[-3000:]
        key = (data_dir / "host" / "page.key").read_text().strip()
        line = f"web page: http://127.0.0.1:{port}/  key: {key}"
        assert line in up.stderr
        status = _cli(env, "status")
        assert status.returncode == 0, status.stderr[-2000:]
        assert line in status.stdout  # what `make run` ends with
        assert f"health: http://127.0.0.1:{port}/api/health" in status.stdout
        me = _me(port, key)
        assert me.status_code == 200 and me.json()["admin"] is True
        assert json.loads(_cli(env, "status", "--json").stdout)["page"]["url"] == (
            f"http://127.0.0.1:{port}/"
        )
        assert _cli(env, "down").returncode == 0

        ops_key, ops_digest = new_key()
        configured = {**env, "DARKROOM_ADMIN_KEYS": f"ops:{ops_digest}"}
        up = _cli(configured, "up", "--detach")
        assert up.returncode == 0, up.stderr[-3000:]
        status = _cli(configured, "status")
        expected = (
            f"web page: http://127.0.0.1:{port}/  key: an admin key of DARKROOM_ADMIN_KEYS (ops)"
        )
        assert expected in up.stderr and expected in status.stdout
        assert key not in up.stderr + status.stdout  # the page key does not open this host
        assert _me(port, key).status_code == 401
        assert _me(port, ops_key).status_code == 200
    finally:
        _cli(env, "down")


def test_makefile_prints_no_fixed_url_or_key():
    run = (PROJECT_ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "7071" not in run and "page.key" not in run
    assert "pipeline status" in run  # which prints the page line from the running host


# ------------------------------------------------------------------ 15: keys without a restart


def test_a_key_added_to_the_settings_works_on_the_running_host_at_once(make_pipeline, tmp_path):
    settings_file = tmp_path / "local.settings.json"
    values = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text())
    values["Values"]["DARKROOM_API_KEYS"] = values["Values"]["DARKROOM_ADMIN_KEYS"] = ""
    settings_file.write_text(json.dumps(values, indent=2))
    pipeline = make_pipeline(DARKROOM_SETTINGS_FILE=str(settings_file))
    port = pipeline.settings.host_port

    # The key's entry put in the file by hand, as `keys add` (without --save) says to.
    added = pipeline.cli("keys", "add", "bob", "--json")
    assert added.returncode == 0, added.stderr[-2000:]
    bob, entry = json.loads(added.stdout)["key"], json.loads(added.stdout)["entry"]
    edited = json.loads(settings_file.read_text())
    edited["Values"]["DARKROOM_API_KEYS"] = entry
    settings_file.write_text(json.dumps(edited, indent=2))
    started = time.monotonic()
    while (answer := _me(port, bob)).status_code != 200 and time.monotonic() - started < 15:
        time.sleep(0.2)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text  # the same host: no down/up
    assert answer.json() == {"id": "key-bob", "name": "bob", "kind": "key", "admin": False}
    print(f"key usable {took:.2f} s after the settings file changed")

    # the message says so
    told = pipeline.cli("keys", "add", "carol")
    assert "no restart needed" in told.stderr and "--save" in told.stderr
    assert json.loads(settings_file.read_text())["Values"]["DARKROOM_API_KEYS"] == entry

    # A broken entry in the file keeps the keys in use (and the host says why in its log).
    broken = json.loads(settings_file.read_text())
    broken["Values"]["DARKROOM_API_KEYS"] += ",nonsense"
    settings_file.write_text(json.dumps(broken, indent=2))
    deadline = time.monotonic() + 15
    while "not taken" not in pipeline.log_tail(20_000) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "not taken" in pipeline.log_tail(20_000)
    assert _me(port, bob).status_code == 200

    # The file mended, a second key, an admin one, saved: it opens the operations routes.
    broken["Values"]["DARKROOM_API_KEYS"] = broken["Values"]["DARKROOM_API_KEYS"][
        : -len(",nonsense")
    ]
    settings_file.write_text(json.dumps(broken, indent=2))
    admin = pipeline.cli("keys", "add", "ops", "--admin", "--save", "--json")
    assert admin.returncode == 0, admin.stderr[-2000:]
    ops = json.loads(admin.stdout)["key"]
    deadline = time.monotonic() + 15
    while _me(port, ops).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    me = _me(port, ops)
    assert me.status_code == 200 and me.json()["admin"] is True
    assert _me(port, bob).status_code == 200
    again = pipeline.cli("keys", "add", "bob", "--save")  # a name in use is refused
    assert again.returncode == 2 and "already" in again.stderr


# ------------------------------------------------------------------ 16 (a): the README route


def test_readme_custom_step_routes_keep_every_default_step():
    readme = (PROJECT_ROOT / "README.md").read_text()
    routes = set(re.findall(r"PIPELINE_STEPS[\"=:\s]+\"?([a-z_.,]+brightness[a-z_.,]*)", readme))
    full = [r for r in routes if ",analyze," in r]  # the examples of the default route + one
    assert full, routes
    for route in full:
        steps = [s for s in route.split(",") if s != "brightness"]
        assert steps == DEFAULT_ROUTE.split(","), route


# ------------------------------------------------------------------ 16 (b): operator uploads


def test_admins_list_operator_uploads_and_others_may_not(api, fixture_bytes):  # noqa: F811
    pipeline, callers = api("prepare,store")
    operator, etag = pipeline.upload("samples/cat.jpg", fixture_bytes("cat.jpg"))
    owned = callers["web"].upload(fixture_bytes("dog.jpg"), "dog.jpg")
    pipeline.wait_final(operator, etag)
    callers["web"].wait_final(owned["id"])

    listed = callers["ops"].call("GET", "/api/images?owner=none")
    assert listed.status_code == 200, listed.text
    ids = [item["id"] for item in listed.json()["items"]]
    assert ids == [operator]
    assert listed.json()["items"][0]["links"]["thumbnail"]
    mine = callers["ops"].call("GET", "/api/images").json()["items"]
    assert mine == []  # the default is still the caller's own
    refused = callers["web"].call("GET", "/api/images?owner=none")
    assert refused.status_code == 403 and "admin" in refused.json()["error"]


@pytest.mark.timeout(300)
def test_the_page_shows_make_runs_photos_to_an_admin(make_pipeline, browser, sessions):  # noqa: F811
    key, digest = new_key()
    pipeline = make_pipeline("prepare,analyze,store", DARKROOM_ADMIN_KEYS=f"ops:{digest}")
    # What `make run` does: `pipeline submit samples`, with storage access (no owner).
    submitted = pipeline.cli("submit", str(SAMPLES / "dog-bicycle.jpg"), "--wait")
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    image = pipeline.results.get(image_id(pipeline.settings.upload_container, "dog-bicycle.jpg"))
    assert image and image["status"] == "done" and image.get("owner") is None

    session = open_session(sessions, browser, pipeline, viewport={"width": 1280, "height": 900})
    page = session.sign_in(key)
    page.click('.tab[data-view="library"]')
    item = page.locator(f'#library li.library-item[data-id="{image["id"]}"]')
    expect(item).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#library-title")).to_have_text("Operator uploads")
    expect(page.locator("#library-note")).to_contain_text("operator uploads")
    expect(item.locator("img.thumb")).to_be_visible()
    item.locator("button.link").click()  # an admin opens it (no GPS, no original)
    expect(page.locator("#detail")).to_have_attribute("data-id", image["id"], timeout=10_000)
    session.shot("operator-uploads")
    # back to the admin's own images: none
    page.select_option("#search-owner", "me")
    expect(page.locator("#library-title")).to_have_text("My images")
    expect(page.locator("#library")).to_contain_text("No images match", timeout=10_000)


# ------------------------------------------------------------------ 16 (c): tag finds objects


def test_tag_dog_finds_the_dog_photo_whose_tags_are_breeds(api):  # noqa: F811
    _pipeline, callers = api("prepare,analyze,store")
    web = callers["web"]
    grant = web.upload((SAMPLES / "dog-bicycle.jpg").read_bytes(), "dog-bicycle.jpg")
    doc = web.wait_final(grant["id"])
    tags = {t["name"].lower() for t in doc["analysis"]["tags"]}
    objects = {o["name"] for o in doc["analysis"]["objects"]}
    assert "dog" not in tags and "dog" in objects  # what made `tag=dog` find nothing
    for query in ("tag=dog", "tag=Dog", f"tag={sorted(tags)[0]}"):
        found = web.call("GET", f"/api/images?{query}")
        assert found.status_code == 200, found.text
        assert [i["id"] for i in found.json()["items"]] == [grant["id"]], query
    assert web.call("GET", "/api/images?tag=giraffe").json()["items"] == []
    assert web.call("GET", "/api/images?object=dog").json()["items"][0]["id"] == grant["id"]


# ------------------------------------------------------------------ 16 (d), (e): CLI output


def test_progress_and_tables_mark_cut_names_with_an_ellipsis(
    make_pipeline, tmp_path, fixture_bytes
):
    pipeline = make_pipeline("prepare,store")
    name = "a-photo-with-a-very-long-name-from-a-camera-roll-export-0001.jpg"
    (tmp_path / name).write_bytes(fixture_bytes("cat.jpg"))
    result = pipeline.cli("submit", str(tmp_path / name), "--wait")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "uploading: 1/1 …" + name[-29:] in result.stderr
    assert "processing: 1/1 …" + name[-19:] + " done" in result.stderr
    assert result.stdout.startswith("done      …" + name[-39:] + " ")


def test_failed_and_poison_list_say_nothing_on_stdout(make_pipeline):
    pipeline = make_pipeline(host=False)
    failed = pipeline.cli("failed")
    assert failed.returncode == 0 and failed.stdout.strip() == "no failed or rejected images"
    only = pipeline.cli("failed", "--status", "rejected")
    assert only.stdout.strip() == "no rejected images"
    poison = pipeline.cli("poison", "list")
    assert poison.returncode == 0 and poison.stdout.strip() == "no poisoned messages"
    assert pipeline.cli("poison", "list", "--json").stdout.strip() == ""  # JSON lines: none
