"""The limits an image is held to before it is decoded (prepare, the sync path, face search)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.setting_reader import SettingReader


@dataclass(frozen=True)
class ImageLimits:
    """Refusal thresholds for prepare: bytes before download, dimensions before decode."""

    max_bytes: int = 50 * 1024 * 1024
    max_width: int = 30_000
    max_height: int = 30_000
    max_pixels: int = 120_000_000
    # Formats without reduced-size decoding (all but JPEG) are decoded in full: a 120 MP RGBA
    # PNG needs >1 GB and lossless WebP ~2 GB, so they get a lower ceiling.
    max_full_decode_pixels: int = 50_000_000

    @classmethod
    def read(cls, r: SettingReader) -> ImageLimits:
        return cls(
            max_bytes=r.number("DARKROOM_MAX_BYTES", cls.max_bytes, minimum=1),
            max_width=r.number("DARKROOM_MAX_WIDTH", cls.max_width, minimum=1),
            max_height=r.number("DARKROOM_MAX_HEIGHT", cls.max_height, minimum=1),
            max_pixels=r.number("DARKROOM_MAX_PIXELS", cls.max_pixels, minimum=1),
            max_full_decode_pixels=r.number(
                "DARKROOM_MAX_DECODE_PIXELS", cls.max_full_decode_pixels, minimum=1
            ),
        )
