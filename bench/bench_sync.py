"""Latency of `POST /api/analyze` (the sync path) on 2 MP photos, against the same work in-process.

Run: `.venv/bin/python -m bench.bench_sync [--requests 30] [--megapixels 2]`.

- **in-process**: prepare + analyze (the sync capabilities) on each photo through
  `MemoryStepContext`: the compute the answer cannot do without;
- **http, settled**: one request at a time through the local host, each sent once the previous
  image has finished its asynchronous rest (OCR, transform, store), so nothing else runs;
- **http, back to back**: one request after the other as fast as answers come; the
  asynchronous rest of earlier images competes for the same two cores, as it would on one
  instance under load.

p50/p95 of each, and the ratio http ÷ in-process (what storage, Cosmos and HTTP add), in one
run because these machines are noisy. The default sync capabilities: tags, faces, objects,
moderation (OCR left to the queue).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.bench_chain import make_photos
from pipeline.engine.context import MemoryStepContext
from pipeline.engine.sync_path import sync_settings, sync_steps
from pipeline.settings import Settings
from tests.harness import Pipeline, emulator_env, isolated_env, running_emulators

ROUTE = "prepare,analyze,transform,store"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def in_process(photos: list[Path]) -> list[float]:
    from pipeline.framework.registry import load_step

    settings, _ = sync_settings(Settings.from_env({"PIPELINE_STEPS": ROUTE}))
    steps = [load_step(spec) for spec in sync_steps(tuple(settings.pipeline_steps))]
    times = []
    for i, path in enumerate([photos[0], *photos]):  # the first: warm-up
        data = path.read_bytes()
        started = time.perf_counter()
        ctx = MemoryStepContext(settings, f"{i:032x}", path.name, data)
        for step in steps:
            ctx.fields = {**ctx.fields, **step.run(ctx)}
        if i:
            times.append((time.perf_counter() - started) * 1000)
    return times


def over_http(pipeline: Pipeline, key: str, photos: list[Path], settled: bool) -> list[float]:
    base = f"http://127.0.0.1:{pipeline.settings.host_port}"
    headers = {"x-api-key": key, "Content-Type": "image/jpeg"}
    times = []
    for i, path in enumerate([photos[0], *photos]):
        data = path.read_bytes()
        started = time.perf_counter()
        answer = requests.post(
            f"{base}/api/analyze?name={path.name}", data=data, headers=headers, timeout=60
        )
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        if i:
            times.append(elapsed)
        if settled:
            image = answer.json()["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                doc = pipeline.results.get(image)
                if doc and doc["status"] == "done" and "notifications" in doc:
                    break
                time.sleep(0.1)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    photos = make_photos(folder, args.requests, args.megapixels)
    key = "drk_" + secrets.token_urlsafe(24)
    env = isolated_env(
        emulator_env(folder / "stack"),
        "bsync-",
        ROUTE,
        DARKROOM_HOST_WORKERS=str(args.workers),
        DARKROOM_API_KEYS=f"bench:{hashlib.sha256(key.encode()).hexdigest()}",
        DARKROOM_RATE_PER_MINUTE="100000",
        DARKROOM_RATE_BURST="100000",
        DARKROOM_IMAGES_PER_DAY="100000",
    )
    results: dict[str, list[float]] = {"in-process": in_process(photos)}
    with running_emulators(env):
        pipeline = Pipeline(env).provision().start_host()
        try:
            results["http, settled"] = over_http(pipeline, key, photos, settled=True)
            results["http, back to back"] = over_http(pipeline, key, photos, settled=False)
        finally:
            pipeline.stop_host()
    base = statistics.median(results["in-process"])
    report = {
        name: {
            "p50_ms": round(statistics.median(t), 1),
            "p95_ms": round(percentile(t, 0.95), 1),
            "p50_vs_in_process": round(statistics.median(t) / base, 2),
        }
        for name, t in results.items()
    }
    print(
        json.dumps({"megapixels": args.megapixels, "requests": args.requests, **report}, indent=2)
    )


if __name__ == "__main__":
    main()
