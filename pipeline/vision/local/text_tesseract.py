"""Text (OCR) with Tesseract 5, run as a process per image.

The CLI rather than a binding: the Debian package is the install (`tesseract-ocr`, `-eng`),
nothing is compiled, and a crash in Tesseract cannot take the worker down. OMP_THREAD_LIMIT=1
because the pipeline already runs one worker per core; OpenMP threads would only fight them.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections import defaultdict

import numpy as np
from PIL import Image

from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities.text import Text, TextLine


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[float, float, float, float]:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def parse_tsv(tsv: str, min_confidence: float) -> Text:
    """Tesseract's TSV (one row per word) → lines with boxes and mean word confidence."""
    words: dict[tuple[int, int, int], list[tuple[str, float, tuple[int, int, int, int]]]]
    words = defaultdict(list)
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text:
            continue
        confidence = float(row["conf"]) / 100.0
        if confidence < 0:
            continue
        if text == "|":  # the LSTM model's classic confusion: a lone "|" in prose is "I"
            text = "I"
        key = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        box = (int(row["left"]), int(row["top"]), int(row["width"]), int(row["height"]))
        words[key].append((text, confidence, box))
    lines = []
    for key in sorted(words):
        entries = words[key]
        confidence = sum(c for _, c, _ in entries) / len(entries)
        if confidence < min_confidence:
            continue
        lines.append(
            TextLine(
                text=" ".join(t for t, _, _ in entries),
                box=_union([b for _, _, b in entries]),
                confidence=round(min(1.0, confidence), 4),
            )
        )
    return Text(full="\n".join(line.text for line in lines), lines=lines)


class TesseractReader(Analyzer):
    capability = "text"
    name = "tesseract"
    version = "unknown"

    def __init__(
        self,
        language: str = "eng",
        min_confidence: float = 0.4,
        timeout: float = 60.0,
        target_side: int = 1600,
    ) -> None:
        super().__init__()
        self.target_side = target_side
        self.language = language
        self.min_confidence = min_confidence
        self.timeout = timeout
        self._binary: str | None = None

    def check(self) -> None:
        self._binary = shutil.which("tesseract")
        if not self._binary:
            raise ModelUnavailable(
                "tesseract is not installed: run `make setup` "
                "(apt: tesseract-ocr tesseract-ocr-eng)"
            )
        langs = subprocess.run(
            [self._binary, "--list-langs"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if self.language not in langs:
            raise ModelUnavailable(
                f"tesseract has no '{self.language}' data (apt: tesseract-ocr-{self.language})"
            )

    def _load(self) -> None:
        self.check()
        first = subprocess.run(
            [self._binary, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.splitlines()
        self.version = first[0].split()[-1] if first else "unknown"

    def _predict(self, image: np.ndarray) -> Text:
        # Tesseract reads best at an x-height of 20-30 px; small images are enlarged (up to 2x)
        # so their text gets there, and the boxes are scaled back.
        grey = Image.fromarray(image).convert("L")
        scale = min(2.0, max(1.0, self.target_side / max(grey.size)))
        if scale > 1.0:
            grey = grey.resize(
                (round(grey.width * scale), round(grey.height * scale)), Image.Resampling.LANCZOS
            )
        png = io.BytesIO()
        grey.save(png, "PNG", compress_level=1)
        result = subprocess.run(
            [self._binary, "stdin", "stdout", "-l", self.language, "--psm", "3", "tsv"],
            input=png.getvalue(),
            capture_output=True,
            timeout=self.timeout,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"tesseract failed: {result.stderr.decode(errors='replace')[:300]}")
        text = parse_tsv(result.stdout.decode("utf-8", "replace"), self.min_confidence)
        if scale > 1.0:
            for line in text.lines:
                line.box = tuple(round(v / scale, 1) for v in line.box)
        return text
