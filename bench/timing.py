"""The one way benches time a function: one warm-up call, then the median over rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def median_ms(fn: Callable[[Any], object], inputs: Sequence, rounds: int = 3) -> float:
    for item in inputs[:1]:
        fn(item)  # warm-up: lazy loads and caches are not what we measure
    times = []
    for _ in range(rounds):
        for item in inputs:
            started = time.perf_counter()
            fn(item)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
