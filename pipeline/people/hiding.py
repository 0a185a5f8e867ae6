"""What is left of a hidden face in a document: its box and score, never its landmarks.

Shared by the recognize step (a face hidden as it is recognised) and consent erasure (faces
of a person who withdrew), so both leave exactly the same trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HIDDEN_FACE_KEEPS = ("box", "score")  # what every later render needs to keep hiding it


def conceal(analysis: Mapping[str, Any], hidden: set[int]) -> dict[str, Any]:
    """`analysis` with the faces at `hidden` (indices into analysis.faces) reduced to
    HIDDEN_FACE_KEEPS: a hidden face's landmarks are no one's business."""
    faces = [
        {k: face[k] for k in HIDDEN_FACE_KEEPS if k in face} if i in hidden else face
        for i, face in enumerate(analysis.get("faces") or [])
    ]
    return {**analysis, "faces": faces}
