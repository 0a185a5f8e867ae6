"""The `analysis` a document holds, composed from the capabilities' declarations.

`Analysis` (the document's and the OpenAPI schema's model), its summary line and the mapping of
boxes to the original image are derived from `pipeline.vision.capabilities`, so none of them
names a capability.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.vision.base import Usage
from pipeline.vision.capabilities import capabilities

# Keys of `analysis` besides the capabilities' own.
BOOKKEEPING = ("models", "errors", "duration_ms", "deferred", "usage")


@lru_cache(maxsize=1)
def analysis_model() -> type[BaseModel]:
    """`Analysis`: one optional field per capability (its declared result), and the
    bookkeeping of which model answered, what failed, how long each took, what is deferred."""
    declared = capabilities()
    name = Literal[tuple(declared)] if declared else str
    fields: dict[str, Any] = {
        c.name: (c.result | None, Field(None, description=c.description)) for c in declared.values()
    }
    return create_model(
        "Analysis",
        __config__=ConfigDict(extra="forbid"),
        __doc__=(
            "What each enabled capability found; a capability that failed is under `errors` "
            "instead.\n\nEvery box is `[x, y, w, h]` in pixels of the ORIGINAL image after EXIF "
            "orientation."
        ),
        **fields,
        models=(
            dict[name, str],
            Field(description="`name@version` of the model or service that answered each."),
        ),
        errors=(
            dict[name, str],
            Field(description="Capabilities that failed, with the error; the others kept theirs."),
        ),
        duration_ms=(dict[name, float], Field(description="Time each capability took.")),
        usage=(
            dict[str, Usage] | None,
            Field(
                None,
                description="Tokens and estimated cost (USD) of each paid service's call for "
                "this image, by service (e.g. `openai`: one call answers all its capabilities).",
            ),
        ),
        deferred=(
            list[str] | None,
            Field(None, description="Capabilities left to the asynchronous path, answered later."),
        ),
    )


def summary_line(analysis: Mapping[str, Any]) -> str:
    """`3 faces · dog 0.91, bicycle 0.80 · tags: … · text: 'STOP' · moderation: safe`: each
    capability's part in rank order, then what is deferred and what failed."""
    parts = [
        part
        for c in capabilities().values()
        if c.name in analysis and (part := c.summarize(analysis[c.name]))
    ]
    if deferred := analysis.get("deferred"):
        parts.append("later: " + ", ".join(deferred))
    if errors := analysis.get("errors"):
        parts.append("failed: " + ", ".join(errors))
    return " · ".join(parts) or "nothing found"


def _scaled_box(box: Any, sx: float, sy: float) -> list[float]:
    x, y, w, h = box
    return [round(x * sx, 1), round(y * sy, 1), round(w * sx, 1), round(h * sy, 1)]


def _scaled(value: Any, sx: float, sy: float) -> Any:
    """A result's JSON with every `box` ([x, y, w, h]) and `landmarks` ([[x, y], …]) scaled,
    at any depth: boxes are recognised by name, so a new capability's boxes map too."""
    if isinstance(value, list):
        return [_scaled(item, sx, sy) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "box" and isinstance(item, list | tuple) and len(item) == 4:
            out[key] = _scaled_box(item, sx, sy)
        elif key == "landmarks" and isinstance(item, list):
            out[key] = [[round(x * sx, 1), round(y * sy, 1)] for x, y in item]
        else:
            out[key] = _scaled(item, sx, sy)
    return out


def to_original(prediction: Any, sx: float, sy: float) -> Any:
    """JSON for the document, with every box and landmark in original-image pixels."""
    if isinstance(prediction, list):
        data = [item.model_dump() for item in prediction]
    else:
        data = prediction.model_dump()
    return _scaled(data, sx, sy)
