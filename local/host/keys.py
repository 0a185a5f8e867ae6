"""The local host's system keys, kept like the real host's: generated once, stored, required.

Azure's host refuses `/runtime/webhooks/*` calls without the extension's system key (`code=` or
`x-functions-key`), so a subscription must carry `...&code=<blobs_extension key>`. The local
host does the same: without a key, anything that can reach the port — another user on the
machine, a web page the developer has open, a forgotten script — could announce blobs. The key
is generated per local stack (per data folder), kept in `<data_dir>/host/keys.json` with mode
0600, and read by the host's own event source and by tests; it survives restarts, as a deployed
app's keys do.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("darkroom.host.keys")
BLOBS_EXTENSION = "blobs_extension"
SYSTEM_KEYS = (BLOBS_EXTENSION,)


def keys_file(data_dir: Path) -> Path:
    return data_dir / "host" / "keys.json"


def _new_keys() -> dict:
    # 32 random bytes, URL-safe: the key travels in a query string.
    return {"systemKeys": {name: secrets.token_urlsafe(32) for name in SYSTEM_KEYS}}


def _valid(keys: object) -> bool:
    system = keys.get("systemKeys") if isinstance(keys, dict) else None
    return isinstance(system, dict) and all(
        isinstance(system.get(name), str) and len(system[name]) >= 16 for name in SYSTEM_KEYS
    )


def _write_new(path: Path, keys: dict, replace: bool) -> None:
    """Write `keys` readable by the owner only. Without `replace`, an existing file wins: two
    hosts sharing a data folder (tests do) that start together must end with the same key."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(keys, out)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            tmp.replace(path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic "create if absent", unlike rename
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create(data_dir: Path) -> dict:
    """The stack's keys, created on first use; a damaged file is replaced (with a warning):
    the only subscriber that must know the key is the host's own event source."""
    path = keys_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _write_new(path, _new_keys(), replace=False)
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError):
        keys = None
    if not _valid(keys):
        log.warning("%s is not a valid key file; generating new keys", path)
        _write_new(path, _new_keys(), replace=True)
        keys = json.loads(path.read_text())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); restricting it to 0600", path, mode)
        path.chmod(0o600)
    return keys


def system_key(data_dir: Path, name: str = BLOBS_EXTENSION) -> str:
    return load_or_create(data_dir)["systemKeys"][name]


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the key cannot be guessed from response times."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
