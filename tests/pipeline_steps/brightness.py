"""A custom step as a user would write one: read the analysis image, add one field."""

import io

from PIL import Image, ImageStat

from pipeline.step_api import StepContext, StepManifest

manifest = StepManifest(
    name="brightness",
    version="0.1.0",
    description="Mean brightness of the analysis image (0-255).",
    reads=("derived",),
    writes=("brightness",),
)


def run(ctx: StepContext) -> dict:
    image = Image.open(io.BytesIO(ctx.read_artifact(ctx.fields["derived"]["analysis"])))
    return {"brightness": {"mean": round(ImageStat.Stat(image.convert("L")).mean[0], 2)}}
