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

from pipeline.framework.step_api import StepContext, StepManifest, TryLater
from pipeline.settings import Settings
from pipeline.vision.analysis import analysis_model, summary_line, to_original
from pipeline.vision.providers import check_configuration, enabled_analyzers
from pipeline.vision.search_words import search_vector

log = logging.getLogger("darkroom.steps.analyze")


Analysis = analysis_model()


class AnalyzeOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    analysis: Analysis = Field(description="Vision results on the analysis image.")
    search_vector: list[float] | None = Field(
        None,
        description="The caption's meaning as a vector, when a text-embedding deployment is "
        "configured (DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT); the document keeps it as "
        "`search.vector`.",
    )


def summarize(fields: Mapping[str, Any]) -> str | None:
    """`3 faces · dog 0.91, bicycle 0.80 · tags: … · text: 'STOP' · moderation: safe`."""
    analysis = fields.get("analysis")
    return summary_line(analysis) if analysis else None


manifest = StepManifest(
    name="analyze",
    version="1.0.0",
    description="The enabled vision capabilities (pipeline/vision/capabilities) on the analysis "
    "image.",
    reads=("image", "derived"),
    writes=("analysis", "search_vector"),
    output=AnalyzeOutput,
    summarize=summarize,
)


def check(settings: Settings) -> None:
    """Start-up: every enabled capability can load (weights installed, endpoint set)."""
    check_configuration(settings.analysis)


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
            if spent := analyzer.usage():
                service, usage = spent
                result.setdefault("usage", {})[service] = usage.model_dump()
        except Exception as exc:  # isolation: record and go on with the other capabilities
            if analyzer.is_transient(exc) and ctx.attempt < ctx.max_attempts:
                raise  # throttled or unreachable: retry the step later, with backoff
            log.warning("%s: %s failed: %s", ctx.image_id, capability, exc)
            result["errors"][capability] = f"{type(exc).__name__}: {exc}"[:500]
        result["models"][capability] = analyzer.ident
        result["duration_ms"][capability] = round((time.perf_counter() - started) * 1000, 1)
    vector = None
    try:
        vector = search_vector(ctx.settings.analysis, result)
    except Exception as exc:  # the image stays findable by its words
        if isinstance(exc, TryLater | ConnectionError) and ctx.attempt < ctx.max_attempts:
            raise
        log.warning("%s: no search vector: %s", ctx.image_id, exc)
    return {"analysis": result, "search_vector": vector}
