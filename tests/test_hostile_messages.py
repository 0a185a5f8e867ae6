"""Messages a deployment must not trust: routes it does not run, lanes, broken step contracts.

Sent over the real queues to a real host process (issue 9, findings 3 and 14).
"""

from __future__ import annotations

import json

from pipeline.engine.runner import StepRunner
from pipeline.framework.contract import PipelineMessage, SourceBlob, image_id, utc_now
from pipeline.stores.storage import send_to_queue
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
    # Sent as the pipeline sends (document first, then the message), as a message of another
    # deployment in flight would have been: the host's own ingest of the blob then finds the
    # image started, instead of racing the forged message to the document.
    StepRunner(pipeline.azure).dispatch(forged, "queued", version=None)
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


def _ingest(pipeline, name: str):
    from pipeline.engine.ingest import start_image
    from pipeline.engine.runner import StepRunner

    blob = pipeline.azure.blob_service.get_blob_client(pipeline.settings.upload_container, name)
    return start_image(blob, StepRunner(pipeline.azure))


def test_thirty_concurrent_deliveries_of_one_event_start_the_image_once(
    make_pipeline, fixture_bytes
):
    from concurrent.futures import ThreadPoolExecutor

    pipeline = make_pipeline(host=False)
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    with ThreadPoolExecutor(30) as pool:
        ids = list(pool.map(lambda _: _ingest(pipeline, "cat.jpg"), range(30)))
    assert set(ids) == {image}
    assert len(pipeline.queue_messages(pipeline.settings.queue_name("prepare"))) == 1

    pipeline.start_host()
    assert pipeline.wait_final(image, etag)["status"] == "done"
    events = eventually(lambda: pipeline.queue_messages(pipeline.settings.results_queue_name()))
    assert len(events) == 1


def test_a_name_that_climbs_out_of_the_upload_container_is_refused_with_a_reason(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline(host=False)
    secret = pipeline.azure.blob_service.get_blob_client(
        pipeline.settings.derived_container, "victim/analysis.jpg"
    )
    secret.upload_blob(fixture_bytes("portrait.jpg"), overwrite=True)
    name = f"../{pipeline.settings.derived_container}/victim/analysis.jpg"
    image = _ingest(pipeline, name)

    doc = pipeline.results.get(image)
    assert doc["status"] == "rejected" and ". or .. path segments" in doc["reason"]
    assert pipeline.queue_messages(pipeline.settings.queue_name("prepare")) == []
    assert "notifications" in doc  # announced like any other final image


def test_a_message_whose_source_is_not_the_upload_container_goes_to_poison_unread(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline("prepare,transform,store")
    container = pipeline.settings.derived_container
    blob = pipeline.azure.blob_service.get_blob_client(container, "victim/analysis.jpg")
    etag = blob.upload_blob(fixture_bytes("portrait.jpg"), overwrite=True)["etag"]
    forged = PipelineMessage(
        id=image_id(container, "victim/analysis.jpg"),
        source=SourceBlob(container=container, name="victim/analysis.jpg", size=1, etag=etag),
        route=("prepare", "transform", "store"),
        step="prepare",
        ingested_at=utc_now(),
    )
    send_to_queue(pipeline.azure, pipeline.settings.queue_name("prepare"), forged.to_json())
    poison = pipeline.settings.poison_queue_name("prepare")
    assert len(eventually(lambda: pipeline.queue_messages(poison))) == 1
    assert pipeline.results.get(forged.id) is None
    published = pipeline.azure.blob_service.get_container_client(
        pipeline.settings.publish.container
    )
    assert list(published.list_blobs()) == []


def test_messages_with_unsafe_names_or_a_foreign_id_do_not_validate():
    import pytest

    from pipeline.framework.contract import InvalidMessage

    good = _message_json("uploads", "a/b.jpg")
    PipelineMessage.from_json(json.dumps(good))
    for name in ("../derived/x.jpg", "a/./b.jpg", "ctrl\x01\x1b[31mred.jpg", "/abs.jpg"):
        with pytest.raises(InvalidMessage):
            PipelineMessage.from_json(json.dumps(_message_json("uploads", name)))
    with pytest.raises(InvalidMessage, match="image id"):
        PipelineMessage.from_json(json.dumps({**good, "id": "someone-elses-image"}))


def _message_json(container: str, name: str) -> dict:
    return {
        "schema": 1,
        "id": image_id(container, name),
        "source": {"container": container, "name": name, "size": 1, "etag": "e"},
        "route": ["prepare"],
        "step": "prepare",
        "ingested_at": utc_now(),
    }
