"""Fault run: hundreds of images through the local stack while its processes are SIGKILLed.

Run: `.venv/bin/python -m bench.fault_run --images 300 --kill-every 2` (workers only, route
`prepare,store`, small JPEGs), or the whole thing:
`… --route prepare,analyze,transform,store --photos --emulator-kills 3`, which also SIGKILLs
Azurite and the Cosmos emulator in turn and starts them again on the same ports and data.

It starts its own emulators (temporary data folder, free ports) and a functions host (`python
-m pipeline host`, a short lease so a killed worker's messages come back soon, a fast stall
sweep), uploads distinct JPEGs cut from `samples/`, and every 0.5 to 1.5 times `--kill-every`
seconds SIGKILLs one of the host's worker processes at random until every image is final.
Azurite keeps queues in memory and saves them every few seconds, so killing it loses the last
sends: the stall sweep must find those images from their documents and send them on. Then it
checks, from Cosmos and the blob store, that every uploaded image has exactly one document,
`done`, with its analysis image, thumbnail and result archive; it prints the figures and exits
non-zero if any image was lost or duplicated.

`run_fault()` is what tests/test_resilience.py runs, with fewer images.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from local.emulators import local_ports, start_azurite, start_cosmos
from pipeline.settings import FINAL_STATUSES, Settings
from tests.harness import SAMPLES, Pipeline, emulator_env, isolated_env

DERIVED_BLOBS = ("analysis.jpg", "thumbnail.jpg", "result.json")
_runs = itertools.count(1)


# ------------------------------------------------------------------------------------ images
def make_images(
    count: int, seed: int = 7, side: tuple[int, int] = (280, 520), kb: tuple[int, int] = (20, 60)
) -> list[tuple[str, bytes]]:
    """`count` distinct JPEGs of `kb` KB with a long side in `side`: random crops of the sample
    photos, resized (the default keeps a run light; `--photos` makes camera-sized ones)."""
    rng = random.Random(seed)
    photos = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(path) as image:
            if side[1] <= 1200:
                image.draft("RGB", (1200, 1200))  # fast, and still far larger than what we cut
            photos.append((path.stem, image.convert("RGB")))
    out = []
    for i in range(count):
        stem, photo = photos[i % len(photos)]
        width, height = photo.size
        crop_w = int(width * rng.uniform(0.45, 1.0))
        crop_h = int(height * rng.uniform(0.45, 1.0))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        piece = photo.crop((left, top, left + crop_w, top + crop_h))
        long_side = rng.randint(*side)
        scale = long_side / max(piece.size)
        piece = piece.resize((round(piece.width * scale), round(piece.height * scale)))
        quality = rng.randint(80, 92)
        data = _jpeg(piece, quality)
        while len(data) > kb[1] * 1000 and quality > 40:
            quality -= 8
            data = _jpeg(piece, quality)
        while len(data) < kb[0] * 1000 and max(piece.size) < 2 * side[1]:
            piece = piece.resize((int(piece.width * 1.25), int(piece.height * 1.25)))
            data = _jpeg(piece, quality)
        out.append((f"fault/{i:04d}-{stem}.jpg", data))
    return out


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- processes
def worker_pids(host_pid: int) -> list[int]:
    """Live worker processes of a local host: its spawn children (not the resource tracker)."""
    children: set[int] = set()
    try:
        for task in Path(f"/proc/{host_pid}/task").iterdir():
            children.update(int(p) for p in (task / "children").read_text().split())
    except OSError:  # no /proc/*/task/*/children on this kernel: scan every process's ppid
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == host_pid:
                children.add(int(stat.parent.name))
    workers = []
    for pid in sorted(children):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if state in ("Z", "X") or b"resource_tracker" in cmdline:
            continue
        if b"spawn_main" in cmdline:  # multiprocessing's spawn start method
            workers.append(pid)
    return workers


class Killer(threading.Thread):
    """SIGKILL a random worker of `host_pid` every uniform(0.5, 1.5) * `every` seconds."""

    def __init__(self, host_pid: int, every: float, seed: int) -> None:
        super().__init__(name="killer", daemon=True)
        self.host_pid, self.every = host_pid, every
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.5 * self.every, 1.5 * self.every)):
            pids = worker_pids(self.host_pid)
            if not pids:
                continue
            victim = self.rng.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append((time.monotonic(), victim))


class LocalStack:
    """The emulators of a run, each of which can be SIGKILLed and started again in place."""

    def __init__(self, env: dict[str, str]) -> None:
        self.settings = Settings.from_env(env)
        self.ports = local_ports(self.settings)
        self.running = {
            "azurite": start_azurite(self.settings, self.ports),
            "cosmos": start_cosmos(self.settings, self.ports),
        }

    def kill_and_restart(self, name: str, down_seconds: float) -> None:
        process = self.running[name].process
        process.kill()  # SIGKILL: Azurite loses its last seconds of queue and blob metadata
        process.wait()
        time.sleep(down_seconds)
        start = start_azurite if name == "azurite" else start_cosmos
        self.running[name] = start(self.settings, self.ports)

    def stop(self) -> None:
        for emulator in reversed(list(self.running.values())):
            emulator.stop()


class EmulatorKiller(threading.Thread):
    """SIGKILL Azurite and the Cosmos emulator in turn, `kills` times each, one every ~`every`
    seconds, each down for 1-3 s before it is started again on the same ports and data."""

    def __init__(self, stack: LocalStack, kills: int, every: float, seed: int) -> None:
        super().__init__(name="emulator-killer", daemon=True)
        self.stack, self.left, self.every = stack, {"azurite": kills, "cosmos": kills}, every
        self.rng = random.Random(seed + 1)
        self.stop = threading.Event()
        self.kills: list[tuple[float, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        order = itertools.cycle(("azurite", "cosmos"))
        while any(self.left.values()):
            if self.stop.wait(self.rng.uniform(0.5 * self.every, 1.5 * self.every)):
                return
            name = next(order)
            if not self.left[name]:
                name = next(order)
            self.left[name] -= 1
            try:
                self.stack.kill_and_restart(name, self.rng.uniform(1.0, 3.0))
            except BaseException as exc:  # reported by the run, which then fails
                self.error = exc
                return
            self.kills.append((time.monotonic(), name))


# ---------------------------------------------------------------------------------- report
@dataclass
class FaultReport:
    images: int
    kills: int = 0
    emulator_kills: dict[str, int] = field(default_factory=dict)
    resumed_by_sweep: int = 0  # host log: images the stall sweep sent on again
    worker_restarts: int = 0
    seconds: float = 0.0  # first upload to the last image final
    statuses: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    lost: list[str] = field(default_factory=list)  # uploaded, but no document `done`
    duplicated: list[str] = field(default_factory=list)  # more than one document per upload
    missing_blobs: list[str] = field(default_factory=list)
    poison: dict[str, int] = field(default_factory=dict)
    notifications: int = 0  # completion events on the results queue
    duplicate_notifications: int = 0  # the same event again (same event id): redeliveries
    redelivered_images: int = 0  # images with a step that ran more than once
    max_attempts: int = 0
    done_then_not: list[str] = field(default_factory=list)  # seen `done`, later `processing`
    leases_lost: int = 0  # host log: a renewal came too late, the message went elsewhere
    settles_skipped: int = 0  # host log: a finished message could not be deleted (lease lost)
    host_stop_seconds: float = 0.0
    host_exit_code: int | None = None
    seen_done: set[str] = field(default_factory=set, repr=False)

    def summary(self) -> str:
        poisoned = sum(self.poison.values())
        return (
            f"images {self.images}, kills {self.kills} (worker restarts "
            f"{self.worker_restarts}), emulator kills {self.emulator_kills}, resumed by the "
            f"sweep {self.resumed_by_sweep}, {self.seconds:.1f} s; lost {len(self.lost)}, "
            f"duplicated {len(self.duplicated)}, missing blobs {len(self.missing_blobs)}, "
            f"poison {poisoned}; statuses {self.statuses}; redelivered images "
            f"{self.redelivered_images} (max attempts {self.max_attempts}); notifications "
            f"{self.notifications} ({self.duplicate_notifications} repeated); done then "
            f"re-run {len(self.done_then_not)}; leases lost {self.leases_lost}, settles "
            f"skipped {self.settles_skipped}; host stopped in "
            f"{self.host_stop_seconds:.1f} s (exit {self.host_exit_code})"
        )


def queue_depths(pipeline: Pipeline) -> dict[str, int]:
    """Every queue of this pipeline (its prefix) → approximate count, invisible ones included."""
    service = pipeline.azure.queue_service
    return {
        q.name: service.get_queue_client(q.name).get_queue_properties().approximate_message_count
        for q in service.list_queues(name_starts_with=pipeline.settings.queue_prefix)
    }


def documents(pipeline: Pipeline) -> list[dict]:
    return list(
        pipeline.azure.images_container.query_items(
            "SELECT c.id, c.status, c.source, c.steps, c.derived, c.archive, c.updated_at FROM c",
            enable_cross_partition_query=True,
        )
    )


def drain_results(pipeline: Pipeline) -> list[dict]:
    """All completion events on the results queue (taken off it)."""
    client = pipeline.azure.queue_service.get_queue_client(pipeline.settings.results_queue_name())
    events = []
    while True:
        batch = list(client.receive_messages(max_messages=32, visibility_timeout=300))
        if not batch:
            return events
        for message in batch:
            events.append(json.loads(base64.b64decode(message.content)))
            client.delete_message(message)


def check_results(pipeline: Pipeline, names: list[str], report: FaultReport) -> list[dict]:
    """Fill the report's correctness figures from Cosmos, the blob store and the queues."""
    docs = documents(pipeline)
    report.documents = len(docs)
    by_name: dict[str, list[dict]] = {}
    for doc in docs:
        by_name.setdefault(doc["source"]["name"], []).append(doc)
    report.statuses = dict(Counter(doc["status"] for doc in docs))
    report.lost = sorted(
        n for n in names if not any(d["status"] == "done" for d in by_name.get(n, []))
    )
    report.duplicated = sorted(n for n, found in by_name.items() if len(found) > 1)
    report.duplicated += sorted(set(by_name) - set(names))  # documents nobody uploaded
    container = pipeline.settings.derived_container
    blobs = {
        b.name for b in pipeline.azure.blob_service.get_container_client(container).list_blobs()
    }
    for doc in docs:
        wanted = {f"{doc['id']}/{name}" for name in DERIVED_BLOBS}
        referenced = {
            (doc.get("derived") or {}).get("analysis", {}).get("name"),
            (doc.get("derived") or {}).get("thumbnail", {}).get("name"),
            (doc.get("archive") or {}).get("name"),
        }
        if referenced != wanted:
            report.missing_blobs.append(f"{doc['source']['name']}: refers to {referenced}")
        report.missing_blobs += [f"{doc['source']['name']}: {b}" for b in sorted(wanted - blobs)]
    depths = queue_depths(pipeline)
    report.poison = {q: n for q, n in depths.items() if q.endswith("-poison") and n}
    attempts = [
        max((s.get("attempts") or 1) for s in (doc.get("steps") or {}).values()) for doc in docs
    ]
    report.redelivered_images = sum(1 for a in attempts if a > 1)
    report.max_attempts = max(attempts, default=0)
    events = drain_results(pipeline)
    report.notifications = len(events)
    report.duplicate_notifications = len(events) - len({e["id"] for e in events})
    return docs


# -------------------------------------------------------------------------------------- run
def fault_env(
    base: dict[str, str], lease: int, workers: int, route: str = "prepare,store", **extra: str
) -> dict[str, str]:
    defaults = {
        "DARKROOM_HOST_WORKERS": str(workers),
        "DARKROOM_HOST_LEASE_SECONDS": str(lease),
        "DARKROOM_RETRY_BASE_SECONDS": "0.5",
        "DARKROOM_RETRY_MAX_SECONDS": "2",
    }
    return isolated_env(
        base, f"f{os.getpid() % 1000}r{next(_runs)}-", route, **{**defaults, **extra}
    )


def wait_quiet(
    pipeline: Pipeline, count: int, timeout: float, report: FaultReport | None = None
) -> float:
    """Wait until `count` documents are final and no step queue holds a message (a redelivered
    duplicate could still rewrite a document); returns when that was first seen. With a report,
    notes images seen `done` and later not (a late duplicate of an earlier step re-ran them)."""
    deadline = time.monotonic() + timeout
    final_at = None
    while time.monotonic() < deadline:
        try:
            docs = documents(pipeline)
            depths = queue_depths(pipeline)
        except Exception:  # an emulator is being killed and started again: look again soon
            time.sleep(0.5)
            continue
        if report is not None:
            for doc in docs:
                name = doc["source"]["name"]
                if doc["status"] == "done":
                    report.seen_done.add(name)
                elif name in report.seen_done and name not in report.done_then_not:
                    report.done_then_not.append(name)
        final = sum(1 for d in docs if d["status"] in FINAL_STATUSES)
        if final >= count:
            final_at = final_at or time.monotonic()
            busy = {
                q: n
                for q, n in depths.items()
                if n and not q.endswith("-poison") and q != pipeline.settings.results_queue_name()
            }
            if not busy:
                return final_at
        else:
            final_at = None
        time.sleep(0.5)
    raise TimeoutError(f"not quiet within {timeout:.0f}s: {queue_depths(pipeline)}")


def stop_host(pipeline: Pipeline, timeout: float = 60) -> tuple[float, int | None]:
    """SIGTERM, as `down` does; (seconds until it exited, exit code or None if it hung)."""
    host = pipeline.host
    assert host is not None
    started = time.monotonic()
    host.send_signal(signal.SIGTERM)
    try:
        code = host.wait(timeout)
    except subprocess.TimeoutExpired:
        host.kill()
        host.wait()
        code = None
    return time.monotonic() - started, code


def run_fault(
    base_env: dict[str, str],
    images: int = 300,
    kill_every: float = 2.0,
    lease: int = 4,
    workers: int = 2,
    seed: int = 7,
    timeout: float = 900,
    progress=None,
    route: str = "prepare,store",
    photos: bool = False,
    stack: LocalStack | None = None,
    emulator_kills: int = 0,
    emulator_every: float = 12.0,
) -> FaultReport:
    say = progress or (lambda text: None)
    files = (
        make_images(images, seed, side=(1400, 2400), kb=(250, 900))
        if photos
        else make_images(images, seed)
    )
    names = [name for name, _ in files]
    say(f"{len(files)} images, {sum(len(d) for _, d in files) / len(files) / 1024:.0f} KB each")
    # A fast stall sweep: messages Azurite loses on SIGKILL are resumed from the documents.
    sweep = {"DARKROOM_STALL_SECONDS": "45", "DARKROOM_SWEEP_SCHEDULE": "*/5 * * * * *"}
    pipeline = Pipeline(fault_env(base_env, lease, workers, route, **sweep)).provision()
    pipeline.start_host()
    report = FaultReport(images=len(files))
    killer = Killer(pipeline.host.pid, kill_every, seed)
    emulator_killer = (
        EmulatorKiller(stack, emulator_kills, emulator_every, seed)
        if stack and emulator_kills
        else None
    )
    try:
        started = time.monotonic()
        if kill_every > 0:  # 0: a baseline run without faults
            killer.start()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: pipeline.upload(*item), files))
        faults = f"killing a worker every ~{kill_every}s" if kill_every > 0 else "no kills"
        say(f"uploaded in {time.monotonic() - started:.1f} s; {faults}")
        if emulator_killer:
            # The documents are the record: start killing emulators once every upload has
            # one. Before that, what Azurite loses on SIGKILL is the client's acknowledged
            # upload or Event Grid's delivery (durable on Azure), not the pipeline's to repair.
            deadline = time.monotonic() + 300
            while len(documents(pipeline)) < len(files) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(6)  # and Azurite has saved them
            emulator_killer.start()
            say(f"and killing Azurite and Cosmos {emulator_kills}x each, every ~{emulator_every}s")
        final_at = wait_quiet(pipeline, len(files), timeout, report)
        report.seconds = final_at - started
        killer.stop.set()
        if killer.is_alive():
            killer.join()
        report.kills = sum(1 for at, _ in killer.kills if at <= final_at)
        if emulator_killer:
            emulator_killer.join()  # every planned kill happens, even after the last image
            if emulator_killer.error:
                raise emulator_killer.error
            report.emulator_kills = dict(Counter(name for _, name in emulator_killer.kills))
        wait_quiet(pipeline, len(files), 120, report)  # the last kills' messages, if any
    finally:
        killer.stop.set()
        if emulator_killer:
            emulator_killer.stop.set()
        report.host_stop_seconds, report.host_exit_code = stop_host(pipeline)
    host_log = pipeline.log_tail(10**9)
    report.worker_restarts = host_log.count("starting it again")
    report.leases_lost = host_log.count(" lost: ")
    report.settles_skipped = host_log.count("skipped, the message was delivered again")
    report.resumed_by_sweep = host_log.count("its message was lost")
    check_results(pipeline, names, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument(
        "--kill-every", type=float, default=2.0, help="mean seconds between kills (0: none)"
    )
    parser.add_argument("--lease", type=int, default=4, help="DARKROOM_HOST_LEASE_SECONDS")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--route", default="prepare,store", help="PIPELINE_STEPS of the run")
    parser.add_argument("--photos", action="store_true", help="camera-sized JPEGs (1.4-2.4k px)")
    parser.add_argument(
        "--emulator-kills", type=int, default=0, help="SIGKILL Azurite and Cosmos N times each"
    )
    parser.add_argument("--emulator-every", type=float, default=12.0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="darkroom-fault-") as data:
        env = emulator_env(Path(data))
        stack = LocalStack(env)
        try:
            report = run_fault(
                env,
                images=args.images,
                kill_every=args.kill_every,
                lease=args.lease,
                workers=args.workers,
                seed=args.seed,
                timeout=args.timeout,
                progress=lambda text: print(text, file=sys.stderr, flush=True),
                route=args.route,
                photos=args.photos,
                stack=stack,
                emulator_kills=args.emulator_kills,
                emulator_every=args.emulator_every,
            )
        finally:
            stack.stop()
    if args.json:
        print(json.dumps({k: v for k, v in asdict(report).items() if k != "seen_done"}, indent=2))
    else:
        print(report.summary())
    lost, duplicated = len(report.lost), len(report.duplicated)
    print(f"lost {lost}, duplicated {duplicated}", file=sys.stderr)
    assert lost == 0, f"lost images: {report.lost[:20]}"
    assert duplicated == 0, f"duplicated images: {report.duplicated[:20]}"
    return 0 if not report.missing_blobs and report.host_exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
