"""The one way an analyzer opens an ONNX model: CPU, explicit thread counts, from the path.

The pipeline runs one worker per core, so onnxruntime's own thread pools would only fight the
other workers: every session gets `threads` intra-op threads (1 by default) and one inter-op
thread, set here so that a thread budget is changed in one place. Loading from the path, not
bytes, lets onnxruntime keep one copy of the weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def cpu_session(path: Path, threads: int | None = 1):
    """An `onnxruntime.InferenceSession` for `path` (threads None: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are not ours to fix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
