"""OCR with Tesseract (the optional `DARKROOM_TEXT_PROVIDER=tesseract` provider) on real images.

Tesseract is an apt package (`make setup` installs it on a laptop; Azure has none), so the tests
that run it are skipped where it is missing; its TSV parsing is tested everywhere. The default
local provider, PP-OCR, is tested in test_ocr_ppocr.py.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.text_tesseract import TesseractReader, parse_tsv
from tests.harness import FIXTURES, SAMPLES


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract is not installed (optional provider)"
)


@pytest.fixture(scope="module")
def reader() -> TesseractReader:
    return TesseractReader()


@needs_tesseract
def test_clean_printed_text_is_read_word_for_word(reader):
    expected = (FIXTURES / "text-clean.txt").read_text().split()
    assert reader.predict(rgb(FIXTURES / "text-clean.png")).full.split() == expected


@needs_tesseract
def test_lines_come_with_boxes_inside_the_image_and_confidences(reader):
    text = reader.predict(rgb(FIXTURES / "text-clean.png"))
    assert len(text.lines) == 13
    first = text.lines[0]
    assert first.text == "technical details are too complex to cover in the book itself."
    x, y, w, h = first.box
    assert 20 <= x <= 40 and 10 <= y <= 30 and 300 <= w <= 340 and 8 <= h <= 20
    assert all(0.5 < line.confidence <= 1 for line in text.lines)
    assert all(
        line.box[0] + line.box[2] <= 556 and line.box[1] + line.box[3] <= 257 for line in text.lines
    )


@needs_tesseract
def test_a_photo_without_text_yields_no_invented_lines(reader):
    assert reader.predict(rgb(SAMPLES / "cat-chelsea.jpg")).lines == []


def test_tsv_rows_group_into_lines_and_drop_low_confidence():
    header = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight"
        "\tconf\ttext\n"
    )
    rows = [
        "5\t1\t1\t1\t1\t1\t10\t10\t20\t10\t96\tHello",
        "5\t1\t1\t1\t1\t2\t35\t11\t30\t10\t90\tworld",
        "5\t1\t1\t1\t2\t1\t10\t30\t5\t5\t12\t~",
    ]
    text = parse_tsv(header + "\n".join(rows), min_confidence=0.4)
    assert text.full == "Hello world"
    assert text.lines[0].box == (10.0, 10.0, 55.0, 11.0)
    assert text.lines[0].confidence == pytest.approx(0.93)


@needs_tesseract
def test_missing_language_data_is_a_clear_start_up_error():
    with pytest.raises(ModelUnavailable, match="tesseract-ocr-klingon"):
        TesseractReader(language="klingon").check()
