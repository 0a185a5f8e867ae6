"""Face embeddings (dlib ResNet v1 on onnxruntime) on real photos, faces found by BlazeFace.

The photos: the face_recognition 1.3.0 sdist's test photos (set-up puts them in
tests/fixtures/faces/, see PROVENANCE.md), tests/fixtures/portrait.jpg and rotated-exif.jpg
(Eileen Collins), and the samples with a face. Each is used as the analyze step sees it: upright
(EXIF), shrunk to the default analysis size. The distance table is written to
tests/artifacts/face-distances.md.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from local.export_face_embedder import (
    FACES_DIR,
    MAX_DIFF,
    PHOTOS,
    REFERENCE,
    photos_missing,
    reference_chip,
    sources,
    up_to_date,
)
from pipeline.imaging.pixels import fit_size
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.face_embedding import (
    CHIP_SIZE,
    MIN_FACE_PX,
    MODEL_PATH,
    SAME_PERSON_DISTANCE,
    TEMPLATE,
    FaceEmbedder,
    align,
    distance,
    pose,
    sharpness,
)
from pipeline.vision.providers import analyzer_for
from tests.harness import FIXTURES, SAMPLES

PERSON = {
    "biden": "biden",
    "obama": "obama",
    "obama2": "obama",
    "obama3": "obama",
    "obama_partial_face": "obama",
    "obama_partial_face2": "obama",
    "portrait": "collins",
    "rotated-exif": "collins",
    "football-messi": "messi",
    "indoor-people-gray": "indoor-man",
    "street-notice-sign": "street-passer-by",
}
PATHS = {
    **{name.removesuffix(".jpg"): FACES_DIR / name for name in PHOTOS},
    "portrait": FIXTURES / "portrait.jpg",
    "rotated-exif": FIXTURES / "rotated-exif.jpg",
    "football-messi": SAMPLES / "football-messi.jpg",
    "indoor-people-gray": SAMPLES / "indoor-people-gray.jpg",
    "street-notice-sign": SAMPLES / "street-notice-sign.jpg",
}
GOOD = ["biden", "obama", "obama2", "obama3", "obama_partial_face", "portrait", "rotated-exif"]
ARTIFACT = PROJECT_ROOT / "tests" / "artifacts" / "face-distances.md"


def analysis_image(path) -> np.ndarray:
    """The photo as the analyze step gets it: upright, within the default analysis size."""
    settings = Settings.from_env({})
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    size = fit_size(*image.size, settings.analysis_max_side, settings.analysis_max_pixels)
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image)


@pytest.fixture(scope="module")
def detector():
    return analyzer_for("faces", Settings.from_env({}).analysis)


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    embedder = FaceEmbedder()
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def faces(detector, embedder) -> dict[str, dict]:
    """name → pixels, the one face BlazeFace finds, its chip and its embedding."""
    missing = photos_missing()
    assert not missing, (
        f"face test photos missing from {FACES_DIR}: {missing}; run bash scripts/setup.sh "
        "(it fetches them from the PyPI sdist face_recognition 1.3.0)"
    )
    found = {}
    for name, path in PATHS.items():
        pixels = analysis_image(path)
        detected = detector.predict(pixels)
        assert len(detected) == 1, (name, detected)
        chip = embedder.align(pixels, detected[0].landmarks)
        found[name] = {"pixels": pixels, "face": detected[0], "chip": chip}
    vectors = embedder.embed([f["chip"] for f in found.values()])
    for f, vector in zip(found.values(), vectors, strict=True):
        f["vector"] = vector
    return found


def image_size(pixels: np.ndarray) -> tuple[int, int]:
    return pixels.shape[1], pixels.shape[0]


def gate(embedder, f: dict, chip: np.ndarray | None = None) -> tuple[bool, str | None]:
    face = f["face"]
    chip = f["chip"] if chip is None else chip
    return embedder.quality(face.box, face.landmarks, chip, image_size(f["pixels"]))


# ----------------------------------------------------------------------------- the model


def test_the_model_is_converted_and_up_to_date():
    assert up_to_date(MODEL_PATH, sources())


def test_onnx_model_matches_the_recorded_dlib_descriptor(embedder):
    reference = json.loads(REFERENCE.read_text("utf-8"))
    ours = embedder.embed(reference_chip())[0]
    assert ours.dtype == np.float32 and ours.shape == (128,)
    assert np.abs(ours - np.asarray(reference["descriptor"])).max() <= MAX_DIFF


def test_the_reference_chip_is_what_align_cuts_from_the_portrait(faces):
    # the recorded chip and today's alignment agree (a changed alignment must bump VERSION)
    diff = np.abs(faces["portrait"]["chip"].astype(int) - reference_chip().astype(int))
    assert diff.mean() < 1.0, diff.mean()


def test_batch_gives_the_same_vectors_as_one_at_a_time(faces, embedder):
    chips = [f["chip"] for f in faces.values()][:8]
    batch = embedder.embed(np.stack(chips))
    single = np.concatenate([embedder.embed(chip) for chip in chips])
    assert batch.shape == (8, 128) and batch.dtype == np.float32
    assert np.abs(batch - single).max() < 1e-5
    assert embedder.embed([]).shape == (0, 128)


def test_a_missing_model_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ModelUnavailable, match="make setup"):
        FaceEmbedder(model_path=tmp_path / "none.onnx").check()


def test_ident_names_model_and_version(embedder):
    assert embedder.ident == "dlib-resnet-v1@1"


# ----------------------------------------------------------------------------- alignment


def test_chips_put_eyes_nose_and_mouth_on_the_template(faces, detector):
    # BlazeFace run again on each 150x150 chip finds the keypoints near the template's
    for name in GOOD:
        chip = faces[name]["chip"]
        assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
        (face,) = detector.predict(chip)
        error = np.linalg.norm(np.asarray(face.landmarks[:4]) - np.asarray(TEMPLATE), axis=1)
        # the eyes closely; the nose tip moves with the head's yaw (obama3: 12 px)
        assert error[:2].max() < 6 and error.max() < 15, (name, error.round(1))


def test_a_large_face_shrunk_before_the_warp_embeds_like_the_original(faces, embedder):
    # the portrait at 4x: the face is ~440 px, so align shrinks the region first
    f = faces["portrait"]
    big = np.asarray(Image.fromarray(f["pixels"]).resize((2048, 2048), Image.Resampling.BICUBIC))
    landmarks = [(4 * x + 1.5, 4 * y + 1.5) for x, y in f["face"].landmarks]
    vector = embedder.embed(align(big, landmarks))[0]
    assert distance(vector, f["vector"]) < 0.1


def test_rotated_exif_photo_is_the_same_face_as_the_portrait(faces):
    assert distance(faces["rotated-exif"]["vector"], faces["portrait"]["vector"]) < 0.15


# ----------------------------------------------------------------------------- distances


def test_same_person_below_the_threshold_and_different_people_above_on_every_pair(faces):
    rows = []
    for a, b in itertools.combinations(faces, 2):
        d = distance(faces[a]["vector"], faces[b]["vector"])
        rows.append((PERSON[a] == PERSON[b], d, a, b))
    rows.sort(key=lambda r: (not r[0], r[1]))
    same = [r for r in rows if r[0]]
    different = [r for r in rows if not r[0]]
    table = ["| pair | same person | euclidean |", "|---|---|---|"]
    table += [f"| {a} vs {b} | {'yes' if s else 'no'} | {d:.3f} |" for s, d, a, b in rows]
    summary = (
        f"same person: max {max(r[1] for r in same):.3f} ({len(same)} pairs); "
        f"different: min {min(r[1] for r in different):.3f} ({len(different)} pairs); "
        f"threshold {SAME_PERSON_DISTANCE}"
    )
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text("\n".join([summary, "", *table]) + "\n", "utf-8")
    print(summary)
    print("\n".join(table))
    wrong = [r for r in rows if r[0] != (r[1] < SAME_PERSON_DISTANCE)]
    assert not wrong, wrong
    assert (len(same), len(different)) == (11, 44)


def test_distance_is_euclidean_and_normalised_vectors_give_the_cosine_relation(faces):
    a, b = faces["obama"]["vector"], faces["biden"]["vector"]
    assert distance(a, b) == pytest.approx(float(np.sqrt(((a - b) ** 2).sum())), rel=1e-6)
    assert distance(np.stack([a, b]), a).shape == (2,)
    na, nb = a / np.linalg.norm(a), b / np.linalg.norm(b)
    assert float(na @ nb) == pytest.approx(1 - distance(na, nb) ** 2 / 2, abs=1e-6)
    # the model's vectors are not unit length: the threshold is on the raw ones
    assert 1.2 < float(np.linalg.norm(a)) < 1.6


# ----------------------------------------------------------------------------- quality gate


def test_quality_accepts_the_good_faces(faces, embedder):
    for name in GOOD:
        assert gate(embedder, faces[name]) == (True, None), name


@pytest.mark.parametrize("name", ["football-messi", "indoor-people-gray", "street-notice-sign"])
def test_quality_refuses_the_small_faces_of_the_samples(faces, embedder, name):
    usable, reason = gate(embedder, faces[name])
    assert not usable and reason.startswith("face too small"), reason


def test_quality_refuses_a_tiny_face_with_the_reason(faces, detector, embedder):
    f = faces["portrait"]
    scale = 0.8 * MIN_FACE_PX / min(f["face"].box[2:])
    small = np.asarray(
        Image.fromarray(f["pixels"]).resize(
            (round(512 * scale), round(512 * scale)), Image.Resampling.LANCZOS
        )
    )
    (face,) = detector.predict(small)
    chip = align(small, face.landmarks)
    usable, reason = embedder.quality(face.box, face.landmarks, chip, image_size(small))
    assert not usable and reason.startswith("face too small"), reason


def test_quality_refuses_a_blurred_chip_with_the_reason(faces, embedder):
    import cv2

    f = faces["obama"]
    blurred = cv2.GaussianBlur(f["chip"], (0, 0), 2.0)
    assert sharpness(f["chip"]) > 200 and sharpness(blurred) < 15
    usable, reason = gate(embedder, f, blurred)
    assert not usable and reason.startswith("face blurred"), reason


def test_quality_refuses_a_photo_blurred_before_alignment(faces, embedder):
    # Gaussian blur of 5% of the eye distance: where same-person distances reach 0.57
    import cv2

    for name in GOOD:
        f = faces[name]
        (rx, ry), (lx, ly) = f["face"].landmarks[:2]
        sigma = 0.05 * float(np.hypot(lx - rx, ly - ry))
        chip = align(cv2.GaussianBlur(f["pixels"], (0, 0), sigma), f["face"].landmarks)
        usable, reason = gate(embedder, f, chip)
        assert not usable and reason.startswith("face blurred"), (name, reason)


def test_quality_refuses_a_face_cut_by_the_image_edge(faces, embedder):
    # obama_partial_face2: the left eye is on the right edge of the photo
    usable, reason = gate(embedder, faces["obama_partial_face2"])
    assert not usable and reason.startswith("face cut by the image edge"), reason


def test_quality_refuses_a_face_lying_on_its_side(detector, embedder):
    pixels = np.asarray(Image.open(FACES_DIR / "biden.jpg").convert("RGB").rotate(90, expand=True))
    (face,) = detector.predict(pixels)
    chip = align(pixels, face.landmarks)
    usable, reason = embedder.quality(face.box, face.landmarks, chip, image_size(pixels))
    assert not usable and reason.startswith(("face tilted", "face turned")), reason


def test_quality_refuses_a_turned_face(faces, embedder):
    # The nose keypoint moved onto the line through the right eye: a half profile's geometry
    # (no photo here has one that BlazeFace finds).
    f = faces["portrait"]
    right_eye, left_eye, nose, *rest = f["face"].landmarks
    turned = [right_eye, left_eye, (right_eye[0], nose[1]), *rest]
    assert abs(pose(turned)[0]) > 0.45
    usable, reason = embedder.quality(f["face"].box, turned, f["chip"], image_size(f["pixels"]))
    assert not usable and reason.startswith("face turned"), reason
    assert all(abs(pose(faces[n]["face"].landmarks)[0]) < 0.25 for n in GOOD)
