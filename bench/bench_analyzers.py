"""Each local analyzer and the whole analyze step on ~2 MP photos: ms per image and memory.

Run: `.venv/bin/python -m bench.bench_analyzers [--rounds 5]`; `--worker`: a worker's view instead,
every sample photo enlarged to 12 MP and prepared, then every model loaded and analyze + recognize
run on each (CPU per capability, peak RSS of the process).
The text row is the default local provider (PP-OCR); `bench.bench_text` compares it with
Tesseract image by image (words found / correct, ms).

Times are medians after one warm-up, wall clock and CPU (the process's, every thread: what the
other worker on the machine loses), and each is also given as a ratio to a baseline measured in
the same process — decoding the same 2 MP JPEG with Pillow — because these machines are noisy.
Memory: the peak RSS of this process (VmHWM) with every model loaded and run, the face embedder
of the recognize step too: what one worker holds; every model runs in-process.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from pipeline.engine.context import MemoryStepContext
from pipeline.people.face_search import face_embedder
from pipeline.settings import Settings
from pipeline.vision.providers import enabled_analyzers
from steps import analyze, prepare, recognize
from tests.harness import SAMPLES

PHOTOS = [
    "dog-bicycle.jpg",
    "horses-field.jpg",
    "person-dog-horse.jpg",
    "street-notice-sign.jpg",
    "football-messi.jpg",
    "aloe-plant-indoor.jpg",
]
TWO_MP = (1632, 1224)


def two_megapixel_jpegs() -> list[bytes]:
    """Real photos enlarged to 2 MP: the analysis image size the pipeline feeds the models."""
    out = []
    for name in PHOTOS:
        image = Image.open(SAMPLES / name).convert("RGB").resize(TWO_MP, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def timed(fn: Callable[[Any], object], inputs: Sequence, rounds: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of the process) per call, after one warm-up call."""
    fn(inputs[0])
    wall, cpu = [], []
    for _ in range(rounds):
        for item in inputs:
            started, cpu_started = time.perf_counter(), time.process_time()
            fn(item)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process in MB (Linux: VmRSS, VmHWM)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def row(label: str, wall: float, cpu: float, baseline: float, extra: str = "") -> str:
    return (
        f"{label:<47} {wall:7.1f} ms  cpu {cpu:7.1f} ms  (ratio {wall / baseline:5.1f}, "
        f"cpu {cpu / baseline:5.1f}){extra}"
    )


def worker(settings: Settings, rounds: int) -> None:
    """Every sample photo at 12 MP through prepare, then (peak RSS reset, Linux) every model
    loaded and analyze + recognize on each: CPU ms per capability, peak RSS."""
    prepared = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        image = Image.open(path).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        ctx = MemoryStepContext(settings, "bench", path.name, buffer.getvalue())
        prepared.append((prepare.run(ctx), ctx.artifacts))
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")  # VmHWM from here: the preparing is not the worker's analyze cost
    except OSError:
        pass
    before = rss_mb()[0]
    analyzers = enabled_analyzers(settings.analysis)
    for analyzer in analyzers.values():
        analyzer.load()
    face_embedder().load()
    loaded = rss_mb()[0]
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for fields, artifacts in prepared:
            ctx = MemoryStepContext(settings, "bench", "bench.jpg", b"", fields=fields)
            ctx.artifacts = artifacts
            started = time.process_time()
            out = analyze.run(ctx)
            times.setdefault("analyze step, cpu", []).append((time.process_time() - started) * 1000)
            for capability, ms in out["analysis"]["duration_ms"].items():
                times.setdefault(f"{capability}, wall", []).append(ms)
            ctx.fields = {**fields, **out}
            started = time.process_time()
            recognize.run(ctx)
            times.setdefault("recognize step, cpu", []).append(
                (time.process_time() - started) * 1000
            )
    for name, values in times.items():
        print(f"{name:<22} {statistics.median(values):7.1f} ms (median of {len(values)})")
    now, peak = rss_mb()
    print(
        f"{len(prepared)} photos at 12 MP: RSS {before:.0f} MB before loading, {loaded:.0f} MB "
        f"loaded, peak {peak:.0f} MB, now {now:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help="12 MP photos, a worker's view")
    args = parser.parse_args()
    settings = Settings.from_env({})
    if args.worker:
        worker(settings, args.rounds)
        return
    jpegs = two_megapixel_jpegs()
    arrays = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
    base_rss = rss_mb()[0]

    baseline, baseline_cpu = timed(
        lambda j: Image.open(io.BytesIO(j)).convert("RGB").load(), jpegs, args.rounds
    )
    print(row("baseline: Pillow decode of a 2 MP JPEG", baseline, baseline_cpu, baseline))
    for capability, analyzer in enabled_analyzers(settings.analysis).items():
        started = time.perf_counter()
        analyzer.load()
        load_s = time.perf_counter() - started
        wall, cpu = timed(analyzer.predict, arrays, args.rounds)
        label = f"{capability:<10} {analyzer.ident}"
        print(row(label, wall, cpu, baseline, f"  load {load_s:.2f} s"))

    prepared = []
    for data in jpegs:
        ctx = MemoryStepContext(settings, "bench", "bench.jpg", data)
        prepared.append((prepare.run(ctx), ctx.artifacts))

    def whole_step(item) -> dict:
        fields, artifacts = item
        ctx = MemoryStepContext(settings, "bench", "bench.jpg", b"", fields=fields)
        ctx.artifacts = artifacts
        return analyze.run(ctx)

    wall, cpu = timed(whole_step, prepared, args.rounds)
    print(row("analyze step (all five, from the analysis JPEG)", wall, cpu, baseline))

    embedder = face_embedder()  # the recognize step's model lives in the worker too
    for fields, artifacts in prepared:
        ctx = MemoryStepContext(settings, "bench", "bench.jpg", b"", fields=fields)
        ctx.artifacts = artifacts
        ctx.fields = {**fields, **whole_step((fields, artifacts))}
        recognize.run(ctx)
    embedder.load()
    now, peak = rss_mb()
    print(
        f"peak RSS of this worker with every model loaded and run (face embedder too): "
        f"{peak:.0f} MB (before loading: {base_rss:.0f} MB; now {now:.0f} MB)"
    )


if __name__ == "__main__":
    main()
