"""The analyze step on real photos: every capability, boxes in original coordinates, isolation."""

from __future__ import annotations

import pytest

from pipeline.engine.context import MemoryStepContext
from pipeline.settings import Settings
from pipeline.vision import providers as registry
from pipeline.vision.base import Analyzer
from pipeline.vision.capabilities import capabilities
from steps import analyze, prepare
from tests.harness import FIXTURES, SAMPLES


def analyzed(path, env: dict | None = None) -> dict:
    """prepare then analyze, in memory, as the chain would run them."""
    settings = Settings.from_env(env or {})
    ctx = MemoryStepContext(settings, "img", path.name, path.read_bytes())
    fields = prepare.run(ctx)
    after = MemoryStepContext(settings, "img", path.name, path.read_bytes(), fields=fields)
    after.artifacts = ctx.artifacts
    return {**fields, **analyze.run(after)}


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def dog() -> dict:
    return analyzed(SAMPLES / "dog-bicycle.jpg")


def test_every_capability_reports_with_the_model_that_produced_it(dog):
    analysis = dog["analysis"]
    assert analysis["errors"] == {}
    assert set(analysis["models"]) == {"tags", "objects", "faces", "text", "moderation"}
    assert all("@" in ident for ident in analysis["models"].values())
    assert {"tags", "objects", "faces", "text", "moderation"} <= set(analysis)


def test_dog_photo_is_tagged_and_its_objects_boxed(dog):
    analysis = dog["analysis"]
    names = {o["name"] for o in analysis["objects"]}
    assert {"dog", "bicycle"} <= names
    assert analysis["moderation"]["verdict"] == "safe"
    assert analysis["faces"] == []
    for item in analysis["objects"]:
        x, y, w, h = item["box"]
        assert x >= 0 and y >= 0 and x + w <= 769 and y + h <= 577


def test_cat_is_labelled_a_cat_and_has_no_face():
    analysis = analyzed(FIXTURES / "cat.jpg")["analysis"]
    top5 = [t["name"] for t in analysis["tags"][:5]]
    assert any("cat" in name for name in top5), top5
    assert analysis["faces"] == []


def test_face_box_lands_on_the_face_in_an_exif_rotated_photo():
    result = analyzed(FIXTURES / "rotated-exif.jpg")
    assert (result["image"]["width"], result["image"]["height"]) == (384, 512)
    faces = result["analysis"]["faces"]
    assert len(faces) == 1
    # Located by hand in the upright image (tests/fixtures/PROVENANCE.md).
    assert iou(faces[0]["box"], (116, 72, 88, 104)) > 0.5


def test_boxes_are_scaled_to_the_original_when_the_analysis_image_is_smaller(tmp_path):
    small = analyzed(FIXTURES / "portrait.jpg")["analysis"]["faces"][0]["box"]
    shrunk = analyzed(FIXTURES / "portrait.jpg", {"DARKROOM_ANALYSIS_MAX_SIDE": "256"})["analysis"][
        "faces"
    ][0]["box"]
    assert iou(small, shrunk) > 0.6  # same face, same original coordinates


def test_clean_text_is_read_through_the_step():
    text = analyzed(FIXTURES / "text-clean.png")["analysis"]["text"]
    assert text["full"].split() == (FIXTURES / "text-clean.txt").read_text().split()


class _Broken(Analyzer):
    capability = "moderation"
    name = "broken-moderator"
    version = "0"

    def __init__(self, **options) -> None:
        super().__init__()

    def _load(self) -> None:
        pass

    def _predict(self, image):
        raise RuntimeError("weights corrupted (simulated)")


def test_one_failing_capability_does_not_lose_the_others(monkeypatch):
    monkeypatch.setitem(capabilities()["moderation"].providers, "local", f"{__name__}:_Broken")
    monkeypatch.setattr(registry, "_instances", {})
    analysis = analyzed(FIXTURES / "portrait.jpg")["analysis"]
    assert analysis["errors"] == {"moderation": "RuntimeError: weights corrupted (simulated)"}
    assert "moderation" not in analysis
    assert len(analysis["faces"]) == 1 and analysis["tags"]


def test_only_the_enabled_capabilities_run():
    analysis = analyzed(FIXTURES / "cat.jpg", {"DARKROOM_ANALYZERS": "tags,moderation"})["analysis"]
    assert set(analysis["models"]) == {"tags", "moderation"}
    assert "faces" not in analysis and "objects" not in analysis
