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
