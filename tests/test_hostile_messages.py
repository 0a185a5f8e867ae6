"""Messages a deployment must not trust: routes it does not run, lanes, broken step contracts.

Sent over the real queues to a real host process (issue 9, findings 3 and 14).
"""

from __future__ import annotations

import json

from pipeline.contract import PipelineMessage, SourceBlob, image_id, utc_now
from pipeline.storage import send_to_queue
from tests.harness import eventually


def _message(pipeline, name: str, etag: str, size: int, route: tuple[str, ...]) -> PipelineMessage:
    container = pipeline.settings.upload_container
    return PipelineMessage(
        id=image_id(container, name),
        source=SourceBlob(container=container, name=name, size=size, etag=etag),
        route=route,
        step=route[0],
        ingested_at=utc_now(),
    )


def test_a_route_naming_a_step_this_deployment_does_not_run_fails_instead_of_stranding(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,store", host=False)
    data = fixture_bytes("cat.jpg")
    blob = pipeline.azure.blob_service.get_blob_client(pipeline.settings.upload_container, "c.jpg")
    etag = blob.upload_blob(data)["etag"]
    forged = _message(pipeline, "c.jpg", etag, len(data), ("prepare", "os.system", "store"))
    send_to_queue(pipeline.azure, pipeline.settings.queue_name("prepare"), forged.to_json())
    pipeline.start_host()

    doc = pipeline.wait_final(forged.id, etag)
    assert doc["status"] == "failed"
    assert "does not run" in doc["reason"] and "os.system" in doc["reason"]
    assert "prepare" not in {k for k, v in doc["steps"].items() if v["status"] == "done"}
    poison = pipeline.settings.poison_queue_name("prepare")
    (parked,) = pipeline.queue_messages(poison)
    assert json.loads(parked)["route"] == ["prepare", "os.system", "store"]
    forwarded = pipeline.settings.queue_prefix + "system"  # sending would have created it
    assert not list(pipeline.azure.queue_service.list_queues(name_starts_with=forwarded))


def test_an_unreadable_backfill_message_lands_in_the_backfill_poison_queue(make_pipeline):
    pipeline = make_pipeline()
    send_to_queue(pipeline.azure, pipeline.settings.queue_name("prepare", "backfill"), b"junk{")
    backfill_poison = pipeline.settings.poison_queue_name("prepare", "backfill")
    assert eventually(lambda: pipeline.queue_messages(backfill_poison)) == [b"junk{"]
    assert pipeline.queue_messages(pipeline.settings.poison_queue_name("prepare")) == []


def test_a_step_writing_undeclared_fields_is_poisoned_at_once_not_retried(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,tests.pipeline_steps.sloppy,store")
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    doc = pipeline.wait_final(image, etag)
    assert doc["status"] == "failed" and "does not declare" in doc["reason"]
    assert doc["steps"]["sloppy"]["attempts"] == 1
    assert len(pipeline.queue_messages(pipeline.settings.poison_queue_name("sloppy"))) == 1
