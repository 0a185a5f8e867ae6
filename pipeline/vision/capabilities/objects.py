"""objects: named things with a score and a box (COCO classes offline)."""

from __future__ import annotations

from pydantic import Field

from pipeline.vision.base import Box, Result
from pipeline.vision.capability import Capability, Drawing, Option


class DetectedObject(Result):
    name: str
    score: float = Field(ge=0, le=1)
    # null when the provider names what it sees but cannot place it (GPT vision: `openai`)
    box: Box | None = None


def _summary(objects: list[dict] | None) -> str | None:
    """The three best names, each with its best score: `dog 0.91, bicycle 0.80`."""
    best: dict[str, float] = {}
    for item in objects or []:
        best[item["name"]] = max(best.get(item["name"], 0.0), item["score"])
    top = sorted(best.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{name} {score:.2f}" for name, score in top) or None


capability = Capability(
    name="objects",
    result=list[DetectedObject],
    description="Detected objects.",
    providers={
        "local": "pipeline.vision.local.objects_centernet:CenterNetObjectDetector",
        "azure": "pipeline.vision.cloud.azure_vision:AzureObjectDetector",
        "openai": "pipeline.vision.cloud.openai_vision:OpenAIObjectNamer",
    },
    options=(Option("min_score", "DARKROOM_OBJECTS_MIN_SCORE", 0.3, minimum=0.0, maximum=1.0),),
    rank=20,
    summarize=_summary,
    scores=lambda objects: tuple(float(o["score"]) for o in objects or ()),
    event=("objects", lambda objects: sorted({o["name"] for o in objects or []})),
    words=lambda objects: sorted({o["name"] for o in objects or []}),
    drawing=Drawing(kind="boxes", title="Objects", colour="#35d0ff"),
)
