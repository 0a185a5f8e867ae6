"""prepare: turn an untrusted upload into a known-good image and the facts later steps rely on.

Order matters for safety: bytes limit before download (in the context), real format from magic
bytes, dimensions from the header before any pixel is decoded, then one decode — reduced in the
JPEG decoder itself when the image is far larger than the analysis size — EXIF orientation
applied, and the small analysis image and thumbnail written for later steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest, StoredImage
from pipeline.imaging.decode import decode_upright, open_image
from pipeline.imaging.exif import read_exif
from pipeline.imaging.perceptual_hash import phash
from pipeline.imaging.pixels import EncodedImage, encode_jpeg, fit_size
from pipeline.imaging.sniff import HEAD_BYTES, sniff

ExifValue = str | int | float  # EXIF is attacker-controlled: any tag may hold any scalar


class ImageFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = Field(description="Real format from the magic bytes (JPEG, PNG, WEBP…).")
    mime: str = Field(description="MIME type of that format.")
    width: int = Field(ge=1, description="Width in pixels, after EXIF orientation.")
    height: int = Field(ge=1, description="Height in pixels, after EXIF orientation.")
    mode: str = Field(description="Pillow pixel mode of the upload (RGB, L, RGBA…).")
    frames: int = Field(ge=1, description="Number of frames (animations: more than 1).")
    sha256: str = Field(description="SHA-256 of the uploaded bytes, hex.")
    phash: str = Field(description="Perceptual hash (imagehash.phash, 64 bits), hex.")


class Exif(BaseModel):
    """A fixed, sanitised list of EXIF tags; each present only when the photo has it."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, ExifValue]
    make: ExifValue | None = Field(None, description="Camera maker.")
    model: ExifValue | None = Field(None, description="Camera model.")
    software: ExifValue | None = Field(None, description="Software that wrote the file.")
    datetime: ExifValue | None = Field(None, description="Last change, `YYYY:MM:DD HH:MM:SS`.")
    orientation: int | None = Field(None, ge=1, le=8, description="EXIF orientation, 1 to 8.")
    datetime_original: ExifValue | None = Field(None, description="When the photo was taken.")
    offset_time_original: ExifValue | None = Field(None, description="UTC offset of that time.")
    exposure_time: ExifValue | None = Field(None, description="Exposure time, seconds.")
    f_number: ExifValue | None = Field(None, description="Aperture (f-number).")
    iso: ExifValue | None = Field(None, description="ISO speed.")
    focal_length: ExifValue | None = Field(None, description="Focal length, mm.")
    focal_length_35mm: ExifValue | None = Field(None, description="35 mm equivalent, mm.")
    lens_make: ExifValue | None = Field(None, description="Lens maker.")
    lens_model: ExifValue | None = Field(None, description="Lens model.")


class GeoPosition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90, description="Latitude, degrees (WGS 84).")
    lon: float = Field(ge=-180, le=180, description="Longitude, degrees (WGS 84).")
    alt: float | None = Field(None, description="Altitude, metres; absent when not recorded.")


class DerivedImages(BaseModel):
    model_config = ConfigDict(extra="forbid")
    analysis: StoredImage = Field(description="Downscaled, upright JPEG the analyzers read.")
    thumbnail: StoredImage = Field(description="Small upright JPEG preview.")


class PrepareOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: ImageFacts = Field(description="Facts from the real bytes of the upload.")
    exif: Exif = Field(description="Sanitised EXIF tags (GPS is kept apart, in `gps`).")
    gps: GeoPosition | None = Field(
        None, description="GPS position, only when the photo has a valid one. Private."
    )
    derived: DerivedImages = Field(
        description="Internal derivatives (they still show faces): never publish them."
    )


def summarize(fields: Mapping[str, Any]) -> str | None:
    """`4000x3000 jpeg, GPS`: size, format, frames, whether a position is recorded."""
    image = fields.get("image")
    if not image:
        return None
    line = f"{image['width']}x{image['height']} {str(image['format']).lower()}"
    if image.get("frames", 1) > 1:
        line += f", {image['frames']} frames"
    if fields.get("gps"):
        line += ", GPS"
    return line


manifest = StepManifest(
    name="prepare",
    version="1.1.0",
    description="Validate the upload, read EXIF, hash it, write the analysis image and thumbnail.",
    reads=(),
    writes=("image", "exif", "gps", "derived"),
    output=PrepareOutput,
    summarize=summarize,
)


def _derive(data: bytes, ctx: StepContext) -> tuple[dict[str, Any], EncodedImage, EncodedImage]:
    """What prepare learns from the upload (image facts, EXIF, GPS), and the analysis image and
    thumbnail encoded. The decoded pixels live only in this call, so they are freed before the
    uploads, during which the worker's compute slot serves another delivery."""
    settings = ctx.settings
    sniffed = sniff(data[:HEAD_BYTES])
    opened = open_image(data, sniffed.format, settings.limits)
    exif, gps = read_exif(opened.image)
    width, height = opened.upright_size
    analysis_size = fit_size(
        width, height, settings.analysis_max_side, settings.analysis_max_pixels
    )
    mode = opened.image.mode  # the upload's, before decoding (a reduced decode may change it)
    analysis = decode_upright(opened, analysis_size)
    thumb = analysis.copy()
    thumb.thumbnail((settings.thumbnail_side, settings.thumbnail_side))
    facts = {
        "image": {
            "format": sniffed.format,
            "mime": sniffed.mime,
            "width": width,
            "height": height,
            "mode": mode,
            "frames": opened.frames,
            "sha256": hashlib.sha256(data).hexdigest(),
            # From the thumbnail: the hash reads 32x32 grey pixels, so 320 px carry all it
            # needs, and Lanczos from 2 MP down to 32 px cost 12 ms of prepare's ~60.
            "phash": phash(thumb),
        },
        "exif": exif,
        "gps": gps,
    }
    return (
        facts,
        EncodedImage(encode_jpeg(analysis), analysis.width, analysis.height),
        EncodedImage(encode_jpeg(thumb, quality=82), thumb.width, thumb.height),
    )


def run(ctx: StepContext) -> dict[str, Any]:
    facts, analysis, thumb = _derive(ctx.read_source(), ctx)
    analysis_blob = ctx.put_artifact("analysis.jpg", analysis.data, "image/jpeg")
    thumb_blob = ctx.put_artifact("thumbnail.jpg", thumb.data, "image/jpeg")
    return {
        **facts,
        "derived": {
            "analysis": {
                **analysis_blob.model_dump(),
                "width": analysis.width,
                "height": analysis.height,
            },
            "thumbnail": {**thumb_blob.model_dump(), "width": thumb.width, "height": thumb.height},
        },
    }
