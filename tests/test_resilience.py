"""Crashes and restarts: workers SIGKILLed at random or inside a step, the whole stack restarted.

Whatever dies, every uploaded image ends `done` exactly once: one document per upload, its
blobs present, nothing in poison, and the host itself still stops cleanly afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueMessage

from bench.fault_run import (
    FaultReport,
    check_results,
    documents,
    drain_results,
    fault_env,
    make_images,
    run_fault,
    stop_host,
    wait_quiet,
    worker_pids,
)
from local.host.functions import QueueFunction
from local.host.queue_listener import QueueListener, _Lease
from tests.harness import Pipeline, emulator_env, eventually, running_emulators


def test_workers_killed_at_random_lose_and_duplicate_nothing(emulators):
    report = run_fault(emulators, images=120, kill_every=2.0, lease=4, workers=2, timeout=300)
    print(report.summary())

    assert report.kills >= 5, report.summary()  # the run really was under fire
    assert report.lost == [], report.summary()
    assert report.duplicated == [], report.summary()
    assert report.documents == 120
    assert report.statuses == {"done": 120}
    assert report.missing_blobs == []
    assert report.poison == {}
    # Redelivery may repeat a completion event, but always with the same event id.
    assert report.notifications - report.duplicate_notifications == 120
    # Killed workers leave no shared state behind that could hang the host's shutdown.
    assert report.host_exit_code == 0, report.summary()


def test_whole_stack_restart_mid_run_finishes_every_image_once(tmp_path):
    env = fault_env(emulator_env(tmp_path / "data"), lease=10, workers=2)
    files = make_images(70, seed=11)
    names = [name for name, _ in files]
    with running_emulators(env):
        pipeline = Pipeline(env).provision().start_host()
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda item: pipeline.upload(*item), files))
            eventually(
                lambda: sum(d["status"] == "done" for d in documents(pipeline)) >= 10,
                timeout=120,
                interval=0.05,
            )
        finally:
            seconds, code = stop_host(pipeline)
        assert code == 0, f"host did not stop on SIGTERM:\n{pipeline.log_tail()}"
        before = {d["id"]: d for d in pipeline.results.find()}
        done_before = {i: d for i, d in before.items() if d["status"] == "done"}
        in_flight = len(files) - len(done_before)
        print(f"stopped after {len(done_before)} done, {in_flight} in flight ({seconds:.1f} s)")
        assert 30 <= in_flight <= 60

    # Same data folder and ports, fresh emulator and host processes.
    with running_emulators(env):
        pipeline = Pipeline(env)
        assert {d["id"]: d for d in pipeline.results.find()} == before  # nothing lost in a stop
        pipeline.start_host()
        try:
            wait_quiet(pipeline, len(files), timeout=180)
        finally:
            stop_host(pipeline)
        report = FaultReport(images=len(files))
        check_results(pipeline, names, report)
        after = {d["id"]: d for d in pipeline.results.find()}

    assert report.lost == [] and report.duplicated == [], report.summary()
    assert report.statuses == {"done": len(files)}
    assert report.missing_blobs == [] and report.poison == {}
    for image, doc in done_before.items():
        assert after[image] == doc  # results from before the restart: there, untouched
    # Exactly once: one completion event per image, no step ran twice.
    assert report.notifications == len(files), report.summary()
    assert report.duplicate_notifications == 0
    assert report.redelivered_images == 0, report.summary()


def _marker_lines(marker: Path) -> list[tuple[int, int]]:
    if not marker.exists():
        return []
    return [tuple(map(int, line.split())) for line in marker.read_text().splitlines()]


def test_worker_killed_inside_a_step_runs_it_again_once(make_pipeline, tmp_path, fixture_bytes):
    marker = tmp_path / "slow.marker"
    pipeline = make_pipeline(
        "prepare,tests.pipeline_steps.slow,store",
        DARKROOM_HOST_LEASE_SECONDS="4",
        DARKROOM_TEST_SLOW_MARKER=str(marker),
        DARKROOM_TEST_SLOW_SECONDS="3",
    )
    image, etag = pipeline.upload("cat.jpg", fixture_bytes("cat.jpg"))

    (attempt, pid), *_ = eventually(lambda: _marker_lines(marker), timeout=60, interval=0.05)
    assert attempt == 1
    assert pid in worker_pids(pipeline.host.pid)
    assert pipeline.results.get(image)["status"] == "processing"  # prepare done, slow running
    os.kill(pid, signal.SIGKILL)  # inside the step's sleep
    killed_at = time.monotonic()

    doc = pipeline.wait_final(image, etag, timeout=60)
    finished_in = time.monotonic() - killed_at
    assert doc["status"] == "done"
    assert doc["steps"]["slow"]["attempts"] == 2
    assert doc["steps"]["prepare"]["attempts"] == 1
    assert doc["steps"]["store"]["attempts"] == 1
    assert doc["slow"]["attempt"] == 2
    runs = _marker_lines(marker)
    assert [a for a, _ in runs] == [1, 2]
    assert runs[1][1] != pid  # the second attempt ran in another (or a restarted) worker
    assert finished_in >= 3  # not before the killed delivery's lease (4 s) ran out
    time.sleep(5)  # one more lease: nothing else comes back
    assert len(_marker_lines(marker)) == 2
    assert [d["id"] for d in documents(pipeline)] == [image]
    assert len(drain_results(pipeline)) == 1


def test_message_that_kills_its_worker_every_time_ends_in_poison(make_pipeline, tmp_path):
    """As in Azure, a message delivered more than maxDequeueCount (5) times without completing
    is moved to poison instead of running again: a crash-looping image cannot loop forever."""
    marker = tmp_path / "slow.marker"
    pipeline = make_pipeline(
        "prepare,tests.pipeline_steps.slow,store",
        DARKROOM_HOST_LEASE_SECONDS="2",
        DARKROOM_TEST_SLOW_MARKER=str(marker),
        DARKROOM_TEST_SLOW_SECONDS="0",
        DARKROOM_TEST_SLOW_CRASH="1",
    )
    image, _ = pipeline.upload("cat.jpg", make_images(1)[0][1])
    poison = pipeline.settings.poison_queue_name("slow")
    eventually(lambda: pipeline.queue_messages(poison), timeout=90, interval=0.2)

    assert [a for a, _ in _marker_lines(marker)] == [1, 2, 3, 4, 5]
    assert pipeline.host.poll() is None  # the host carried on, workers restarted
    eventually(lambda: len(worker_pids(pipeline.host.pid)) == 2, timeout=30)
    assert pipeline.results.get(image)["steps"]["prepare"]["status"] == "done"
    # the operator sees it among the images that need attention
    listed = [json.loads(line) for line in pipeline.cli("failed", "--json").stdout.splitlines()]
    assert [(r["id"], r["status"], r["step"]) for r in listed] == [(image, "poisoned", "slow")]


def test_workers_of_a_killed_host_drain_and_exit(make_pipeline):
    pipeline = make_pipeline()
    workers = eventually(lambda: worker_pids(pipeline.host.pid), timeout=30)
    pipeline.host.kill()  # SIGKILL: no chance to tell its workers
    pipeline.host.wait()

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    eventually(lambda: all(gone(pid) for pid in workers), timeout=30)


# ---------------------------------------------------------------- the listener, without a host
class _FakeQueue:
    """One message, with Azure's pop-receipt rules: each update gives a new receipt and only
    the newest one can update or delete. Answers arrive `latency` s after the change is made."""

    queue_name = "fake-poison"

    def __init__(self, latency: float = 0.0) -> None:
        self.receipt, self.exists, self.latency = "r0", True, latency
        self.sent: list[str] = []

    def _check(self, pop_receipt: str) -> None:
        if not self.exists:
            raise ResourceNotFoundError("MessageNotFound")
        if pop_receipt != self.receipt:
            error = HttpResponseError("The specified pop receipt did not match")
            error.error_code = "PopReceiptMismatch"
            raise error

    def update_message(self, message_id: str, pop_receipt: str, visibility_timeout: int):
        self._check(pop_receipt)
        self.receipt = f"r{int(self.receipt[1:]) + 1}"
        new = self.receipt
        time.sleep(self.latency)
        return SimpleNamespace(pop_receipt=new)

    def delete_message(self, message_id: str, pop_receipt: str) -> None:
        self._check(pop_receipt)
        self.exists = False

    def send_message(self, content: str) -> None:
        self.sent.append(content)


def _listener(queue: _FakeQueue, call) -> QueueListener:
    options = {
        "batchSize": 4,
        "newBatchThreshold": 2,
        "maxDequeueCount": 5,
        "visibilityTimeout": 10,
        "maxPollingInterval": 2,
    }
    fn = QueueFunction("step_fake", "fake", "msg", call)
    return QueueListener(fn, queue, queue, options, 6, threading.Event())


def _message(dequeue_count: int) -> QueueMessage:
    message = QueueMessage(content=base64.b64encode(b"{}").decode())
    message.id, message.pop_receipt, message.dequeue_count = "m1", "r0", dequeue_count
    return message


def test_a_message_finishing_while_its_lease_is_renewed_is_still_deleted():
    queue = _FakeQueue(latency=0.3)
    listener = _listener(queue, lambda msg: None)
    message = _message(1)
    lease = _Lease(message)
    renewal = threading.Thread(target=listener._renew, args=(lease,))
    renewal.start()
    time.sleep(0.1)  # the renewal has changed the receipt; its answer is still on the way
    listener._invoke(message, lease)  # the function returns at once: delete
    renewal.join()
    assert not queue.exists  # deleted with the new receipt, not left to come back and rerun


def test_a_message_delivered_more_than_max_dequeue_count_times_is_poisoned_unrun():
    queue, calls = _FakeQueue(), []
    listener = _listener(queue, calls.append)
    message = _message(6)  # five deliveries died with their worker
    listener._invoke(message, _Lease(message))
    assert calls == []
    assert queue.sent == [message.content] and not queue.exists
