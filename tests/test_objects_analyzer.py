"""Objects with boxes from CenterNet (npm @vladmandic/human, run by Node) on real photos.

Reference boxes [x, y, w, h] were drawn by eye on the photos at full size (10-px grid).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.analyzers.base import DetectedObject, ModelUnavailable
from pipeline.analyzers.objects_human import NODE_MODULES, SERVER, HumanObjectDetector
from tests.harness import FIXTURES, SAMPLES

PHOTOS = {
    "dog-bicycle": SAMPLES / "dog-bicycle.jpg",  # 768x576
    "horses": SAMPLES / "horses-field.jpg",  # 773x512
    "person-dog-horse": SAMPLES / "person-dog-horse.jpg",  # 640x424
    "cat": FIXTURES / "cat.jpg",  # 451x300
}
DOG = (130, 220, 180, 315)  # dog-bicycle.jpg: the dog sitting in front of the bicycle
BICYCLE = (125, 135, 440, 285)  # dog-bicycle.jpg: the red bicycle, wheels to handlebar
PICKUP = (470, 80, 210, 85)  # dog-bicycle.jpg: the white pickup parked behind, top right
GREY_HORSE = (435, 212, 165, 133)  # horses-field.jpg: the grey horse, right
PERSON = (195, 100, 75, 275)  # person-dog-horse.jpg: the woman in blue
WHITE_HORSE = (405, 140, 195, 200)  # person-dog-horse.jpg: the grazing white horse, right


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    inter = max(w, 0) * max(h, 0)
    return inter / (aw * ah + bw * bh - inter)


def best(objects: list[DetectedObject], name: str, near) -> float:
    """The best IoU between `near` and a box called `name`."""
    return max((iou(o.box, near) for o in objects if o.name == name), default=0.0)


def names(objects: list[DetectedObject]) -> set[str]:
    return {o.name for o in objects}


@pytest.fixture(scope="module")
def detector():
    detector = HumanObjectDetector()
    detector.load()
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def found(detector) -> dict[str, list[DetectedObject]]:
    return {key: detector.predict(rgb(path)) for key, path in PHOTOS.items()}


# ----------------------------------------------------------------------------- real photos


def test_dog_bicycle_finds_dog_bicycle_and_a_vehicle(found):
    assert {"dog", "bicycle"} <= names(found["dog-bicycle"])
    assert names(found["dog-bicycle"]) & {"car", "truck"}


def test_dog_box_covers_the_dog_lower_left(found):
    dog = max((o for o in found["dog-bicycle"] if o.name == "dog"), key=lambda o: o.score)
    x, y, w, h = dog.box
    assert x + w / 2 < 768 / 2 and y + h / 2 > 576 / 2  # centre in the lower-left quarter
    assert iou(dog.box, DOG) > 0.7


def test_bicycle_box_spans_the_bicycle(found):
    assert best(found["dog-bicycle"], "bicycle", BICYCLE) > 0.7


def test_vehicle_box_is_the_pickup_top_right(found):
    vehicles = [o for o in found["dog-bicycle"] if o.name in ("car", "truck")]
    assert max(iou(o.box, PICKUP) for o in vehicles) > 0.6


def test_horses_field_finds_several_horses_and_only_horses(found):
    horses = [o for o in found["horses"] if o.name == "horse"]
    assert len(horses) >= 2
    assert names(found["horses"]) == {"horse"}


def test_grey_horse_box(found):
    assert best(found["horses"], "horse", GREY_HORSE) > 0.7


def test_person_dog_horse_finds_all_three(found):
    assert {"person", "dog", "horse"} <= names(found["person-dog-horse"])


def test_person_box_is_the_standing_woman(found):
    person = [o for o in found["person-dog-horse"] if o.name == "person"]
    assert len(person) == 1
    _, _, w, h = person[0].box
    assert h > 2.5 * w  # standing
    assert iou(person[0].box, PERSON) > 0.7


def test_horse_box_is_the_white_horse_right_of_the_person(found):
    assert best(found["person-dog-horse"], "horse", WHITE_HORSE) > 0.7


def test_cat_is_one_cat_filling_the_frame(found):
    assert [o.name for o in found["cat"]] == ["cat"]
    _, _, w, h = found["cat"][0].box
    assert w * h > 0.6 * 451 * 300


def test_boxes_lie_inside_their_image_with_scores_above_min_score(detector, found):
    for key, objects in found.items():
        height, width = rgb(PHOTOS[key]).shape[:2]
        for o in objects:
            x, y, w, h = o.box
            assert x >= 0 and y >= 0 and w > 0 and h > 0, (key, o)
            assert x + w <= width + 0.5 and y + h <= height + 0.5, (key, o)
            assert detector.min_score <= o.score <= 1, (key, o)


def test_results_are_sorted_best_first(found):
    for objects in found.values():
        scores = [o.score for o in objects]
        assert scores == sorted(scores, reverse=True)


def test_same_image_twice_gives_the_same_objects(detector, found):
    assert detector.predict(rgb(PHOTOS["dog-bicycle"])) == found["dog-bicycle"]


def test_boxes_follow_the_image_when_it_is_scaled(detector, found):
    big = Image.open(PHOTOS["person-dog-horse"]).convert("RGB").resize((1280, 848))
    objects = detector.predict(np.asarray(big))
    scaled = tuple(v * 2 for v in PERSON)
    assert best(objects, "person", scaled) > 0.7


# ----------------------------------------------------------------------------- identity, options


def test_identity_is_the_npm_package_version(detector):
    package = json.loads((NODE_MODULES / "@vladmandic/human/package.json").read_text())
    assert detector.capability == "objects"
    assert detector.ident == f"human-centernet@{package['version']}"
    assert detector.runtime["backend"] == "wasm"


def test_max_objects_caps_the_list():
    detector = HumanObjectDetector(max_objects=2, min_score=0.1)
    try:
        objects = detector.predict(rgb(PHOTOS["horses"]))
    finally:
        detector.close()
    assert len(objects) == 2


def test_rejects_an_image_that_is_not_rgb_uint8(detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.predict(np.zeros((10, 10), np.uint8))


# ----------------------------------------------------------------------------- the subprocess


def test_concurrent_callers_each_get_their_own_answer(detector, found):
    order = ["dog-bicycle", "horses", "person-dog-horse", "cat"] * 2
    images = {key: rgb(PHOTOS[key]) for key in PHOTOS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda key: detector.predict(images[key]), order))
    assert answers == [found[key] for key in order]


def test_a_dead_server_is_restarted_once():
    detector = HumanObjectDetector()
    try:
        detector.load()
        first = detector.pid
        detector._server.proc.kill()
        detector._server.proc.wait()
        objects = detector.predict(rgb(PHOTOS["cat"]))
        assert detector.restarts == 1
        assert detector.pid not in (None, first)
        assert [o.name for o in objects] == ["cat"]
    finally:
        detector.close()


def test_close_ends_the_server_through_its_stdin():
    detector = HumanObjectDetector()
    detector.load()
    proc = detector._server.proc
    detector.close()
    assert proc.returncode == 0  # it exited by itself on EOF: not killed
    assert detector.pid is None and not detector.loaded


def test_missing_npm_package_is_a_clear_start_up_error(tmp_path):
    detector = HumanObjectDetector(node_modules=tmp_path)
    with pytest.raises(ModelUnavailable, match=r"@vladmandic/human is not installed.*npm ci"):
        detector.check()
    with pytest.raises(ModelUnavailable, match="npm ci"):
        detector.load()


def test_missing_node_is_a_clear_start_up_error(tmp_path):
    detector = HumanObjectDetector(node=str(tmp_path / "node"))
    with pytest.raises(ModelUnavailable, match=r"Node\.js not found"):
        detector.load()


# ----------------------------------------------------------------------------- the server alone


def server(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [shutil.which("node") or "node", str(SERVER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_server_answers_a_bad_request_with_an_error_and_carries_on():
    proc = server()
    try:
        assert json.loads(proc.stdout.readline())["ready"] is True
        cat = base64.b64encode(rgb(PHOTOS["cat"]).tobytes()).decode()
        good = {"id": 8, "width": 451, "height": 300, "rgb": cat}
        proc.stdin.write('{"id": 7, "width": 2, "height": 2, "rgb": "AAAA"}\n')
        proc.stdin.write(json.dumps(good) + "\n")
        proc.stdin.flush()
        bad_answer = json.loads(proc.stdout.readline())
        good_answer = json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert bad_answer["id"] == 7 and "expected width*height*3 = 12" in bad_answer["error"]
    assert good_answer["id"] == 8 and [o["name"] for o in good_answer["objects"]] == ["cat"]


def test_server_without_its_packages_says_so_and_exits(tmp_path):
    proc = server("--node-modules", str(tmp_path))
    first = json.loads(proc.stdout.readline())
    assert proc.wait(timeout=10) == 2
    assert first["ready"] is False
    assert "@tensorflow/tfjs-core is not installed" in first["error"]


def test_two_wasm_threads_give_the_same_objects(found):
    detector = HumanObjectDetector(threads=2)
    try:
        objects = detector.predict(rgb(PHOTOS["person-dog-horse"]))
        assert detector.runtime["threads"] == 2
    finally:
        detector.close()
    assert objects == found["person-dog-horse"]
