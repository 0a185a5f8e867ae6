"""One append-only JSON-lines file shared by processes: the local collector of spans and metrics.

The local host's workers are processes of their own, each with its own exporter, all appending
to the same file. Each record batch is one `os.write` of whole lines to a descriptor opened with
O_APPEND, so processes never interleave within a line. At about `max_bytes` the file becomes its
rotated twin (replacing the previous one), under a lock file so two processes never rotate at
once; a process whose file was rotated away reopens the new one on its next write.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 50 * 1024 * 1024


class AppendOnlyLines:
    def __init__(
        self, folder: Path, name: str, rotated: str, lock: str, max_bytes: int = MAX_FILE_BYTES
    ) -> None:
        self.folder = folder
        self.path = folder / name
        self.rotated = folder / rotated
        self.lock = folder / lock
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._mutex = threading.Lock()

    def _open(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _current_fd(self) -> int:
        if self._fd is not None:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
            os.close(self._fd)  # rotated (or deleted) by someone else: write to the new file
        self._fd = self._open()
        return self._fd

    def _rotate_if_full(self, fd: int) -> int:
        if os.fstat(fd).st_size < self.max_bytes:
            return fd
        with open(self.lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_size >= self.max_bytes:  # nobody rotated meanwhile
                    os.replace(self.path, self.rotated)
            except FileNotFoundError:
                pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return self._current_fd()

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append the records, one JSON line each, in one write (OSError if it cannot)."""
        data = b"".join(
            json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
            for record in records
        )
        if not data:
            return
        with self._mutex:
            fd = self._rotate_if_full(self._current_fd())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def records(self, must_contain: bytes | None = None) -> Iterator[dict[str, Any]]:
        """Every readable record, the rotated file's first; lines cut by a crash are skipped.
        `must_contain` filters lines cheaply before they are parsed."""
        for path in (self.rotated, self.path):
            if not path.exists():
                continue
            with open(path, "rb") as lines:
                for line in lines:
                    if must_contain is not None and must_contain not in line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        yield record
