"""Compute slots: never more steps computing than slots, later steps first, I/O lets go."""

from __future__ import annotations

import threading
import time

from pipeline.engine.compute_slots import ComputeSlots, network_wait, process_slots, slots_for


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.order: list[str] = []

    def enter(self, name: str) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.order.append(name)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_never_more_at_once_than_slots():
    slots, tally = ComputeSlots(2), Tally()

    def work(i: int) -> None:
        with slots.held():
            tally.enter(str(i))
            time.sleep(0.01)
            tally.leave()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tally.most == 2 and len(tally.order) == 12


def test_later_steps_and_resuming_io_go_first():
    slots, tally = ComputeSlots(1), Tally()
    gate = threading.Event()

    def holder() -> None:
        with slots.held():
            gate.wait()

    def step(name: str, priority: int) -> None:
        with slots.held(priority=priority):
            tally.enter(name)
            tally.leave()

    first = threading.Thread(target=holder)
    first.start()
    time.sleep(0.05)
    waiters = [
        threading.Thread(target=step, args=(name, priority))
        for name, priority in (("prepare-a", 0), ("store", 4), ("prepare-b", 0), ("analyze", 1))
    ]
    for t in waiters:
        t.start()
        time.sleep(0.02)  # arrival order as listed
    gate.set()
    first.join()
    for t in waiters:
        t.join()
    assert tally.order == ["store", "analyze", "prepare-a", "prepare-b"]


def test_io_gives_the_slot_up_and_is_timed_apart():
    slots = ComputeSlots(1)
    other_ran = threading.Event()

    def other() -> None:
        with slots.held():
            other_ran.set()

    with slots.held() as timing:
        busy(0.05)
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.05)
        assert not other_ran.is_set()  # the slot is held while computing
        with slots.released():
            assert other_ran.wait(5)  # …and free while this step waits on I/O
            time.sleep(0.1)
        busy(0.05)
    thread.join()
    assert timing.io >= 0.1
    assert 0.08 <= timing.cpu < timing.io + 0.1  # the busy loops, not the sleeps
    assert timing.wait < 0.05


def test_released_without_a_slot_is_a_no_op():
    slots = ComputeSlots(1)
    # would deadlock, or let two in, if released() had taken or freed a slot
    with slots.released(), slots.held() as timing:
        pass
    assert timing.io == 0


def test_a_wait_inside_a_wait_gives_the_slot_up_once():
    """A step waiting for another thread's shared call (one Azure call per image) waits on the
    network inside that wait: the slot is released once and taken back once, or a second
    step would be let in beside the first, or the last one would never get it back."""
    slots = ComputeSlots(1)
    with slots.held():
        with slots.released():
            with slots.released():
                assert slots._free == 1
            assert slots._free == 1
        assert slots._free == 0
    assert slots._free == 1


def test_slots_share_the_cores_among_processes():
    assert slots_for(2, cores=2) == 1
    assert slots_for(1, cores=2) == 2
    assert slots_for(4, cores=2) == 1
    assert slots_for(1, cores=8) == 8


def test_network_wait_frees_the_process_slot():
    slots = process_slots(1)
    other_ran = threading.Event()

    def other() -> None:
        with slots.held():
            other_ran.set()

    with slots.held():
        thread = threading.Thread(target=other)
        thread.start()
        with network_wait():
            assert other_ran.wait(5)
    thread.join()
