"""recognize: who the detected faces are — an embedding per usable face, matched to people.

For each face analyze found: an aligned crop from the analysis image (BlazeFace's eye, nose and
mouth landmarks), a quality gate (too small, too blurred, extreme pose → detected but not used
for matching, with the reason), and for usable faces an embedding from the in-process face
embedder. The embeddings go to the faces store the context offers (`ctx.faces`, the pipeline's
Cosmos DB container), which matches them to people; they never enter the document. A face that
matches someone who withdrew consent — or may be them: unusable, or too close to call, once
the owner has withdrawals (pipeline.people.matching) — comes back `hide`: transform anonymises it
whatever the publishing policy says, and the document keeps no face id or person for it, nor
its landmarks (recognize then writes `analysis` again with that face reduced to box and score,
`conceal`); and the analysis image, which shows it, is deleted (ctx.drop_artifact: a step that
needs it again gets it made again by prepare, and recognize hides the face again).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import FaceEntry, FaceVerdict, StepContext, StepManifest, face_id
from pipeline.people.face_search import face_embedder, judge
from pipeline.people.hiding import conceal
from pipeline.settings import Settings
from pipeline.vision.analysis import analysis_model

Analysis = analysis_model()


class RecognizedFace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face_id: str | None = Field(
        description="The face's id in the faces store; null for a hidden face (none is kept)."
    )
    face: int = Field(ge=0, description="Index into analysis.faces.")
    person: str | None = Field(description="The person it belongs to, if any.")
    usable: bool = Field(description="Good enough to match (size, sharpness, pose).")
    reason: str | None = Field(description="Why it is not usable, if it is not.")
    hide: bool = Field(
        False, description="Someone who withdrew consent: anonymised in every derivative."
    )
    person_name: str | None = Field(
        None, description="The person's name (API views only: read from the people store)."
    )


class Recognition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The embedding model, name@version.")
    faces: list[RecognizedFace] = Field(description="One entry per detected face.")
    reason: str | None = Field(None, description="Why no face was looked at, if none was.")


class RecognizeOutput(BaseModel):
    recognition: Recognition = Field(description="The recognize step: faces and their people.")
    analysis: Analysis | None = Field(
        None,
        description="Only when a face is hidden: analyze's result with each hidden face reduced "
        "to its box and score (no landmarks).",
    )


def summarize(fields: Mapping[str, Any]) -> str | None:
    recognition = fields.get("recognition") or {}
    faces = recognition.get("faces") or []
    if not faces:
        return recognition.get("reason") or "no faces"
    people = {f["person"] for f in faces if f.get("person")}
    usable = sum(1 for f in faces if f.get("usable"))
    line = f"{usable} of {len(faces)} face(s) usable, {len(people)} known person(s)"
    if hidden := sum(1 for f in faces if f.get("hide")):
        line += f", {hidden} hidden (consent withdrawn)"
    return line


manifest = StepManifest(
    name="recognize",
    version="1.1.0",
    description="Face embeddings to the faces store, matched to people; quality-gated.",
    reads=("image", "derived", "analysis"),
    output=RecognizeOutput,
    summarize=summarize,
)


def check(settings: Settings) -> None:
    """Start-up: the embedding model is installed."""
    face_embedder().check()


def _scaled(points, sx: float, sy: float) -> list[tuple[float, float]]:
    return [(x * sx, y * sy) for x, y in points]


def run(ctx: StepContext) -> dict[str, Any]:
    embedder = face_embedder()
    analysis = ctx.fields.get("analysis") or {}
    faces = analysis.get("faces")
    if faces is None:
        why = (analysis.get("errors") or {}).get("faces") or "face detection did not run"
        return {"recognition": {"model": embedder.ident, "faces": [], "reason": why}}
    if not faces:
        return {"recognition": {"model": embedder.ident, "faces": []}}

    ref = ctx.fields["derived"]["analysis"]
    with Image.open(io.BytesIO(ctx.read_artifact(ref))) as decoded:
        # convert() would copy an RGB image once more before numpy's copy
        pixels = np.asarray(decoded if decoded.mode == "RGB" else decoded.convert("RGB"))
    height, width = pixels.shape[:2]
    sx, sy = width / ctx.fields["image"]["width"], height / ctx.fields["image"]["height"]

    entries: list[FaceEntry] = []
    chips: dict[int, np.ndarray] = {}
    for index, face in enumerate(faces):
        x, y, w, h = face["box"]
        box = (x * sx, y * sy, w * sx, h * sy)
        landmarks = _scaled(face.get("landmarks") or [], sx, sy)
        usable, reason, chip = judge(embedder, pixels, box, landmarks)
        if chip is not None:
            chips[index] = chip
        entries.append(
            FaceEntry(
                face_id=face_id(ctx.image_id, index, embedder.ident),
                face=index,
                box=tuple(face["box"]),
                usable=usable,
                reason=reason,
                embedding=None,
            )
        )
    if chips:
        vectors = embedder.embed(np.stack(list(chips.values())))
        for index, vector in zip(chips, vectors, strict=True):
            entries[index] = FaceEntry(
                **{**entries[index].__dict__, "embedding": tuple(float(v) for v in vector)}
            )
    if ctx.faces is not None:
        verdicts = ctx.faces.record(embedder.ident, entries)
    else:
        verdicts = [FaceVerdict(person=None, hide=False) for _ in entries]
    output: dict[str, Any] = {
        "recognition": {
            "model": embedder.ident,
            "faces": [
                {
                    "face_id": None if verdict.hide else entry.face_id,
                    "face": entry.face,
                    "person": verdict.person,
                    "usable": entry.usable and not verdict.hide,
                    "reason": "withdrew consent" if verdict.hide else entry.reason,
                    "hide": verdict.hide,
                }
                for entry, verdict in zip(entries, verdicts, strict=True)
            ],
        }
    }
    if hidden := {entry.face for entry, v in zip(entries, verdicts, strict=True) if v.hide}:
        output["analysis"] = conceal(analysis, hidden)
        ctx.drop_artifact(ref)
    return output
