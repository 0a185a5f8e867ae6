"""Faces from BlazeFace full-range (MediaPipe, run by OpenCV) on real photos."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.faces_blazeface import (
    MODEL_DIR,
    BlazeFaceDetector,
    anchor_centres,
    decode,
    iou,
    tile_windows,
    weighted_nms,
)
from tests.harness import FIXTURES, SAMPLES

PORTRAIT_FACE = (180, 72, 88, 104)  # by hand, tests/fixtures/PROVENANCE.md


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def overlap(a, b) -> float:
    return float(iou(np.asarray(a, float), np.asarray([b], float))[0])


def centre(box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    detector = BlazeFaceDetector()
    detector.load()
    return detector


@pytest.fixture(scope="module")
def small_face_scene() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The portrait shrunk so its face is 4% of the long side, in a 1920x1280 field of horses."""
    scene = Image.open(SAMPLES / "horses-field.jpg").convert("RGB")
    scene = scene.resize((1920, 1280), Image.Resampling.BICUBIC)
    s = 0.04 * 1920 / PORTRAIT_FACE[2]
    person = Image.open(FIXTURES / "portrait.jpg").convert("RGB")
    person = person.resize((round(512 * s), round(512 * s)), Image.Resampling.LANCZOS)
    ox, oy = 1200, 500
    scene.paste(person, (ox, oy))
    fx, fy, fw, fh = PORTRAIT_FACE
    return np.asarray(scene), (ox + fx * s, oy + fy * s, fw * s, fh * s)


# ----------------------------------------------------------------------------- real photos


def test_portrait_has_exactly_one_face_on_the_hand_drawn_box(detector):
    faces = detector.predict(rgb(FIXTURES / "portrait.jpg"))
    assert len(faces) == 1, faces
    assert overlap(faces[0].box, PORTRAIT_FACE) > 0.5, faces[0].box
    assert faces[0].score > 0.9


def test_portrait_keypoints_fall_on_eyes_nose_and_mouth(detector):
    (face,) = detector.predict(rgb(FIXTURES / "portrait.jpg"))
    right_eye, left_eye, nose, mouth, right_ear, left_ear = face.landmarks
    x, y, w, h = PORTRAIT_FACE
    for px, py in (right_eye, left_eye, nose, mouth):
        assert x <= px <= x + w and y <= py <= y + h
    # The subject's right eye is on the image's left; eyes above the nose, nose above the mouth.
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert right_ear[0] < right_eye[0] and left_ear[0] > left_eye[0]


def test_cat_photo_has_no_face(detector):
    assert detector.predict(rgb(FIXTURES / "cat.jpg")) == []


def test_indoor_grey_photo_finds_the_frontal_face_not_the_turned_away_head(detector):
    # Two men: the left one faces the camera (face ~35 px in a 640x480 greyscale photo, small
    # enough that only the tiles see it); the right one has turned away from it.
    faces = detector.predict(rgb(SAMPLES / "indoor-people-gray.jpg"))
    assert len(faces) == 1, faces
    cx, cy = centre(faces[0].box)
    assert 65 <= cx <= 110 and 90 <= cy <= 140, faces[0].box


def test_football_photo_finds_the_player_not_the_blurred_crowd(detector):
    faces = detector.predict(rgb(SAMPLES / "football-messi.jpg"))
    assert len(faces) == 1, faces
    cx, cy = centre(faces[0].box)
    assert 225 <= cx <= 255 and 95 <= cy <= 125, faces[0].box


def test_person_seen_from_behind_with_a_dog_and_horse_has_no_face(detector):
    # The person's back is to the camera (a patterned beanie, which tiles score up to 0.64);
    # the dog's and the horse's faces are not human faces.
    assert detector.predict(rgb(SAMPLES / "person-dog-horse.jpg")) == []


@pytest.mark.parametrize("name", ["squirrel.jpg", "shopfront-sign.jpg"])
def test_a_squirrel_face_or_a_chimney_is_not_a_face(detector, name):
    # Both scored 0.7-0.8 in the zoomed-out pass before it was limited to frame-filling faces.
    assert detector.predict(rgb(SAMPLES / name)) == []


def test_face_filling_the_frame_is_found_by_the_zoomed_out_pass(detector):
    crop = rgb(FIXTURES / "portrait.jpg")[70:180, 175:275]  # forehead to chin, cheek to cheek
    faces = detector.predict(crop)
    assert len(faces) == 1 and faces[0].box[2] > 0.8 * crop.shape[1], faces


def test_face_filling_the_frame_is_missed_without_the_zoomed_out_pass():
    crop = rgb(FIXTURES / "portrait.jpg")[70:180, 175:275]
    assert BlazeFaceDetector(zoom_out=False).predict(crop) == []


def test_small_face_in_a_large_photo_is_missed_without_tiling(detector, small_face_scene):
    image, _ = small_face_scene
    whole_only = BlazeFaceDetector(tiling=False)
    assert whole_only.predict(image) == []


def test_small_face_in_a_large_photo_is_found_by_tiling(detector, small_face_scene):
    image, truth = small_face_scene
    faces = detector.predict(image)
    assert len(faces) == 1, faces
    assert overlap(faces[0].box, truth) > 0.5, (faces[0].box, truth)


def test_boxes_are_in_pixels_of_the_image_given(detector):
    image = Image.open(FIXTURES / "portrait.jpg").convert("RGB")
    (small,) = detector.predict(np.asarray(image))
    (large,) = detector.predict(np.asarray(image.resize((1024, 1024), Image.Resampling.BICUBIC)))
    assert overlap(large.box, [v * 2 for v in small.box]) > 0.85, (small.box, large.box)


def test_concurrent_predictions_match_serial_ones(detector):
    images = [rgb(FIXTURES / "portrait.jpg"), rgb(SAMPLES / "indoor-people-gray.jpg")] * 4
    serial = [detector.predict(image) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(detector.predict, images)) == serial


def test_version_is_the_npm_package_version(detector):
    package = json.loads((MODEL_DIR / "package.json").read_text())
    assert detector.ident == f"blazeface-full-range@{package['version']}"


def test_missing_weights_are_a_clear_start_up_error(tmp_path):
    with pytest.raises(ModelUnavailable, match="make setup"):
        BlazeFaceDetector(model_dir=tmp_path).check()


# ----------------------------------------------------------------------------- numpy helpers


def test_anchors_are_a_48_by_48_grid_of_cell_centres():
    anchors = anchor_centres()
    assert anchors.shape == (2304, 2)
    assert anchors[0].tolist() == [2, 2] and anchors[1].tolist() == [6, 2]
    assert anchors[48].tolist() == [2, 6] and anchors[-1].tolist() == [190, 190]


def test_decode_offsets_box_and_keypoints_from_the_anchor():
    anchors = anchor_centres()
    logits = np.full(2304, -10.0, np.float32)
    regressors = np.zeros((2304, 16), np.float32)
    logits[50] = 3.0  # anchor (10, 6)
    regressors[50, :4] = [4, -2, 20, 30]
    regressors[50, 4:6] = [-5, -6]
    boxes, scores, keypoints = decode(logits, regressors, anchors, min_score=0.5)
    assert boxes.tolist() == [[4.0, -11.0, 20.0, 30.0]]
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert keypoints.shape == (1, 6, 2) and keypoints[0, 0].tolist() == [5.0, 0.0]


def test_weighted_nms_averages_overlapping_boxes_and_keeps_distant_ones():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 10, 10], [50, 50, 10, 10]], float)
    scores = np.array([0.9, 0.3, 0.8])
    keypoints = np.zeros((3, 6, 2))
    out_boxes, out_scores, _ = weighted_nms(boxes, scores, keypoints, iou_threshold=0.3)
    assert out_scores.tolist() == [0.9, 0.8]
    assert out_boxes[0].tolist() == pytest.approx([0.5, 0, 10, 10])
    assert out_boxes[1].tolist() == [50, 50, 10, 10]


def test_tiles_overlap_and_cover_a_large_photo():
    tiles = tile_windows(1920, 1280)
    covered = np.zeros((1280, 1920), bool)
    for x, y, side in tiles:
        assert x + side <= 1920 and y + side <= 1280
        covered[y : y + side, x : x + side] = True
    assert covered.all()
    assert len(tiles) == 6 and tiles[1][0] - tiles[0][0] <= 0.75 * tiles[0][2]


def test_small_images_get_no_tiles():
    assert tile_windows(451, 300) == []
