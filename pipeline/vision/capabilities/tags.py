"""tags: image-level labels with scores, best first (ImageNet classes offline)."""

from __future__ import annotations

from pydantic import Field

from pipeline.vision.base import Result
from pipeline.vision.capability import Capability, Drawing, Option


class Tag(Result):
    name: str
    score: float = Field(ge=0, le=1)


def _summary(tags: list[dict] | None) -> str | None:
    return "tags: " + ", ".join(t["name"] for t in tags[:3]) if tags else None


capability = Capability(
    name="tags",
    result=list[Tag],
    description="Image-level labels, best first.",
    providers={
        "local": "pipeline.vision.local.tags_efficientnet:EfficientNetTagger",
        "azure": "pipeline.vision.cloud.azure_vision:AzureTagger",
        "openai": "pipeline.vision.cloud.openai_vision:OpenAITagger",
    },
    options=(
        Option("top_k", "DARKROOM_TAGS_TOP_K", 5, minimum=1, maximum=100),
        Option("min_score", "DARKROOM_TAGS_MIN_SCORE", 0.05, minimum=0.0, maximum=1.0),
    ),
    rank=30,
    summarize=_summary,
    # the top tag's score: how sure the model is of what the image shows
    scores=lambda tags: (max(t["score"] for t in tags),) if tags else (),
    event=("tags", lambda tags: [t["name"] for t in tags or []]),
    words=lambda tags: [t["name"] for t in tags or []],
    drawing=Drawing(kind="labels", title="Tags"),
)
