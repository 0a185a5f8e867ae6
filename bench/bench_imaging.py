"""prepare and transform against libvips `thumbnail`, with where their time goes.

Run: `.venv/bin/python -m bench.bench_imaging [--images 12] [--rounds 5] [--sizes 2,12]`.

Photos: the repository's samples enlarged to 4000x3000 (12 MP) and 1633x1225 (2 MP), JPEG q90
(`bench.bench_chain.make_photos`), plus one 12 MP photo saved again with EXIF orientation 6
(upright 3000x4000). All in one process, interleaved: every round times every candidate on every
photo, in a rotating order; figures are medians over photos x rounds, after one warm-up each.

- **prepare**: `steps.prepare.run` through `MemoryStepContext` (analysis image + thumbnail,
  EXIF, SHA-256, pHash);
- **transform**: `steps.transform.run` with prepare's fields and the faces analyzer's real
  output (the analyze step run with `DARKROOM_ANALYZERS=faces` on the analysis image), default
  policy (faces blurred, JPEG q85 optimised progressive, 2048 px);
- **vips_prepare**: `pyvips.Image.thumbnail_buffer` to prepare's analysis size (1920 px / 2.1 MP),
  JPEG Q88, then its 320 px thumbnail, JPEG Q82 — the same two outputs;
- **vips_transform**: `thumbnail_buffer` to transform's size (2048 px), JPEG Q85 with optimised
  Huffman tables and interlace, no metadata but ICC — the derivative without the blur;
- `*_1t`: the same with libvips limited to one thread (`concurrency_set(1)`); the steps' Pillow
  work is single-threaded, so this is the like-for-like figure, the default the yardstick.

libvips' operation cache is off (`cache_set_max(0)`), so every call does the work. pyvips is a
bench-only dependency (requirements-dev.txt, binary wheel): nothing at run time imports it.

The breakdown re-does each step's work phase by phase with the project's helpers in
pipeline/imaging (open_image, read_exif, decode_upright's draft + load / shrink_then_rgb /
transpose, encode_jpeg, phash, anonymize, allowed_metadata), so the phases add up to about the
step's own time; `what_if` lines are alternatives measured on the same photos, not what runs.
Peak RSS per candidate: the kernel's high-water mark (VmHWM) reset before one run and read
after it (`/proc/self/clear_refs`), absolute and above the RSS at the start of that run (memory
freed by an earlier, larger run is reused without a new peak: smaller sizes go first).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyvips
import simplejpeg
from PIL import Image, ImageFile

from bench import bench_chain
from bench.bench_chain import make_photos
from pipeline.engine.context import MemoryStepContext
from pipeline.imaging.anonymize import anonymize
from pipeline.imaging.decode import (
    _SCALED_JPEG_MODES,
    _TRANSPOSED,
    _UPRIGHT,
    REDUCED_DECODE_FORMATS,
    _upright_array,
    decode_upright,
    open_image,
)
from pipeline.imaging.exif import read_exif
from pipeline.imaging.metadata import allowed_metadata
from pipeline.imaging.perceptual_hash import phash
from pipeline.imaging.pixels import encode_jpeg, fit_size, resample, shrink_then_rgb
from pipeline.imaging.sniff import HEAD_BYTES, sniff
from pipeline.settings import Settings
from steps import analyze, prepare, transform

ORIENTATION = 0x0112


@dataclass
class Photo:
    name: str
    data: bytes
    size: tuple[int, int]  # upright
    analysis_size: tuple[int, int]
    publish_size: tuple[int, int]
    fields: dict[str, Any] = field(default_factory=dict)  # prepare's + analysis (faces)
    faces: int = 0


# ---------------------------------------------------------------------------------------------
# the candidates


def run_prepare(settings: Settings, photo: Photo) -> None:
    prepare.run(MemoryStepContext(settings, "bench", photo.name, photo.data))


def run_transform(settings: Settings, photo: Photo) -> None:
    transform.run(MemoryStepContext(settings, "bench", photo.name, photo.data, photo.fields))


def vips_prepare(settings: Settings, photo: Photo) -> None:
    bench_chain.vips_prepare(settings, photo.data, photo.analysis_size)


def vips_transform(settings: Settings, photo: Photo) -> None:
    bench_chain.vips_transform(settings, photo.data, photo.publish_size)


def one_thread(fn: Callable[[Settings, Photo], None]) -> Callable[[Settings, Photo], None]:
    def run(settings: Settings, photo: Photo) -> None:
        default = pyvips.concurrency_get()
        pyvips.concurrency_set(1)
        try:
            fn(settings, photo)
        finally:
            pyvips.concurrency_set(default)

    return run


CANDIDATES: dict[str, Callable[[Settings, Photo], None]] = {
    "prepare": run_prepare,
    "transform": run_transform,
    "vips_prepare": vips_prepare,
    "vips_transform": vips_transform,
    "vips_prepare_1t": one_thread(vips_prepare),
    "vips_transform_1t": one_thread(vips_transform),
}


# ---------------------------------------------------------------------------------------------
# the breakdown: each step's work again, phase by phase, with the project's helpers


class Clock:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.decoded = ""  # what the decoder produced, before resampling
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = self.ms.get(name, 0.0) + (now - self._last) * 1000
        self._last = now


def _decode(opened, size: tuple[int, int], clock: Clock) -> Image.Image:
    """`decode_upright` cut into its phases (the same calls, in the same order)."""
    image = opened.image
    stored_target = (size[1], size[0]) if opened.orientation in _TRANSPOSED else size
    clock.decoded = f"{image.width}x{image.height} (Pillow)"
    if _scaled_jpeg_applies(opened):
        pixels = simplejpeg.decode_jpeg(
            opened.data, "RGB", min_width=stored_target[0], min_height=stored_target[1]
        )
        clock.decoded = f"{pixels.shape[1]}x{pixels.shape[0]} (libjpeg-turbo DCT scaling)"
        clock.lap("decode")
        pixels = resample(pixels, stored_target)
        clock.lap("resize")
        upright = Image.fromarray(_upright_array(pixels, opened.orientation), "RGB")
        clock.lap("rotate")
        return upright
    image.seek(0)
    if isinstance(image, ImageFile.ImageFile) and image.format in ("JPEG", "MPO"):
        image.draft("RGB", stored_target)
    image.load()
    clock.decoded = f"{image.width}x{image.height} (Pillow)"
    clock.lap("decode")
    upright = shrink_then_rgb(image, stored_target)
    clock.lap("resize")
    if opened.orientation in _UPRIGHT:
        upright = upright.transpose(_UPRIGHT[opened.orientation])
    clock.lap("rotate")
    return upright


def _scaled_jpeg_applies(opened) -> bool:
    """The condition decode_upright's scaled path applies (pipeline.imaging.decode._scaled_jpeg)."""
    return opened.image.format in REDUCED_DECODE_FORMATS and opened.image.mode in _SCALED_JPEG_MODES


def prepare_phases(settings: Settings, photo: Photo) -> tuple[dict[str, float], str]:
    clock = Clock()
    data = photo.data
    sniffed = sniff(data[:HEAD_BYTES])
    opened = open_image(data, sniffed.format, settings.limits)
    clock.lap("open (sniff, header, orientation)")
    read_exif(opened.image)
    clock.lap("exif")
    analysis = _decode(opened, photo.analysis_size, clock)
    encode_jpeg(analysis)
    clock.lap("encode analysis (q88)")
    thumb = analysis.copy()
    thumb.thumbnail((settings.thumbnail_side, settings.thumbnail_side))
    clock.lap("thumbnail resize")
    encode_jpeg(thumb, quality=82)
    clock.lap("encode thumbnail (q82)")
    hashlib.sha256(data).hexdigest()
    clock.lap("sha256")
    phash(thumb)
    clock.lap("phash (of the thumbnail)")
    return clock.ms, clock.decoded


def transform_phases(settings: Settings, photo: Photo) -> tuple[dict[str, float], str]:
    policy = settings.publish
    clock = Clock()
    opened = open_image(photo.data, photo.fields["image"]["format"], settings.limits)
    clock.lap("open (header, orientation)")
    image = _decode(opened, photo.publish_size, clock)
    scale = photo.publish_size[0] / photo.size[0]
    boxes = [[v * scale for v in f["box"]] for f in photo.fields["analysis"]["faces"]]
    published = anonymize(image, boxes, policy.faces)
    clock.lap("anonymize (blur faces)")
    extra, _ = allowed_metadata(opened.image, policy.keep_metadata)
    clock.lap("metadata allow-list")
    out = io.BytesIO()
    published.save(out, "JPEG", quality=policy.quality, optimize=True, progressive=True, **extra)
    clock.lap("encode (q85, optimize, progressive)")
    return clock.ms, clock.decoded


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(10 * math.log10(255**2 / error), 2) if error else float("inf")


def _vips_pixels(image: pyvips.Image) -> np.ndarray:
    return np.ndarray(
        buffer=image.write_to_memory(), dtype=np.uint8, shape=[image.height, image.width, 3]
    )


def quality(settings: Settings, photo: Photo) -> dict[str, float | str]:
    """PSNR (dB) of the 2048 px derivative's pixels (before blur and encoding) against a
    reference: Pillow's Lanczos from the full-size decode, which is what transform did before
    DCT scaling. The same for libvips' `thumbnail`, and for what users receive (the derivative
    after the q85 JPEG encode), so "faster" can be weighed against "as good": a resampling
    difference far below the encoder's own loss is invisible."""
    opened = open_image(photo.data, "JPEG", settings.limits)
    stored = opened.image.size
    full = Image.open(io.BytesIO(photo.data))
    full.load()
    target = photo.publish_size
    if opened.orientation in _TRANSPOSED:
        target = (target[1], target[0])
    reference = np.asarray(full.resize(target, Image.Resampling.LANCZOS))
    ours = decode_upright(opened, photo.publish_size)
    if opened.orientation in _UPRIGHT:  # compare as stored
        ours = ours.transpose(_INVERSE[opened.orientation])
    encoded = io.BytesIO()
    ours.save(encoded, "JPEG", quality=settings.publish.quality, optimize=True)
    vips = pyvips.Image.thumbnail_buffer(photo.data, target[0], height=target[1], no_rotate=True)
    return {
        "decode_upright (DCT scaling + cubic)": _psnr(np.asarray(ours), reference),
        "libvips thumbnail": _psnr(_vips_pixels(vips), reference),
        "decode_upright, then the q85 encode": _psnr(
            np.asarray(Image.open(encoded).convert("RGB")), reference
        ),
        "stored size": f"{stored[0]}x{stored[1]}",
    }


_INVERSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def what_if(settings: Settings, photo: Photo) -> dict[str, float]:
    """Alternatives, on the same photo: not what the steps do."""
    ms: dict[str, float] = {}
    quality_ = settings.publish.quality
    opened = open_image(photo.data, "JPEG", settings.limits)
    pw, ph = photo.publish_size
    target = (ph, pw) if opened.orientation in _TRANSPOSED else (pw, ph)
    started = time.perf_counter()
    opened.image.draft("RGB", target)
    opened.image.load()
    shrink_then_rgb(opened.image, target)
    ms["before: Pillow draft + Lanczos to publish size"] = (time.perf_counter() - started) * 1000
    published = decode_upright(open_image(photo.data, "JPEG", settings.limits), photo.publish_size)
    encodes = {
        "encode q85 baseline (no optimize, no progressive)": {},
        "encode q85 optimize, not progressive": {"optimize": True},
        "encode q85 progressive, not optimize": {"progressive": True},
    }
    for name, options in encodes.items():
        started = time.perf_counter()
        published.save(io.BytesIO(), "JPEG", quality=quality_, **options)
        ms[name] = (time.perf_counter() - started) * 1000
    analysis = decode_upright(open_image(photo.data, "JPEG", settings.limits), photo.analysis_size)
    started = time.perf_counter()
    phash(analysis)
    ms["before: phash of the analysis image"] = (time.perf_counter() - started) * 1000
    return ms


# ---------------------------------------------------------------------------------------------
# memory


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{key}:\s+(\d+)", status.read(), re.M)
    return int(match.group(1)) if match else 0


def peak_rss(fn: Callable[[], object]) -> dict[str, float] | None:
    """Peak RSS during one call: the high-water mark reset first (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return None
    start = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    return {"peak_mb": round(peak / 1024, 1), "over_start_mb": round((peak - start) / 1024, 1)}


# ---------------------------------------------------------------------------------------------


def with_orientation(source: Path, target: Path, orientation: int) -> Path:
    """The same pixels saved again (q90) with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    with Image.open(source) as image:
        image.save(target, "JPEG", quality=90, exif=exif.tobytes())
    return target


def load_photos(settings: Settings, faces_settings: Settings, paths: list[Path]) -> list[Photo]:
    photos = []
    for path in paths:
        data = path.read_bytes()
        ctx = MemoryStepContext(settings, "bench", path.name, data)
        fields = prepare.run(ctx)
        # The faces analyzer's real output, as transform gets it from the analyze step.
        actx = MemoryStepContext(faces_settings, "bench", path.name, data, fields)
        actx.artifacts = ctx.artifacts
        fields = {**fields, **analyze.run(actx)}
        assert "faces" in fields["analysis"], fields["analysis"].get("errors")
        size = (fields["image"]["width"], fields["image"]["height"])
        photos.append(
            Photo(
                name=path.name,
                data=data,
                size=size,
                analysis_size=fit_size(
                    *size, settings.analysis_max_side, settings.analysis_max_pixels
                ),
                publish_size=fit_size(*size, settings.publish.max_side),
                fields=fields,
                faces=len(fields["analysis"]["faces"]),
            )
        )
    return photos


def measure(settings: Settings, photos: list[Photo], rounds: int) -> dict[str, Any]:
    names = list(CANDIDATES)
    for photo in photos[:1]:  # warm-up: imports, the faces model, libvips start-up
        for name in names:
            CANDIDATES[name](settings, photo)
        prepare_phases(settings, photo)
        transform_phases(settings, photo)
        what_if(settings, photo)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    phases: dict[str, dict[str, list[float]]] = {"prepare": {}, "transform": {}, "what_if": {}}
    decoded: dict[str, str] = {}
    for r in range(rounds):
        for i, photo in enumerate(photos):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                w0, c0 = time.perf_counter(), time.process_time()
                CANDIDATES[name](settings, photo)
                wall[name].append((time.perf_counter() - w0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
            for step, fn in (("prepare", prepare_phases), ("transform", transform_phases)):
                ms, decoded[step] = fn(settings, photo)
                for phase, value in ms.items():
                    phases[step].setdefault(phase, []).append(value)
            for phase, value in what_if(settings, photo).items():
                phases["what_if"].setdefault(phase, []).append(value)
    med = {n: round(statistics.median(v), 1) for n, v in wall.items()}
    out: dict[str, Any] = {
        "images": len(photos),
        "size": f"{photos[0].size[0]}x{photos[0].size[1]}",
        "analysis_size": "x".join(map(str, photos[0].analysis_size)),
        "publish_size": "x".join(map(str, photos[0].publish_size)),
        "decoded_by": decoded,
        "faces_blurred": sum(p.faces for p in photos),
        "images_with_faces": sum(1 for p in photos if p.faces),
        "ms": med,
        "cpu_ms": {n: round(statistics.median(v), 1) for n, v in cpu.items()},
        "ratios": {
            "prepare_over_vips": round(med["prepare"] / med["vips_prepare"], 2),
            "transform_over_vips": round(med["transform"] / med["vips_transform"], 2),
            "prepare_over_vips_1t": round(med["prepare"] / med["vips_prepare_1t"], 2),
            "transform_over_vips_1t": round(med["transform"] / med["vips_transform_1t"], 2),
        },
        "breakdown_ms": {
            step: {
                **{k: round(statistics.median(v), 1) for k, v in parts.items()},
                **(
                    {"sum of medians": round(sum(statistics.median(v) for v in parts.values()), 1)}
                    if step != "what_if"
                    else {}
                ),
            }
            for step, parts in phases.items()
        },
    }
    out["psnr_db_vs_full_lanczos"] = {
        p.name: quality(settings, p) for p in photos[: min(3, len(photos))]
    }
    photo = photos[0]
    out["peak_rss"] = {n: peak_rss(lambda n=n: CANDIDATES[n](settings, photo)) for n in names}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_imaging", description=__doc__)
    parser.add_argument("--images", type=int, default=12, help="photos per size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="2,12", help="megapixels, comma-separated")
    parser.add_argument("--no-rotated", action="store_true", help="skip the EXIF-rotated photo")
    args = parser.parse_args(argv)
    pyvips.cache_set_max(0)  # every call does the work
    settings = Settings.from_env({})
    faces_settings = Settings.from_env({"DARKROOM_ANALYZERS": "faces"})
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
        "vips_threads_default": pyvips.concurrency_get(),
        "rounds": args.rounds,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for mp in (float(s) for s in args.sizes.split(",")):
            folder = Path(scratch) / f"{mp:g}mp"
            folder.mkdir()
            paths = make_photos(folder, args.images, mp)
            photos = load_photos(settings, faces_settings, paths)
            results["sizes"][f"{mp:g} MP"] = measure(settings, photos, args.rounds)
            if mp == max(float(s) for s in args.sizes.split(",")) and not args.no_rotated:
                # the first photo with a face, so the blur is rotated too
                source = next(
                    (p for p, ph in zip(paths, photos, strict=True) if ph.faces), paths[0]
                )
                rotated = with_orientation(source, folder / "rotated-6.jpg", 6)
                photos = load_photos(settings, faces_settings, [rotated])
                results["sizes"][f"{mp:g} MP, EXIF orientation 6"] = measure(
                    settings, photos, args.rounds * 3
                )
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
