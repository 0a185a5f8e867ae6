"""What the chain costs: the whole local stack vs. the same steps in-process, same images, one run.

Run: `.venv/bin/python -m bench.bench_chain [--images 30] [--megapixels 12] [--route …]`.

- **in-process**: the route's steps called one after the other on each image through
  `MemoryStepContext` (no storage, no queues, no Cosmos), in as many processes as the host has
  workers — the compute the chain cannot do without;
- **chain**: the same images uploaded to the local stack (Azurite, the Cosmos emulator, the local
  host with its workers), from the first upload to the last final document.

The ratio chain ÷ in-process says what orchestration costs on this machine; both figures are
measured in the same run because these machines are noisy. Photos are the repository's samples
enlarged to the requested size (Lanczos, JPEG q90), so every image is a real photo's content.
The script uses only APIs every version of the project has had, so the same file measures an
older checkout (copy it into a worktree) for a before/after on the same photos.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from pipeline.context import MemoryStepContext
from pipeline.settings import Settings
from tests.harness import SAMPLES, Pipeline, emulator_env, free_port, running_emulators

ROUTE = "prepare,analyze,transform,store"


def make_photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """`count` JPEGs of about `megapixels`, 4:3, from the samples (cycled)."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = round(width * 3 / 4)
    sources = sorted(SAMPLES.glob("*.jpg"))
    made = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as image:
            big = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        path = folder / f"{i:04d}-{sources[i % len(sources)].stem}.jpg"
        big.save(path, "JPEG", quality=90)
        made.append(path)
    return made


def _run_in_process(args: tuple[str, str]) -> float:
    """One image through every step of the route in this process; returns seconds."""
    import importlib

    route, path = args
    settings = Settings.from_env({"PIPELINE_STEPS": route})
    data = Path(path).read_bytes()
    started = time.perf_counter()
    fields: dict = {}
    artifacts: dict = {}
    for name in route.split(","):
        ctx = MemoryStepContext(settings, "bench", Path(path).name, data, fields)
        ctx.artifacts = artifacts
        fields = {**fields, **importlib.import_module(f"steps.{name}").run(ctx)}
    return time.perf_counter() - started


def in_process(route: str, files: list[Path], workers: int) -> float:
    """Images per second with `workers` processes, after one warm-up image each (models load)."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_run_in_process, [(route, str(files[0]))] * workers))
        started = time.perf_counter()
        list(pool.map(_run_in_process, [(route, str(f)) for f in files]))
        return len(files) / (time.perf_counter() - started)


def chain(env: dict, route: str, files: list[Path], workers: int) -> float:
    pipeline = Pipeline(
        {
            **env,
            "PIPELINE_STEPS": route,
            "DARKROOM_HOST_WORKERS": str(workers),
            "DARKROOM_HOST_PORT": str(free_port()),
            "DARKROOM_QUEUE_PREFIX": "bench-",
            "DARKROOM_UPLOAD_CONTAINER": "bench-uploads",
            "DARKROOM_COSMOS_CONTAINER": "bench",
        }
    ).provision()
    pipeline.start_host()
    try:
        warm = pipeline.upload("warm-up.jpg", files[0].read_bytes())  # models load in each worker
        pipeline.wait_final(*warm, timeout=600)
        started = time.perf_counter()
        pending = [pipeline.upload(f.name, f.read_bytes()) for f in files]
        for image, etag in pending:
            doc = pipeline.wait_final(image, etag, timeout=1800)
            assert doc["status"] == "done", json.dumps(doc)[:500]
        return len(files) / (time.perf_counter() - started)
    finally:
        pipeline.stop_host()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--route", default=ROUTE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        files = make_photos(folder, args.images, args.megapixels)
        size = Image.open(files[0]).size
        alone = in_process(args.route, files, args.workers)
        env = emulator_env(Path(scratch) / "stack")
        with running_emulators(env):
            chained = chain(env, args.route, files, args.workers)
    print(
        json.dumps(
            {
                "images": args.images,
                "size": f"{size[0]}x{size[1]}",
                "route": args.route,
                "workers": args.workers,
                "in_process_img_s": round(alone, 3),
                "chain_img_s": round(chained, 3),
                "chain_over_in_process": round(chained / alone, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
