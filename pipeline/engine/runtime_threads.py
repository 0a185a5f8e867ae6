"""One thread per compute slot for every native runtime a step uses, set once per process.

The compute slots (`pipeline.engine.compute_slots`) already match the work to the cores; a runtime
that then starts its own pool per call would only oversubscribe them again and make the
measured CPU time of a step meaningless. onnxruntime's sessions get their count where they are
opened (`pipeline.vision.local.onnx_session.cpu_session`); OpenCV's pool is process-wide, so it is
set here, by the runner, before the first step runs.
"""

from __future__ import annotations

import threading

_done = threading.Event()


def configure(threads: int = 1) -> None:
    """OpenCV (resizing in pipeline/imaging, BlazeFace, PP-OCR pre-processing) to `threads`."""
    if _done.is_set():
        return
    import cv2

    cv2.setNumThreads(threads)
    _done.set()
