"""The local stack's API keys as the running host sees them: the page's own key, keys added while
it runs, and what `up`/`status` tell a person about them.

On Azure, changing an app setting restarts the app, so a key added with `keys add` (then
`azd env set … && azd provision`) works once the app restarted. The local host does the same
without a restart: it watches the local settings file (`DARKROOM_SETTINGS_FILE`) and takes new
`DARKROOM_API_KEYS` / `DARKROOM_ADMIN_KEYS` entries from it within a second. Only those two
settings: the rest (ports, containers, the route) would need new queue listeners and workers, and
is read at start, as Azure reads it at a restart. A key setting the host's own environment set
wins over the file, as it does at start.

Cheap: one `stat` a second, and the settings are re-read only when the file changed. Safe: the
new entries are checked first (a typo keeps the keys in use, with a warning naming the setting),
the switch is one cache swap (`get_settings`), and requests in flight keep the settings they
started with.

`access.json` in `<data dir>/host/` records what the running host accepts — its page URL, the
page key's file when that key is in use, and the names (never the keys) of the other keys — so
`up` and `status` print what is true of the running stack, not of the shell that asks.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from local.atomic import publish_file, temporary_file
from pipeline.api.auth import key_digest
from pipeline.settings import Settings, SettingsError, get_settings, read_local_settings

log = logging.getLogger("darkroom.host.api_keys")
API_KEYS, ADMIN_KEYS = "DARKROOM_API_KEYS", "DARKROOM_ADMIN_KEYS"
KEY_SETTINGS = (API_KEYS, ADMIN_KEYS)
PAGE_KEY_NAME = "local"


def page_key_file(data_dir: Path) -> Path:
    return data_dir / "host" / "page.key"


def page_key(data_dir: Path, create: bool = False) -> str | None:
    """The laptop's own admin key for the page (0600 in the data folder), made on first use."""
    path = page_key_file(data_dir)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write("drk_" + secrets.token_urlsafe(32))
    return path.read_text().strip() if path.exists() else None


def page_key_entry(data_dir: Path, create: bool = False) -> str | None:
    """The page key as a `DARKROOM_ADMIN_KEYS` entry."""
    key = page_key(data_dir, create)
    return f"{PAGE_KEY_NAME}:{key_digest(key)}" if key else None


def with_page_key(values: dict[str, str], data_dir: Path, create: bool = False) -> dict[str, str]:
    """The key settings as the host runs with them: with no key configured at all, the page
    key is the one admin key, so `make run` ends with a page that works. Configure any key and
    it is not used."""
    if any(values.get(name, "").strip() for name in KEY_SETTINGS):
        return values
    entry = page_key_entry(data_dir, create)
    return {**values, ADMIN_KEYS: entry} if entry else values


@dataclass(frozen=True)
class Access:
    """How a person reaches the running host's page, as `access.json` records it."""

    url: str
    page_key_file: str | None  # set while the page key is the host's admin key
    admin_keys: list[str]  # names only
    api_keys: list[str]
    pid: int

    def describe(self) -> str:
        """One line: the page's URL and which key opens it."""
        if self.page_key_file:
            key = page_key(Path(self.page_key_file).parent.parent)
            return f"web page: {self.url}  key: {key}  (kept in {self.page_key_file})"
        if self.admin_keys:
            which = f"an admin key of DARKROOM_ADMIN_KEYS ({', '.join(self.admin_keys)})"
        elif self.api_keys:
            which = (
                f"a key of DARKROOM_API_KEYS ({', '.join(self.api_keys)}); the operations view "
                "needs an admin key: `python -m pipeline keys add NAME --admin`"
            )
        else:
            which = "none accepted: only Entra ID sign-in is configured"
        return f"web page: {self.url}  key: {which}"


def access_file(data_dir: Path) -> Path:
    return data_dir / "host" / "access.json"


def access_for(settings: Settings) -> Access:
    """What a host with these settings accepts."""
    entry = page_key_entry(settings.data_dir)
    digest = entry.split(":", 1)[1] if entry else None
    page = digest is not None and settings.api.admin_keys.get(digest) == PAGE_KEY_NAME
    return Access(
        url=f"http://127.0.0.1:{settings.host_port}/",
        page_key_file=str(page_key_file(settings.data_dir)) if page else None,
        admin_keys=[
            n for n in settings.api.admin_keys.values() if not (page and n == PAGE_KEY_NAME)
        ],
        api_keys=list(settings.api.api_keys.values()),
        pid=os.getpid(),
    )


def record_access(settings: Settings) -> Access:
    """Write what the host in this process accepts (called at start and after each reload)."""
    access = access_for(settings)
    path = access_file(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_file(path.parent, ".json") as tmp:
        tmp.write_text(json.dumps(asdict(access), indent=2))
        publish_file(tmp, path)
    return access


def running_access(data_dir: Path) -> Access | None:
    """What the running host recorded, or None when no host that wrote it is alive."""
    try:
        access = Access(**json.loads(access_file(data_dir).read_text()))
        os.kill(access.pid, 0)
    except (OSError, ValueError, TypeError):
        return None
    return access


class KeyWatcher:
    """Takes changed key entries from the local settings file into the running host."""

    def __init__(self, settings: Settings) -> None:
        self.file = settings.settings_file
        self.data_dir = settings.data_dir
        self._seen = self._stamp()
        self._unreadable: tuple[int, int] | None = None
        from_file = self._file_values() or {}
        page = page_key_entry(self.data_dir)
        # Set by the environment (not by the file, not the page key): stays, as at start.
        self.pinned = {
            name: os.environ[name]
            for name in KEY_SETTINGS
            if name in os.environ and os.environ[name] not in (from_file.get(name), page)
        }

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.file.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _file_values(self) -> dict[str, str] | None:
        """The file's values, or None while it cannot be read (an editor half-way through
        saving it): then nothing changes, and the next look tries again."""
        try:
            return read_local_settings(self.file)
        except (OSError, ValueError) as exc:
            if self._stamp() != self._unreadable:  # once per version of the file
                self._unreadable = self._stamp()
                log.warning("cannot read %s (%s); the keys in use stay", self.file, exc)
            return None

    def poll(self) -> bool:
        """Re-read the keys if the file changed since the last look; True if they changed."""
        stamp = self._stamp()
        if stamp == self._seen or stamp is None:  # unchanged, or gone: the keys in use stay
            return False
        values = self._file_values()
        if values is None:
            return False
        self._seen = stamp
        wanted = with_page_key(
            {name: self.pinned.get(name, values.get(name, "")) for name in KEY_SETTINGS},
            self.data_dir,
        )
        before = {name: os.environ.get(name) for name in KEY_SETTINGS}
        if all(before[name] == wanted.get(name, "") for name in KEY_SETTINGS):
            return False
        os.environ.update({name: wanted.get(name, "") for name in KEY_SETTINGS})
        try:
            Settings.from_env()
        except SettingsError as exc:
            mine = [p for p in exc.problems if p.startswith(KEY_SETTINGS) or "key names" in p]
            if mine:
                for name, value in before.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                log.warning("keys in %s not taken, the old ones stay: %s", self.file, mine[0])
                return False
        get_settings.cache_clear()
        settings = get_settings()
        record_access(settings)
        log.info(
            "API keys re-read from %s: %d API key(s), %d admin key(s)",
            self.file,
            len(settings.api.api_keys),
            len(settings.api.admin_keys),
        )
        return True
