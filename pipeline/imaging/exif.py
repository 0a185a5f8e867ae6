"""The EXIF facts worth keeping: camera, time, exposure, orientation and GPS position.

Only a fixed list of tags is read, each value sanitised and clipped, because EXIF is attacker-
controlled: a MakerNote can be megabytes, strings can hold NULs, rationals can divide by zero.
The document must stay small and the message must stay under the queue limit.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
ORIENTATION = 0x0112

_BASE_TAGS = {0x010F: "make", 0x0110: "model", 0x0131: "software", 0x0132: "datetime"}
_EXIF_TAGS = {
    0x9003: "datetime_original",
    0x9011: "offset_time_original",
    0x829A: "exposure_time",
    0x829D: "f_number",
    0x8827: "iso",
    0x920A: "focal_length",
    0xA405: "focal_length_35mm",
    0xA433: "lens_make",
    0xA434: "lens_model",
}
_MAX_TEXT = 120


def _clean(value: Any) -> str | float | int | None:
    """Turn an EXIF value into a small JSON scalar, or None when it is junk."""
    if isinstance(value, tuple | list):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
        return text[:_MAX_TEXT] or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return round(number, 6) if math.isfinite(number) else None


def _dms_to_degrees(dms: Any, ref: Any) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60.0 + s / 3600.0
    if not math.isfinite(degrees):
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    if str(ref).strip().upper()[:1] in ("S", "W"):
        degrees = -degrees
    return round(degrees, 7)


def read_gps(exif: Image.Exif) -> dict[str, float] | None:
    try:
        gps = exif.get_ifd(GPS_IFD)
    except Exception:  # a GPS IFD pointer out of range, looping, truncated…: no position
        return None
    if not gps:
        return None
    lat = _dms_to_degrees(gps.get(2), gps.get(1, "N"))
    lon = _dms_to_degrees(gps.get(4), gps.get(3, "E"))
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    position: dict[str, float] = {"lat": lat, "lon": lon}
    alt = _clean(gps.get(6))
    if isinstance(alt, int | float):
        position["alt"] = -float(alt) if gps.get(5) in (1, b"\x01") else float(alt)
    return position


def read_exif(image: Image.Image) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Return (exif facts, gps position or None). Never raises on malformed metadata."""
    try:
        exif = image.getexif()
    except Exception:  # malformed EXIF is common; the image itself may be fine
        return {}, None
    facts: dict[str, Any] = {}
    for tag, key in _BASE_TAGS.items():
        if (value := _clean(exif.get(tag))) is not None:
            facts[key] = value
    orientation = exif.get(ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        facts["orientation"] = orientation
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:
        sub = {}
    for tag, key in _EXIF_TAGS.items():
        if (value := _clean(sub.get(tag))) is not None:
            facts[key] = value
    return facts, read_gps(exif)
