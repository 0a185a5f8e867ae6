"""analyze: run the enabled vision capabilities on the analysis image.

Each capability is answered by the provider its setting names (local offline model or Azure AI
Vision) behind one interface. Boxes come back in analysis-image pixels and are mapped here to
the ORIGINAL image's pixels (after EXIF orientation), which is what `image.width/height` are.
A capability that fails is recorded under `analysis.errors` and the others keep their results:
one broken model must not cost the rest. A transient failure (throttling, network) retries the
whole step instead, until the last attempt, where it too is recorded.
An image analysed by the sync path (`POST /api/analyze`) arrives with `analysis.deferred`: the
capabilities it left to this step (OCR, by default); only those run here.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest
from pipeline.settings import Settings
from pipeline.vision.base import Capability, DetectedObject, Face, Moderation, Tag, Text
from pipeline.vision.providers import check_configuration, enabled_analyzers

log = logging.getLogger("darkroom.steps.analyze")


class Analysis(BaseModel):
    """What each enabled capability found; a capability that failed is under `errors` instead.

    Every box is `[x, y, w, h]` in pixels of the ORIGINAL image after EXIF orientation."""

    model_config = ConfigDict(extra="forbid")
    tags: list[Tag] | None = Field(None, description="Image-level labels, best first.")
    objects: list[DetectedObject] | None = Field(None, description="Detected objects.")
    faces: list[Face] | None = Field(
        None, description="Detected faces; absent when face detection failed or is off."
    )
    text: Text | None = Field(None, description="Text read in the image (OCR).")
    moderation: Moderation | None = Field(None, description="Not-safe-for-work verdict.")
    models: dict[Capability, str] = Field(
        description="`name@version` of the model or service that answered each capability."
    )
    errors: dict[Capability, str] = Field(
        description="Capabilities that failed, with the error; the others kept their results."
    )
    duration_ms: dict[Capability, float] = Field(description="Time each capability took.")
    deferred: list[str] | None = Field(
        None, description="Capabilities left to the asynchronous path, answered later."
    )


class AnalyzeOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    analysis: Analysis = Field(description="Vision results on the analysis image.")


def _text_snippet(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def summarize(fields: Mapping[str, Any]) -> str | None:
    """`3 faces · dog 0.91, bicycle 0.80 · tags: … · text: 'STOP' · moderation: safe`."""
    analysis = fields.get("analysis")
    if not analysis:
        return None
    parts = []
    if (faces := analysis.get("faces")) is not None:
        parts.append(f"{len(faces)} face{'' if len(faces) == 1 else 's'}" if faces else "no face")
    best: dict[str, float] = {}
    for item in analysis.get("objects") or []:
        best[item["name"]] = max(best.get(item["name"], 0.0), item["score"])
    if best:
        top = sorted(best.items(), key=lambda kv: -kv[1])[:3]
        parts.append(", ".join(f"{name} {score:.2f}" for name, score in top))
    if tags := analysis.get("tags"):
        parts.append("tags: " + ", ".join(t["name"] for t in tags[:3]))
    if full := (analysis.get("text") or {}).get("full", "").strip():
        parts.append(f"text: {_text_snippet(full)}")
    if moderation := analysis.get("moderation"):
        parts.append(f"moderation: {moderation['verdict']}")
    if deferred := analysis.get("deferred"):
        parts.append("later: " + ", ".join(deferred))
    if errors := analysis.get("errors"):
        parts.append("failed: " + ", ".join(errors))
    return " · ".join(parts) or "nothing found"


manifest = StepManifest(
    name="analyze",
    version="1.0.0",
    description="Tags, objects, faces, text and moderation on the analysis image.",
    reads=("image", "derived"),
    writes=("analysis",),
    output=AnalyzeOutput,
    summarize=summarize,
)


def check(settings: Settings) -> None:
    """Start-up: every enabled capability can load (weights installed, endpoint set)."""
    check_configuration(settings.analysis)


def _scaled(box, sx: float, sy: float) -> list[float]:
    x, y, w, h = box
    return [round(x * sx, 1), round(y * sy, 1), round(w * sx, 1), round(h * sy, 1)]


def to_original(prediction: Any, sx: float, sy: float) -> Any:
    """JSON for the document, with every box and landmark in original-image pixels."""
    if isinstance(prediction, list):
        out = []
        for item in prediction:
            data = item.model_dump()
            if isinstance(item, DetectedObject | Face):
                data["box"] = _scaled(item.box, sx, sy)
            if isinstance(item, Face) and item.landmarks:
                data["landmarks"] = [
                    [round(x * sx, 1), round(y * sy, 1)] for x, y in item.landmarks
                ]
            out.append(data)
        return out
    data = prediction.model_dump()
    if isinstance(prediction, Text):
        for line, original in zip(data["lines"], prediction.lines, strict=True):
            line["box"] = _scaled(original.box, sx, sy)
    return data


def run(ctx: StepContext) -> dict[str, Any]:
    analysis_ref = ctx.fields["derived"]["analysis"]
    with Image.open(io.BytesIO(ctx.read_artifact(analysis_ref))) as decoded:
        # convert() would copy an RGB image once more before numpy's copy
        pixels = np.asarray(decoded if decoded.mode == "RGB" else decoded.convert("RGB"))
    height, width = pixels.shape[:2]
    sx = ctx.fields["image"]["width"] / width
    sy = ctx.fields["image"]["height"] / height

    analyzers = enabled_analyzers(ctx.settings.analysis)
    earlier = ctx.fields.get("analysis") or {}
    if earlier.get("deferred") is not None:
        # The sync path answered the other capabilities already: run only what it left, and
        # keep its answers (each capability is run once per image).
        result = {k: v for k, v in earlier.items() if k != "deferred"}
        result = {
            **result,
            **{k: dict(result.get(k) or {}) for k in ("models", "errors", "duration_ms")},
        }
        analyzers = {c: a for c, a in analyzers.items() if c in earlier["deferred"]}
    else:
        result = {"models": {}, "errors": {}, "duration_ms": {}}
    for capability, analyzer in analyzers.items():
        started = time.perf_counter()
        try:
            prediction = analyzer.predict(pixels)
            result[capability] = to_original(prediction, sx, sy)
        except Exception as exc:  # isolation: record and go on with the other capabilities
            if analyzer.is_transient(exc) and ctx.attempt < ctx.max_attempts:
                raise  # throttled or unreachable: retry the step later, with backoff
            log.warning("%s: %s failed: %s", ctx.image_id, capability, exc)
            result["errors"][capability] = f"{type(exc).__name__}: {exc}"[:500]
        result["models"][capability] = analyzer.ident
        result["duration_ms"][capability] = round((time.perf_counter() - started) * 1000, 1)
    return {"analysis": result}
