"""The one way an analyzer opens an ONNX model: CPU, explicit thread counts, one shared arena.

Threads: the pipeline runs one worker per core, so onnxruntime's own thread pools would only
fight the other workers: every session gets `threads` intra-op threads (`THREADS`, 1, by
default) and one inter-op thread, set here so that a thread budget is changed in one place.
OpenCV's pool is process-wide: `pipeline.engine.runtime_threads` sets it, once per process, and the
analyzers that use OpenCV call it when they load, so a bench or the API process gets it too.

Memory: by default every onnxruntime session keeps its own arena and keeps it at the largest
size one of its runs needed, so a worker that loads every model holds the sum of their peaks
(2 MP photos: text detection ~110 MB, objects ~40 MB, ...: 671 MB in all). Here every session
allocates from one arena registered once per process (`session.use_env_allocators`): a worker
holds the largest run's working memory once, and the arena still keeps it between runs, so no
run pays for fresh pages (turning the arena off, or shrinking it after each run, saved as much
memory but cost 16-25 % more CPU on the text detector and CenterNet: their 37-110 MB blocks were
mapped and faulted in anew every run). Its first region is reserved large (`ARENA_FIRST_REGION`):
onnxruntime's arena never merges regions, so growing it step by step (6 MB for the tagger, then
37, then 110) would keep every step; untouched pages of the reservation cost address space, not
memory.

Loading from the path, not bytes, lets onnxruntime keep one copy of the weights. Loading still
parses the whole model file into temporary buffers that it frees afterwards; glibc keeps freed
heap memory mapped, so `cpu_session` hands it back (`malloc_trim`) once the session is built:
-25 MB at the worker's peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import threading
from pathlib import Path

THREADS = 1  # intra-op threads per session: one worker process per core
ARENA_FIRST_REGION = 256 << 20  # bytes reserved (not touched) for the shared arena's first region

_arena_lock = threading.Lock()
_arena_registered = False


def _shared_arena(ort) -> None:
    """Register the process's one CPU arena with onnxruntime's environment (once)."""
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(
            info, ort.OrtArenaCfg({"initial_chunk_size_bytes": ARENA_FIRST_REGION})
        )
        _arena_registered = True


def session_options(threads: int | None = THREADS, shared_arena: bool = True):
    """The `onnxruntime.SessionOptions` every session of the pipeline opens with (threads None:
    onnxruntime's default; shared_arena False: the session's own arena, as onnxruntime does by
    default, which bench.bench_analyzers measures against)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are not ours to fix
    if shared_arena:
        _shared_arena(ort)
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def cpu_session(path: Path, threads: int | None = THREADS, shared_arena: bool = True):
    """An `onnxruntime.InferenceSession` for `path` on the CPU, with `session_options`."""
    import onnxruntime as ort

    options = session_options(threads, shared_arena)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    release_freed_memory()
    return session


def release_freed_memory() -> None:
    """Give the heap memory freed so far back to the system (glibc's `malloc_trim`; elsewhere a
    no-op)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


_libc: ctypes.CDLL | bool | None = None


# A generated model carries a sidecar (`<model>.json`): what it was made from, and its SHA-256,
# so a model file that does not match its record is refused at start-up.


def sidecar_path(model_path: Path) -> Path:
    """`model.onnx` → `model.json`, in the same folder."""
    return model_path.with_suffix(".json")


def read_sidecar(model_path: Path) -> dict | None:
    """The export's record (sources, SHA-256), or None if it is missing or unreadable."""
    try:
        data = json.loads(sidecar_path(model_path).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
