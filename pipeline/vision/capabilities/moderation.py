"""moderation: is the image safe for work? (Azure's Image Analysis 4.0 has no such feature: its
provider says so at start-up.)"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.vision.base import Result
from pipeline.vision.capability import Capability, Drawing, Option


class Moderation(Result):
    score: float = Field(ge=0, le=1)  # probability the image is not safe for work
    verdict: Literal["safe", "unsafe"]


capability = Capability(
    name="moderation",
    result=Moderation,
    description="Not-safe-for-work verdict.",
    providers={
        "local": "pipeline.vision.local.moderation_opennsfw:OpenNsfwModerator",
        "azure": "pipeline.vision.cloud.azure_vision:AzureModerator",
    },
    options=(
        Option(
            "threshold",
            "DARKROOM_MODERATION_THRESHOLD",
            0.8,
            minimum=0.0,
            maximum=1.0,
            providers=("local",),
        ),
    ),
    rank=50,
    summarize=lambda m: f"moderation: {m['verdict']}" if m else None,
    outcome=lambda m: "unsafe" if (m or {}).get("verdict") == "unsafe" else "safe",
    scores=lambda m: (float(m["score"]),) if m else (),
    positive="unsafe",
    event=("moderation", lambda m: (m or {}).get("verdict")),
    drawing=Drawing(kind="verdict", title="Moderation"),
)
