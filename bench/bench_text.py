"""Text providers side by side on the same photos: words found / correct and ms per image.

Run: `.venv/bin/python -m bench.bench_text [--rounds 3]` (Tesseract rows only where it is
installed; it is the optional `DARKROOM_TEXT_PROVIDER=tesseract`).

Why: the default local text provider changed from Tesseract to PP-OCR, and the reason is
quality on scene text at an acceptable cost; this is the measurement, repeatable. "found" counts
the words a provider returned, "correct" those that are in the image's transcription (lower
case, letters and digits only, each transcribed word matched at most once); the clean page is
scored in order (longest common subsequence with its ground truth). Photos with an empty
transcription have no text a reader could vouch for: every word found there is wrong. Times
are medians after a warm-up (bench.timing), one thread, whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench.timing import median_ms
from pipeline.vision.local.text_ppocr import PPOCRReader
from pipeline.vision.local.text_tesseract import TesseractReader
from tests.harness import FIXTURES, SAMPLES

# Read by eye; text-defocus.jpg is a blurred printed page: only the words a person can make out,
# cut-off words at the edges left out.
TRANSCRIPTIONS = {
    "street-notice-sign.jpg": "NOTICE DOUBLE PARKING PROHIBITED AT ALL TIMES The Washington Post",
    "shopfront-sign.jpg": "priory galleries at the ship priory galleries at the ship",
    "motorcycle-garage.jpg": "YAMAHA MAXIM YAMAHA",
    "car-licenseplate-motion.jpg": "",
    "street-leuven.jpg": "",
    "cat-chelsea.jpg": "",
    "text-defocus.jpg": (
        "Chikkerur Cartwright and Govindaraju of the local ridge orientations the probability of "
        "a given block is computed as the marginal where of for the block is estimated as"
    ),
}
CLEAN = FIXTURES / "text-clean.png"


def _words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^0-9a-z]", "", t.lower()) for t in text.split()) if w]


def score(name: str, text: str) -> tuple[int, int, int]:
    """(words found, correct, words in the transcription)."""
    if name == CLEAN.name:
        expected, got = (CLEAN.with_suffix(".txt")).read_text().split(), text.split()
        previous = [0] * (len(got) + 1)
        for word in expected:
            current = [0]
            for j, other in enumerate(got):
                current.append(
                    previous[j] + 1 if word == other else max(previous[j + 1], current[j])
                )
            previous = current
        return len(got), previous[-1], len(expected)
    found, truth = _words(text), Counter(_words(TRANSCRIPTIONS[name]))
    return len(found), sum((Counter(found) & truth).values()), sum(truth.values())


def images() -> list[Path]:
    return [CLEAN, *(SAMPLES / name for name in TRANSCRIPTIONS)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    readers = [PPOCRReader()]
    if shutil.which("tesseract"):
        readers.insert(0, TesseractReader())
    totals: dict[str, list[float]] = {}
    print(f"{'image':<28} {'provider':<36} found correct/truth     ms")
    for path in images():
        image = np.asarray(Image.open(path).convert("RGB"))
        for reader in readers:
            reader.load()
            text = reader.predict(image).full
            ms = median_ms(reader.predict, [image], args.rounds)
            found, correct, truth = score(path.name, text)
            t = totals.setdefault(reader.ident, [0, 0, 0, 0.0])
            if path != CLEAN:
                t[0] += found
                t[1] += correct
                t[2] += truth
            t[3] += ms
            row = f"{found:5d} {correct:4d}/{truth:<4d}  {ms:7.0f}"
            print(f"{path.name:<28} {reader.ident:<36} {row}")
    n = len(images())
    for ident, (found, correct, truth, ms) in totals.items():
        print(
            f"{ident}: scene + blurred photos {int(correct)}/{int(truth)} words correct of "
            f"{int(found)} found; mean {ms / n:.0f} ms per image"
        )


if __name__ == "__main__":
    main()
