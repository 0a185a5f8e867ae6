"""analyze: run the enabled vision capabilities on the analysis image.

Each capability is answered by the provider its setting names (local offline model or Azure AI
Vision) behind one interface. Boxes come back in analysis-image pixels and are mapped here to
the ORIGINAL image's pixels (after EXIF orientation), which is what `image.width/height` are.
A capability that fails is recorded under `analysis.errors` and the others keep their results:
one broken model must not cost the rest. A transient failure (throttling, network) retries the
whole step instead, until the last attempt, where it too is recorded.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
from PIL import Image

from pipeline.analyzers.base import DetectedObject, Face, Text
from pipeline.analyzers.registry import check_configuration, enabled_analyzers
from pipeline.settings import Settings
from pipeline.step_api import StepContext, StepManifest

log = logging.getLogger("darkroom.steps.analyze")

manifest = StepManifest(
    name="analyze",
    version="1.0.0",
    description="Tags, objects, faces, text and moderation on the analysis image.",
    reads=("image", "derived"),
    writes=("analysis",),
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
        pixels = np.asarray(decoded.convert("RGB"))
    height, width = pixels.shape[:2]
    sx = ctx.fields["image"]["width"] / width
    sy = ctx.fields["image"]["height"] / height

    result: dict[str, Any] = {"models": {}, "errors": {}, "duration_ms": {}}
    for capability, analyzer in enabled_analyzers(ctx.settings.analysis).items():
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
