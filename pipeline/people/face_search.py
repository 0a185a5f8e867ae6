"""A face's embedding as the recognize step makes it: one embedder per process, the quality
gate, and the largest usable face of an uploaded image (face search by image, `POST
/api/faces/search`), so a search compares like with like."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.imaging.decode import decode_upright, open_image
from pipeline.imaging.pixels import fit_size
from pipeline.imaging.sniff import HEAD_BYTES, sniff
from pipeline.settings import Settings
from pipeline.vision.local.face_embedding import FaceEmbedder
from pipeline.vision.providers import analyzer_for


@lru_cache(maxsize=1)
def face_embedder() -> FaceEmbedder:
    """One embedder per process (the model loads on first use)."""
    return FaceEmbedder()


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
