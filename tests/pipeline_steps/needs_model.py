"""A step whose model file may be missing: its start-up check fails until MODEL_FILE exists."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest
from pipeline.settings import Settings
from pipeline.vision.base import ModelUnavailable


class NeedsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="Contents of the model file.")


class NeedsModelOutput(BaseModel):
    needs_model: NeedsModel = Field(description="What the model file said.")


manifest = StepManifest(
    name="needs_model",
    version="0.1.0",
    description="Needs the file named by MODEL_FILE.",
    reads=("image",),
    writes=("needs_model",),
    output=NeedsModelOutput,
)


def check(settings: Settings) -> None:
    path = Path(settings.env["MODEL_FILE"])
    if not path.is_file():
        raise ModelUnavailable(f"model file {path} not found: copy it there or set MODEL_FILE")


def run(ctx: StepContext) -> dict:
    return {"needs_model": {"model": Path(ctx.settings.env["MODEL_FILE"]).read_text()}}
