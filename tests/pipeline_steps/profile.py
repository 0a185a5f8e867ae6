"""Produces a large result (row and column brightness profiles): forces the claim check."""

import io

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[list[float]] = Field(description="Mean RGB of each row.")
    cols: list[list[float]] = Field(description="Mean RGB of each column.")


class ProfileOutput(BaseModel):
    profile: Profile = Field(description="Row and column brightness profiles.")


manifest = StepManifest(
    name="profile",
    version="0.1.0",
    description="Per-row and per-column mean of each RGB channel of the analysis image.",
    reads=("derived",),
    writes=("profile",),
    output=ProfileOutput,
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
