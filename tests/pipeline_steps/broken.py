"""Always fails: must end in the poison queue with the document saying why."""

from pipeline.step_api import StepContext, StepManifest

manifest = StepManifest(
    name="broken",
    version="0.1.0",
    description="Always raises.",
    reads=("image",),
    writes=("broken",),
)


def run(ctx: StepContext) -> dict:
    raise RuntimeError("disk on fire (simulated)")
