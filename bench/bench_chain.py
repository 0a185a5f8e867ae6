"""Throughput of the whole chain on the local stack, and prepare's cost per image.

Run: `.venv/bin/python -m bench.bench_chain [--images 40]`. Figures are ratios against a
baseline measured in the same process, because these machines are noisy:
- prepare in-process vs. a bare Pillow decode + JPEG re-encode of the same files;
- the chain with N worker processes vs. 1 worker (images per second, upload to last `done`).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.timing import median_ms
from pipeline.context import MemoryStepContext
from pipeline.settings import Settings
from steps import prepare
from tests.harness import SAMPLES, Pipeline, emulator_env, free_port, running_emulators


def _baseline(data: bytes) -> None:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.save(io.BytesIO(), "JPEG", quality=88)


def bench_prepare() -> dict:
    settings = Settings.from_env({})
    files = [p.read_bytes() for p in sorted(SAMPLES.glob("*.jpg"))]
    prep = median_ms(lambda d: prepare.run(MemoryStepContext(settings, "b", "b.jpg", d)), files)
    base = median_ms(_baseline, files)
    return {
        "prepare_ms": round(prep, 1),
        "baseline_ms": round(base, 1),
        "ratio": round(prep / base, 2),
    }


def _throughput(env: dict, workers: int, images: int, files: list[Path]) -> float:
    pipeline = Pipeline(
        {
            **env,
            "DARKROOM_HOST_WORKERS": str(workers),
            "DARKROOM_HOST_PORT": str(free_port()),
            "DARKROOM_QUEUE_PREFIX": f"b{workers}-",
            "DARKROOM_UPLOAD_CONTAINER": f"b{workers}-uploads",
            "DARKROOM_COSMOS_CONTAINER": f"bench{workers}",
        }
    ).provision()
    pipeline.start_host()
    try:
        started = time.perf_counter()
        pending = [
            pipeline.upload(
                f"{i:04d}-{files[i % len(files)].name}", files[i % len(files)].read_bytes()
            )
            for i in range(images)
        ]
        for image, etag in pending:
            assert pipeline.wait_final(image, etag, timeout=600)["status"] == "done"
        return images / (time.perf_counter() - started)
    finally:
        pipeline.stop_host()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    print("prepare in-process (median ms/image over samples/):", bench_prepare())
    files = sorted(SAMPLES.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as data:
        env = {**emulator_env(Path(data)), "PIPELINE_STEPS": "prepare,store"}
        with running_emulators(env):
            one = _throughput(env, 1, args.images, files)
            two = _throughput(env, 2, args.images, files)
    print(
        f"chain throughput, {args.images} images: 1 worker {one:.2f} img/s, "
        f"2 workers {two:.2f} img/s, ratio {two / one:.2f}"
    )


if __name__ == "__main__":
    main()
