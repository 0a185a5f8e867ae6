"""transform: the derivative that may leave the building.

From the ORIGINAL (orientation baked in) rather than the analysis image, so quality is the
publisher's choice; faces — and text, when asked — anonymised with the analyze step's boxes;
downscaled; re-encoded with only allow-listed metadata. Written under a deterministic name, so
a redelivered message overwrites its own derivative instead of adding one. If the policy asks
for anonymisation but faces are unknown (analyze absent or its face model failed), nothing is
published: an image that might show a face is withheld with the reason, never published raw.

Faces recognize marked `hide` (someone who withdrew consent, or a face that may be them: see
pipeline.people.matching) are hidden whatever the policy, and not only here: the thumbnail prepare
made
is made again with them hidden (same name and size), since the API links it to every view.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest, StoredImage
from pipeline.imaging.anonymize import anonymize
from pipeline.imaging.decode import decode_upright, open_image
from pipeline.imaging.metadata import allowed_metadata
from pipeline.imaging.pixels import EncodedImage, encode_jpeg, fit_size, resized


class Anonymised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["off", "blur", "pixelate"] = Field(
        description="How regions were hidden; `off` when nothing was hidden."
    )
    faces: int = Field(ge=0, description="Faces hidden.")
    text_regions: int = Field(ge=0, description="Text regions hidden.")
    thumbnail_faces: int = Field(
        0,
        ge=0,
        description="Faces hidden in the thumbnail too (consent withdrawn, or maybe theirs).",
    )


class Published(StoredImage):
    """The derivative safe to publish, in the published container."""

    model_config = ConfigDict(extra="forbid", title="Published")
    anonymised: Anonymised = Field(description="What was hidden in it.")
    metadata: list[str] = Field(description="Metadata items kept (allow-list); never GPS.")


class Withheld(BaseModel):
    """Nothing was published: anonymisation was asked for but faces are unknown."""

    model_config = ConfigDict(extra="forbid")
    withheld: str = Field(description="Why nothing was published.")


class TransformOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    published: Published | Withheld = Field(
        description="The publishable derivative, or why it was withheld."
    )


_HIDDEN = {"blur": "blurred", "pixelate": "pixelated"}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summarize(fields: Mapping[str, Any]) -> str | None:
    """`published 2048x1536 webp, 2 faces blurred`, or `withheld: <why>`."""
    published = fields.get("published")
    if not published:
        return None
    if "withheld" in published:
        return f"withheld: {published['withheld']}"
    kind = str(published.get("content_type", "")).rsplit("/", 1)[-1]
    line = f"published {published['width']}x{published['height']} {kind}"
    hidden = published.get("anonymised") or {}
    how = _HIDDEN.get(hidden.get("mode", "off"), "hidden")
    counts = [
        _count(hidden[key], noun)
        for key, noun in (("faces", "face"), ("text_regions", "text region"))
        if hidden.get(key)
    ]
    return f"{line}, {' and '.join(counts)} {how}" if counts else f"{line}, no face hidden"


manifest = StepManifest(
    name="transform",
    version="1.2.0",
    description="Publishable derivative: faces anonymised, downscaled, metadata stripped.",
    reads=("image",),
    writes=("published",),
    output=TransformOutput,
    summarize=summarize,
)

_MIME = {"jpeg": "image/jpeg", "webp": "image/webp"}


def _regions(analysis: dict, key: str, scale: float) -> list[list[float]]:
    items = analysis[key]["lines"] if key == "text" else analysis[key]
    return [[v * scale for v in item["box"]] for item in items]


@dataclass(frozen=True)
class _Rendered:
    """The published derivative, encoded, and what was done to it."""

    image: EncodedImage
    anonymised: dict[str, Any]
    metadata: list[str]
    thumbnail: bytes | None  # made again with the hidden faces hidden; None: prepare's stands


def _render(data: bytes, ctx: StepContext, analysis: Mapping[str, Any]) -> _Rendered:
    """Decode, anonymise and encode the derivative. The pixels (the original's bytes, the
    decoded image and its anonymised copy, ~20 MB at 2048 px) live only in this call, so they
    are freed before the upload, during which the worker's compute slot serves another delivery:
    held through the upload, they were in a worker's peak memory."""
    policy = ctx.settings.publish
    opened = open_image(data, ctx.fields["image"]["format"], ctx.settings.limits)
    width, height = opened.upright_size
    size = fit_size(width, height, policy.max_side)
    image = decode_upright(opened, size)
    scale = size[0] / width

    faces = _regions(analysis, "faces", scale) if "faces" in analysis else []
    # Faces of people who withdrew consent are hidden whatever the policy (recognize).
    hidden = {
        f["face"] for f in (ctx.fields.get("recognition") or {}).get("faces", []) if f.get("hide")
    }
    secret = [box for i, box in enumerate(faces) if i in hidden]
    if policy.faces == "off":
        faces = secret
    text = _regions(analysis, "text", scale) if policy.redact_text and "text" in analysis else []
    mode = policy.faces if policy.faces != "off" else "pixelate"
    thumbnail = _thumbnail(image, secret, mode, (ctx.fields.get("derived") or {}).get("thumbnail"))
    published = anonymize(image, [*faces, *text], mode)

    out = io.BytesIO()
    extra, kept = allowed_metadata(opened.image, policy.keep_metadata)
    if policy.format == "webp":
        published.save(out, "WEBP", quality=policy.quality, method=4, **extra)
    else:
        published.save(
            out, "JPEG", quality=policy.quality, optimize=True, progressive=True, **extra
        )
    return _Rendered(
        image=EncodedImage(out.getvalue(), published.width, published.height),
        anonymised={
            "mode": mode if (faces or text) else "off",
            "faces": len(faces),
            "text_regions": len(text),
            **({"thumbnail_faces": len(secret)} if thumbnail is not None else {}),
        },
        metadata=kept,
        thumbnail=thumbnail,
    )


def _thumbnail(image, boxes: list[list[float]], mode: str, ref: Mapping[str, Any] | None):
    """The thumbnail again, from the derivative's pixels before anything is hidden, at the
    size prepare recorded, with `boxes` (derivative pixels) hidden; None if there is nothing
    to hide or no thumbnail."""
    if not boxes or not ref:
        return None
    size = (int(ref["width"]), int(ref["height"]))
    scale = size[0] / image.width
    small = resized(image, size)
    return encode_jpeg(anonymize(small, [[v * scale for v in box] for box in boxes], mode))


def run(ctx: StepContext) -> dict[str, Any]:
    policy = ctx.settings.publish
    analysis = ctx.fields.get("analysis") or {}
    if policy.faces != "off" and "faces" not in analysis:
        why = (analysis.get("errors") or {}).get("faces") or "face detection did not run"
        return {"published": {"withheld": f"faces must be {policy.faces}ed, but {why}"}}

    rendered = _render(ctx.read_source(), ctx, analysis)
    if rendered.thumbnail is not None:
        ctx.put_artifact("thumbnail.jpg", rendered.thumbnail, "image/jpeg")
    ref = ctx.put_artifact(
        f"published.{'jpg' if policy.format == 'jpeg' else 'webp'}",
        rendered.image.data,
        _MIME[policy.format],
        public=True,
    )
    return {
        "published": {
            **ref.model_dump(),
            "width": rendered.image.width,
            "height": rendered.image.height,
            "anonymised": rendered.anonymised,
            "metadata": rendered.metadata,
        }
    }
