"""caption: one sentence saying what the photo shows.

No offline model here writes one, so it is off by default and its `local` provider says so at
start-up (as Azure's moderation does); `azure` asks Image Analysis 4.0 for its caption (in the
regions that offer it; the API retires on 2028-09-25).
"""

from __future__ import annotations

from pydantic import Field

from pipeline.vision.base import Result
from pipeline.vision.capability import Capability, Drawing


class Caption(Result):
    text: str
    confidence: float | None = Field(None, ge=0, le=1)


def _snippet(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


capability = Capability(
    name="caption",
    result=Caption,
    description="One sentence saying what the photo shows.",
    providers={
        "local": "pipeline.vision.local.no_caption:NoOfflineCaptioner",
        "azure": "pipeline.vision.cloud.azure_vision:AzureCaptioner",
        "openai": "pipeline.vision.cloud.openai_vision:OpenAICaptioner",
    },
    rank=5,
    summarize=lambda value: _snippet(value["text"]) if value and value.get("text") else None,
    outcome=lambda value: "found" if value and value.get("text") else "none",
    scores=lambda value: (
        (float(value["confidence"]),) if value and value.get("confidence") is not None else ()
    ),
    event=("caption", lambda value: (value or {}).get("text")),
    words=lambda value: [value["text"]] if value and value.get("text") else [],
    sync=False,
    enabled_by_default=False,
    drawing=Drawing(kind="sentence", title="Caption"),
)
