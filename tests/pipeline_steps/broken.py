"""Always fails: must end in the poison queue with the document saying why."""

from pydantic import BaseModel, Field

from pipeline.framework.step_api import StepContext, StepManifest


class BrokenOutput(BaseModel):
    broken: dict = Field(description="Never written: the step always raises.")


manifest = StepManifest(
    name="broken",
    version="0.1.0",
    description="Always raises.",
    reads=("image",),
    writes=("broken",),
    output=BrokenOutput,
)


def run(ctx: StepContext) -> dict:
    raise RuntimeError("disk on fire (simulated)")
