"""Deletes the analysis image once (while VANISH_MARKER does not exist), as an emulator killed
before it saved its blob metadata, or a retention rule, would: the next step finds it gone."""

from pathlib import Path

from pipeline.azure_clients import clients
from pipeline.step_api import StepContext, StepManifest

manifest = StepManifest(
    name="vanish",
    version="0.1.0",
    description="Deletes the analysis image the first time it runs.",
    reads=("derived",),
    writes=("vanish",),
)


def run(ctx: StepContext) -> dict:
    marker = Path(ctx.settings.env["VANISH_MARKER"])
    if marker.exists():
        return {"vanish": {"deleted": False}}
    marker.write_text("done")
    ref = ctx.fields["derived"]["analysis"]
    clients().blob_service.get_blob_client(ref["container"], ref["name"]).delete_blob()
    return {"vanish": {"deleted": True}}
