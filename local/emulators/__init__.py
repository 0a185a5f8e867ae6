"""The local Azure stack: Azurite (blob, queue, table) and a Cosmos DB emulator, as processes.

Ports come from the same connection settings the app uses (`DARKROOM_STORAGE`, `DARKROOM_COSMOS`),
so there is one source of truth; all data lives under `DARKROOM_DATA_DIR`. Azurite keeps its
data with `--location`; the Cosmos emulator keeps nothing by itself, so `cosmos_server.js`
journals every write and replays it at start — local results survive a restart.
Processes are stopped with SIGTERM (Azurite loses its last metadata on SIGKILL).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.settings import (
    PROJECT_ROOT,
    Settings,
    parse_connection_string,
)

NODE_BIN = PROJECT_ROOT / "node_modules" / ".bin"
COSMOS_SERVER = Path(__file__).with_name("cosmos_server.js")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class LocalStackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    blob: int
    queue: int
    table: int
    cosmos: int


def local_ports(settings: Settings) -> Ports:
    """Ports of the emulators, read from the app's connection settings; refuses real Azure."""
    storage = parse_connection_string(settings.storage.connection_string or "")
    cosmos = parse_connection_string(settings.cosmos.connection_string or "")
    urls = {
        "blob": storage.get("BlobEndpoint", ""),
        "queue": storage.get("QueueEndpoint", ""),
        "table": storage.get("TableEndpoint", "http://127.0.0.1:10002/devstoreaccount1"),
        "cosmos": cosmos.get("AccountEndpoint", ""),
    }
    ports = {}
    for name, url in urls.items():
        parts = urlsplit(url)
        if parts.hostname not in _LOCAL_HOSTS or not parts.port:
            raise LocalStackError(
                f"{name} endpoint {url!r} is not a local emulator address; the local stack "
                f"only starts emulators for 127.0.0.1/localhost endpoints with a port"
            )
        ports[name] = parts.port
    return Ports(**ports)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _wait_for(check, what: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise LocalStackError(f"{what} exited with {process.returncode}:\n{tail}")
        time.sleep(0.1)
    raise LocalStackError(f"{what} did not become ready in {timeout:.0f}s (log: {log})")


@dataclass
class Emulator:
    name: str
    process: subprocess.Popen
    pid_file: Path

    def stop(self, timeout: float = 15) -> None:
        stop_pid(self.process.pid, timeout, self.process)
        self.pid_file.unlink(missing_ok=True)


def stop_pid(pid: int, timeout: float = 15, process: subprocess.Popen | None = None) -> bool:
    """SIGTERM, wait, then SIGKILL as a last resort. Returns False if it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return True
        try:
            os.kill(pid, 0)
            if process is None and _is_zombie(pid):
                return True
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


def _start(name: str, argv: list[str], settings: Settings) -> tuple[subprocess.Popen, Path, Path]:
    run_dir = settings.data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = settings.data_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # one log per start; READY lines of old runs must not count
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
    pid_file = run_dir / f"{name}.pid"
    pid_file.write_text(str(process.pid))
    return process, log, pid_file


def _require(path: Path) -> None:
    if not path.exists():
        raise LocalStackError(f"{path} is missing: run `make setup` (npm ci) first")


def start_azurite(settings: Settings, ports: Ports) -> Emulator:
    _require(NODE_BIN / "azurite")
    if port_open(ports.blob):
        raise LocalStackError(f"port {ports.blob} is taken: is a stack already up? (`down`)")
    location = settings.data_dir / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    argv = [
        str(NODE_BIN / "azurite"),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--location",
        str(location),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(ports.blob),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(ports.queue),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(ports.table),
    ]
    process, log, pid_file = _start("azurite", argv, settings)
    _wait_for(
        lambda: all(port_open(p) for p in (ports.blob, ports.queue, ports.table)),
        "azurite",
        process,
        log,
        timeout=60,
    )
    return Emulator("azurite", process, pid_file)


def start_cosmos(settings: Settings, ports: Ports) -> Emulator:
    _require(PROJECT_ROOT / "node_modules" / "@vercel" / "cosmosdb-server")
    if port_open(ports.cosmos):
        raise LocalStackError(f"port {ports.cosmos} is taken: is a stack already up? (`down`)")
    data = settings.data_dir / "cosmos"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        "node",
        str(COSMOS_SERVER),
        "--port",
        str(ports.cosmos),
        "--host",
        "127.0.0.1",
        "--data",
        str(data),
    ]
    process, log, pid_file = _start("cosmos", argv, settings)
    # The server replays its journal before it says READY; only then is the data all there.
    _wait_for(
        lambda: "READY" in log.read_text(errors="replace"),
        "cosmos emulator",
        process,
        log,
        timeout=180,
    )
    return Emulator("cosmos", process, pid_file)


def start_emulators(settings: Settings) -> list[Emulator]:
    ports = local_ports(settings)
    started: list[Emulator] = []
    try:
        started.append(start_azurite(settings, ports))
        started.append(start_cosmos(settings, ports))
    except BaseException:
        for emulator in reversed(started):
            emulator.stop()
        raise
    return started


def stop_recorded(settings: Settings) -> list[str]:
    """Stop whatever `up --detach` left running (host first, then the emulators)."""
    stopped = []
    run_dir = settings.data_dir / "run"
    for name in ("host", "cosmos", "azurite"):
        pid_file = run_dir / f"{name}.pid"
        if not pid_file.exists():
            continue
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid = 0
        if pid and stop_pid(pid, timeout=90 if name == "host" else 15):
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    return stopped
