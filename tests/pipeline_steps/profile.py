"""Produces a large result (row and column brightness profiles): forces the claim check."""

import io

import numpy as np
from PIL import Image

from pipeline.step_api import StepContext, StepManifest

manifest = StepManifest(
    name="profile",
    version="0.1.0",
    description="Per-row and per-column mean of each RGB channel of the analysis image.",
    reads=("derived",),
    writes=("profile",),
)


def run(ctx: StepContext) -> dict:
    image = Image.open(io.BytesIO(ctx.read_artifact(ctx.fields["derived"]["analysis"])))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    return {
        "profile": {
            "rows": np.round(pixels.mean(axis=1), 4).tolist(),
            "cols": np.round(pixels.mean(axis=0), 4).tolist(),
        }
    }
