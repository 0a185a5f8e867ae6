"""Writing a generated file so that a reader never sees half of it: temp file, fsync, rename.

The model exporters write files the app loads at start-up; a set-up killed mid-write must
leave the old file (or none), never a truncated model that fails far from its cause.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def temporary_file(folder: Path, suffix: str) -> Iterator[Path]:
    """A temporary file name in `folder` (so the final rename is atomic), removed on failure."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def publish_file(tmp: Path, final: Path) -> None:
    """Make `tmp` durable and put it in place of `final` in one step."""
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)


# A generated model travels with a sidecar (`<model>.json`, pipeline.vision.local.onnx_session):
# what it was made from and its SHA-256, which the analyzer checks at start-up.


def model_is_current(out: Path, **expected: object) -> bool:
    """`out` exists, matches the SHA-256 its sidecar records, and the sidecar has `expected`
    (the sources, versions… it was made from): set-up's "nothing to do"."""
    from pipeline.vision.local.onnx_session import file_sha256, read_sidecar

    sidecar = read_sidecar(out)
    return (
        sidecar is not None
        and all(sidecar.get(key) == value for key, value in expected.items())
        and out.is_file()
        and file_sha256(out) == sidecar.get("sha256")
    )


def publish_model(tmp_model: Path, out: Path, record: dict) -> dict:
    """Put a written and checked model in place of `out`, then its sidecar: `record` plus the
    file's name, SHA-256 and size. The model goes first, so a set-up killed in between leaves a
    sidecar that does not match, which the next set-up redoes. Returns the sidecar."""
    import json

    from pipeline.vision.local.onnx_session import file_sha256, sidecar_path

    sidecar = {
        "file": out.name,
        "sha256": file_sha256(tmp_model),
        "bytes": tmp_model.stat().st_size,
        **record,
    }
    publish_file(tmp_model, out)
    with temporary_file(out.parent, ".json") as tmp_sidecar:
        tmp_sidecar.write_text(json.dumps(sidecar, indent=2) + "\n", "utf-8")
        publish_file(tmp_sidecar, sidecar_path(out))
    return sidecar
