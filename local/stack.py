"""The local stack's lifecycle: `python -m pipeline up`, `down` and `host`.

These are the only commands that start or stop anything on this machine: the emulators
(local.emulators), the functions host process (local.host), their pid files, the wait for the
host's health and the page line it records. The operator commands (local.operator_client) never
do, and work against Azure as well; keeping the two apart keeps what runs a stack out of what
talks to one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from local.cli_output import err
from local.emulators import (
    LocalStackError,
    check_ports_free,
    recorded_pid,
    start_emulators,
    stop_recorded,
    write_pid_file,
)
from local.host.api_keys import (
    KEY_SETTINGS,
    access_for,
    running_access,
    with_page_key,
)
from local.provision import ensure_resources
from pipeline.framework.registry import route_problems
from pipeline.settings import PROJECT_ROOT, get_settings
from pipeline.stores.azure_clients import clients


def _host_health(port: int) -> int | None:
    """Health's HTTP status (200 healthy, 503 names a problem), None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code
    except Exception:
        return None


def _health_problems(port: int) -> str:
    """What an unhealthy host's health report names, in one line."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
            report = json.loads(r.read())
    except urllib.error.HTTPError as error:
        try:
            report = json.loads(error.read())
        except ValueError:
            return f"health answered {error.code}"
    except Exception as exc:
        return str(exc)
    failing = [
        f"{name}: {check.get('detail') or check.get('error') or check}"
        if isinstance(check, dict)
        else f"{name}: {check}"
        for name, check in (report.get("checks") or {}).items()
        if not (isinstance(check, dict) and check.get("ok", check.get("status") == "ok"))
    ]
    return "; ".join(failing) or json.dumps(report)[:500]


def _recorded_pid(name: str) -> int | None:
    return recorded_pid(get_settings().data_dir / "run" / f"{name}.pid", name)


def _preflight(settings) -> str | None:
    """What would make `up` fail, found before anything is started: one line, or None."""
    if problems := route_problems(settings.pipeline_steps):
        return f"PIPELINE_STEPS: {problems[0]} (change PIPELINE_STEPS and run `up` again)"
    try:
        check_ports_free([(settings.host_port, "DARKROOM_HOST_PORT")])
    except LocalStackError as exc:
        return str(exc)
    return None


def _with_page_key(settings):
    """The settings `up` gives the host: with no key configured at all, the laptop's own admin
    key (local.host.api_keys) goes into its DARKROOM_ADMIN_KEYS."""
    current = {name: os.environ.get(name, "") for name in KEY_SETTINGS}
    wanted = with_page_key(current, settings.data_dir, create=True)
    if wanted != current:
        os.environ.update(wanted)
        get_settings.cache_clear()
    return get_settings()


def _page_line(settings, pid: int | None = None, wait: float = 0) -> str | None:
    """The running host's page line (URL and key), from what that host recorded."""
    deadline = time.monotonic() + wait
    while True:
        access = running_access(settings.data_dir)
        if access and (pid is None or access.pid == pid):
            return access.describe()
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the emulators and the host. A failed start stops what it started and says, in one
    line, what to change: a half-started stack holds ports and hides the real problem."""
    settings = _with_page_key(get_settings())
    if (pid := _recorded_pid("host")) and _host_health(settings.host_port) == 200:
        err(f"already up: host on http://127.0.0.1:{settings.host_port} (stop with `down`)")
        if line := _page_line(settings, pid):
            err(line)
        return 0
    stop_recorded(settings, err)  # leftovers of a stack that died half-way (ours only)
    if problem := _preflight(settings):
        err(f"cannot start the local stack: {problem}")
        return 1
    try:
        emulators = start_emulators(settings, salvage_journal=args.salvage_journal)
    except LocalStackError as exc:
        err(f"cannot start the local stack: {exc}")
        return 1
    for emulator in emulators:
        for note in emulator.notes:
            err(note)

    def stop_emulators() -> None:
        for emulator in reversed(emulators):
            emulator.stop()

    try:
        ensure_resources(clients())
    except Exception as exc:
        stop_emulators()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        err(f"cannot start the local stack: creating queues/containers failed: {first[:300]}")
        return 1
    err(f"emulators up (data in {settings.data_dir})")
    if args.detach:
        log = settings.data_dir / "logs" / "host.log"
        with open(log, "ab") as out:
            host = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "host"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=PROJECT_ROOT,
            )
        write_pid_file(settings.data_dir / "run" / "host.pid", host.pid)
        deadline = time.monotonic() + 120
        while (health := _host_health(settings.host_port)) != 200:
            failed = host.poll() is not None or time.monotonic() > deadline
            if health is not None or failed:
                reason = _health_problems(settings.host_port) if health else f"see {log}"
                err(f"cannot start the local stack: the host is not healthy: {reason}")
                stop_recorded(settings)
                return 1
            time.sleep(0.2)
        err(
            f"host up on http://127.0.0.1:{settings.host_port} (log: {log}); stop with "
            "`python -m pipeline down`"
        )
        if line := _page_line(settings, host.pid, wait=10):
            err(line)
        return 0
    err(access_for(settings).describe())
    try:
        return _run_host_foreground()
    finally:
        stop_emulators()
        err("local stack stopped")


def _run_host_foreground() -> int:
    from local.host.host import LocalHost, configure_logging

    level = get_settings().log_level
    configure_logging(level)
    host = LocalHost(level)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: host.stop.set())
    host.run()
    return 0


def cmd_host(args: argparse.Namespace) -> int:
    return _run_host_foreground()


def cmd_down(args: argparse.Namespace) -> int:
    stopped = stop_recorded(get_settings(), err)
    err("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0
