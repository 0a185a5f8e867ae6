"""The message contract and the step registry, without any emulator."""

from __future__ import annotations

import json

import pytest

from pipeline.engine.runner import backoff_seconds
from pipeline.framework.contract import (
    InvalidMessage,
    PipelineMessage,
    SourceBlob,
    StepRecord,
    image_id,
    utc_now,
)
from pipeline.framework.registry import RouteError, registered_step_specs, validate_route
from pipeline.settings import Settings

SOURCE = SourceBlob(container="uploads", name="a.jpg", size=10, content_type=None, etag='"0x1"')


def message(**changes) -> PipelineMessage:
    base = dict(
        id=image_id(SOURCE.container, SOURCE.name),
        source=SOURCE,
        route=("prepare", "store"),
        step="prepare",
        ingested_at=utc_now(),
    )
    return PipelineMessage(**{**base, **changes})


def test_message_round_trips_and_carries_its_schema_version():
    original = message()
    raw = json.loads(original.to_json())
    assert raw["schema"] == 1
    assert PipelineMessage.from_json(original.to_json()) == original


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: {**m, "schema": 2},
        lambda m: {**m, "step": "transform"},
        lambda m: {**m, "unexpected": True},
        lambda m: {k: v for k, v in m.items() if k != "source"},
        lambda m: {**m, "route": []},
    ],
    ids=["future-schema", "step-off-route", "unknown-field", "no-source", "empty-route"],
)
def test_invalid_messages_are_refused_on_receipt(mutate):
    raw = json.loads(message().to_json())
    with pytest.raises(InvalidMessage):
        PipelineMessage.from_json(json.dumps(mutate(raw)))


def test_next_step_follows_the_messages_own_route():
    m = message(route=("prepare", "brightness", "store"))
    assert m.next_step() == "brightness"
    assert m.routed_to("brightness").next_step() == "store"
    assert m.routed_to("store").next_step() is None


def test_results_are_keyed_by_step_name_even_for_dotted_modules():
    m = message(
        route=("prepare", "tests.pipeline_steps.brightness"), step="tests.pipeline_steps.brightness"
    )
    record = StepRecord(status="done", duration_ms=1, attempts=1, version="1", finished_at="t")
    assert list(m.with_result(record, {"brightness": {}}).steps) == ["brightness"]


def test_image_id_is_stable_per_upload_path():
    assert image_id("uploads", "x/y.jpg") == image_id("uploads", "x/y.jpg")
    assert image_id("uploads", "x/y.jpg") != image_id("uploads", "x/z.jpg")


def test_route_validation_accepts_the_default_route():
    assert [s.name for s in validate_route(("prepare", "store"))] == ["prepare", "store"]


@pytest.mark.parametrize(
    ("route", "error"),
    [
        (("store",), r"reads \['image'\], which no earlier step writes"),
        (("prepare", "nonexistent"), "no module"),
        (("prepare", "prepare"), "appears twice"),
        (("prepare", "Bad-Name"), "must match"),
        ((), "empty"),
    ],
)
def test_route_validation_explains_what_is_wrong(route, error):
    with pytest.raises((RouteError, ValueError), match=error):
        validate_route(route)


def test_builtin_steps_get_queues_even_when_the_route_skips_them():
    specs = registered_step_specs(("prepare", "tests.pipeline_steps.brightness"))
    assert specs == [
        "analyze",
        "prepare",
        "recognize",
        "store",
        "transform",
        "tests.pipeline_steps.brightness",
    ]


def test_backoff_grows_and_is_capped():
    assert [backoff_seconds(n, 5, 60) for n in range(1, 6)] == [5, 10, 20, 40, 60]


def test_binding_expressions_resolve_like_the_functions_host():
    settings = Settings.from_env({"DARKROOM_QUEUE_PREFIX": "dev-"})
    assert settings.queue_name("crop_faces") == "dev-crop-faces"
    assert settings.poison_queue_name("prepare") == "dev-prepare-poison"
    with pytest.raises(KeyError):
        settings.resolve("%NOT_SET%/x")
