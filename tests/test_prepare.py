"""prepare on real images in memory: what it accepts, what it refuses, and why."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.engine.context import MemoryStepContext
from pipeline.framework.step_api import ImageRejected
from pipeline.settings import Settings
from steps import prepare
from tests.harness import SAMPLES

SETTINGS = Settings.from_env({})


def run_prepare(data: bytes, settings: Settings = SETTINGS) -> tuple[dict, MemoryStepContext]:
    ctx = MemoryStepContext(settings, "img1", "upload.bin", data)
    return prepare.run(ctx), ctx


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def analysis_of(fields: dict, ctx: MemoryStepContext) -> Image.Image:
    return Image.open(io.BytesIO(ctx.artifacts[fields["derived"]["analysis"]["name"]]))


def test_real_photo_yields_hashes_exif_and_derivatives(fixture_bytes):
    data = fixture_bytes("gps.jpg")
    fields, ctx = run_prepare(data)
    assert fields["image"]["format"] == "JPEG" and fields["image"]["frames"] == 1
    assert (fields["image"]["width"], fields["image"]["height"]) == (600, 400)
    assert fields["gps"]["lat"] == pytest.approx(48.8584, abs=1e-4)
    assert fields["gps"]["lon"] == pytest.approx(2.2945, abs=1e-4)
    assert sorted(ctx.artifacts) == ["img1/analysis.jpg", "img1/thumbnail.jpg"]


def test_exif_orientation_is_applied_and_dimensions_are_upright(fixture_bytes):
    data = fixture_bytes("rotated-exif.jpg")
    assert Image.open(io.BytesIO(data)).size == (512, 384)  # stored sideways
    fields, ctx = run_prepare(data)
    assert fields["exif"]["orientation"] == 6
    assert (fields["image"]["width"], fields["image"]["height"]) == (384, 512)
    assert analysis_of(fields, ctx).size == (384, 512)


def test_analysis_image_is_bounded_in_side_and_pixels():
    big = Image.new("RGB", (4000, 3000), (120, 80, 40))
    fields, ctx = run_prepare(encode(big, "JPEG", quality=80))
    analysis = analysis_of(fields, ctx)
    assert max(analysis.size) <= 1920 and analysis.width * analysis.height <= 2_100_000
    assert (fields["image"]["width"], fields["image"]["height"]) == (4000, 3000)
    thumbnail = fields["derived"]["thumbnail"]
    assert max(thumbnail["width"], thumbnail["height"]) == 320


@pytest.mark.parametrize(
    ("image", "fmt", "params"),
    [
        (Image.new("CMYK", (64, 48), (0, 128, 255, 0)), "JPEG", {}),
        (Image.new("I;16", (64, 48), 40000), "PNG", {}),
        (Image.new("RGBA", (64, 48), (255, 0, 0, 0)), "PNG", {}),
        (Image.new("P", (64, 48), 3), "GIF", {}),
        (Image.new("L", (64, 48), 90), "BMP", {}),
        (Image.new("RGB", (64, 48), (1, 2, 3)), "TIFF", {}),
        (Image.new("RGB", (64, 48), (1, 2, 3)), "WEBP", {}),
    ],
    ids=["cmyk-jpeg", "16bit-png", "alpha-png", "palette-gif", "bmp", "tiff", "webp"],
)
def test_unusual_but_valid_images_are_accepted(image, fmt, params):
    fields, ctx = run_prepare(encode(image, fmt, **params))
    assert (fields["image"]["width"], fields["image"]["height"]) == (64, 48)
    assert analysis_of(fields, ctx).mode == "RGB"


def test_transparent_pixels_are_flattened_onto_white():
    fields, ctx = run_prepare(encode(Image.new("RGBA", (32, 32), (255, 0, 0, 0)), "PNG"))
    r, g, b = analysis_of(fields, ctx).getpixel((16, 16))
    assert min(r, g, b) > 245


def test_sixteen_bit_grey_is_scaled_not_clipped():
    fields, ctx = run_prepare(encode(Image.new("I;16", (32, 32), 32768), "PNG"))
    r, _, _ = analysis_of(fields, ctx).getpixel((16, 16))
    assert 120 <= r <= 135


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    fields, _ = run_prepare(data)
    assert fields["image"]["frames"] == 3


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims huge dimensions: a decompression bomb's calling card."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"hello, I am a text file named .jpg\n", "not an image: the file is plain text"),
        (b"%PDF-1.7\n...", "not an image: the file is a PDF document"),
        (b"PK\x03\x04rest-of-zip", "not an image: the file is a ZIP archive (or Office document)"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "unsupported format: SVG/XML"),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08", "not an image: unrecognised file signature"),
    ],
    ids=["empty", "text", "pdf", "zip", "svg", "binary-junk"],
)
def test_non_images_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageRejected) as refused:
        run_prepare(data)
    assert refused.value.reason.startswith(reason)


def test_pixel_bomb_is_refused_from_the_header_before_decoding():
    with pytest.raises(ImageRejected, match="exceed the limit"):
        run_prepare(_png_claiming(100_000, 100_000))


def test_dimensions_over_the_configured_limit_are_refused():
    small_limits = Settings.from_env({"DARKROOM_MAX_WIDTH": "100"})
    data = encode(Image.new("RGB", (200, 50)), "PNG")
    with pytest.raises(ImageRejected, match="dimensions 200x50 exceed the limit 100x30000"):
        run_prepare(data, small_limits)


def test_bytes_over_the_limit_are_refused_before_decoding(fixture_bytes):
    tiny = Settings.from_env({"DARKROOM_MAX_BYTES": "1000"})
    with pytest.raises(ImageRejected, match="over the limit of 1,000"):
        run_prepare(fixture_bytes("cat.jpg"), tiny)


def test_truncated_jpeg_is_refused_as_truncated(fixture_bytes):
    data = fixture_bytes("dog.jpg")
    with pytest.raises(ImageRejected, match="truncated or corrupt JPEG"):
        run_prepare(data[: len(data) // 2])


def test_wrong_extension_and_content_type_do_not_matter(fixture_bytes):
    ctx = MemoryStepContext(
        SETTINGS, "x", "photo.gif", fixture_bytes("cat.jpg"), content_type="text/plain"
    )
    assert prepare.run(ctx)["image"]["format"] == "JPEG"


def test_prepare_is_deterministic(fixture_bytes):
    data = fixture_bytes("portrait.jpg")
    (first, ctx1), (second, ctx2) = run_prepare(data), run_prepare(data)
    assert first == second and ctx1.artifacts == ctx2.artifacts


def test_perceptual_hash_is_imagehash_phash_bit_for_bit():
    """Our NumPy pHash replaces imagehash (and SciPy) at run time: same strings on real photos."""
    import imagehash

    from pipeline.imaging.perceptual_hash import hamming, phash

    photos = sorted(SAMPLES.glob("*.jpg"))[:12]
    assert len(photos) >= 10
    for path in photos:
        with Image.open(path) as image:
            assert phash(image) == str(imagehash.phash(image)), path.name
    with Image.open(photos[0]) as image:
        small = image.reduce(3)
        assert hamming(phash(image), phash(small)) <= 10  # a resized copy is a near-duplicate
