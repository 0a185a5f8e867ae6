"""Real model servers for the tests, each in a venv of its own, on loopback, stopped after.

MLServer (Seldon, Open Inference Protocol v2) and the Azure ML inference server need versions
that clash with the project's (MLServer 1.7.1: FastAPI 0.115 / Starlette 0.46, uvicorn 0.55,
protobuf 6 against 0.165 / 1.10, <0.55 and 7 here; the Azure ML server: the Azure Monitor
exporter 1.0.0b40 against b58 here), so each gets a venv under
`.darkroom/venvs/<name>-<hash of its requirement list>`, made once by pip (its cache reused, no
stdin) and then only reused: a venv is ready when its marker file is there, and a lock file
keeps two test processes from building the same one at once. onnxruntime, numpy and Pillow are
pinned to the project venv's own versions, so a model gives the same numbers in every process.

A server is started by the test that needs it, bound to 127.0.0.1 on ports picked free,
polled until it answers (or its log is shown), and stopped at teardown: SIGTERM to its process
group, SIGKILL if it is still there after a while. Its output goes to a log file under the
test's tmp folder, and a failure to start says what the log ends with.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings import PROJECT_ROOT

VENVS = PROJECT_ROOT / ".darkroom" / "venvs"
SERVER_FILES = Path(__file__).resolve().parent / "model_servers"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 90.0


def ours(package: str) -> str:
    """`package==<the version in the project venv>` (torch's local `+cpu` dropped)."""
    return f"{package}=={importlib.metadata.version(package).split('+')[0]}"


# What each venv holds. Top-level pins only (pip resolves the rest the same way while PyPI
# does); onnxruntime/numpy/Pillow as in the project venv.
MLSERVER = ("mlserver==1.7.1", ours("onnxruntime"), ours("numpy"))
AZUREML = (
    "azureml-inference-server-http==1.5.1",
    "gunicorn==27.0.1",  # --no-control-socket (a per-user socket two servers would share)
    ours("onnxruntime"),
    ours("numpy"),
    ours("pillow"),
)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (a lock file, created), across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: Sequence[str], log: Path, timeout: float, env=None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(map(str, command))}\n")
        out.flush()
        done = subprocess.run(
            list(map(str, command)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env=env,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} … failed ({done.returncode}): {tail(log)}")


def tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def venv(name: str, requirements: Sequence[str], no_deps: Sequence[Path] = ()) -> Path:
    """The venv `name` holding `requirements` (and the wheel files `no_deps`, installed without
    their dependencies), made once; its folder."""
    recipe = [sys.version, *requirements, *(p.name for p in no_deps)]
    key = hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:12]
    home = VENVS / f"{name}-{key}"
    marker = home / ".darkroom-ready"
    if marker.is_file():
        return home
    with locked(VENVS / f".{name}-{key}.lock"):
        if marker.is_file():  # another process made it while this one waited
            return home
        shutil.rmtree(home, ignore_errors=True)  # a half-made one (a killed run)
        log = VENVS / f".{name}-{key}.log"
        log.unlink(missing_ok=True)
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", home], log, 120)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        pip = [home / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, "--no-input", *requirements], log, INSTALL_TIMEOUT, env)
        if no_deps:
            _run([*pip, "--no-input", "--no-deps", *no_deps], log, INSTALL_TIMEOUT, env)
        marker.write_text(
            json.dumps({"requirements": recipe, "seconds": round(time.monotonic() - started, 1)})
        )
    return home


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclass
class Server:
    """A server process: `start()` returns once every `ready` URL answers 200."""

    name: str
    command: list[str]
    cwd: Path
    log: Path
    url: str  # its base URL
    ready: list[str]  # paths under `url` that answer 200 once it serves
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self, timeout: float = START_TIMEOUT) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**env, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with its workers
            )
        deadline = time.monotonic() + timeout
        waiting = list(self.ready)
        while waiting:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}) before it served; "
                    f"{self.log}:\n{tail(self.log)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not answer {waiting[0]} in {timeout:.0f} s; "
                    f"{self.log}:\n{tail(self.log)}"
                )
            if http_status(self.url + waiting[0]) == 200:
                waiting.pop(0)
            else:
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ MLServer (OIP v2)


def mlserver(models: Mapping[str, Path], folder: Path, port: int | None = None) -> Server:
    """MLServer 1.7.1 serving each ONNX file of `models` (name → file) with the custom runtime
    in tests/model_servers/mlserver/: its model repository is written into `folder`. HTTP on
    127.0.0.1 (`port`, or a free one), gRPC (which MLServer cannot turn off) on another free
    loopback port, no metrics server, inference in the server process (parallel_workers 0)."""
    home = venv("mlserver", MLSERVER)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "debug": False,
        "load_models_at_startup": True,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    shutil.copy(SERVER_FILES / "mlserver" / "onnx_runtime.py", folder / "onnx_runtime.py")
    template = (SERVER_FILES / "mlserver" / "model-settings.json").read_text()
    for name, onnx in models.items():
        (folder / name).mkdir(exist_ok=True)
        filled = template.replace("{name}", name).replace("{uri}", str(onnx.resolve()))
        json.loads(filled)  # a template that no longer reads fails here, not in the server
        (folder / name / "model-settings.json").write_text(filled)
    return Server(
        name="mlserver",
        command=[str(home / "bin" / "mlserver"), "start", str(folder)],
        cwd=folder,
        log=folder / "mlserver.log",
        url=f"http://127.0.0.1:{port}",
        ready=["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in models)],
    )


# ------------------------------------------------------------------ Azure ML inference server


def azureml(model_dir: Path, folder: Path, port: int | None = None) -> Server:
    """azureml-inference-server-http 1.5.1 running tests/model_servers/azureml/score.py on the
    model in `model_dir` (model.onnx + config.json). Through gunicorn bound to 127.0.0.1:
    `azmlinfsrv` itself always binds 0.0.0.0. One worker, no control socket."""
    home = venv("azureml", AZUREML)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    return Server(
        name=f"azureml ({model_dir.name})",
        command=[
            str(home / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--no-control-socket",
            "azureml_inference_server_http.server.entry:app",
        ],
        cwd=folder,
        log=folder / f"azureml-{model_dir.name}.log",
        url=f"http://127.0.0.1:{port}",
        ready=["/"],
        env={
            "AZUREML_ENTRY_SCRIPT": str(SERVER_FILES / "azureml" / "score.py"),
            "AZUREML_MODEL_DIR": str(model_dir),
            "DARKROOM_PROJECT_ROOT": str(PROJECT_ROOT),
        },
    )
