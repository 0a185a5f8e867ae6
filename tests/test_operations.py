"""Operator tools on the real local stack: failed images, poison replay, reprocessing, lanes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from pipeline.engine import operations
from tests.harness import Pipeline, free_port


def lines(result) -> list[dict]:
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_failed_lists_failed_and_rejected_images_with_reasons(make_pipeline, fixture_bytes):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.broken")
    bad = pipeline.upload("broken.jpg", fixture_bytes("dog.jpg"))
    junk = pipeline.upload("junk.jpg", b"\x00" * 100)
    for image, etag in (bad, junk):
        pipeline.wait_final(image, etag)

    rows = {r["name"]: r for r in lines(pipeline.cli("failed", "--json"))}

    assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["step"] == "broken"
    assert "disk on fire" in rows["broken.jpg"]["reason"]
    assert rows["junk.jpg"]["status"] == "rejected" and rows["junk.jpg"]["step"] == "prepare"
    assert rows["junk.jpg"]["reason"].startswith("not an image")


def test_poison_is_listed_then_replayed_after_the_cause_is_fixed(
    make_pipeline, fixture_bytes, tmp_path
):
    marker = tmp_path / "outage"
    marker.write_text("model server down")
    pipeline = make_pipeline("prepare,tests.pipeline_steps.fickle,store", FICKLE_MARKER=str(marker))
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    assert pipeline.wait_final(image, etag)["status"] == "failed"

    (entry,) = lines(pipeline.cli("poison", "list", "--json"))
    assert entry["image_id"] == image and entry["step"] == "fickle"
    assert entry["document_status"] == "failed" and "model server down" in entry["document_reason"]

    # Listings leave the message where it is. The page asks for the poison list and the failed
    # list at once; when a listing received (hid) messages, the other one missed them.
    with ThreadPoolExecutor(4) as pool:
        listings = list(
            pool.map(
                lambda _: [
                    (e.image_id, e.dequeue_count)
                    for e in operations.poison_messages(pipeline.azure, pipeline.results)
                ],
                range(4),
            )
        )
    assert listings == [[(image, entry["dequeue_count"])]] * 4

    marker.unlink()  # the operator fixes the dependency…
    result = pipeline.cli("poison", "replay", "--step", "fickle")
    assert "1 replayed" in result.stderr

    doc = pipeline.wait_final(image, etag)
    assert doc["status"] == "done" and doc["fickle"] == {"ok": True}
    assert doc["steps"]["fickle"]["attempts"] == 1  # a fresh attempt count after the replay
    assert lines(pipeline.cli("poison", "list", "--json")) == []


def _same_pipeline_new_route(pipeline: Pipeline, steps: str) -> Pipeline:
    pipeline.stop_host()
    env = {**pipeline.env, "PIPELINE_STEPS": steps, "DARKROOM_HOST_PORT": str(free_port())}
    return Pipeline(env).provision().start_host()


def test_reprocess_missing_step_runs_only_that_step_onward_and_keeps_the_rest(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,store")
    uploads = [pipeline.upload(n, fixture_bytes(n)) for n in ("cat.jpg", "dog.jpg")]
    before = {image: pipeline.wait_final(image, etag) for image, etag in uploads}

    # A team adds a step to the route; older images lack it.
    updated = _same_pipeline_new_route(pipeline, "prepare,tests.pipeline_steps.brightness,store")
    try:
        chosen = lines(updated.cli("reprocess", "--missing", "brightness", "--json"))
        assert sorted(c["id"] for c in chosen) == sorted(before)
        for image, etag in uploads:
            doc = updated.wait_final(image, etag)
            if "brightness" not in doc:
                doc = _wait_for_field(updated, image, "brightness")
            assert doc["status"] == "done" and doc["brightness"]["mean"] > 0
            # prepare did not run again: its record and output are untouched
            assert doc["steps"]["prepare"] == before[image]["steps"]["prepare"]
            assert doc["image"] == before[image]["image"]
        # nothing is missing any more
        assert (
            lines(updated.cli("reprocess", "--missing", "brightness", "--json", "--dry-run")) == []
        )
    finally:
        updated.stop_host()


def _wait_for_field(pipeline: Pipeline, image: str, field: str) -> dict:
    from tests.harness import eventually

    return eventually(
        lambda: (d := pipeline.results.get(image)) and field in d and d["status"] == "done" and d,
        timeout=120,
    )


def test_reprocess_all_runs_the_whole_route_again_on_the_backfill_lane(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,store", host=False)
    pipeline.start_host()
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    first = pipeline.wait_final(image, etag)
    pipeline.stop_host()

    chosen = lines(pipeline.cli("reprocess", "--all", "--json"))
    assert [c["id"] for c in chosen] == [image]
    settings = pipeline.settings
    assert len(pipeline.queue_messages(settings.queue_name("prepare", "backfill"))) == 1
    assert pipeline.queue_messages(settings.queue_name("prepare")) == []  # live lane untouched
    assert pipeline.results.get(image)["status"] == "queued"

    pipeline.start_host()
    fresh, fresh_etag = pipeline.upload("dog.jpg", fixture_bytes("dog.jpg"))
    assert pipeline.wait_final(fresh, fresh_etag)["status"] == "done"
    again = _wait_for_field(pipeline, image, "archive")
    assert again["steps"]["prepare"]["finished_at"] != first["steps"]["prepare"]["finished_at"]
    assert again["image"] == first["image"]


def test_reprocess_model_changed_selects_only_images_from_an_older_model(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,analyze,store", DARKROOM_ANALYZERS="tags,moderation")
    uploads = [pipeline.upload(n, fixture_bytes(n)) for n in ("cat.jpg", "dog.jpg")]
    docs = [pipeline.wait_final(image, etag) for image, etag in uploads]
    old = docs[0]
    old["analysis"]["models"]["tags"] = "efficientnet-lite0-imagenet@0.0.1"  # analysed long ago
    pipeline.results.save(old)

    chosen = lines(pipeline.cli("reprocess", "--model-changed", "--json"))

    assert [c["id"] for c in chosen] == [old["id"]] and chosen[0]["from"] == "analyze"
    from tests.harness import eventually

    eventually(
        lambda: (
            pipeline.results.get(old["id"])["analysis"]["models"]["tags"]
            == docs[1]["analysis"]["models"]["tags"]
        ),
        timeout=120,
    )
    assert pipeline.results.get(old["id"])["steps"]["prepare"] == old["steps"]["prepare"]
