"""The analysis image → the model's input tensor, and the model's coordinates → the image's.

Three resize modes, as models are trained and evaluated: `stretch` (to the input size, aspect
ignored), `letterbox` (scaled to fit, centred, the rest padded grey 114 as YOLO trains) and
`center_crop` (short side to size / 0.875, then the centre, as torchvision evaluates ImageNet
classifiers). `Geometry` undoes whichever was used, so a box the model gives in its input's
pixels lands on the right pixels of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.vision.model_step.spec import InputSpec

LETTERBOX_FILL = 114  # the grey YOLO pads with
CROP_RATIO = 0.875  # torchvision's evaluation: resize to 256, crop 224


@dataclass(frozen=True)
class Geometry:
    """Model input pixel (x, y) → image pixel: ((x - pad_x) / scale_x, (y - pad_y) / scale_y)."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int  # the image's
    height: int

    def box_to_image(self, x1: float, y1: float, x2: float, y2: float) -> list[float]:
        """[x, y, w, h] in image pixels, clipped to the image."""
        left = min(max((x1 - self.pad_x) / self.scale_x, 0.0), self.width)
        top = min(max((y1 - self.pad_y) / self.scale_y, 0.0), self.height)
        right = min(max((x2 - self.pad_x) / self.scale_x, 0.0), self.width)
        bottom = min(max((y2 - self.pad_y) / self.scale_y, 0.0), self.height)
        return [left, top, max(right - left, 0.0), max(bottom - top, 0.0)]


FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resized(
    image: Image.Image, size: tuple[int, int], mode: str, interpolation: str = "bilinear"
) -> tuple[Image.Image, Geometry]:
    """`image` (RGB) at the model's `size` (width, height) by `mode`, and how to undo it."""
    width, height = image.size
    target_w, target_h = size
    resample = FILTERS[interpolation]
    if mode == "stretch":
        out = image.resize((target_w, target_h), resample)
        return out, Geometry(target_w / width, target_h / height, 0.0, 0.0, width, height)
    if mode == "letterbox":
        ratio = min(target_w / width, target_h / height)
        new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
        pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
        canvas = Image.new("RGB", (target_w, target_h), (LETTERBOX_FILL,) * 3)
        canvas.paste(image.resize((new_w, new_h), resample), (pad_x, pad_y))
        return canvas, Geometry(new_w / width, new_h / height, pad_x, pad_y, width, height)
    if mode == "center_crop":
        # the short side to size / 0.875 in whole pixels, then the centre `size` at whole-
        # pixel offsets of that (torchvision's Resize + CenterCrop, PaddleClas' ResizeImage +
        # CropImage), done as one resampling of the pixels that are kept: an image already at
        # that size is cropped, not interpolated
        ratio = (min(target_w, target_h) / CROP_RATIO) / min(width, height)
        scaled_w = max(target_w, round(width * ratio))
        scaled_h = max(target_h, round(height * ratio))
        sx, sy = scaled_w / width, scaled_h / height
        left, top = (scaled_w - target_w) // 2, (scaled_h - target_h) // 2
        box = (left / sx, top / sy, (left + target_w) / sx, (top + target_h) / sy)
        out = image.resize((target_w, target_h), resample, box=box)
        return out, Geometry(sx, sy, -left, -top, width, height)
    raise ValueError(f"unknown resize mode {mode!r}")


def to_tensor(
    image: Image.Image, spec: InputSpec, size: tuple[int, int], layout: str, dtype: np.dtype
) -> tuple[np.ndarray, Geometry]:
    """The batch of one: (pixel * SCALE - MEAN) / STD per channel, in the model's layout and
    dtype. A uint8 input takes the pixels as they are (the model normalises inside)."""
    fitted, geometry = resized(image.convert("RGB"), size, spec.resize, spec.interpolation)
    pixels = np.asarray(fitted)
    if spec.color == "BGR":
        pixels = pixels[..., ::-1]
    if np.dtype(dtype) == np.uint8:
        values = np.ascontiguousarray(pixels)
    else:
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        values = ((pixels.astype(np.float32) * np.float32(spec.scale)) - mean) / std
        values = values.astype(dtype, copy=False)
    if layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None]), geometry
