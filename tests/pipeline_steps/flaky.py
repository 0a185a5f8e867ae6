"""Fails its first attempt like a briefly unreachable dependency, then succeeds."""

from pipeline.step_api import StepContext, StepManifest

manifest = StepManifest(
    name="flaky",
    version="0.1.0",
    description="Fails once, then works.",
    reads=("image",),
    writes=("flaky",),
)


def run(ctx: StepContext) -> dict:
    if ctx.attempt < 2:
        raise ConnectionError("model server not reachable (simulated)")
    return {"flaky": {"succeeded_on_attempt": ctx.attempt}}
