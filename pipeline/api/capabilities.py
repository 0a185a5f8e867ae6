"""`GET /api/capabilities`: what this deployment analyses, and how the page draws each result —
the analyze step's capabilities, then the model steps.

Read from the capabilities' own declarations (pipeline.vision.capabilities), so the page draws a
new capability without knowing it by name, and an app can learn which fields to expect.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from pipeline.api.deps import CallerDep, services
from pipeline.api.errors import responses
from pipeline.vision.capabilities import capabilities
from pipeline.vision.capability import Drawing

router = APIRouter(prefix="/api", responses=responses(401, 429))


class CapabilityInfo(BaseModel):
    name: str = Field(
        description="The key under `analysis` (a capability) or in the document (a model step)."
    )
    source: Literal["analysis", "step"] = Field(
        "analysis", description="A capability of the analyze step, or a model step of its own."
    )
    description: str
    enabled: bool = Field(description="Run by the analyze step (DARKROOM_ANALYZERS).")
    provider: str | None = Field(description="Who answers it here, when enabled.")
    sync: bool = Field(description="Answered at once by POST /api/analyze.")
    drawing: Drawing


class CapabilityList(BaseModel):
    items: list[CapabilityInfo] = Field(description="In the order the page shows them.")


@router.get("/capabilities", response_model=CapabilityList, summary="What images are analysed for")
def list_capabilities(caller: CallerDep) -> CapabilityList:
    settings = services().settings
    enabled = set(settings.analysis.capabilities)
    return CapabilityList(
        items=[
            CapabilityInfo(
                name=c.name,
                description=c.description,
                enabled=c.name in enabled,
                provider=settings.analysis.provider(c.name) if c.name in enabled else None,
                sync=c.name in settings.api.sync_capabilities,
                drawing=c.drawing,
            )
            for c in capabilities().values()
        ]
        + [
            CapabilityInfo(
                name=name,
                source="step",
                description=f"Your model ({spec.task}, {spec.source}).",
                enabled=name in settings.pipeline_steps,
                provider=spec.source,
                sync=False,
                drawing=MODEL_DRAWINGS[spec.task](name),
            )
            for name, spec in sorted(settings.model_steps.items())
            if spec.task in MODEL_DRAWINGS
        ]
    )


def _colour(name: str) -> str:
    """A stable, bright colour per model step."""
    digest = hashlib.sha256(name.encode()).digest()
    return "#" + "".join(f"{128 + b // 2:02x}" for b in digest[:3])


# How the page draws a model step's result, by task (an embedding has nothing to draw).
MODEL_DRAWINGS = {
    "classify": lambda name: Drawing(kind="labels", title=name),
    "detect": lambda name: Drawing(kind="boxes", title=name, colour=_colour(name)),
    "segment": lambda name: Drawing(kind="mask", title=name, colour=_colour(name), shown=False),
}
