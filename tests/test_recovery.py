"""An image whose message is lost is found from its document and resumed, by the pipeline itself.

Azurite keeps queues in memory (a SIGKILL loses the last sends); on Azure a crash between the
document write and the send does the same. Here the message is deleted by hand, which is what
either leaves behind: a document `queued`/`processing` with no message to move it.
"""

from __future__ import annotations

import time

from pipeline.engine.recovery import resume_stalled, stalled_images
from pipeline.stores.storage import send_to_queue
from tests.harness import eventually

FAST_SWEEP = {"DARKROOM_STALL_SECONDS": "2", "DARKROOM_SWEEP_SCHEDULE": "*/2 * * * * *"}


def _lose_messages(pipeline, queue: str) -> list[bytes]:
    client = pipeline.azure.queue_service.get_queue_client(queue)
    bodies = pipeline.queue_messages(queue)
    client.clear_messages()
    return bodies


def _ingest(pipeline, name: str):
    from pipeline.engine.ingest import start_image
    from pipeline.engine.runner import StepRunner

    blob = pipeline.azure.blob_service.get_blob_client(pipeline.settings.upload_container, name)
    return start_image(blob, StepRunner(pipeline.azure))


def test_a_queued_image_whose_first_message_was_lost_is_resumed_by_the_sweep(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline(host=False, **FAST_SWEEP)
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    _ingest(pipeline, "cat.jpg")
    assert len(_lose_messages(pipeline, pipeline.settings.queue_name("prepare"))) == 1
    assert pipeline.results.get(image)["status"] == "queued"

    pipeline.start_host()  # its timer runs sweep_stalled every 2 s
    doc = pipeline.wait_final(image, etag, timeout=90)
    assert doc["status"] == "done" and doc["steps"]["store"]["status"] == "done"
    assert "resumed at prepare" in pipeline.log_tail(20_000)


def test_an_image_waiting_behind_older_messages_is_not_taken_for_stalled(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline(host=False, DARKROOM_STALL_SECONDS="1")
    queue = pipeline.settings.queue_name("prepare")
    send_to_queue(pipeline.azure, queue, b"an older message still waiting")
    image, _ = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    _ingest(pipeline, "cat.jpg")
    time.sleep(1.5)  # past DARKROOM_STALL_SECONDS
    assert [d["id"] for d in stalled_images(pipeline.azure, pipeline.results)] == []

    _lose_messages(pipeline, queue)  # now nothing older waits, and its own message is gone
    assert [d["id"] for d in stalled_images(pipeline.azure, pipeline.results)] == [image]


def test_a_resumed_image_runs_once_even_if_its_old_message_turns_up(make_pipeline, fixture_bytes):
    pipeline = make_pipeline(host=False, DARKROOM_STALL_SECONDS="1")
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))
    _ingest(pipeline, "cat.jpg")
    queue = pipeline.settings.queue_name("prepare")
    (old,) = _lose_messages(pipeline, queue)
    time.sleep(1.5)  # past DARKROOM_STALL_SECONDS
    assert resume_stalled(pipeline.azure) == [image]
    assert resume_stalled(pipeline.azure) == []  # its new message waits: nothing to resume
    send_to_queue(pipeline.azure, queue, old)  # the lost message was only late after all

    pipeline.start_host()
    assert pipeline.wait_final(image, etag)["status"] == "done"
    eventually(lambda: not pipeline.queue_messages(queue))
    events = eventually(lambda: pipeline.queue_messages(pipeline.settings.results_queue_name()))
    assert len(events) == 1
    assert "superseded" in pipeline.log_tail(20_000)


def test_a_missing_artifact_sends_the_image_back_to_the_step_that_made_it(
    make_pipeline, fixture_bytes, tmp_path
):
    marker = tmp_path / "vanished"
    pipeline = make_pipeline(
        "prepare,tests.pipeline_steps.vanish,analyze,store", VANISH_MARKER=str(marker)
    )
    image, etag = pipeline.upload("portrait.jpg", fixture_bytes("portrait.jpg"))
    doc = pipeline.wait_final(image, etag)
    assert marker.exists()  # the analysis image was deleted once, after prepare
    assert doc["status"] == "done" and doc["analysis"]["faces"]
    assert "back to prepare to make it again" in pipeline.log_tail(20_000)
    name = doc["derived"]["analysis"]["name"]
    assert pipeline.blob_names(pipeline.settings.derived_container, name) == [name]
