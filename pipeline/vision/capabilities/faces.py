"""faces: where the faces are, with landmarks (who they are is the recognize step's)."""

from __future__ import annotations

from pydantic import Field

from pipeline.vision.base import Box, Result
from pipeline.vision.capability import Capability, Drawing, Option


class Face(Result):
    box: Box
    score: float = Field(ge=0, le=1)
    landmarks: list[tuple[float, float]] | None = None


def _summary(faces: list[dict] | None) -> str | None:
    if faces is None:
        return None
    return f"{len(faces)} face{'' if len(faces) == 1 else 's'}" if faces else "no face"


capability = Capability(
    name="faces",
    result=list[Face],
    description="Detected faces; absent when face detection failed or is off.",
    providers={
        "local": "pipeline.vision.local.faces_blazeface:BlazeFaceDetector",
        "azure": "pipeline.vision.cloud.azure_vision:AzureFaceDetector",
        "face": "pipeline.vision.cloud.face:FaceDetector",
    },
    options=(Option("min_score", "DARKROOM_FACES_MIN_SCORE", 0.6, minimum=0.0, maximum=1.0),),
    rank=10,
    summarize=_summary,
    scores=lambda faces: tuple(float(f["score"]) for f in faces or ()),
    event=("face_count", lambda faces: None if faces is None else len(faces)),
    drawing=Drawing(kind="faces", title="Faces", colour="#ffcc00"),
)
