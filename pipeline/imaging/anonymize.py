"""Make regions unrecognisable: faces (and, on request, text such as licence plates).

Strength scales with the region, not the image: a blur radius or pixel block that is a fixed
fraction of the face's size leaves about the same few "blocks" of information across a face
whether it is 40 px or 4000 px wide — too little to recognise anyone at any scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFilter

Box = Sequence[float]

# Grow each box by 25% per side: detectors box the inner face, not hair and ears; and with 25%
# the ellipse drawn in the grown box still contains every corner of the detected box.
MARGIN = 0.25
BLOCKS_ACROSS = 5  # pixelate: 5 blocks across the grown region, ~3 across the face itself
BLUR_FRACTION = 0.12  # blur: Gaussian radius as a fraction of the region's larger side


def expanded(box: Box, margin: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """[x, y, w, h] grown by `margin` per side, clipped, as (left, top, right, bottom)."""
    x, y, w, h = box
    dx, dy = w * margin, h * margin
    left, top = max(0, int(x - dx)), max(0, int(y - dy))
    right = min(size[0], round(x + w + dx))
    bottom = min(size[1], round(y + h + dy))
    return left, top, right, bottom


def _pixelated(region: Image.Image) -> Image.Image:
    w, h = region.size
    block = max(2, max(w, h) // BLOCKS_ACROSS)
    small = region.resize((max(1, w // block), max(1, h // block)), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST)


def _blurred(region: Image.Image) -> Image.Image:
    radius = max(2.0, BLUR_FRACTION * max(region.size))
    # Blur twice: one Gaussian pass of a large radius still leaves recognisable low frequencies.
    return region.filter(ImageFilter.GaussianBlur(radius)).filter(ImageFilter.GaussianBlur(radius))


def anonymize(
    image: Image.Image, boxes: Iterable[Box], mode: str, margin: float = MARGIN
) -> Image.Image:
    """A copy of `image` with each box blurred or pixelated (`mode` "off" returns it as is)."""
    boxes = list(boxes)
    if mode == "off" or not boxes:
        return image
    if mode not in ("blur", "pixelate"):
        raise ValueError(f"anonymisation mode must be off, blur or pixelate, not {mode!r}")
    out = image.copy()
    for box in boxes:
        left, top, right, bottom = expanded(box, margin, image.size)
        if right - left < 2 or bottom - top < 2:
            continue
        region = out.crop((left, top, right, bottom))
        hidden = _pixelated(region) if mode == "pixelate" else _blurred(region)
        # An elliptical, feathered mask: no hard rectangle edges, the whole face covered.
        mask = Image.new("L", region.size, 0)
        ImageDraw.Draw(mask).ellipse((0, 0, region.width - 1, region.height - 1), fill=255)
        feather = max(1.0, 0.05 * max(region.size))
        mask = mask.filter(ImageFilter.GaussianBlur(feather)) if mode == "blur" else mask
        out.paste(hidden, (left, top), mask)
    return out
