"""A custom step as a user would write one: read the analysis image, add one field."""

import io

from PIL import Image, ImageStat
from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest


class Brightness(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: float = Field(ge=0, le=255, description="Mean luminance, 0-255.")


class BrightnessOutput(BaseModel):
    brightness: Brightness = Field(description="Brightness of the analysis image.")


def summarize(fields) -> str:
    return f"mean brightness {fields['brightness']['mean']:.0f}"


manifest = StepManifest(
    name="brightness",
    version="0.1.0",
    description="Mean brightness of the analysis image (0-255).",
    reads=("derived",),
    writes=("brightness",),
    output=BrightnessOutput,
    summarize=summarize,
)


def run(ctx: StepContext) -> dict:
    image = Image.open(io.BytesIO(ctx.read_artifact(ctx.fields["derived"]["analysis"])))
    return {"brightness": {"mean": round(ImageStat.Stat(image.convert("L")).mean[0], 2)}}
