"""A capability is one module: adding one file to `pipeline/vision/capabilities/` of a copy of
the project, and nothing else, gives the new capability its settings, its field in the document
and in the OpenAPI schema, its part of the summary line, its completion-event entry, its drift
observations and its place on the page (GET /api/capabilities).

The copy runs in a fresh interpreter, as a deployment would start, so nothing here is
monkeypatched or reloaded.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "pipeline" / "vision" / "local" / "models"

TOY = '''"""sharpness: is the photo in focus? (variance of the Laplacian of its grey levels)"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.vision.base import Analyzer, Box, Result
from pipeline.vision.capability import Capability, Drawing, Option


class Sharpness(Result):
    score: float = Field(ge=0, le=1)
    verdict: Literal["sharp", "blurry"]
    sharpest: Box  # the sharpest quarter of the image


class LaplacianSharpness(Analyzer):
    capability = "sharpness"
    name = "laplacian-variance"
    version = "1"

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def _load(self) -> None:
        pass

    def _predict(self, image: np.ndarray) -> Sharpness:
        grey = image.astype(np.float32).mean(axis=2)
        core = 4 * grey[1:-1, 1:-1]
        lap = core - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        h, w = lap.shape[0] // 2, lap.shape[1] // 2
        quarters = {(x, y): float(lap[y : y + h, x : x + w].var()) for x in (0, w) for y in (0, h)}
        (x, y), _ = max(quarters.items(), key=lambda kv: kv[1])
        variance = float(lap.var())
        score = variance / (variance + 100.0)
        verdict = "sharp" if score >= self.threshold else "blurry"
        return Sharpness(score=round(score, 4), verdict=verdict, sharpest=(x, y, w, h))


capability = Capability(
    name="sharpness",
    result=Sharpness,
    description="Whether the photo is in focus.",
    providers={"local": "pipeline.vision.capabilities.sharpness:LaplacianSharpness"},
    options=(Option("threshold", "DARKROOM_SHARPNESS_THRESHOLD", 0.5, minimum=0.0, maximum=1.0),),
    rank=60,
    summarize=lambda value: f"sharpness: {value['verdict']}" if value else None,
    outcome=lambda value: "unsafe" if (value or {}).get("verdict") == "blurry" else "safe",
    scores=lambda value: (value["score"],) if value else (),
    positive="unsafe",
    event=("sharpness", lambda value: (value or {}).get("verdict")),
    drawing=Drawing(kind="verdict", title="Sharpness"),
)
'''

PROBE = """
import json, sys
from pathlib import Path

from pipeline.api import app as api
from pipeline.engine.context import MemoryStepContext
from pipeline.engine.notify import completion_event
from pipeline.engine.runner import checked_output
from pipeline.framework.contract import PipelineMessage, SourceBlob, StepRecord, image_id, utc_now
from pipeline.framework.document import document_model, summaries
from pipeline.framework.registry import load_step
from pipeline.observability.drift import observations
from pipeline.settings import Settings, setting_catalog
from pipeline.stores.results import render
from pipeline.vision.capabilities import capability_names

photo = Path(sys.argv[1])
env = {"DARKROOM_ANALYZERS": "tags,sharpness", "DARKROOM_SHARPNESS_THRESHOLD": "0.2"}
settings = Settings.from_env(env)
fields, artifacts = {}, {}
for spec in ("prepare", "analyze"):
    step = load_step(spec)
    ctx = MemoryStepContext(settings, "img", photo.name, photo.read_bytes(), fields=fields)
    ctx.artifacts = artifacts
    fields = {**fields, **checked_output(step.run(ctx), step.manifest)}
route = ("prepare", "analyze")
record = StepRecord(status="done", duration_ms=1.0, attempts=1, version="1", finished_at=utc_now())
message = PipelineMessage(
    id=image_id("uploads", photo.name),
    source=SourceBlob(container="uploads", name=photo.name, size=1, etag='"0x1"'),
    route=route, step=route[-1], fields=fields,
    steps={name: record for name in route}, ingested_at=utc_now(),
)
document = json.loads(json.dumps(render(message, "done")))
document_model(route).model_validate(document)
schema = api.app.openapi()
analysis_schemas = [s for name, s in schema["components"]["schemas"].items()
                    if name.startswith("Analysis") and "sharpness" in s.get("properties", {})]
print(json.dumps({
    "names": list(capability_names()),
    "catalog": sorted(k for k in setting_catalog() if "SHARPNESS" in k),
    "options": settings.analysis.options_for("sharpness"),
    "image": fields["image"],
    "analysis": fields["analysis"],
    "summary": summaries(document, route)["analyze"],
    "event": completion_event(document)["summary"],
    "drift": [o.capability + ":" + o.outcome for o in observations(fields["analysis"])],
    "openapi": [s["properties"]["sharpness"] for s in analysis_schemas],
    "sharpness_schema": schema["components"]["schemas"].get("Sharpness"),
}))
"""


def _copy_of_the_project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "models")
    for folder in ("pipeline", "steps"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=ignore)
    for name in ("function_app.py", "host.json"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "pipeline" / "vision" / "local" / "models").symlink_to(MODELS)
    return copy


def test_a_new_capability_is_one_module(tmp_path):
    copy = _copy_of_the_project(tmp_path)
    (copy / "pipeline" / "vision" / "capabilities" / "sharpness.py").write_text(TOY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "samples" / "dog-bicycle.jpg")],
        cwd=copy,
        env={**env, "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["names"][-1] == "sharpness"  # after the built-ins, by its rank
    assert seen["catalog"] == ["DARKROOM_SHARPNESS_PROVIDER", "DARKROOM_SHARPNESS_THRESHOLD"]
    assert seen["options"] == {"threshold": 0.2}  # read through the one settings reader

    analysis = seen["analysis"]
    assert analysis["models"] == {
        "tags": analysis["models"]["tags"],
        "sharpness": "laplacian-variance@1",
    }
    assert analysis["sharpness"]["verdict"] == "sharp"  # a photo in focus, threshold 0.2
    _, _, w, h = analysis["sharpness"]["sharpest"]  # mapped to the original's pixels
    width, height = seen["image"]["width"], seen["image"]["height"]
    assert abs(w - width / 2) <= 2 and abs(h - height / 2) <= 2
    assert analysis["tags"] and "errors" in analysis and not analysis["errors"]

    assert seen["summary"].endswith(" · sharpness: sharp")
    assert seen["summary"].startswith("tags: ")
    assert seen["event"]["sharpness"] == "sharp" and seen["event"]["tags"]
    assert seen["drift"] == ["tags:found", "sharpness:safe"]

    assert seen["openapi"], "no Analysis schema in the OpenAPI document has `sharpness`"
    assert seen["sharpness_schema"]["properties"]["verdict"]["enum"] == ["sharp", "blurry"]


def test_each_built_in_capability_declares_everything_the_house_reads():
    """The built-ins are modules of that one shape: providers that resolve to classes
    answering that capability, an event entry and a drawing."""
    from pipeline.vision.capabilities import capabilities
    from pipeline.vision.providers import provider_path

    declared = capabilities()
    assert list(declared) == ["caption", "faces", "objects", "tags", "text", "moderation"]
    for name, capability in declared.items():
        assert capability.providers["local"], name
        for provider in capability.providers:
            module, _, cls = provider_path(name, provider).partition(":")
            assert getattr(importlib.import_module(module), cls).capability == name
        assert capability.event and capability.drawing.title
