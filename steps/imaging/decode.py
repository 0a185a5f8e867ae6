"""Open untrusted image bytes safely and decode them upright at the size a step needs.

Shared by prepare (which validates) and transform (which re-reads the original to publish it):
header first, limits checked before a pixel is decoded, JPEG decoded at reduced scale when the
target is much smaller, EXIF orientation applied, always 8-bit RGB out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.settings import ImageLimits
from pipeline.step_api import ImageRejected
from steps.imaging.pixels import resized, to_rgb

try:  # HEIC/HEIF (phones) and AVIF decoding
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - declared in requirements.txt
    pass

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's own bomb guard is a process-wide constant with a warning band below it; ours is
# checked from the header right after open (`check_dimensions`): one rule, one clear reason.
Image.MAX_IMAGE_PIXELS = None

ORIENTATION_TAG = 0x0112
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


@dataclass
class OpenedImage:
    image: Image.Image  # header parsed, pixels not yet decoded
    orientation: int
    frames: int

    @property
    def upright_size(self) -> tuple[int, int]:
        w, h = self.image.size
        return (h, w) if self.orientation in _TRANSPOSED else (w, h)


def check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
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


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: treat as upright rather than refuse the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def open_image(data: bytes, expected_format: str, limits: ImageLimits) -> OpenedImage:
    """Parse the header only and refuse what is over the limits, before decoding anything."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            f"corrupt image: the bytes start like {expected_format} but cannot be parsed"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"corrupt {expected_format} header: {exc}") from exc
    check_dimensions(*image.size, limits)
    return OpenedImage(image, _orientation(image), getattr(image, "n_frames", 1))


def decode_upright(opened: OpenedImage, size: tuple[int, int]) -> Image.Image:
    """First frame, 8-bit RGB, EXIF orientation applied, resized to `size` (upright pixels)."""
    image = opened.image
    stored_target = (size[1], size[0]) if opened.orientation in _TRANSPOSED else size
    try:
        image.seek(0)
        if image.format == "JPEG":
            image.draft("RGB", stored_target)  # DCT scaling: 1/2..1/8 for free while decoding
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"truncated or corrupt {image.format} image data: {exc}") from exc
    upright = to_rgb(image)
    if opened.orientation in _UPRIGHT:
        upright = upright.transpose(_UPRIGHT[opened.orientation])
    return resized(upright, size)
