"""Deletes the analysis image once (while VANISH_MARKER does not exist), as an emulator killed
before it saved its blob metadata, or a retention rule, would: the next step finds it gone."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest
from pipeline.stores.azure_clients import clients


class Vanish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deleted: bool = Field(description="Whether this run deleted the analysis image.")


class VanishOutput(BaseModel):
    vanish: Vanish = Field(description="What the step did to the analysis image.")


manifest = StepManifest(
    name="vanish",
    version="0.1.0",
    description="Deletes the analysis image the first time it runs.",
    reads=("derived",),
    writes=("vanish",),
    output=VanishOutput,
)


def run(ctx: StepContext) -> dict:
    marker = Path(ctx.settings.env["VANISH_MARKER"])
    if marker.exists():
        return {"vanish": {"deleted": False}}
    marker.write_text("done")
    ref = ctx.fields["derived"]["analysis"]
    clients().blob_service.get_blob_client(ref["container"], ref["name"]).delete_blob()
    return {"vanish": {"deleted": True}}
