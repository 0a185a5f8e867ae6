"""Returns a field its manifest does not declare: a programming error, not a transient one."""

from pipeline.step_api import StepContext, StepManifest

manifest = StepManifest(
    name="sloppy",
    version="0.1.0",
    description="Writes an undeclared field.",
    reads=("image",),
    writes=("sloppy",),
)


def run(ctx: StepContext) -> dict:
    return {"sloppy": {"ok": True}, "surprise": 1}
