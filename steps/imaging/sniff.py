"""Decide what a file really is from its first bytes, never from its name or content type."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.step_api import ImageRejected


@dataclass(frozen=True)
class Sniffed:
    format: str  # the Pillow format name we expect to decode it as
    mime: str


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5"}

# Well-known non-image signatures, so the rejection reason can say what the file looks like.
_NOT_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "a Windows executable"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg media file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
)


def sniff(head: bytes) -> Sniffed:
    """Classify by magic bytes; raise ImageRejected with what the bytes look like instead."""
    if not head:
        raise ImageRejected("empty file (0 bytes)")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("JPEG", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("PNG", "image/png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("GIF", "image/gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("WEBP", "image/webp")
    if head[:2] == b"BM" and len(head) >= 26:
        return Sniffed("BMP", "image/bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("TIFF", "image/tiff")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return Sniffed("HEIF", "image/heic")
        if brand in _AVIF_BRANDS:
            return Sniffed("AVIF", "image/avif")
        if brand in _VIDEO_BRANDS:
            raise ImageRejected("not an image: the file is a video (MP4/QuickTime)")
    for magic, what in _NOT_IMAGES:
        if head.startswith(magic):
            raise ImageRejected(f"not an image: the file is {what}")
    stripped = head.lstrip()
    if stripped[:5].lower() in (b"<?xml", b"<svg ") or stripped[:4].lower() == b"<svg":
        raise ImageRejected("unsupported format: SVG/XML vector graphics are not decoded")
    if _looks_like_text(head):
        raise ImageRejected("not an image: the file is plain text")
    raise ImageRejected("not an image: unrecognised file signature " + head[:8].hex(" "))


def _looks_like_text(head: bytes) -> bool:
    sample = head[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # a real decoding error, not a character cut at the end
            return False
        text = sample[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\r\n\t\f" for c in text)
