"""Returns a field its manifest does not declare: a programming error, not a transient one."""

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest


class Sloppy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool = Field(description="Always true.")


class SloppyOutput(BaseModel):
    sloppy: Sloppy = Field(description="The declared field (it also writes an undeclared one).")


manifest = StepManifest(
    name="sloppy",
    version="0.1.0",
    description="Writes an undeclared field.",
    reads=("image",),
    writes=("sloppy",),
    output=SloppyOutput,
)


def run(ctx: StepContext) -> dict:
    return {"sloppy": {"ok": True}, "surprise": 1}
