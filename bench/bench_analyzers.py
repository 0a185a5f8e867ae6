"""Each local analyzer and the whole analyze step on ~2 MP photos: ms per image and memory.

Run: `.venv/bin/python -m bench.bench_analyzers [--rounds 5]`.
The text row is the default local provider (PP-OCR); `bench.bench_text` compares it with
Tesseract image by image (words found / correct, ms).

Times are medians after one warm-up, and each is also given as a ratio to a baseline measured in
the same process — decoding the same 2 MP JPEG with Pillow — because these machines are noisy.
Memory: the peak RSS of this process with every model loaded (what one worker holds); every
model runs in-process (the object detector too, on onnxruntime: no Node process any more).
"""

from __future__ import annotations

import argparse
import io
import resource
import time

import numpy as np
from PIL import Image

from bench.timing import median_ms
from pipeline.analyzers.registry import enabled_analyzers
from pipeline.context import MemoryStepContext
from pipeline.settings import Settings
from steps import analyze, prepare
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env({})
    jpegs = two_megapixel_jpegs()
    arrays = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    baseline = median_ms(
        lambda j: Image.open(io.BytesIO(j)).convert("RGB").load(), jpegs, args.rounds
    )
    print(f"baseline: Pillow decode of a 2 MP JPEG  {baseline:7.1f} ms  (ratio 1.00)")
    for capability, analyzer in enabled_analyzers(settings.analysis).items():
        started = time.perf_counter()
        analyzer.load()
        load_s = time.perf_counter() - started
        ms = median_ms(analyzer.predict, arrays, args.rounds)
        print(
            f"{capability:<10} {analyzer.ident:<36} {ms:7.1f} ms  (ratio {ms / baseline:5.1f})"
            f"  load {load_s:.2f} s"
        )

    prepared = []
    for data in jpegs:
        ctx = MemoryStepContext(settings, "bench", "bench.jpg", data)
        prepared.append((prepare.run(ctx), ctx.artifacts))

    def whole_step(item) -> None:
        fields, artifacts = item
        ctx = MemoryStepContext(settings, "bench", "bench.jpg", b"", fields=fields)
        ctx.artifacts = artifacts
        analyze.run(ctx)

    ms = median_ms(whole_step, prepared, args.rounds)
    print(
        f"{'analyze step (all five, from the analysis JPEG)':<47} {ms:7.1f} ms  "
        f"(ratio {ms / baseline:5.1f})"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS of this worker with all models loaded: {peak:.0f} MB (before loading: "
        f"{base_rss:.0f} MB)"
    )


if __name__ == "__main__":
    main()
