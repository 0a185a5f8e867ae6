"""prepare: turn an untrusted upload into a known-good image and the facts later steps rely on.

Order matters for safety: bytes limit before download (in the context), real format from magic
bytes, dimensions from the header before any pixel is decoded, then one decode — reduced in the
JPEG decoder itself when the image is far larger than the analysis size — EXIF orientation
applied, and the small analysis image and thumbnail written for later steps.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pipeline.step_api import StepContext, StepManifest
from steps.imaging.decode import decode_upright, open_image
from steps.imaging.exif import read_exif
from steps.imaging.perceptual_hash import phash
from steps.imaging.pixels import encode_jpeg, fit_size
from steps.imaging.sniff import HEAD_BYTES, sniff

manifest = StepManifest(
    name="prepare",
    version="1.0.0",
    description="Validate the upload, read EXIF, hash it, write the analysis image and thumbnail.",
    reads=(),
    writes=("image", "exif", "gps", "derived"),
)


def run(ctx: StepContext) -> dict[str, Any]:
    data = ctx.read_source()
    sniffed = sniff(data[:HEAD_BYTES])
    opened = open_image(data, sniffed.format, ctx.settings.limits)
    exif, gps = read_exif(opened.image)
    width, height = opened.upright_size
    analysis_size = fit_size(
        width, height, ctx.settings.analysis_max_side, ctx.settings.analysis_max_pixels
    )
    mode = opened.image.mode
    analysis = decode_upright(opened, analysis_size)
    analysis_blob = ctx.put_artifact("analysis.jpg", encode_jpeg(analysis), "image/jpeg")

    thumb = analysis.copy()
    thumb.thumbnail((ctx.settings.thumbnail_side, ctx.settings.thumbnail_side))
    thumb_blob = ctx.put_artifact("thumbnail.jpg", encode_jpeg(thumb, quality=82), "image/jpeg")

    fields: dict[str, Any] = {
        "image": {
            "format": sniffed.format,
            "mime": sniffed.mime,
            "width": width,
            "height": height,
            "mode": mode,
            "frames": opened.frames,
            "sha256": hashlib.sha256(data).hexdigest(),
            "phash": phash(analysis),
        },
        "exif": exif,
        "gps": gps,
        "derived": {
            "analysis": {
                **analysis_blob.model_dump(),
                "width": analysis.width,
                "height": analysis.height,
            },
            "thumbnail": {**thumb_blob.model_dump(), "width": thumb.width, "height": thumb.height},
        },
    }
    return fields
