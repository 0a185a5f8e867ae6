"""Safety of the local stack (review issue 9): a damaged Cosmos journal is never compacted over,
the Cosmos emulator checks master-key signatures, `down` signals only our own processes, a
failed `up` leaves nothing running and says what to change, Azurite sends no telemetry, and
`status` says at once when the stack is down.

Everything runs for real: Azurite, the Cosmos emulator (through the `azure-cosmos` SDK or raw
HTTPS over loopback), the CLI as a subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from pathlib import Path

import pytest
from azure.cosmos import CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from local.emulators import JournalDamaged, local_ports, start_emulators
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stores.connections import parse_connection_string
from tests.harness import COSMOS_KEY, emulator_env, free_port, running_emulators

DOCS = 40


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **emulator_env(tmp_path / "data"),
        "DARKROOM_HOST_PORT": str(free_port()),
        "DARKROOM_HOST_WORKERS": "1",
        "PIPELINE_STEPS": "prepare,store",
    }


def _cosmos_url(env: dict[str, str]) -> str:
    return parse_connection_string(env["DARKROOM_COSMOS"])["AccountEndpoint"].rstrip("/")


def _container(env: dict[str, str], key: str = COSMOS_KEY):
    client = CosmosClient(_cosmos_url(env), credential=key, connection_verify=False)
    db = client.create_database_if_not_exists("safety")
    return db.create_container_if_not_exists("docs", partition_key=PartitionKey(path="/id"))


def _fill(env: dict[str, str], n: int = DOCS) -> None:
    container = _container(env)
    for i in range(n):
        container.upsert_item({"id": f"doc-{i:03d}", "name": f"photo {i}", "n": i})


def _doc_ids(env: dict[str, str]) -> list[str]:
    return sorted(
        d["id"]
        for d in _container(env).query_items(
            "SELECT c.id FROM c", enable_cross_partition_query=True
        )
    )


def _journal(env: dict[str, str]) -> Path:
    return Path(env["DARKROOM_DATA_DIR"]) / "cosmos" / "journal.jsonl"


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _ports_open(env: dict[str, str]) -> list[int]:
    ports = local_ports(Settings.from_env(env))
    with_host = [ports.blob, ports.queue, ports.table, ports.cosmos, int(env["DARKROOM_HOST_PORT"])]
    open_ = []
    for port in with_host:
        with socket.socket() as sock:
            sock.settimeout(0.3)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                open_.append(port)
    return open_


@contextmanager
def _listening(port: int) -> Iterator[socket.socket]:
    """Something that is not ours holds `port`."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


# ------------------------------------------------------------------ 1. journal damage


def _filled_and_stopped(tmp_path: Path) -> dict[str, str]:
    """A stack that wrote DOCS documents, restarted once (so the journal is compacted), and
    stopped."""
    env = _env(tmp_path)
    with running_emulators(env):
        _fill(env)
    with running_emulators(env):
        assert len(_doc_ids(env)) == DOCS
    return env


def _flip_byte(path: Path, line: int, needle: bytes) -> None:
    """Change the case of the byte after `needle` on `line` (1-based): one byte, in place."""
    data = bytearray(path.read_bytes())
    start = sum(len(text) + 1 for text in data.split(b"\n")[: line - 1])
    at = data.index(needle, start) + len(needle)
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def _expect_damaged(env: dict[str, str]) -> JournalDamaged:
    """Start the emulators expecting JournalDamaged; whatever did start is stopped again."""
    try:
        emulators = start_emulators(Settings.from_env(env))
    except JournalDamaged as damage:
        return damage
    for emulator in reversed(emulators):
        emulator.stop()
    raise AssertionError("the emulators started on top of a damaged journal")


def test_one_changed_byte_in_line_1_refuses_to_start_and_up_says_how_to_recover(tmp_path):
    env = _filled_and_stopped(tmp_path)
    journal = _journal(env)
    _flip_byte(journal, 1, b'"')  # one byte of line 1, the compacted journal's first line
    damaged = journal.read_bytes()

    result = _cli(env, "up", "--detach")
    if result.returncode == 0:
        _cli(env, "down")

    assert result.returncode == 1, result.stderr
    assert "emulators up" not in result.stderr
    assert "Traceback" not in result.stderr
    out = result.stderr
    assert f"journal {journal} is damaged: line 1" in out
    assert "python -m pipeline up --salvage-journal" in out
    assert "journal.jsonl.previous" in out  # the restore option names a good copy
    assert _ports_open(env) == []  # nothing started on top of it, nothing left running
    assert journal.read_bytes() == damaged  # never compacted over
    copies = list(journal.parent.glob("journal.jsonl.damaged-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == damaged
    assert str(copies[0]) in out

    # Line 1 is the journal's header, not data: accepting the loss keeps all 40 documents.
    with running_emulators_salvaging(env) as notes:
        assert len(_doc_ids(env)) == DOCS
        assert any("salvaged" in note for note in notes)
    assert copies[0].read_bytes() == damaged  # the damaged journal is still kept aside


def test_a_changed_byte_inside_a_document_that_still_parses_is_detected(tmp_path):
    env = _filled_and_stopped(tmp_path)
    journal = _journal(env)
    line = next(
        i for i, text in enumerate(journal.read_text().splitlines(), 1) if '"id":"doc-007"' in text
    )
    _flip_byte(journal, line, b'"name":"')  # "photo 7" -> "Photo 7": still valid JSON
    json.loads(journal.read_text().splitlines()[line - 1].split("\t", 1)[1])

    damage = _expect_damaged(env)
    assert damage.report["line"] == line
    assert "checksum" in damage.report["reason"]
    assert _ports_open(env) == []

    # Accepting the loss: exactly the damaged document is gone, the other 39 are kept.
    with running_emulators_salvaging(env) as notes:
        assert _doc_ids(env) == [f"doc-{i:03d}" for i in range(DOCS) if i != 7]
        assert any("salvaged" in note for note in notes)
    with running_emulators(env):  # and the next start is clean again
        assert len(_doc_ids(env)) == DOCS - 1


@contextmanager
def running_emulators_salvaging(env: dict[str, str]) -> Iterator[list[str]]:
    emulators = start_emulators(Settings.from_env(env), salvage_journal=True)
    try:
        yield [note for emulator in emulators for note in emulator.notes]
    finally:
        for emulator in reversed(emulators):
            emulator.stop()


def test_a_journal_cut_to_half_is_detected(tmp_path):
    env = _filled_and_stopped(tmp_path)
    journal = _journal(env)
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) // 2])  # also ends in a torn line, like a crash would

    damage = _expect_damaged(env)
    assert "cut short" in damage.report["reason"]
    assert journal.read_bytes() == data[: len(data) // 2]


def test_a_torn_last_line_from_a_crash_mid_append_is_tolerated_silently(tmp_path):
    env = _env(tmp_path)
    with running_emulators(env):
        _fill(env)
    journal = _journal(env)
    complete = journal.read_text().splitlines(keepends=True)
    torn = complete[-1][: len(complete[-1]) // 2]  # the last append, half written, no newline
    journal.write_text("".join(complete[:-1]) + torn)

    result = _cli(env, "up", "--detach")
    try:
        assert result.returncode == 0, result.stderr
        assert "journal" not in result.stderr  # silent: nothing for the operator to do
        assert len(_doc_ids(env)) == DOCS - 1  # the torn write was never acknowledged
        assert not list(journal.parent.glob("journal.jsonl.damaged-*"))
    finally:
        _cli(env, "down")


# ------------------------------------------------------------------ 2. authentication


def _https(url: str, method: str = "GET", body: bytes | None = None, headers=None):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _signature(key: str, verb: str, kind: str, link: str, date: str) -> str:
    text = f"{verb.lower()}\n{kind.lower()}\n{link}\n{date.lower()}\n\n"
    digest = hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256).digest()
    return urllib.request.quote(f"type=master&ver=1.0&sig={base64.b64encode(digest).decode()}")


def test_the_cosmos_emulator_answers_401_without_a_valid_master_key_signature(emulators):
    env = emulators
    container = _container(env)  # the real SDK signs with the DARKROOM_COSMOS key: accepted
    container.upsert_item({"id": "secret", "owner": "darkroom"})
    docs = f"{_cosmos_url(env)}/dbs/safety/colls/docs/docs"

    assert _https(docs)[0] == 401  # list every document, unauthenticated
    forged = json.dumps({"id": "forged"}).encode()
    headers = {"content-type": "application/json", "x-ms-documentdb-partitionkey": '["forged"]'}
    status, body = _https(docs, "POST", forged, headers)
    assert status == 401 and body["code"] == "Unauthorized"

    date = formatdate(usegmt=True)
    wrong_key = base64.b64encode(b"not the key" * 6).decode()
    signed_wrong = {
        "x-ms-date": date,
        "authorization": _signature(wrong_key, "post", "docs", "dbs/safety/colls/docs", date),
    }
    assert _https(docs, "POST", forged, {**headers, **signed_wrong})[0] == 401

    # A signature over another resource does not open this one.
    other = {
        "x-ms-date": date,
        "authorization": _signature(COSMOS_KEY, "get", "docs", "dbs/other/colls/x", date),
    }
    assert _https(docs, "GET", None, other)[0] == 401

    # The right signature, computed as the REST docs say, is accepted (raw HTTP, no SDK).
    good = {
        "x-ms-date": date,
        "authorization": _signature(COSMOS_KEY, "get", "docs", "dbs/safety/colls/docs", date),
    }
    status, body = _https(docs, "GET", None, good)
    assert status == 200 and "secret" in {d["id"] for d in body["Documents"]}

    # A captured request replayed later is refused, like the real service (403 after 15 min).
    old = formatdate(time.time() - 3600, usegmt=True)
    stale = {
        "x-ms-date": old,
        "authorization": _signature(COSMOS_KEY, "get", "docs", "dbs/safety/colls/docs", old),
    }
    assert _https(docs, "GET", None, stale)[0] == 403

    with pytest.raises(CosmosHttpResponseError) as refused:
        _container(env, key=wrong_key).read_item("secret", partition_key="secret")
    assert refused.value.status_code == 401
    assert "forged" not in _doc_ids(env)  # nothing forged was stored


# ------------------------------------------------------------------ 3. pid files


def test_down_never_signals_a_process_that_is_not_ours(tmp_path):
    env = _env(tmp_path)
    run = Path(env["DARKROOM_DATA_DIR"]) / "run"
    run.mkdir(parents=True)
    bystanders = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
    try:
        # A pid file of the old format (pid only) and two of the new one with a start time
        # that is not the process's: the pids were reused by an unrelated program.
        (run / "cosmos.pid").write_text(str(bystanders[0].pid))
        (run / "azurite.pid").write_text(f"{bystanders[1].pid} 12345\n")
        (run / "host.pid").write_text(f"{bystanders[2].pid} 1\n")

        result = _cli(env, "down")

        assert result.returncode == 0, result.stderr
        time.sleep(0.5)
        assert [p.poll() for p in bystanders] == [None, None, None]  # all still running
        assert "nothing was running" in result.stderr
        assert f"names pid {bystanders[0].pid}, which is not our cosmos" in result.stderr
        assert not list(run.glob("*.pid"))  # stale pid files are cleared
    finally:
        for process in bystanders:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ 4. failed starts


def test_up_with_a_bad_route_starts_nothing_and_names_the_setting(tmp_path):
    env = {**_env(tmp_path), "PIPELINE_STEPS": "prepare,nosuch,store"}
    started = time.monotonic()
    result = _cli(env, "up", "--detach")
    took = time.monotonic() - started
    if result.returncode == 0:
        _cli(env, "down")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PIPELINE_STEPS" in lines[0] and "nosuch" in lines[0], lines
    assert took < 30, took  # was: 2 min waiting for a host that could never be healthy
    assert _ports_open(env) == []


@pytest.mark.parametrize("which", ["cosmos", "table", "host"])
def test_a_port_clash_names_the_setting_and_leaves_nothing_running(tmp_path, which):
    env = _env(tmp_path)
    ports = local_ports(Settings.from_env(env))
    port, setting = {
        "cosmos": (ports.cosmos, "DARKROOM_COSMOS"),
        "table": (ports.table, "DARKROOM_STORAGE"),
        "host": (int(env["DARKROOM_HOST_PORT"]), "DARKROOM_HOST_PORT"),
    }[which]
    with _listening(port):
        result = _cli(env, "up", "--detach")
        if result.returncode == 0:
            _cli(env, "down")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"port {port}" in lines[0] and setting in lines[0], lines
        assert _ports_open(env) == [port]  # only the bystander's own port
    assert not list((Path(env["DARKROOM_DATA_DIR"]) / "run").glob("*.pid"))


# ------------------------------------------------------------------ 5. telemetry


def test_azurite_runs_with_telemetry_disabled(tmp_path):
    env = _env(tmp_path)
    with running_emulators(env) as emulators:
        azurite = next(e for e in emulators if e.name == "azurite")
        argv = Path(f"/proc/{azurite.process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--disableTelemetry" in argv


# ------------------------------------------------------------------ 6. status, stack down


@pytest.mark.parametrize("as_json", [False, True])
def test_status_with_the_stack_down_says_so_at_once(tmp_path, as_json):
    env = _env(tmp_path)  # free ports: nothing listens on any of them
    started = time.monotonic()
    result = _cli(env, "status", *(["--json"] if as_json else []), timeout=30)
    took = time.monotonic() - started

    assert took < 10, took  # was: silent for over a minute while the SDKs retried
    assert result.returncode != 0
    assert "not up" in result.stderr and "python -m pipeline up" in result.stderr
    if as_json:
        assert json.loads(result.stdout)["up"] is False
