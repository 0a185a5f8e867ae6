"""What metadata a published derivative may carry: an explicit allow-list, nothing else.

Encoders copy nothing unless told to, so a derivative starts bare; this module adds back only
the allowed items. GPS and camera serial numbers are not in the vocabulary at all, so no
setting can publish them.
"""

from __future__ import annotations

from PIL import Image

from pipeline.imaging.exif import EXIF_IFD

_IFD0 = {"copyright": 0x8298, "artist": 0x013B}
_EXIF = {"datetime_original": 0x9003}


def allowed_metadata(source: Image.Image, keep: tuple[str, ...]) -> tuple[dict, list[str]]:
    """(keyword arguments for `Image.save`, names of the items kept) — allowed items only."""
    params: dict = {}
    kept: list[str] = []
    if "icc_profile" in keep and source.info.get("icc_profile"):
        params["icc_profile"] = source.info["icc_profile"]
        kept.append("icc_profile")
    try:
        original = source.getexif()
        sub = original.get_ifd(EXIF_IFD)
    except Exception:  # malformed EXIF: publish without it
        return params, kept
    exif = Image.Exif()
    for key, tag in _IFD0.items():
        if key in keep and isinstance(original.get(tag), str):
            exif[tag] = original[tag][:200]
            kept.append(key)
    for key, tag in _EXIF.items():
        if key in keep and isinstance(sub.get(tag), str):
            exif.get_ifd(EXIF_IFD)[tag] = sub[tag][:40]
            kept.append(key)
    if len(kept) > ("icc_profile" in kept):
        params["exif"] = exif.tobytes()
    return params, sorted(kept)
