"""The published derivative: anonymised faces (measured), stripped metadata, deterministic."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
from PIL import Image

from pipeline.engine.context import MemoryStepContext
from pipeline.settings import Settings
from steps import analyze, prepare, transform
from tests.harness import FIXTURES

PORTRAIT_FACE = (180, 72, 88, 104)  # by hand, tests/fixtures/PROVENANCE.md


def run_chain(path, env: dict | None = None, with_analysis: bool = True):
    """prepare → analyze → transform in memory; returns (fields, published image, bytes)."""
    settings = Settings.from_env(env or {})
    data = path.read_bytes()
    ctx = MemoryStepContext(settings, "img", path.name, data)
    fields = prepare.run(ctx)
    if with_analysis:
        actx = MemoryStepContext(settings, "img", path.name, data, fields=fields)
        actx.artifacts = ctx.artifacts
        fields |= analyze.run(actx)
    tctx = MemoryStepContext(settings, "img", path.name, data, fields=fields)
    fields |= transform.run(tctx)
    published = fields["published"]
    if "withheld" in published:
        return fields, None, None
    raw = tctx.artifacts[published["name"]]
    return fields, Image.open(io.BytesIO(raw)), raw


def region_diff(a: Image.Image, b: Image.Image, box) -> float:
    x, y, w, h = (int(v) for v in box)
    crop = (x, y, x + w, y + h)
    pa = np.asarray(a.convert("RGB").crop(crop), dtype=np.float32)
    pb = np.asarray(b.convert("RGB").crop(crop), dtype=np.float32)
    return float(np.abs(pa - pb).mean())


def outside_diff(a: Image.Image, b: Image.Image, box, margin: float = 0.5) -> float:
    """Mean difference away from the (generously grown) face region."""
    x, y, w, h = box
    mask = np.ones((a.height, a.width), bool)
    mask[
        max(0, int(y - h * margin)) : int(y + h * (1 + margin)),
        max(0, int(x - w * margin)) : int(x + w * (1 + margin)),
    ] = False
    pa = np.asarray(a.convert("RGB"), dtype=np.float32)[mask]
    pb = np.asarray(b.convert("RGB"), dtype=np.float32)[mask]
    return float(np.abs(pa - pb).mean())


def correlation(a: Image.Image, b: Image.Image, box) -> float:
    x, y, w, h = (int(v) for v in box)
    crop = (x, y, x + w, y + h)
    pa = np.asarray(a.convert("L").crop(crop), dtype=np.float64).ravel()
    pb = np.asarray(b.convert("L").crop(crop), dtype=np.float64).ravel()
    pa, pb = pa - pa.mean(), pb - pb.mean()
    return float((pa @ pb) / np.sqrt((pa @ pa) * (pb @ pb)))


ORIGINAL = Image.open(FIXTURES / "portrait.jpg").convert("RGB")


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_faces_are_anonymised_and_the_rest_stays_close(mode):
    fields, published, _ = run_chain(FIXTURES / "portrait.jpg", {"DARKROOM_ANONYMIZE_FACES": mode})
    assert fields["published"]["anonymised"] == {"mode": mode, "faces": 1, "text_regions": 0}
    assert published.size == ORIGINAL.size
    assert region_diff(ORIGINAL, published, PORTRAIT_FACE) > 20
    assert correlation(ORIGINAL, published, PORTRAIT_FACE) < 0.6  # face structure is gone
    assert outside_diff(ORIGINAL, published, PORTRAIT_FACE) < 4  # only re-encoding noise


def test_policy_off_leaves_faces_as_they_are():
    fields, published, _ = run_chain(FIXTURES / "portrait.jpg", {"DARKROOM_ANONYMIZE_FACES": "off"})
    assert fields["published"]["anonymised"]["mode"] == "off"
    assert region_diff(ORIGINAL, published, PORTRAIT_FACE) < 4
    assert correlation(ORIGINAL, published, PORTRAIT_FACE) > 0.97


def test_anonymisation_holds_at_small_scale_too():
    """Strength follows the face's size: a 4x smaller derivative hides the face as well."""
    _, small, _ = run_chain(FIXTURES / "portrait.jpg", {"DARKROOM_PUBLISH_MAX_SIDE": "128"})
    reference = ORIGINAL.resize(small.size, Image.Resampling.LANCZOS)
    face = tuple(v / 4 for v in PORTRAIT_FACE)
    assert small.size == (128, 128)
    assert correlation(reference, small, face) < 0.6


def test_gps_and_camera_never_reach_the_published_derivative():
    fields, published, raw = run_chain(FIXTURES / "gps.jpg")
    assert fields["gps"]  # the original has a position…
    exif = published.getexif()
    assert len(exif) == 0 and not exif.get_ifd(0x8825)  # …the derivative has no EXIF at all
    assert b"Darkroom Test" not in raw and b"Fixture Cam" not in raw
    assert fields["published"]["metadata"] == []


def test_only_allow_listed_metadata_is_kept():
    fields, published, raw = run_chain(
        FIXTURES / "gps.jpg", {"DARKROOM_PUBLISH_KEEP_METADATA": "datetime_original,copyright"}
    )
    exif = published.getexif()
    assert not exif.get_ifd(0x8825)  # still no GPS
    assert 0x010F not in exif and 0x0110 not in exif  # no make/model
    assert exif.get_ifd(0x8769).get(0x9003) == "2024:05:01 12:00:00"
    assert fields["published"]["metadata"] == ["datetime_original"]  # no copyright in source
    assert b"Fixture Cam" not in raw


def test_gps_cannot_be_allow_listed():
    with pytest.raises(ValueError, match="GPS and camera serials are never published"):
        Settings.from_env({"DARKROOM_PUBLISH_KEEP_METADATA": "gps"})


def test_faces_unknown_means_withheld_not_published_raw():
    fields, published, _ = run_chain(FIXTURES / "portrait.jpg", with_analysis=False)
    assert published is None
    assert "face detection did not run" in fields["published"]["withheld"]


def test_downscaled_to_the_configured_side_in_webp():
    fields, published, _ = run_chain(
        FIXTURES / "dog.jpg",
        {"DARKROOM_PUBLISH_MAX_SIDE": "400", "DARKROOM_PUBLISH_FORMAT": "webp"},
    )
    assert published.format == "WEBP" and max(published.size) == 400
    assert fields["published"]["name"] == "img/published.webp"
    assert fields["published"]["container"] == "published"


def test_orientation_is_baked_in():
    _, published, _ = run_chain(FIXTURES / "rotated-exif.jpg")
    assert published.size == (384, 512) and 0x0112 not in published.getexif()


def test_text_regions_are_redacted_when_asked():
    text_box = (31, 19, 319, 12)  # first line of tests/fixtures/text-clean.png
    plain, clear, _ = run_chain(FIXTURES / "text-clean.png")
    _, redacted, _ = run_chain(FIXTURES / "text-clean.png", {"DARKROOM_REDACT_TEXT": "true"})
    source = Image.open(FIXTURES / "text-clean.png")
    assert region_diff(source, clear, text_box) < 6
    assert region_diff(source, redacted, text_box) > 25
    assert plain["published"]["anonymised"]["text_regions"] == 0


def test_the_derivative_is_deterministic():
    _, _, first = run_chain(FIXTURES / "portrait.jpg")
    _, _, second = run_chain(FIXTURES / "portrait.jpg")
    assert first == second


def _images_alive() -> int:
    return sum(isinstance(o, Image.Image) for o in gc.get_objects())


class _UploadWatcher(MemoryStepContext):
    """Counts the images alive as each upload starts (no collection run first)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alive_at_uploads: list[int] = []

    def put_artifact(self, name, data, content_type, public=False):
        self.alive_at_uploads.append(_images_alive())
        return super().put_artifact(name, data, content_type, public)


def test_prepare_and_transform_free_their_pixels_before_uploading():
    """During an upload the worker's compute slot serves another delivery; the decoded photo
    (and transform's anonymised copy, ~20 MB at 2048 px) must not be held through it."""
    path = FIXTURES / "portrait.jpg"
    settings = Settings.from_env({})
    data = path.read_bytes()
    gc.collect()
    before = _images_alive()  # whatever else this test process holds
    prepared = _UploadWatcher(settings, "img", path.name, data)
    fields = prepare.run(prepared)
    assert prepared.alive_at_uploads == [before, before]  # analysis image, thumbnail
    fields["analysis"] = {"faces": [{"box": list(PORTRAIT_FACE), "score": 0.9}]}
    transformed = _UploadWatcher(settings, "img", path.name, data, fields=fields)
    out = transform.run(transformed)
    assert out["published"]["anonymised"]["faces"] == 1
    assert transformed.alive_at_uploads == [before]
