"""The local Azure stack: Azurite (blob, queue, table) and a Cosmos DB emulator, as processes.

Ports come from the same connection settings the app uses (`DARKROOM_STORAGE`, `DARKROOM_COSMOS`),
so there is one source of truth; all data lives under `DARKROOM_DATA_DIR`. Azurite keeps its
data with `--location`; the Cosmos emulator keeps nothing by itself, so `cosmos_server.js`
journals every write and replays it at start — local results survive a restart; a damaged
journal stops the start instead of being compacted over (`JournalDamaged`). The Cosmos emulator
checks the master-key signature of every request with the key of `DARKROOM_COSMOS`, handed over
in its environment. Processes are stopped with SIGTERM (Azurite loses its last metadata on
SIGKILL), and only after checking that the pid in a pid file is still the process we started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.settings import COSMOS_CONNECTION, PROJECT_ROOT, STORAGE_CONNECTION, Settings
from pipeline.stores.connections import Connection, parse_connection_string

NODE_BIN = PROJECT_ROOT / "node_modules" / ".bin"
COSMOS_SERVER = Path(__file__).with_name("cosmos_server.js")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
COSMOS_KEY_ENV = "DARKROOM_COSMOS_EMULATOR_KEY"  # how cosmos_server.js learns its master key
JOURNAL_DAMAGED_EXIT = 3  # cosmos_server.js: the journal is damaged, nothing was started
# What a recorded pid must be running, for pid files written before start times were recorded.
_CMDLINE_MARKERS = {
    "azurite": ("azurite",),
    "cosmos": ("cosmos_server.js",),
    "host": ("pipeline", "host"),
}


class LocalStackError(RuntimeError):
    """The local stack cannot start or stop; the message says what to change."""


class JournalDamaged(LocalStackError):
    """The Cosmos emulator found its journal damaged and refused to start on top of it."""

    def __init__(self, report: dict) -> None:
        self.report = report
        journal, readable = report["journal"], report["readable"]
        restore = (
            f"copy a good journal over {journal} (e.g. {report['previous']}, the journal as of "
            "the previous clean start)"
            if report.get("previous")
            else f"copy a good journal (a backup of {journal}) over it"
        )
        super().__init__(
            f"the Cosmos emulator's journal {journal} is damaged: line {report['line']}: "
            f"{report['reason']} ({report['problems']} problem(s) found; {readable} of its "
            f"{report['lines']} lines are readable entries). Nothing was started and the "
            f"journal was not rewritten; a copy is kept at {report['copy']}.\n"
            f"  to keep the {readable} readable entries and lose the rest: "
            "python -m pipeline up --salvage-journal\n"
            f"  to restore instead: {restore}, then python -m pipeline up"
        )


@dataclass(frozen=True)
class Ports:
    blob: int
    queue: int
    table: int
    cosmos: int

    def named(self) -> list[tuple[int, str]]:
        """Each port with the setting that chose it, for "port taken" messages."""
        return [
            (self.blob, f"BlobEndpoint in {STORAGE_CONNECTION}"),
            (self.queue, f"QueueEndpoint in {STORAGE_CONNECTION}"),
            (self.table, f"TableEndpoint in {STORAGE_CONNECTION}"),
            (self.cosmos, f"AccountEndpoint in {COSMOS_CONNECTION}"),
        ]


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


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_taken_message(port: int, setting: str) -> str:
    """One line: which port, which setting chose it, and what to do about it."""
    hint = (
        " (UseDevelopmentStorage=true means 10000-10002: write the full connection string "
        "with other ports instead)"
        if STORAGE_CONNECTION in setting
        else ""
    )
    return (
        f"port {port} is already in use ({setting}): if it is a stack of ours, stop it with "
        f"`python -m pipeline down`; otherwise stop what holds the port or change {setting} to a "
        f"free port{hint}"
    )


def check_ports_free(named_ports: list[tuple[int, str]]) -> None:
    """Refuse before anything is started, so a clash never leaves half a stack running."""
    for port, setting in named_ports:
        if port_open(port):
            raise LocalStackError(port_taken_message(port, setting))


def configured_endpoints(settings: Settings) -> list[tuple[str, str, int]]:
    """(setting, host, port) of the queue, blob and Cosmos endpoints the CLI would call."""
    found: list[tuple[str, str, int]] = []

    def add(connection: Connection, services: tuple[str, ...], key: str) -> None:
        parts = parse_connection_string(connection.connection_string or "")
        for service in services:
            url = connection.endpoint(service) or parts.get(key.format(service.capitalize()))
            if not url and parts.get("AccountName") and service != "account":
                suffix = parts.get("EndpointSuffix", "core.windows.net")
                url = f"https://{parts['AccountName']}.{service}.{suffix}"
            if not url:
                continue
            split = urlsplit(url)
            port = split.port or (443 if split.scheme == "https" else 80)
            found.append((connection.name, split.hostname or "", port))

    add(settings.storage, ("blob", "queue"), "{}Endpoint")
    add(settings.cosmos, ("account",), "AccountEndpoint")
    return found


def unreachable_endpoints(settings: Settings, timeout: float = 1.5) -> list[str]:
    """A TCP connect to every configured endpoint, before any SDK call: the SDKs retry an
    unreachable endpoint for a minute or more, saying nothing. Returns what did not answer."""
    missing = []
    for setting, host, port in configured_endpoints(settings):
        local = host in _LOCAL_HOSTS
        if not port_open(port, host, timeout=0.3 if local else timeout):
            missing.append(f"{host}:{port} ({setting})")
    return missing


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
    notes: list[str] = field(default_factory=list)  # for `up` to print (e.g. journal salvaged)

    def stop(self, timeout: float = 15) -> None:
        stop_pid(self.process.pid, timeout, self.process)
        self.pid_file.unlink(missing_ok=True)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot): with the pid it names one
    process for good, where a pid alone is reused by the next process the system starts."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and ")"
    return fields[19] if len(fields) > 19 else None


def write_pid_file(pid_file: Path, pid: int) -> None:
    """`<pid> <start time>`: enough to tell later whether that pid is still our process."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{pid} {_start_time(pid) or '-'}\n")


def recorded_pid(pid_file: Path, name: str) -> int | None:
    """The pid in a pid file if that process is alive and is the one we started, else None.

    A pid file outlives its process (a crash, a reboot); the pid is then reused by something
    else, which `down` must never signal. The recorded start time must match; a pid file
    without one (older format) needs the process's command line to be ours."""
    try:
        recorded = pid_file.read_text().split()
        pid = int(recorded[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 1 or _is_zombie(pid):
        return None
    started = _start_time(pid)
    if started is None:
        return None  # not running (or no /proc to prove it is ours: never signal blindly)
    if len(recorded) > 1 and recorded[1] != "-":
        return pid if recorded[1] == started else None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    markers = list(_CMDLINE_MARKERS.get(name, (name,)))
    if name != "host":  # an emulator's argv names its data folder: this stack's, not another's
        markers.append(str(pid_file.parent.parent))
    text = " ".join(argv)
    return pid if all(marker in text for marker in markers) else None


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


def _start(
    name: str, argv: list[str], settings: Settings, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, Path, Path]:
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
            env=env,
        )
    pid_file = run_dir / f"{name}.pid"
    write_pid_file(pid_file, process.pid)
    return process, log, pid_file


def _require(path: Path) -> None:
    if not path.exists():
        raise LocalStackError(f"{path} is missing: run `make setup` (npm ci) first")


def start_azurite(settings: Settings, ports: Ports) -> Emulator:
    _require(NODE_BIN / "azurite")
    check_ports_free(ports.named()[:3])
    location = settings.data_dir / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    argv = [
        str(NODE_BIN / "azurite"),
        "--silent",
        "--disableTelemetry",  # it would otherwise try to reach Application Insights
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


def cosmos_key(settings: Settings) -> str:
    """The master key the emulator checks signatures with: the AccountKey of DARKROOM_COSMOS,
    so the app's own clients are the ones it lets in."""
    key = parse_connection_string(settings.cosmos.connection_string or "").get("AccountKey", "")
    if not key:
        raise LocalStackError(
            f"{COSMOS_CONNECTION} has no AccountKey: the local Cosmos emulator needs the key its "
            "clients sign with (see local.settings.sample.json)"
        )
    return key


_JOURNAL_LINE = re.compile(r"^(JOURNAL-DAMAGED|JOURNAL-REPLAYED) (\{.*\})$", re.MULTILINE)


def _journal_reports(log: Path) -> dict[str, dict]:
    text = log.read_text(errors="replace") if log.exists() else ""
    reports = {}
    for kind, payload in _JOURNAL_LINE.findall(text):
        try:
            reports[kind] = json.loads(payload)
        except ValueError:
            continue
    return reports


def start_cosmos(settings: Settings, ports: Ports, salvage_journal: bool = False) -> Emulator:
    _require(PROJECT_ROOT / "node_modules" / "@vercel" / "cosmosdb-server")
    check_ports_free(ports.named()[3:])
    key = cosmos_key(settings)
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
    if salvage_journal:
        argv.append("--salvage")
    env = {**os.environ, COSMOS_KEY_ENV: key}  # the environment, not argv: ps shows argv to all
    process, log, pid_file = _start("cosmos", argv, settings, env)
    # The server replays its journal before it says READY; only then is the data all there.
    try:
        _wait_for(
            lambda: "READY" in log.read_text(errors="replace"),
            "cosmos emulator",
            process,
            log,
            timeout=180,
        )
    except LocalStackError:
        if process.poll() is None:
            stop_pid(process.pid, 15, process)
        pid_file.unlink(missing_ok=True)
        damaged = _journal_reports(log).get("JOURNAL-DAMAGED")
        if process.returncode == JOURNAL_DAMAGED_EXIT and damaged:
            raise JournalDamaged(damaged) from None
        raise
    emulator = Emulator("cosmos", process, pid_file)
    reports = _journal_reports(log)
    if salvaged := reports.get("JOURNAL-DAMAGED"):
        emulator.notes.append(
            f"cosmos: journal salvaged: kept {salvaged['readable']} readable entries, dropped "
            f"{salvaged['problems']} damaged or missing line(s); the damaged journal is kept at "
            f"{salvaged['copy']}"
        )
    replayed = reports.get("JOURNAL-REPLAYED", {})
    if replayed.get("rejected"):
        emulator.notes.append(
            f"cosmos: {replayed['rejected']} journal entries were refused on replay; the journal "
            f"as it was before this start is kept at {replayed['previous']}"
        )
    return emulator


def start_emulators(settings: Settings, salvage_journal: bool = False) -> list[Emulator]:
    """Azurite, then the Cosmos emulator; all ports are checked first, and whatever was started
    is stopped again if a later one fails, so a failed start leaves nothing running."""
    ports = local_ports(settings)
    check_ports_free(ports.named())
    cosmos_key(settings)
    started: list[Emulator] = []
    try:
        started.append(start_azurite(settings, ports))
        started.append(start_cosmos(settings, ports, salvage_journal))
    except BaseException:
        for emulator in reversed(started):
            emulator.stop()
        raise
    return started


def stop_recorded(settings: Settings, note: Callable[[str], None] | None = None) -> list[str]:
    """Stop whatever `up --detach` left running (host first, then the emulators).

    Only a pid that is still the process we started is signalled; a stale pid file (its
    process gone, the pid maybe reused by something else) is removed and reported to `note`."""
    stopped = []
    run_dir = settings.data_dir / "run"
    for name in ("host", "cosmos", "azurite"):
        pid_file = run_dir / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = recorded_pid(pid_file, name)
        if pid is None:
            if note is not None:
                recorded = pid_file.read_text(errors="replace").split()[:1] or ["?"]
                note(
                    f"{name}: pid file {pid_file} names pid {recorded[0]}, which is not our "
                    f"{name} (it exited; the pid may now be another program's): not signalled"
                )
        elif stop_pid(pid, timeout=90 if name == "host" else 15):
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    return stopped
