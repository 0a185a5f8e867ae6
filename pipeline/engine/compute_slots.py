"""At most N steps compute at once in a worker process; storage I/O inside a step lets go.

Why: the host hands a worker up to `batchSize` messages per queue at once, each on its own
thread. Left alone, a 2-core machine ran ~3 analyses, a transform and a prepare per worker at
the same time: onnxruntime, OpenCV and the JPEG codecs fought for the cores, peak memory grew
with every image in flight, and every recorded `duration_ms` was 5 to 9 times the work it measured,
because most of it was waiting for a core. With a slot per core the work runs one at a time
per core (the same throughput, less memory), a step's downloads and uploads give the slot up
so the core is not idle while they wait on the network, and the time is split honestly:

- `wait_ms`: waiting for a slot (queueing inside the worker, not the step's cost);
- `io_ms`: the step's storage reads and writes;
- `cpu_ms`: CPU time of the step's thread (onnxruntime and OpenCV run on the calling thread
  with one thread each: see `runtime_threads`), what the step costs whatever else runs;
- `duration_ms`: wall time of the delivery minus `wait_ms`.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class SlotTiming:
    """Seconds a delivery spent waiting for a slot and in storage I/O, and its thread's CPU."""

    wait: float = 0.0
    io: float = 0.0
    cpu: float = 0.0


def slots_for(processes: int, cores: int | None = None) -> int:
    """Slots per worker process: the cores shared out among the processes, at least one."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, processes))


class ComputeSlots:
    """A counting semaphore whose waiters are served by priority, then in arrival order.

    A step further along the route goes first (`held(priority=position)`), and a step coming
    back from I/O before any new one: finishing images in flight keeps memory and end-to-end
    latency down while a backlog waits at the first step, instead of starting every image at
    once and finishing none."""

    _RESUMING = 1_000_000  # above any route position

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._free = self.slots
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # heap of (-priority, arrival)
        self._arrivals = itertools.count()
        self._local = threading.local()

    def _acquire(self, priority: int) -> None:
        with self._cond:
            ticket = (-priority, next(self._arrivals))
            heapq.heappush(self._waiting, ticket)
            while not (self._free and self._waiting[0] == ticket):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            if self._free and self._waiting:
                self._cond.notify_all()  # another slot is free: the next in line may take it

    def _release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    @contextmanager
    def held(self, priority: int = 0) -> Iterator[SlotTiming]:
        """Hold a slot for the body (a step's run); the timing fills in as it goes."""
        timing = SlotTiming()
        asked = time.perf_counter()
        self._acquire(priority)
        timing.wait += time.perf_counter() - asked
        cpu = time.thread_time()
        self._local.timing = timing
        try:
            yield timing
        finally:
            self._local.timing = None
            timing.cpu += time.thread_time() - cpu
            self._release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the slot up around I/O (a no-op on a thread that holds none, or that gave it
        up already: a wait may contain others, e.g. waiting for a shared call that itself
        waits on the network)."""
        timing: SlotTiming | None = getattr(self._local, "timing", None)
        if timing is None or getattr(self._local, "released", False):
            yield
            return
        self._release()
        self._local.released = True
        started = time.perf_counter()
        try:
            yield
        finally:
            self._local.released = False
            done = time.perf_counter()
            timing.io += done - started
            self._acquire(self._RESUMING)
            timing.wait += time.perf_counter() - done


_process_slots: ComputeSlots | None = None
_process_lock = threading.Lock()


def process_slots(slots: int) -> ComputeSlots:
    """The one ComputeSlots of this process (every runner in it shares the same cores)."""
    global _process_slots
    with _process_lock:
        if _process_slots is None:
            _process_slots = ComputeSlots(slots)
        return _process_slots


@contextmanager
def network_wait() -> Iterator[None]:
    """For code that waits on a remote service inside a step (the Azure Vision analyzers):
    the calling thread's slot, if it holds one, is free for other work meanwhile."""
    slots = _process_slots
    if slots is None:
        yield
        return
    with slots.released():
        yield


_compute_threads: ThreadPoolExecutor | None = None


def on_compute_thread(slots: int, priority: int, work: Callable[[], T]) -> T:
    """Run `work` on one of this process's `slots` long-lived compute threads, holding a
    compute slot (for work that arrives on request threads: face search by image); blocks the
    calling thread until it is done.

    Why threads of their own, not just the slot: glibc gives each thread that allocates its own
    malloc arena, and a freed decode buffer stays in that arena. Twelve 49 MP face searches
    decoded one at a time, each on its own request thread, grew the local host to 2.5 GB
    (bench/bench_face_search_memory.py; 0.6 GB with MALLOC_ARENA_MAX=2); on a fixed few
    threads the same memory is reused."""
    global _compute_threads
    with _process_lock:
        if _compute_threads is None:
            _compute_threads = ThreadPoolExecutor(max(1, slots), thread_name_prefix="compute")
    slots_held = process_slots(slots)

    def held() -> T:
        with slots_held.held(priority=priority):
            return work()

    return _compute_threads.submit(held).result()
