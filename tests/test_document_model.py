"""The result document as a typed model composed from each step's declared output.

Every step's output model must accept what the step really writes (real fixture photos, through
the real steps), the runner must refuse what a step writes against its model, and the composed
document model must accept every document the pipeline stores — done, rejected, refused, and on
a route with a custom step — and give an OpenAPI-ready JSON schema.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pydantic import BaseModel, Field

from pipeline.engine.context import MemoryStepContext
from pipeline.engine.notify import completion_event
from pipeline.engine.runner import StepContractViolation, checked_output
from pipeline.framework import registry
from pipeline.framework.contract import PipelineMessage, SourceBlob, StepRecord, image_id, utc_now
from pipeline.framework.document import NotWritten, document_model, summaries
from pipeline.framework.registry import load_step
from pipeline.framework.step_api import ImageRejected, StepManifest
from pipeline.settings import Settings
from pipeline.stores.results import refused_upload, render
from pipeline.vision import providers as analyzers
from pipeline.vision.capabilities import capabilities
from tests.harness import FIXTURES, SAMPLES

ROUTE = ("prepare", "analyze", "transform", "store")
CUSTOM = ("prepare", "tests.pipeline_steps.brightness", "analyze", "transform", "store")
REF = "#/components/schemas/{model}"


def run_route(path, route=ROUTE, env: dict | None = None) -> tuple[dict, dict[str, dict]]:
    """Every step of `route` in memory on one photo, as the chain runs them, each output
    checked as the runner checks it; returns (all fields, each step's own output)."""
    settings = Settings.from_env(env or {})
    data = path.read_bytes()
    fields: dict = {}
    outputs: dict[str, dict] = {}
    artifacts: dict[str, bytes] = {}
    for spec in route:
        step = load_step(spec)
        ctx = MemoryStepContext(settings, "img", path.name, data, fields=fields)
        ctx.artifacts = artifacts
        out = checked_output(step.run(ctx), step.manifest)
        outputs[step.name] = out
        fields = {**fields, **out}
    return fields, outputs


def message_for(route, fields: dict, done: tuple[str, ...], name: str = "photo.jpg"):
    record = StepRecord(
        status="done", duration_ms=1.0, attempts=1, version="1.0.0", finished_at=utc_now()
    )
    return PipelineMessage(
        id=image_id("uploads", name),
        source=SourceBlob(container="uploads", name=name, size=1, etag='"0x1"'),
        route=route,
        step=route[-1],
        fields=fields,
        steps={load_step(spec).name: record for spec in done},
        ingested_at=utc_now(),
    )


def stored(document):
    """The document as Cosmos gives it back: JSON, where 214.0 comes back as 214."""
    if isinstance(document, dict):
        return {key: stored(value) for key, value in document.items()}
    if isinstance(document, list | tuple):
        return [stored(value) for value in document]
    if isinstance(document, float) and document.is_integer():
        return int(document)
    return document


def roundtrips(model: type[BaseModel], document: dict) -> None:
    parsed = model.model_validate(document)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == document


@pytest.fixture(scope="module")
def portrait():
    return run_route(FIXTURES / "portrait.jpg")


@pytest.fixture(scope="module")
def gps():
    return run_route(FIXTURES / "gps.jpg")


# -- each step's model accepts what the step really writes ----------------------------------


@pytest.mark.parametrize(
    "path",
    [
        FIXTURES / "portrait.jpg",
        FIXTURES / "rotated-exif.jpg",
        FIXTURES / "text-clean.png",
        SAMPLES / "dog-bicycle.jpg",
        SAMPLES / "street-notice-sign.jpg",
    ],
    ids=lambda p: p.name,
)
def test_every_step_model_accepts_real_output(path):
    _, outputs = run_route(path)
    for name, out in outputs.items():
        manifest = load_step(name).manifest
        assert set(out) == set(manifest.writes)
        manifest.output.model_validate(out)


def test_step_models_accept_gps_webp_redaction_and_faces_off(gps):
    _, outputs = gps
    assert outputs["prepare"]["gps"]["lat"] == pytest.approx(48.8584)
    webp = {"DARKROOM_PUBLISH_FORMAT": "webp", "DARKROOM_REDACT_TEXT": "true"}
    _, outputs = run_route(SAMPLES / "street-notice-sign.jpg", env=webp)
    assert outputs["transform"]["published"]["content_type"] == "image/webp"
    assert outputs["transform"]["published"]["anonymised"]["text_regions"] > 0
    _, outputs = run_route(FIXTURES / "portrait.jpg", env={"DARKROOM_ANONYMIZE_FACES": "off"})
    assert outputs["transform"]["published"]["anonymised"]["mode"] == "off"


class _Broken(analyzers.Analyzer):
    capability = "faces"
    name = "broken-faces"
    version = "0"

    def __init__(self, **options) -> None:
        super().__init__()

    def _load(self) -> None:
        pass

    def _predict(self, image):
        raise RuntimeError("weights corrupted (simulated)")


def test_a_failed_capability_and_the_withheld_derivative_match_the_models(monkeypatch):
    monkeypatch.setitem(capabilities()["faces"].providers, "local", f"{__name__}:_Broken")
    monkeypatch.setattr(analyzers, "_instances", {})
    _, outputs = run_route(FIXTURES / "portrait.jpg")  # checked inside, as the runner does
    assert "faces" not in outputs["analyze"]["analysis"]
    assert set(outputs["analyze"]["analysis"]["errors"]) == {"faces"}
    assert "withheld" in outputs["transform"]["published"]
    summary = load_step("transform").manifest.summarize(outputs["transform"])
    assert summary.startswith("withheld: ") and "weights corrupted" in summary


def test_only_some_capabilities_and_no_analyze_step_match_the_models():
    _, outputs = run_route(FIXTURES / "cat.jpg", env={"DARKROOM_ANALYZERS": "tags,moderation"})
    assert set(outputs["analyze"]["analysis"]["models"]) == {"tags", "moderation"}
    _, outputs = run_route(FIXTURES / "cat.jpg", route=("prepare", "transform", "store"))
    assert "withheld" in outputs["transform"]["published"]


def test_the_analysis_model_takes_a_deferred_list():
    model = load_step("analyze").manifest.output
    analysis = {"models": {}, "errors": {}, "duration_ms": {}, "deferred": ["text"]}
    assert model.model_validate({"analysis": analysis}).analysis.deferred == ["text"]


# -- the runner refuses output that breaks the manifest ----------------------------------------


def test_undeclared_and_mistyped_fields_are_contract_violations(portrait):
    _, outputs = portrait
    analyze, prepare = load_step("analyze").manifest, load_step("prepare").manifest
    with pytest.raises(StepContractViolation, match="does not declare: \\['surprise'\\]"):
        checked_output({**outputs["analyze"], "surprise": 1}, analyze)
    with pytest.raises(StepContractViolation, match="expected a dict"):
        checked_output([1], analyze)

    face = outputs["analyze"]["analysis"]["faces"][0]
    bad_box = {"analysis": {**outputs["analyze"]["analysis"], "faces": [{**face, "box": [1, 2]}]}}
    with pytest.raises(StepContractViolation, match=r"analysis\.faces\.0\.box"):
        checked_output(bad_box, analyze)

    image = {**outputs["prepare"]["image"], "width": "512"}  # a string is not an int, strictly
    with pytest.raises(StepContractViolation, match=r"image\.width") as caught:
        checked_output({**outputs["prepare"], "image": image}, prepare)
    assert len(str(caught.value)) < 300

    analysis = {**outputs["analyze"]["analysis"], "verdict_of_the_day": "fine"}
    with pytest.raises(StepContractViolation, match="verdict_of_the_day"):
        checked_output({"analysis": analysis}, analyze)

    numpy_score = {"tags": [{"name": "x", "score": np.float32(0.5)}]}
    with pytest.raises(StepContractViolation, match="not JSON"):
        checked_output({"analysis": {**outputs["analyze"]["analysis"], **numpy_score}}, analyze)


def test_achecked_output_is_stored_exactly_as_the_step_wrote_it(gps):
    _, outputs = gps
    out = outputs["prepare"]
    assert checked_output(out, load_step("prepare").manifest) is out  # no dump, no nulls added
    no_alt = {**out, "gps": {"lat": 1.0, "lon": 2.0}}
    assert "alt" not in checked_output(no_alt, load_step("prepare").manifest)["gps"]


def test_a_manifest_must_name_the_same_fields_as_its_model():
    class Out(BaseModel):
        crop: dict = Field(description="The crop.")

    assert StepManifest("crop", "1", "Crops.", output=Out).writes == ("crop",)
    with pytest.raises(ValueError, match="output model Out has fields"):
        StepManifest("crop", "1", "Crops.", writes=("crop", "extra"), output=Out)

    class Sneaky(BaseModel):
        status: str

    with pytest.raises(ValueError, match="may not write pipeline fields"):
        StepManifest("sneaky", "1", "Sneaky.", output=Sneaky)


def test_a_manifest_without_an_output_model_still_works_untyped():
    legacy = StepManifest("legacy", "1", "Old style.", writes=("legacy",))
    assert checked_output({"legacy": {"anything": [1, "x"]}}, legacy) == {
        "legacy": {"anything": [1, "x"]}
    }
    assert legacy.summarize({"legacy": 1}) is None
    with pytest.raises(StepContractViolation, match="does not declare"):
        checked_output({"other": 1}, legacy)


# -- the document model -------------------------------------------------------------------


def test_the_document_model_accepts_real_documents_done_rejected_and_refused(portrait, gps):
    model = document_model(ROUTE)
    for fields, _ in (portrait, gps):
        done = stored(render(message_for(ROUTE, fields, ROUTE), "done"))
        done["notifications"] = {"results_queue": {"status": "sent", "queue": "results"}}
        roundtrips(model, done)
        halfway = {k: v for k, v in fields.items() if k in ("image", "exif", "gps", "derived")}
        roundtrips(model, stored(render(message_for(ROUTE, halfway, ROUTE[:1]), "processing")))

    settings = Settings.from_env({})
    prepare = load_step("prepare")
    with pytest.raises(ImageRejected) as refusal:
        prepare.run(MemoryStepContext(settings, "img", "x.jpg", b"not an image at all"))
    rejected = render(message_for(ROUTE, {}, ()), "rejected", refusal.value.reason)
    assert rejected["analysis"] == {} and rejected["image"] is None
    roundtrips(model, stored(rejected))
    source = {"id": "i", "container": "uploads", "name": "a/../b", "size": None}
    roundtrips(model, refused_upload({**source, "content_type": None, "etag": None}, [], "bad"))

    with pytest.raises(ValueError):
        model.model_validate({**rejected, "status": "lost"})


def test_the_document_schema_has_every_step_field_and_openapi_refs():
    schema = document_model(ROUTE).model_json_schema(mode="serialization", ref_template=REF)
    props = schema["properties"]
    for field in ("image", "exif", "gps", "derived", "analysis", "published", "archive"):
        assert field in props and "description" in props[field]
    for field in ("id", "schema", "status", "reason", "source", "route", "steps", "owner"):
        assert field in props
    assert {"id", "schema", "status", "source", "steps"} <= set(schema["required"])
    assert "analysis" not in schema["required"]
    defs = schema["$defs"]
    assert {"Analysis", "Face", "Published", "Withheld", "StoredImage", "StepRecord"} <= set(defs)
    refs = {ref for ref in _walk(schema, "$ref")}
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(defs)
    face = defs["Face"]["properties"]["box"]
    assert face["type"] == "array" and len(face["prefixItems"]) == 4
    assert defs["Exif"]["additionalProperties"]  # open-ended, typed
    assert defs["Analysis"]["additionalProperties"] is False


def _walk(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            else:
                yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def test_a_custom_steps_model_joins_the_document_model():
    model = document_model(CUSTOM)
    assert model is document_model(list(CUSTOM))  # one class per route
    schema = model.model_json_schema(mode="serialization", ref_template=REF)
    assert schema["properties"]["brightness"]["anyOf"][0] == {
        "$ref": REF.format(model="Brightness")
    }
    assert "Brightness" in schema["$defs"]
    assert "brightness" not in document_model(ROUTE).model_fields

    fields, outputs = run_route(FIXTURES / "cat.jpg", route=CUSTOM)
    assert 0 < outputs["brightness"]["brightness"]["mean"] < 255
    document = stored(render(message_for(CUSTOM, fields, CUSTOM), "done"))
    roundtrips(model, document)
    assert summaries(document)["brightness"].startswith("mean brightness ")
    with pytest.raises(ValueError):
        model.model_validate({**document, "brightness": {"mean": "dark"}})


def test_a_step_not_yet_run_may_be_absent_null_or_empty():
    model = document_model(ROUTE)
    doc = stored(render(message_for(ROUTE, {}, ()), "queued"))
    parsed = model.model_validate(doc)
    assert isinstance(parsed.analysis, NotWritten) and parsed.image is None
    assert parsed.published is None and "published" not in parsed.model_fields_set


# -- summaries ------------------------------------------------------------------------------


def test_summaries_of_a_real_analyzed_image(portrait, gps):
    fields, _ = portrait
    lines = summaries(stored(render(message_for(ROUTE, fields, ROUTE), "done")))
    assert list(lines) == list(ROUTE)
    assert lines["prepare"] == "512x512 jpeg"
    assert lines["analyze"].startswith("1 face · ") and "moderation: safe" in lines["analyze"]
    assert "person" in lines["analyze"]
    assert lines["transform"] == "published 512x512 jpeg, 1 face blurred"
    assert lines["store"] == "archived as derived/img/result.json"

    text = run_route(FIXTURES / "text-clean.png")[0]
    assert "text: '" in summaries(render(message_for(ROUTE, text, ROUTE), "done"))["analyze"]

    located = render(message_for(ROUTE, gps[0], ROUTE), "done")
    assert summaries(located)["prepare"] == "600x400 jpeg, GPS"
    assert summaries(located, hide=("gps",))["prepare"] == "600x400 jpeg"
    rejected = render(message_for(ROUTE, {}, ()), "rejected", "not an image")
    assert summaries(rejected) == {}


def test_a_broken_summary_is_left_out_not_raised(monkeypatch):
    def broken(fields):
        raise KeyError("oops")

    store = load_step("store")
    manifest = dataclasses.replace(store.manifest, summarize=broken)
    monkeypatch.setitem(registry._cache, "store", dataclasses.replace(store, manifest=manifest))
    document = {"route": ["prepare", "store"], "archive": {"container": "d", "name": "n"}}
    assert summaries(document) == {}


def test_the_completion_event_carries_summaries_but_no_position_or_text(gps):
    fields, _ = run_route(SAMPLES / "street-notice-sign.jpg")
    fields["gps"] = gps[0]["gps"]
    document = render(message_for(ROUTE, fields, ROUTE), "done")
    event = completion_event(document)
    assert set(event["summaries"]) == set(ROUTE)
    assert "GPS" not in event["summaries"]["prepare"]
    assert "text:" not in event["summaries"]["analyze"]
    assert event["summary"]["text_present"] is True  # the contract's fields are unchanged
    body = json.dumps(event)
    assert "48.85" not in body and '"lat"' not in body and "NOTICE" not in body.upper()
    assert summaries(document)["analyze"].count("text: ") == 1  # the CLI does show it


def test_untyped_fields_of_legacy_steps_join_the_document_model_as_any():
    legacy = StepManifest("legacy", "1", "Old style.", writes=("legacy",))
    assert legacy.output.model_json_schema()["properties"]["legacy"].get("type") is None


def test_documents_on_the_real_stack_match_the_model_and_events_carry_summaries(
    make_pipeline, fixture_bytes
):
    pipeline = make_pipeline(",".join(CUSTOM))
    uploads = [
        pipeline.upload("portrait.jpg", fixture_bytes("portrait.jpg")),
        pipeline.upload("gps.jpg", fixture_bytes("gps.jpg")),
        pipeline.upload("junk.jpg", b"this is not an image"),
    ]
    documents = [pipeline.wait_final(image, etag) for image, etag in uploads]
    model = document_model(pipeline.settings.pipeline_steps)
    for document in documents:
        roundtrips(model, document)
    assert [d["status"] for d in documents] == ["done", "done", "rejected"]
    queue = pipeline.settings.results_queue_name()
    events = {e["image_id"]: e for e in map(json.loads, pipeline.queue_messages(queue))}
    portrait, located, junk = (events[d["id"]]["summaries"] for d in documents)
    assert portrait["transform"].endswith("1 face blurred") and "brightness" in portrait
    assert located["prepare"] == "600x400 jpeg" and "GPS" in summaries(documents[1])["prepare"]
    assert junk == {}
