"""Offline object detection: CenterNet (MobileNetV3, COCO's 80 classes) run by Node.

Weights: `models/centernet.json` + `centernet.bin` from the npm package `@vladmandic/human`
(a TensorFlow.js graph model converted from 610265158/mobilenetv3_centernet), run by TensorFlow.js
on its WebAssembly backend (`@tensorflow/tfjs-backend-wasm`, whose .wasm binaries ship inside the
npm package). `@tensorflow/tfjs-node` is not used: its install script downloads libtensorflow.

`objects_server.js` (next to this file) is one long-lived Node process per detector, spoken to in
JSON lines over its stdin/stdout: raw RGB in (base64), boxes in input pixels out. It exits when its
stdin closes, so it never outlives this process. Its stderr goes to the `darkroom.objects` log.

The model sees a 512x512 letterbox, so an image with a longer side is first shrunk here (Pillow,
bilinear with antialiasing) and the boxes scaled back: a 1920x1440 image then costs what a
512x384 one does, instead of ~100 ms more for base64, JSON and resizing in Node.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import shutil
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.analyzers.base import Analyzer, Capability, DetectedObject, ModelUnavailable

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
SERVER = Path(__file__).resolve().with_name("objects_server.js")
MODEL_PACKAGE = "@vladmandic/human"
MODEL_FILES = ("models/centernet.json", "models/centernet.bin")
RUNTIME_PACKAGES = (
    "@tensorflow/tfjs-core",
    "@tensorflow/tfjs-converter",
    "@tensorflow/tfjs-backend-wasm",
)
INSTALL_HINT = "run make setup (npm ci)"
MODEL_SIDE = 512  # the model's square input

log = logging.getLogger("darkroom.objects")
_EOF = None  # what the stdout reader queues when the process has closed its stdout


class _Server:
    """One running `objects_server.js`: the process, a stdout reader and a stderr logger."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr_tail: list[str] = []
        threading.Thread(target=self._read_stdout, name="objects-stdout", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="objects-stderr", daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(_EOF)

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail = [*self.stderr_tail[-19:], line]
            log.info("%s", line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def next_message(self, timeout: float) -> dict | None:
        """The next JSON line on stdout; None once the process has closed it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is _EOF:
                self.lines.put(_EOF)  # later readers see the end too
                return None
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                log.warning("objects_server.js wrote a non-JSON line: %r", line[:200])

    def describe_exit(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        tail = " | ".join(self.stderr_tail[-5:])
        return f"exit code {code}" + (f"; stderr: {tail}" if tail else "")

    def stop(self, timeout: float = 5.0) -> None:
        _stop(self.proc, timeout)


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Close stdin (the server then exits by itself), kill it if it does not."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            stream.close()


class _Died(Exception):
    pass


class HumanObjectDetector(Analyzer):
    """COCO objects with boxes from CenterNet (human's `centernet` model) in a Node subprocess.

    `min_score` and `max_objects` are applied by the server, after per-class non-maximum
    suppression. `threads` > 1 runs the WebAssembly backend's multi-threaded build (see
    objects_server.js): on 2 cores it is faster only when the machine is otherwise idle.
    """

    capability: ClassVar[Capability] = "objects"
    name: ClassVar[str] = "human-centernet"
    version: ClassVar[str] = "unknown"  # the npm package's version, set by _load()

    def __init__(
        self,
        min_score: float = 0.3,
        max_objects: int = 20,
        threads: int = 1,
        node_modules: Path = NODE_MODULES,
        node: str | None = None,
        start_timeout: float = 60.0,
        request_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.min_score = min_score
        self.max_objects = max_objects
        self.threads = threads
        self.node_modules = Path(node_modules)
        self.node = node or shutil.which("node") or "node"
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.restarts = 0  # how many times a dead server was started again
        self._io_lock = threading.Lock()  # one request/response exchange on the pipe at a time
        self._server: _Server | None = None
        self._finalizer: weakref.finalize | None = None
        self._next_id = 0
        self.runtime: dict = {}  # the ready line: backend, simd, threads, tfjs version, load_ms

    # ------------------------------------------------------------------------- life cycle

    def check(self) -> None:
        if shutil.which(self.node) is None:
            raise ModelUnavailable(
                f"Node.js not found ({self.node!r}): install Node 20 ({INSTALL_HINT})"
            )
        if not SERVER.is_file():
            raise ModelUnavailable(f"{SERVER} is missing")
        for package in (MODEL_PACKAGE, *RUNTIME_PACKAGES):
            if not (self.node_modules / package / "package.json").is_file():
                raise ModelUnavailable(
                    f"npm package {package} is not installed in {self.node_modules}: {INSTALL_HINT}"
                )
        for file in MODEL_FILES:
            if not (self.node_modules / MODEL_PACKAGE / file).is_file():
                raise ModelUnavailable(
                    f"{MODEL_PACKAGE} has no {file} in {self.node_modules}: {INSTALL_HINT}"
                )

    def _load(self) -> None:
        self.check()
        with self._io_lock:
            self._start()

    def _start(self) -> None:
        """Start the server and wait for its ready line. Caller holds `_io_lock`."""
        argv = [
            self.node,
            str(SERVER),
            "--min-score", str(self.min_score),
            "--max-objects", str(self.max_objects),
            "--threads", str(self.threads),
            "--node-modules", str(self.node_modules),
        ]  # fmt: skip
        try:
            server = _Server(argv)
        except OSError as exc:
            raise ModelUnavailable(f"cannot run Node.js ({self.node}): {exc}") from exc
        try:
            ready = server.next_message(self.start_timeout)
        except queue.Empty:
            server.stop(timeout=1)
            raise ModelUnavailable(
                f"objects_server.js did not get ready within {self.start_timeout:.0f} s"
            ) from None
        if ready is None:
            raise ModelUnavailable(f"objects_server.js failed to start: {server.describe_exit()}")
        if not ready.get("ready"):
            server.stop(timeout=1)
            raise ModelUnavailable(f"object detector unavailable: {ready.get('error', ready)}")
        self.version = str(ready.get("version", "unknown"))
        self.runtime = ready  # backend, simd, threads, tfjs version, load_ms
        self._server = server
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop, server.proc)

    def close(self) -> None:
        """Stop the Node process; a later predict() starts it again."""
        with self._lock, self._io_lock:
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if self._server is not None:
                self._server.stop()
                self._server = None
            self._loaded = False

    @property
    def pid(self) -> int | None:
        server = self._server
        return server.proc.pid if server is not None and server.alive() else None

    # ------------------------------------------------------------------------- requests

    def _exchange(self, request_id: int, payload: bytes) -> dict:
        server = self._server
        if server is None or not server.alive():
            raise _Died("not running")
        try:
            server.proc.stdin.write(payload)
            server.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise _Died(f"write failed: {exc}") from exc
        while True:
            try:
                answer = server.next_message(self.request_timeout)
            except queue.Empty:
                server.stop(timeout=1)  # wedged: the next request starts a new one
                raise TimeoutError(
                    f"objects_server.js gave no answer within {self.request_timeout:.0f} s"
                ) from None
            if answer is None:
                raise _Died(server.describe_exit())
            if answer.get("id") == request_id:
                return answer
            log.warning("dropped a stale answer from objects_server.js: id %s", answer.get("id"))

    def _predict(self, image: np.ndarray) -> list[DetectedObject]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        sent = image
        if max(height, width) > MODEL_SIDE:
            from PIL import Image

            scale = MODEL_SIDE / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            sent = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        sent_height, sent_width = sent.shape[:2]
        rgb = base64.b64encode(np.ascontiguousarray(sent).tobytes())
        with self._io_lock:
            self._next_id += 1
            request_id = self._next_id
            head = f'{{"id": {request_id}, "width": {sent_width}, "height": {sent_height}, "rgb": "'
            payload = b"".join((head.encode(), rgb, b'"}\n'))
            try:
                answer = self._exchange(request_id, payload)
            except _Died as first:
                log.warning("objects_server.js died (%s): starting it again", first)
                if self._server is not None:
                    self._server.stop(timeout=1)
                self._start()
                self.restarts += 1
                try:
                    answer = self._exchange(request_id, payload)
                except _Died as second:
                    raise RuntimeError(f"objects_server.js died twice: {second}") from None
        if "error" in answer:
            raise RuntimeError(f"objects_server.js: {answer['error']}")
        sx, sy = width / sent_width, height / sent_height
        objects = []
        for o in answer["objects"]:
            x, y, w, h = (float(v) for v in o["box"])
            x, y = min(x * sx, width), min(y * sy, height)
            box = (round(x, 1), round(y, 1), round(min(w * sx, width - x), 1),
                   round(min(h * sy, height - y), 1))  # fmt: skip
            score = min(max(float(o["score"]), 0.0), 1.0)
            objects.append(DetectedObject(name=o["name"], score=score, box=box))
        return objects
