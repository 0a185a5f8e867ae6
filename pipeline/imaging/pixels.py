"""Plain functions on Pillow images shared by steps: colour normalisation, sizing, encoding."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

_WHITE = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB whatever came in: 16-bit and float greys scaled, alpha flattened onto white.

    Models and JPEG encoders want 8-bit RGB; converting 16-bit with Pillow alone clips instead of
    scaling, and dropping alpha without flattening turns transparent areas black.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) if values.size else 0.0
        scale = 255.0 / (65535.0 if top > 255 else max(top, 1.0)) if mode != "F" else 255.0
        if mode == "F":
            lo, hi = float(values.min()), float(values.max())
            values, scale = values - lo, 255.0 / max(hi - lo, 1e-9)
        grey = np.clip(values * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def fit_size(
    width: int, height: int, max_side: int, max_pixels: int | None = None
) -> tuple[int, int]:
    """Largest size within max_side (and max_pixels) keeping the aspect ratio; never upscales."""
    scale = min(1.0, max_side / max(width, height))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    # reducing_gap lets Pillow shrink by an integer factor first: same look, much less work.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


# Below this reduction a cubic kernel is sharp and alias-free enough; above it, area averaging.
_AREA_FROM = 1.5


def resample(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`pixels` (H x W x C uint8) resized to `size` (width, height) with OpenCV.

    Used after the JPEG decoder's own DCT scaling, which leaves at most a small reduction: there
    OpenCV's SIMD cubic is ~10x faster than Pillow's Lanczos at the same PSNR against a
    full-size Lanczos reference (bench/bench_imaging.py measures both). Larger reductions (small
    derivatives of huge images) average areas, which is what anti-aliasing needs there."""
    height, width = pixels.shape[:2]
    if (width, height) == tuple(size):
        return pixels
    ratio = max(width / size[0], height / size[1])
    method = cv2.INTER_AREA if ratio >= _AREA_FROM else cv2.INTER_CUBIC
    return cv2.resize(pixels, tuple(size), interpolation=method)


# Modes Pillow resamples correctly as they are (alpha premultiplied internally), so a large image
# is shrunk before it is converted: the conversion then copies the small image, not the large one.
_SHRINK_AS_IS = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"})


def shrink_then_rgb(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`to_rgb(image)` at `size`, never holding more than one full-size copy where possible.

    Palette and bilevel images are expanded first (Pillow resamples them NEAREST otherwise);
    16-bit grey resamples natively without the integer pre-reduction Pillow lacks for it; other
    modes (LAB, HSV, big-endian 16-bit…) are converted at full size, then resized."""
    mode = image.mode
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in _SHRINK_AS_IS:
        return to_rgb(resized(image, size))
    if image.mode == "I;16":
        small = image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
        return to_rgb(small)
    return resized(to_rgb(image), size)


@dataclass(frozen=True)
class EncodedImage:
    """An encoded derivative and its size: what a step keeps once it is done with the pixels,
    so they are freed before its uploads (during which another delivery computes)."""

    data: bytes
    width: int
    height: int


def encode_jpeg(image: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=False, progressive=False)
    return out.getvalue()
