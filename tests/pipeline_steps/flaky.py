"""Fails its first attempt like a briefly unreachable dependency, then succeeds."""

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest


class Flaky(BaseModel):
    model_config = ConfigDict(extra="forbid")
    succeeded_on_attempt: int = Field(ge=1, description="Attempt that worked.")


class FlakyOutput(BaseModel):
    flaky: Flaky = Field(description="Which attempt succeeded.")


manifest = StepManifest(
    name="flaky",
    version="0.1.0",
    description="Fails once, then works.",
    reads=("image",),
    writes=("flaky",),
    output=FlakyOutput,
)


def run(ctx: StepContext) -> dict:
    if ctx.attempt < 2:
        raise ConnectionError("model server not reachable (simulated)")
    return {"flaky": {"succeeded_on_attempt": ctx.attempt}}
