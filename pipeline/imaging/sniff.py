"""Decide what a file really is from its first bytes, never from its name or content type."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pipeline.framework.step_api import ImageRejected

# How many leading bytes `sniff` wants: enough for an ISO-BMFF `ftyp` box with its compatible
# brands, a BMP's info header and a fair sample of text.
HEAD_BYTES = 512


@dataclass(frozen=True)
class Sniffed:
    format: str  # the Pillow format name we expect to decode it as
    mime: str


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_VIDEO_BRANDS = {
    b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"mmp4", b"avc1", b"dash",
    b"qt  ", b"M4V ", b"M4VP", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"f4v ", b"MSNV",
}  # fmt: skip
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P "}
# BITMAPCOREHEADER, OS/2 2.x, BITMAPINFOHEADER and its V2..V5 successors.
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

# Well-known non-image signatures, so the rejection reason can say what the file looks like.
_NOT_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"(\xb5/\xfd", "a Zstandard archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Microsoft Office document"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "a Windows executable"),
    (b"\xca\xfe\xba\xbe", "a Java class or macOS executable"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
    (b"OggS", "an Ogg media file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (b"FLV", "a Flash video"),
)
# Images Pillow could perhaps read but this pipeline does not accept: say so by name.
_UNSUPPORTED_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000 codestream"),
    (b"\xff\n", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"FUJIFILMCCD-RAW", "Fujifilm RAF camera raw"),
    (b"gimp xcf", "GIMP XCF"),
)


def sniff(head: bytes) -> Sniffed:
    """Classify by magic bytes; raise ImageRejected with what the bytes look like instead.

    `head` should be the first HEAD_BYTES bytes of the file (fewer is fine for short files)."""
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
    if head[:4] == b"RIFF":
        kind = head[8:12].decode("latin-1").strip()
        raise ImageRejected(f"not an image: the file is a RIFF {kind or '(unknown)'} container")
    if _is_bmp(head):
        return Sniffed("BMP", "image/bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return Sniffed("TIFF", "image/tiff")
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    for magic, what in _NOT_IMAGES:
        if head.startswith(magic):
            raise ImageRejected(f"not an image: the file is {what}")
    for magic, what in _UNSUPPORTED_IMAGES:
        if head.startswith(magic):
            raise ImageRejected(f"unsupported image format: {what}")
    if (markup := _markup(head)) is not None:
        raise ImageRejected(markup)
    if _looks_like_text(head):
        raise ImageRejected("not an image: the file is plain text")
    raise ImageRejected("not an image: unrecognised file signature " + head[:8].hex(" "))


def _is_bmp(head: bytes) -> bool:
    """A "BM" signature and a DIB header of a size BMP defines: text starting "BM" is no bitmap."""
    if head[:2] != b"BM" or len(head) < 26:
        return False
    (header_size,) = struct.unpack_from("<I", head, 14)
    return header_size in _BMP_HEADER_SIZES


def _iso_media(head: bytes) -> Sniffed:
    """ISO base media (`ftyp`): HEIF/AVIF stills, or video, audio, camera raw…"""
    (box_size,) = struct.unpack(">I", head[:4])
    major = head[8:12]
    end = min(box_size, len(head)) if box_size >= 16 else 16
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    brands = {major} | compatible
    if major in _AVIF_BRANDS or (major in (b"mif1", b"msf1") and brands & _AVIF_BRANDS):
        return Sniffed("AVIF", "image/avif")
    if major in _HEIF_BRANDS:
        return Sniffed("HEIF", "image/heic")
    if major == b"crx ":
        raise ImageRejected("unsupported image format: Canon CR3 camera raw")
    if major in _AUDIO_BRANDS:
        raise ImageRejected("not an image: the file is an MPEG-4 audio file")
    if major in _VIDEO_BRANDS or brands & _VIDEO_BRANDS:
        raise ImageRejected("not an image: the file is a video (MP4/QuickTime)")
    name = major.decode("latin-1")
    raise ImageRejected(f"not an image: ISO media file of unknown brand {name!r}")


def _markup(head: bytes) -> str | None:
    """A reason for SVG, HTML, XML and JSON, which are text but deserve their own name."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<meta", b"<script")):
        return "not an image: the file is an HTML page"
    if text.startswith((b"<svg", b"<!doctype svg")) or (
        text.startswith((b"<?xml", b"<!--")) and b"<svg" in text
    ):
        return "unsupported format: SVG/XML vector graphics are not decoded"
    if text.startswith((b"<?xml", b"<!--")):
        return "not an image: the file is an XML document"
    if text[:1] in (b"{", b"[") and _looks_like_text(head):
        return "not an image: the file is JSON (or other structured text)"
    return None


def _looks_like_text(head: bytes) -> bool:
    sample = head[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # a real decoding error, not a character cut at the end
            return False
        text = sample[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\r\n\t\f" for c in text)
