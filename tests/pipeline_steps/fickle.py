"""Fails while a marker file exists: a broken dependency an operator fixes, then replays."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest


class Fickle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool = Field(description="Always true once it works.")


class FickleOutput(BaseModel):
    fickle: Fickle = Field(description="That the dependency answered.")


manifest = StepManifest(
    name="fickle",
    version="0.1.0",
    description="Fails while FICKLE_MARKER exists.",
    reads=("image",),
    writes=("fickle",),
    output=FickleOutput,
)


def run(ctx: StepContext) -> dict:
    marker = Path(ctx.settings.env["FICKLE_MARKER"])
    if marker.exists():
        raise RuntimeError(f"dependency down ({marker.read_text().strip()})")
    return {"fickle": {"ok": True}}
