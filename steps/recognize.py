"""recognize: who the detected faces are — an embedding per usable face, matched to people.

For each face analyze found: an aligned crop from the analysis image (BlazeFace's eye, nose and
mouth landmarks), a quality gate (too small, too blurred, extreme pose → detected but not used
for matching, with the reason), and for usable faces an embedding from the in-process face
embedder. The embeddings go to the faces store the context offers (`ctx.faces`, the pipeline's
Cosmos DB container), which matches them to people; they never enter the document. A face that
matches someone who withdrew consent — or may be them: unusable, or too close to call, once
the owner has withdrawals (pipeline.people) — comes back `hide`: transform anonymises it
whatever the publishing policy says, and the document keeps no face id or person for it, nor
its landmarks (recognize then writes `analysis` again with that face reduced to box and score,
`conceal`); and the analysis image, which shows it, is deleted (ctx.drop_artifact: a step that
needs it again gets it made again by prepare, and recognize hides the face again).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pipeline.analyzers.face_embedding import FaceEmbedder
from pipeline.analyzers.registry import analyzer_for
from pipeline.settings import Settings
from pipeline.step_api import FaceEntry, FaceVerdict, StepContext, StepManifest, face_id
from steps.analyze import Analysis
from steps.imaging.decode import decode_upright, open_image
from steps.imaging.pixels import fit_size
from steps.imaging.sniff import HEAD_BYTES, sniff


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


HIDDEN_FACE_KEEPS = ("box", "score")  # what every later render needs to keep hiding it


def conceal(analysis: Mapping[str, Any], hidden: set[int]) -> dict[str, Any]:
    """`analysis` with the faces at `hidden` (indices into analysis.faces) reduced to
    HIDDEN_FACE_KEEPS: a hidden face's landmarks are no one's business."""
    faces = [
        {k: face[k] for k in HIDDEN_FACE_KEEPS if k in face} if i in hidden else face
        for i, face in enumerate(analysis.get("faces") or [])
    ]
    return {**analysis, "faces": faces}


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


@lru_cache(maxsize=1)
def face_embedder() -> FaceEmbedder:
    """One embedder per process (the model loads on first use)."""
    return FaceEmbedder()


def check(settings: Settings) -> None:
    """Start-up: the embedding model is installed."""
    face_embedder().check()


def judge(embedder: FaceEmbedder, pixels: np.ndarray, box, landmarks):
    """(usable, reason, aligned chip or None) for one face of `pixels`."""
    if len(landmarks) < 4:
        return False, "no landmarks to align the face", None
    chip = embedder.align(pixels, landmarks)
    height, width = pixels.shape[:2]
    usable, reason = embedder.quality(box, landmarks, chip, (width, height))
    return usable, reason, chip if usable else None


def largest_face(data: bytes, settings: Settings) -> tuple[str, list[float]] | None:
    """The embedding of the largest usable face in an image file (face search), made as
    `run` makes them: the same checked decode as prepare (magic bytes, size limits before
    decoding), the same analysis size, detector, gate and embedder. None: no usable face;
    ImageRejected: not an image it may decode."""
    opened = open_image(data, sniff(data[:HEAD_BYTES]).format, settings.limits)
    width, height = opened.upright_size
    size = fit_size(width, height, settings.analysis_max_side, settings.analysis_max_pixels)
    pixels = np.asarray(decode_upright(opened, size).convert("RGB"))
    embedder = face_embedder()
    faces = analyzer_for("faces", settings.analysis).predict(pixels)
    for face in sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True):
        usable, _, chip = judge(embedder, pixels, tuple(face.box), list(face.landmarks or []))
        if usable:
            return embedder.ident, [float(v) for v in embedder.embed(chip[None])[0]]
    return None


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
