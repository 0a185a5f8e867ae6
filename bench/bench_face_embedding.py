"""The face embedder: align and embed ms per face, one at a time and in batches of 8.

Run: `.venv/bin/python -m bench.bench_face_embedding [--rounds 20]`.

Faces: BlazeFace's on tests/fixtures/portrait.jpg and the face_recognition sdist's photos that
set-up puts in tests/fixtures/faces/ (as the analyze step sees them: upright, analysis size).
onnxruntime runs with one intra-op thread, as in the pipeline (one worker per core). Medians
after one warm-up (bench.timing.median_ms).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageOps

from bench.timing import median_ms
from local.export_face_embedder import FACES_DIR, PHOTOS
from pipeline.imaging.pixels import fit_size
from pipeline.settings import Settings
from pipeline.vision.local.face_embedding import FaceEmbedder
from pipeline.vision.providers import analyzer_for
from tests.harness import FIXTURES


def faces() -> list[tuple[np.ndarray, list[tuple[float, float]]]]:
    settings = Settings.from_env({})
    detector = analyzer_for("faces", settings.analysis)
    found = []
    for path in [FIXTURES / "portrait.jpg", *(FACES_DIR / name for name in PHOTOS)]:
        if not path.is_file():
            continue
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        size = fit_size(*image.size, settings.analysis_max_side, settings.analysis_max_pixels)
        pixels = np.asarray(image.resize(size, Image.Resampling.LANCZOS))
        found += [(pixels, face.landmarks) for face in detector.predict(pixels)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_face_embedding")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    embedder = FaceEmbedder(num_threads=1)
    embedder.load()
    found = faces()
    chips = [embedder.align(pixels, landmarks) for pixels, landmarks in found]
    align_ms = median_ms(lambda f: embedder.align(*f), found, args.rounds)
    single_ms = median_ms(embedder.embed, chips, args.rounds)
    batch = np.stack([chips[i % len(chips)] for i in range(8)])
    batch_ms = median_ms(embedder.embed, [batch], args.rounds) / 8
    print(f"face embedder {embedder.ident}, {len(found)} faces, onnxruntime 1 thread")
    print("| step | median ms per face |")
    print("|---|---|")
    print(f"| align (similarity warp to 150x150) | {align_ms:.2f} |")
    print(f"| embed, one face per call | {single_ms:.2f} |")
    print(f"| embed, batch of 8 | {batch_ms:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
