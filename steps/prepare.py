"""prepare: turn an untrusted upload into a known-good image and the facts later steps rely on.

Order matters for safety: bytes limit before download (in the context), real format from magic
bytes, dimensions from the header before any pixel is decoded, then one decode — reduced in the
JPEG decoder itself when the image is far larger than the analysis size — EXIF orientation
applied, and the small analysis image and thumbnail written for later steps.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import imagehash
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.step_api import ImageRejected, StepContext, StepManifest
from steps.imaging.exif import read_exif
from steps.imaging.pixels import encode_jpeg, fit_size, resized, to_rgb
from steps.imaging.sniff import sniff

try:  # HEIC/HEIF (phones) and AVIF decoding, when the plugin is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - declared in requirements.txt
    pass

manifest = StepManifest(
    name="prepare",
    version="1.0.0",
    description="Validate the upload, read EXIF, hash it, write the analysis image and thumbnail.",
    reads=(),
    writes=("image", "exif", "gps", "derived"),
)

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's own bomb guard is a process-wide constant with a warning band below it; the limits in
# settings are checked from the header right after open (`_check_dimensions`), one rule, one
# clear reason.
Image.MAX_IMAGE_PIXELS = None
# Orientations 5-8 swap width and height.
_TRANSPOSED = {5, 6, 7, 8}
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _check_dimensions(width: int, height: int, ctx: StepContext) -> None:
    limits = ctx.settings.limits
    if width <= 0 or height <= 0:
        raise ImageRejected(f"invalid dimensions {width}x{height} in the image header")
    if width > limits.max_width or height > limits.max_height:
        raise ImageRejected(
            f"dimensions {width}x{height} exceed the limit {limits.max_width}x{limits.max_height}"
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"{width * height:,} pixels ({width}x{height}) exceed the limit of "
            f"{limits.max_pixels:,} pixels (decompression bomb guard)"
        )


def _open_header(data: bytes, expected_format: str) -> Image.Image:
    """Parse only the header; Pillow decodes pixels lazily on load()."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            f"corrupt image: the bytes start like {expected_format} but cannot be parsed"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"corrupt {expected_format} header: {exc}") from exc
    return image


def _decode(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Decode the first frame; JPEG's decoder can scale by 1/2..1/8 for free while decoding."""
    try:
        image.seek(0)
        if image.format == "JPEG":
            image.draft("RGB", target)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"truncated or corrupt {image.format} image data: {exc}") from exc
    return image


def run(ctx: StepContext) -> dict[str, Any]:
    data = ctx.read_source()
    sniffed = sniff(data[:64])
    image = _open_header(data, sniffed.format)
    raw_width, raw_height = image.size
    _check_dimensions(raw_width, raw_height, ctx)

    exif, gps = read_exif(image)
    orientation = exif.get("orientation", 1)
    width, height = (
        (raw_height, raw_width) if orientation in _TRANSPOSED else (raw_width, raw_height)
    )
    analysis_size = fit_size(
        width, height, ctx.settings.analysis_max_side, ctx.settings.analysis_max_pixels
    )
    draft_target = (
        (analysis_size[1], analysis_size[0]) if orientation in _TRANSPOSED else analysis_size
    )
    frames = getattr(image, "n_frames", 1)
    decoded = _decode(image, draft_target)
    upright = to_rgb(decoded)
    if orientation in _UPRIGHT:
        upright = upright.transpose(_UPRIGHT[orientation])
    analysis = resized(upright, analysis_size)
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
            "mode": decoded.mode,
            "frames": frames,
            "sha256": hashlib.sha256(data).hexdigest(),
            "phash": str(imagehash.phash(analysis)),
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
