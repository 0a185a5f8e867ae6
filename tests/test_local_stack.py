"""The local stack as a user meets it: the CLI, the host's endpoints, and restarts."""

from __future__ import annotations

import json
import shutil
import urllib.request

from tests.harness import SAMPLES, Pipeline, emulator_env, free_port, running_emulators


def test_submit_folder_of_twenty_photos_waits_and_prints_twenty_documents(make_pipeline, tmp_path):
    pipeline = make_pipeline()
    photos = sorted(SAMPLES.glob("*.jpg"))[:20]
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)

    result = pipeline.cli("submit", str(folder), "--wait", "--json")

    assert result.returncode == 0, result.stderr[-3000:]
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(documents) == 20
    assert sorted(d["source"]["name"] for d in documents) == sorted(p.name for p in photos)
    assert {d["status"] for d in documents} == {"done"}
    assert "processing" in result.stderr  # the progress bar went to stderr, not stdout


def test_show_finds_an_image_by_upload_name(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    pipeline.wait_final(image, etag)
    result = pipeline.cli("show", "cat.jpg")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == image


def test_status_reports_queue_depths_and_images_by_status(make_pipeline, fixture_bytes):
    pipeline = make_pipeline()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    pipeline.wait_final(image, etag)
    result = pipeline.cli("status", "--json")
    report = json.loads(result.stdout)
    prefix = pipeline.settings.queue_prefix
    assert report["queues"][f"{prefix}prepare"] == 0
    assert report["queues"][f"{prefix}prepare-poison"] == 0
    assert report["images"]["done"] == 1


def test_health_endpoint_checks_storage_cosmos_and_route(make_pipeline):
    pipeline = make_pipeline()
    url = f"http://127.0.0.1:{pipeline.settings.host_port}/api/health"
    with urllib.request.urlopen(url, timeout=30) as response:
        report = json.loads(response.read())
    assert report["status"] == "healthy"
    assert set(report["checks"]) == {"settings", "route", "analyzers", "blob", "queue", "cosmos"}


def test_event_grid_subscription_handshake_is_answered(make_pipeline):
    pipeline = make_pipeline()
    event = [
        {
            "id": "1",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "eventTime": "2026-01-01T00:00:00Z",
            "dataVersion": "1",
        }
    ]
    request = urllib.request.Request(
        pipeline.webhook_url(),
        data=json.dumps(event).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "aeg-event-type": "SubscriptionValidation"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == {
            "validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
        }


def test_local_results_survive_a_restart_of_the_whole_stack(tmp_path, fixture_bytes):
    env = {
        **emulator_env(tmp_path / "data"),
        "DARKROOM_HOST_PORT": str(free_port()),
        "DARKROOM_HOST_WORKERS": "1",
        "PIPELINE_STEPS": "prepare,store",
    }
    with running_emulators(env):
        pipeline = Pipeline(env).provision().start_host()
        try:
            image, etag = pipeline.upload("dog.jpg", fixture_bytes("dog.jpg"))
            before = pipeline.wait_final(image, etag)
        finally:
            pipeline.stop_host()

    # Same data folder, fresh processes (ports may be reused: the emulators are new).
    with running_emulators(env):
        pipeline = Pipeline(env)
        after = pipeline.results.get(image)
        assert after == before
        analysis = before["derived"]["analysis"]
        assert pipeline.blob_bytes(analysis["container"], analysis["name"])[:3] == b"\xff\xd8\xff"
        # …and the restarted stack keeps working, without re-announcing the old upload.
        pipeline.start_host()
        try:
            second, second_etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
            assert pipeline.wait_final(second, second_etag)["status"] == "done"
            assert pipeline.results.get(image)["updated_at"] == before["updated_at"]
        finally:
            pipeline.stop_host()
