"""Open untrusted image bytes safely and decode them upright at the size a step needs.

Shared by prepare (which validates) and transform (which re-reads the original to publish it):
header first, limits checked before a pixel is decoded, JPEG decoded at reduced scale when the
target is much smaller, EXIF orientation applied, always 8-bit RGB out.

Every byte here is attacker-controlled, and Pillow's plugins answer damaged files with almost
any exception type (OSError and SyntaxError mostly, but also struct.error, IndexError, TypeError,
RuntimeError from the AVIF/HEIF decoders, ZeroDivisionError…). Whatever Pillow raises while it
parses or decodes these bytes is a property of the bytes — retrying cannot change it — so each
Pillow call on them is wrapped and its failure becomes `ImageRejected` with what went wrong and
where (header, later frame, pixel data). Only Pillow calls are wrapped, never storage or our own
code, so a real transient error is still retried.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.framework.step_api import ImageRejected
from pipeline.imaging.pixels import resample, shrink_then_rgb
from pipeline.imaging.settings import ImageLimits

try:  # HEIC/HEIF (phones) decoding; AVIF is Pillow's own plugin
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
# More frames than any real animation or multi-page scan: refused rather than counted for minutes.
MAX_FRAMES = 10_000
_MAX_DETAIL = 200  # characters of Pillow's own message kept in a reason

T = TypeVar("T")


@dataclass
class OpenedImage:
    image: Image.Image  # header parsed, pixels not yet decoded
    orientation: int
    frames: int
    data: bytes = b""  # the file, for decoders that read it directly (scaled JPEG)

    @property
    def upright_size(self) -> tuple[int, int]:
        w, h = self.image.size
        return (h, w) if self.orientation in _TRANSPOSED else (w, h)


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _untrusted(what: str, call: Callable[[], T]) -> T:
    """Run one Pillow call on untrusted bytes; any failure is the file's fault: refuse it.

    `what` completes "…: <Pillow's message>" in the reason, e.g. "corrupt PNG header"."""
    try:
        return call()
    except ImageRejected:
        raise
    except MemoryError as exc:
        # The pixel limit was checked before decoding, so only a crafted file (a tile or
        # palette far larger than the image it claims to be) gets here.
        raise ImageRejected(f"{what}: decoding needs more memory than allowed") from exc
    except Exception as exc:
        raise ImageRejected(f"{what}: {_detail(exc)}") from exc


REDUCED_DECODE_FORMATS = {"JPEG", "MPO"}  # the decoder itself can scale down by 1/2..1/8


def check_dimensions(width: int, height: int, limits: ImageLimits, fmt: str = "JPEG") -> None:
    """Refuse from the header alone. The pixel limit comes first: it is what protects memory,
    and a decompression bomb usually breaks the side limit as well."""
    if width <= 0 or height <= 0:
        raise ImageRejected(f"invalid dimensions {width}x{height} in the image header")
    sides_over = width > limits.max_width or height > limits.max_height
    if width * height > limits.max_pixels:
        also = (
            f"; the sides also exceed {limits.max_width}x{limits.max_height}" if sides_over else ""
        )
        raise ImageRejected(
            f"{width * height:,} pixels ({width}x{height}) exceed the limit of "
            f"{limits.max_pixels:,} pixels (decompression bomb guard, checked from the header "
            f"before decoding){also}"
        )
    if sides_over:
        raise ImageRejected(
            f"dimensions {width}x{height} exceed the limit {limits.max_width}x{limits.max_height}"
        )
    if fmt not in REDUCED_DECODE_FORMATS and width * height > limits.max_full_decode_pixels:
        raise ImageRejected(
            f"{width * height:,} pixels ({width}x{height}) exceed the limit of "
            f"{limits.max_full_decode_pixels:,} pixels for {fmt}, which must be decoded at full "
            "size (JPEG is allowed more: it decodes at reduced size)"
        )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: treat as upright rather than refuse the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _count_frames(image: Image.Image, fmt: str) -> int:
    """Frames in the file, counted without decoding any of them, at most MAX_FRAMES.

    Pillow's TIFF count is quadratic in the number of pages (30,000 tiny pages: 8 s), so TIFF is
    walked page by page with a cap; GIF's own count is linear and cheap, the others read it from
    a header."""
    if image.format == "TIFF":
        frames = 1
        while True:
            try:
                image.seek(frames)
            except EOFError:
                break
            frames += 1
            if frames > MAX_FRAMES:
                raise ImageRejected(f"{fmt} has more than {MAX_FRAMES:,} pages")
        image.seek(0)
        return frames
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > MAX_FRAMES:
        raise ImageRejected(f"{fmt} has {frames:,} frames, more than {MAX_FRAMES:,}")
    image.seek(0)
    return frames


def check_png_chunks(data: bytes) -> None:
    """Walk a PNG's chunks and verify each CRC: Pillow checks the header chunks' CRCs but not
    the image data's, and its zlib reader stops before the stream's own checksum, so a PNG with
    damaged IDAT bytes would otherwise decode to silently wrong pixels. Also names the chunk a
    truncated file ends in. Data after IEND is ignored, as every viewer does."""
    pos, size = 8, len(data)
    while pos < size:
        if pos + 8 > size:
            raise ImageRejected(f"truncated PNG: the file ends inside a chunk header at byte {pos}")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if not kind.isalpha():
            raise ImageRejected(f"corrupt PNG: invalid chunk type {kind!r} at byte {pos}")
        end = pos + 8 + length
        if end + 4 > size:
            raise ImageRejected(
                f"truncated PNG: the file ends inside the {name} chunk at byte {pos} "
                f"({length:,} bytes announced, {max(0, size - pos - 8):,} present)"
            )
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(memoryview(data)[pos + 4 : end]) != crc:
            raise ImageRejected(f"corrupt PNG: CRC mismatch in the {name} chunk at byte {pos}")
        if kind == b"IEND":
            return
        pos = end + 4


def open_image(data: bytes, expected_format: str, limits: ImageLimits) -> OpenedImage:
    """Parse the header only and refuse what is over the limits, before decoding anything.

    Only the plugin of the sniffed format may parse the bytes: a polyglot that starts like a PNG
    is read as a PNG or refused, never handed to whichever other plugin accepts it."""
    if expected_format == "PNG":
        check_png_chunks(data)
    try:
        image = Image.open(io.BytesIO(data), formats=[expected_format])
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            f"corrupt image: the bytes start like {expected_format} but cannot be parsed"
        ) from exc
    except MemoryError as exc:
        raise ImageRejected(
            f"corrupt {expected_format} header: it asks for more memory than allowed"
        ) from exc
    except Exception as exc:
        detail = _detail(exc)
        if "MAX_TEXT_CHUNK" in detail:  # zTXt/iTXt/iCCP inflating past Pillow's 1 MB cap
            raise ImageRejected(
                f"corrupt {expected_format} header: a compressed metadata chunk inflates to more "
                "than 1 MB (zip bomb)"
            ) from exc
        if "truncated" in detail.lower() or isinstance(exc, EOFError):
            raise ImageRejected(
                f"truncated {expected_format}: the file ends inside its header ({detail})"
            ) from exc
        raise ImageRejected(f"corrupt {expected_format} header: {detail}") from exc
    check_dimensions(*image.size, limits, image.format or expected_format)
    frames = _untrusted(
        f"truncated or corrupt {expected_format}: a later frame cannot be read",
        lambda: _count_frames(image, expected_format),
    )
    return OpenedImage(image, _orientation(image), frames, data)


def decode_upright(opened: OpenedImage, size: tuple[int, int]) -> Image.Image:
    """First frame, 8-bit RGB, EXIF orientation applied, resized to `size` (upright pixels).

    Memory: the full-size decode is the only full-size copy where Pillow allows it — JPEG is
    decoded already reduced (DCT scaling), other formats are shrunk in their own mode before
    the conversion to RGB and the rotation, which then work on the small image."""
    image = opened.image
    fmt = image.format or "image"
    stored_target = (size[1], size[0]) if opened.orientation in _TRANSPOSED else size
    if (pixels := _scaled_jpeg(opened, stored_target)) is not None:
        return Image.fromarray(_upright_array(pixels, opened.orientation), "RGB")
    upright = _decode_with_pillow(image, fmt, stored_target)
    if opened.orientation in _UPRIGHT:
        upright = upright.transpose(_UPRIGHT[opened.orientation])
    return upright


# YCbCr and grey JPEGs (nearly every photo) go to libjpeg-turbo directly; CMYK/YCCK and
# anything unusual keep Pillow's path, which knows their colour handling.
_SCALED_JPEG_MODES = frozenset({"RGB", "L"})

# The same turns as _UPRIGHT, on arrays: OpenCV's are several times faster than Pillow's
# transpose on a 3 MP image (memory-bound copies are slow on these machines).
_UPRIGHT_ARRAY: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _upright_array(pixels: np.ndarray, orientation: int) -> np.ndarray:
    turn = _UPRIGHT_ARRAY.get(orientation)
    return turn(pixels) if turn else pixels


def _scaled_jpeg(opened: OpenedImage, stored_target: tuple[int, int]) -> np.ndarray | None:
    """Decode at the smallest of libjpeg-turbo's M/8 scales that still covers `stored_target`,
    then resample the rest of the way (`pixels.resample`). None: Pillow's path decides.

    Why not Pillow's `draft`: it offers only 1/2, 1/4 and 1/8, so a 2048 px derivative of a
    4000 px photo (just over 1/2) meant a full 12 MP decode and a 12 MP Lanczos pass — 80 % of
    transform's time. At 5/8 the decoder's scaled IDCT does most of the reduction, band-limited,
    for the cost of a plain decode, and leaves a small reduction to a cheap cubic.

    `strict` turns libjpeg's warnings into errors; a file that raises one (a truncated scan, or
    only extraneous bytes before a marker, which many cameras write) goes to Pillow's path, so
    what is accepted or refused, and why, stays exactly what Pillow decides."""
    image = opened.image
    if not (
        opened.data and image.format in REDUCED_DECODE_FORMATS and image.mode in _SCALED_JPEG_MODES
    ):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(
            opened.data,
            colorspace="RGB",
            min_width=stored_target[0],
            min_height=stored_target[1],
            strict=True,
        )
    except (ValueError, MemoryError):
        return None
    return resample(pixels, stored_target)


def _decode_with_pillow(
    image: Image.Image, fmt: str, stored_target: tuple[int, int]
) -> Image.Image:
    def load() -> None:
        image.seek(0)
        if isinstance(image, ImageFile.ImageFile) and image.format in ("JPEG", "MPO"):
            image.draft("RGB", stored_target)  # DCT scaling: 1/2..1/8 for free while decoding
        image.load()

    _untrusted(f"truncated or corrupt {fmt} image data", load)
    if image.width <= 0 or image.height <= 0:
        raise ImageRejected(f"the {fmt} image decoded to no pixels")
    return _untrusted(
        f"unsupported {fmt} pixel format {image.mode}",
        lambda: shrink_then_rgb(image, stored_target),
    )
