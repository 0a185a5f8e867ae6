"""Set-up time: put the PP-OCR ONNX files the local text provider runs into the models folder.

    python -m local.install_ocr_models [--force]

Why this way: the files ship inside PyPI wheels, but neither wheel can be a dependency. The
detector (PP-OCRv4 mobile det) is in `rapidocr-onnxruntime` 1.4.4, which requires `opencv-python`
— the GUI build, whose `cv2` clashes with our `opencv-python-headless`; the recogniser (PP-OCRv6
small rec, its character list in the ONNX metadata) is in `rapidocr` 3.10.0, which would bring
eight packages (omegaconf, requests, shapely, ...) into the venv for two files. So each wheel is
fetched with pip itself (`pip download --no-deps`, PyPI, pip's cache makes a second fetch free),
opened as a zip, its member checked against the SHA-256 pinned here (the same hashes RapidOCR's
model registry and MODEL_LICENSES.md record for these files), and written atomically to
`pipeline/vision/local/models/` (the git-ignored folder that is deployed with the app), with a
manifest `ppocr.json` last. Nothing of rapidocr is installed or imported.

Idempotent: when the manifest names these sources and both files match their pinned SHA-256, it
exits 0 at once (~0.1 s, no network).

Exit status: 0 installed or already up to date; 1 a download or a checksum failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from local.pip_fetch import FetchError, pip_download
from pipeline.vision.local.onnx_session import file_sha256
from pipeline.vision.local.text_ppocr import DET_FILE, MANIFEST_FILE, MODEL_DIR, REC_FILE, VERSION


@dataclass(frozen=True)
class Source:
    file: str  # name in the models folder
    model: str  # upstream PaddleOCR model
    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str


SOURCES = (
    Source(
        file=DET_FILE,
        model="ch_PP-OCRv4_det (mobile)",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    ),
    Source(
        file=REC_FILE,
        model="PP-OCRv6_small_rec",
        package="rapidocr",
        version="3.10.0",
        member="rapidocr/models/PP-OCRv6_rec_small.onnx",
        sha256="6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    ),
)
LICENCE = "Apache-2.0 (PaddleOCR models; RapidOCR conversions, see rapidocr's MODEL_LICENSES.md)"


class InstallError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[install_ocr_models] {message}", file=sys.stderr, flush=True)


def manifest() -> dict:
    return {
        "version": VERSION,
        "licence": LICENCE,
        "files": [asdict(s) for s in SOURCES],
    }


def up_to_date(folder: Path) -> bool:
    try:
        current = json.loads((folder / MANIFEST_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return current == manifest() and all(
        (folder / s.file).is_file() and file_sha256(folder / s.file) == s.sha256 for s in SOURCES
    )


def download_wheel(source: Source, into: Path) -> Path:
    """The package's wheel, fetched by pip without its dependencies."""
    try:
        pip_download(source.package, source.version, into, sdist=False, timeout=600)
    except FetchError as exc:
        raise InstallError(str(exc)) from exc
    wheels = sorted(into.glob(f"{source.package.replace('-', '_')}-{source.version}-*.whl"))
    if not wheels:
        raise InstallError(f"pip download {source.package}=={source.version} wrote no wheel")
    return wheels[0]


def _publish(data: bytes, final: Path) -> None:
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=final.suffix)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def install(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="darkroom-ocr-") as tmp:
        for source in SOURCES:
            target = folder / source.file
            if target.is_file() and file_sha256(target) == source.sha256:
                continue
            wheel = download_wheel(source, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                try:
                    data = archive.read(source.member)
                except KeyError as exc:
                    raise InstallError(f"{wheel.name} has no {source.member}") from exc
            got = hashlib.sha256(data).hexdigest()
            if got != source.sha256:
                raise InstallError(
                    f"{source.member} in {wheel.name}: sha256 {got}, expected {source.sha256}"
                )
            _publish(data, target)
            log(f"wrote {target} ({len(data) / 1e6:.1f} MB) from {wheel.name}")
    _publish((json.dumps(manifest(), indent=2) + "\n").encode(), folder / MANIFEST_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.install_ocr_models",
        description="Copy the PP-OCR det/rec ONNX files from their PyPI wheels (sha256-checked).",
    )
    parser.add_argument("--dir", type=Path, default=MODEL_DIR, help="models folder")
    parser.add_argument("--force", action="store_true", help="install even if up to date")
    args = parser.parse_args(argv)
    folder: Path = args.dir.resolve()
    if not args.force and up_to_date(folder):
        log(f"up to date: {folder / DET_FILE}, {folder / REC_FILE}")
        return 0
    if args.force:
        for source in SOURCES:
            (folder / source.file).unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        install(folder)
    except InstallError as exc:
        log(str(exc))
        return 1
    log(f"installed {VERSION} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
