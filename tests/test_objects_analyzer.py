"""Objects with boxes from CenterNet on onnxruntime, on real photos; its start-up errors; and its
conversion at set-up from the tfjs graph in npm @vladmandic/human, checked against tfjs.

Reference boxes [x, y, w, h] were drawn by eye on the photos at full size (10-px grid).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from local import export_detector
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.capabilities.objects import DetectedObject
from pipeline.vision.local.objects_centernet import (
    DEFAULT_MODEL_PATH,
    LABELS,
    CenterNetObjectDetector,
    decode,
    letterbox,
)
from pipeline.vision.providers import provider_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, FIXTURES = ROOT / "samples", ROOT / "tests" / "fixtures"
PHOTOS = {
    "dog-bicycle": SAMPLES / "dog-bicycle.jpg",  # 768x576
    "horses": SAMPLES / "horses-field.jpg",  # 773x512
    "person-dog-horse": SAMPLES / "person-dog-horse.jpg",  # 640x424
    "giraffe-zebra": SAMPLES / "giraffe-zebra.jpg",  # 500x500
    "motorcycle": SAMPLES / "motorcycle-garage.jpg",  # 741x500
    "street": SAMPLES / "street-leuven.jpg",  # 751x563: an empty street, houses only
    "cat": FIXTURES / "cat.jpg",  # 451x300
}
DOG = (130, 220, 180, 315)  # dog-bicycle.jpg: the dog sitting in front of the bicycle
BICYCLE = (125, 135, 440, 285)  # dog-bicycle.jpg: the red bicycle, wheels to handlebar
PICKUP = (470, 80, 210, 85)  # dog-bicycle.jpg: the white pickup parked behind, top right
GREY_HORSE = (435, 212, 165, 133)  # horses-field.jpg: the grey horse, right
PERSON = (195, 100, 75, 275)  # person-dog-horse.jpg: the woman in blue
WHITE_HORSE = (405, 140, 195, 200)  # person-dog-horse.jpg: the grazing white horse, right
MOTORCYCLE = (95, 75, 590, 375)  # motorcycle-garage.jpg: the red motorcycle, tail to front wheel
GIRAFFE = (165, 30, 285, 415)  # giraffe-zebra.jpg: the giraffe, head at the top
ZEBRA = (305, 205, 120, 240)  # giraffe-zebra.jpg: the zebra in front of it, right


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
def detector() -> CenterNetObjectDetector:
    detector = CenterNetObjectDetector()
    detector.load()
    return detector


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


def test_giraffe_and_zebra_each_boxed(found):
    assert names(found["giraffe-zebra"]) == {"giraffe", "zebra"}
    assert best(found["giraffe-zebra"], "giraffe", GIRAFFE) > 0.8
    assert best(found["giraffe-zebra"], "zebra", ZEBRA) > 0.8


def test_motorcycle_is_the_best_and_largest_box(found):
    top = found["motorcycle"][0]
    assert top.name == "motorcycle" and top.score > 0.5
    assert iou(top.box, MOTORCYCLE) > 0.75
    assert all(o.box[2] * o.box[3] < top.box[2] * top.box[3] for o in found["motorcycle"][1:])


def test_an_empty_street_has_no_objects(found):
    assert found["street"] == []


def test_cat_is_one_cat_filling_the_frame(found):
    assert [o.name for o in found["cat"]] == ["cat"]
    _, _, w, h = found["cat"][0].box
    assert w * h > 0.6 * 451 * 300


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_plain_image_has_no_objects(detector, value):
    assert detector.predict(np.full((480, 640, 3), value, np.uint8)) == []


def test_boxes_lie_inside_their_image_with_scores_above_min_score(detector, found):
    for key, objects in found.items():
        height, width = rgb(PHOTOS[key]).shape[:2]
        for o in objects:
            x, y, w, h = o.box
            assert x >= 0 and y >= 0 and w > 0 and h > 0, (key, o)
            assert x + w <= width + 0.5 and y + h <= height + 0.5, (key, o)
            assert detector.min_score <= o.score <= 1, (key, o)
            assert o.name in LABELS


def test_results_are_sorted_best_first(found):
    for objects in found.values():
        scores = [o.score for o in objects]
        assert scores == sorted(scores, reverse=True)


def test_same_image_twice_gives_the_same_objects(detector, found):
    assert detector.predict(rgb(PHOTOS["dog-bicycle"])) == found["dog-bicycle"]


def test_boxes_follow_the_image_when_it_is_scaled(detector):
    big = Image.open(PHOTOS["person-dog-horse"]).convert("RGB").resize((1280, 848))
    objects = detector.predict(np.asarray(big))
    assert best(objects, "person", tuple(v * 2 for v in PERSON)) > 0.7
    # the white horse is horse, cow and sheep at 0.3-0.4: one of them, in the same place
    animal = [o for o in objects if o.name in ("horse", "cow", "sheep")]
    assert max(iou(o.box, tuple(v * 2 for v in WHITE_HORSE)) for o in animal) > 0.7


def test_a_tiny_image_is_accepted(detector):
    assert detector.predict(np.full((3, 5, 3), 200, np.uint8)) == []


def test_concurrent_callers_each_get_their_own_answer(detector, found):
    order = ["dog-bicycle", "horses", "person-dog-horse", "cat"] * 2
    images = {key: rgb(PHOTOS[key]) for key in PHOTOS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda key: detector.predict(images[key]), order))
    assert answers == [found[key] for key in order]


# ----------------------------------------------------------------------------- identity, options


def test_identity_is_the_npm_package_version_it_was_converted_from(detector):
    package = json.loads((ROOT / "node_modules/@vladmandic/human/package.json").read_text())
    assert detector.capability == "objects"
    assert detector.ident == f"centernet-mobilenetv3-coco@{package['version']}"


def test_the_registry_runs_it_for_local_objects():
    assert provider_path("objects", "local") == (
        "pipeline.vision.local.objects_centernet:CenterNetObjectDetector"
    )


def test_one_intra_op_thread(detector):
    options = detector._session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_max_objects_caps_the_list():
    detector = CenterNetObjectDetector(max_objects=2, min_score=0.1)
    assert len(detector.predict(rgb(PHOTOS["horses"]))) == 2


def test_a_lower_min_score_finds_more_and_keeps_the_rest(found):
    low = CenterNetObjectDetector(min_score=0.15).predict(rgb(PHOTOS["motorcycle"]))
    assert len(low) > len(found["motorcycle"])
    assert [o for o in low if o.score >= 0.3] == found["motorcycle"]


def test_rejects_an_image_that_is_not_rgb_uint8(detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.predict(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.predict(np.zeros((10, 10, 3), np.float32))


def test_rejects_a_min_score_outside_0_1():
    with pytest.raises(ValueError, match="min_score"):
        CenterNetObjectDetector(min_score=1.5)


# ----------------------------------------------------------------------------- pre/post-processing


def test_letterbox_keeps_the_aspect_and_centres_on_black():
    canvas, scale, dx, dy = letterbox(np.full((300, 600, 3), 255, np.uint8))
    assert canvas.shape == (512, 512, 3) and scale == pytest.approx(512 / 600)
    assert (dx, dy) == (0, 128)
    assert canvas[:128].max() == 0 and canvas[384:].max() == 0 and canvas[128:384].min() == 255


def test_decode_maps_boxes_back_and_suppresses_per_class_only():
    scale, dx, dy = 0.5, 0, 56  # a 1024x800 image on the 512 canvas
    rows = np.array(
        [
            [100, 100, 200, 200, 0.9, 16],  # dog
            [102, 101, 201, 202, 0.8, 16],  # the same dog again: suppressed
            [100, 100, 200, 200, 0.7, 15],  # the same box as a cat: kept
            [-10, 50, 30, 70, 0.6, 0],  # a person sticking out of the canvas: clipped
            [300, 300, 400, 400, 0.2, 2],  # below min_score
            [300, 300, 400, 400, 0.9, 80],  # no such class
        ]
    )
    objects = decode(rows, scale, dx, dy, 1024, 800, min_score=0.3, max_objects=20)
    assert [(o.name, o.score) for o in objects] == [("dog", 0.9), ("cat", 0.7), ("person", 0.6)]
    assert objects[0].box == (200.0, 88.0, 200.0, 200.0)
    assert objects[2].box == (0.0, 0.0, 60.0, 28.0)


# ----------------------------------------------------------------------------- start-up errors


def test_a_missing_model_is_a_clear_start_up_error(tmp_path):
    detector = CenterNetObjectDetector(model_path=tmp_path / "centernet-mobilenetv3.onnx")
    for call in (detector.check, detector.load):
        with pytest.raises(ModelUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "CenterNet ONNX model not found" in message
        assert "make setup" in message and "export_detector" in message
        assert "DARKROOM_OBJECTS_PROVIDER=azure" in message


def test_a_missing_conversion_record_is_a_start_up_error(tmp_path):
    model = tmp_path / "centernet-mobilenetv3.onnx"
    shutil.copyfile(DEFAULT_MODEL_PATH, model)
    with pytest.raises(ModelUnavailable, match=r"conversion record .*json is missing.*make setup"):
        CenterNetObjectDetector(model_path=model).check()


def test_a_model_that_does_not_match_its_record_is_refused(tmp_path):
    model = tmp_path / "centernet-mobilenetv3.onnx"
    shutil.copyfile(DEFAULT_MODEL_PATH, model)
    record = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps({**record, "sha256": "0" * 64}))
    detector = CenterNetObjectDetector(model_path=model)
    detector.check()  # cheap: does not hash 4 MB
    with pytest.raises(ModelUnavailable, match="does not match the SHA-256"):
        detector.load()


# ----------------------------------------------------------------------------- the conversion


def test_the_installed_model_reproduces_tensorflow_js():
    figures = export_detector.check(DEFAULT_MODEL_PATH)
    assert figures["compared"] > 100
    assert figures["max_score_diff"] < export_detector.MAX_SCORE_DIFF
    assert figures["max_box_diff_px"] < export_detector.MAX_BOX_DIFF


def test_the_model_is_converted_from_the_installed_package():
    record = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    assert record["source"] == export_detector.sources()
    assert record["bytes"] < 5_000_000  # float16 weights, as shipped


def test_an_up_to_date_model_is_a_quick_no_op_without_onnx():
    script = (
        "import sys; from local.export_detector import main; "
        "assert main([]) == 0; "
        "assert not {'onnx', 'onnxruntime'} & set(sys.modules), 'imported onnx'"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stderr


def test_an_op_outside_the_model_stops_the_conversion_with_its_name():
    graph = export_detector.TfjsGraph(
        nodes={
            export_detector.TF_INPUT: {
                "name": export_detector.TF_INPUT,
                "op": "Placeholder",
                "attr": {"shape": {"shape": {"dim": [{"size": str(d)} for d in (1, 512, 512, 3)]}}},
            },
            export_detector.TF_OUTPUT: {
                "name": export_detector.TF_OUTPUT,
                "op": "Softplus",
                "input": [export_detector.TF_INPUT],
            },
        },
        weights={},
    )
    with pytest.raises(export_detector.ExportError, match="TensorFlow op Softplus"):
        export_detector.convert(graph)
