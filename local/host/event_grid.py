"""Stand-in for Event Grid: watch the upload container, post BlobCreated events to the webhook.

Azurite raises no events, so new blobs are found by listing. An event counts as delivered only
when the webhook answered 2xx (as Event Grid does), and the delivered (name, etag) pairs are kept
on disk, so a restart neither loses an upload nor announces it twice.

One blob must not stop the others. Azure's listing encodes a name that XML cannot carry
(`<Name Encoded="true">`, which the SDK decodes); Azurite (3.35) does not, and answers the whole
listing — every page that would hold the name, and any marker or prefix containing such a
character — with 500. Measured before this change: one upload named `ctrl\\x01\\x1b[31mred.jpg`
stopped all ingestion. So the listing is paged; a page that fails is asked again smaller, down
to one blob, and a one-blob page that fails is stepped over with a marker Azurite can echo:
`_skip_marker` finds the smallest XML-safe marker past the unlistable run by binary search on
one-blob listings (about 22 listings per character of the name's XML-safe part: 107 listings,
0.6 s, for `ctrl\\x01...`), then trusted for `SKIP_REFRESH_SECONDS` at two listings a poll.
Every blob inside the skipped range has a character XML cannot carry, so no listable upload is
ever skipped. The unlistable names themselves are read from Azurite's own metadata file when it
lives in this stack's data folder, announced like any upload (ingest
records the image `rejected`), and logged with the name escaped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from pipeline.framework.contract import utc_now

log = logging.getLogger("darkroom.host.eventgrid")
PAGE_SIZE = 5000  # Azure's maximum per listing page
EVENTS_PER_POST = 100  # like a subscription's maxEventsPerBatch
SKIP_REFRESH_SECONDS = 30.0  # how long a found skip is trusted before it is searched again
_SAFE_SUFFIX = "\ufffd" * 4  # the largest XML-safe character, in Azurite's (UTF-16) order


# What Azure names in a BlobCreated event's `data.api` and `data.blobType` (Event Grid's Blob
# Storage event schema: BlobCreated follows PutBlob, PutBlockList and CopyBlob). A listing
# cannot tell Put Blob from Put Block List; it can tell a copy, by the x-ms-copy-* properties
# Copy Blob leaves on its destination.


def created_by(blob) -> str:
    """The `data.api` Azure would send for the operation that made this blob version."""
    copy = getattr(blob, "copy", None)
    if copy is not None and (copy.id or copy.source or copy.status):
        return "CopyBlob"
    return "PutBlob"


def blob_created_event(
    account: str,
    container: str,
    name: str,
    url: str,
    etag: str,
    content_type: str | None,
    size: int,
    api: str = "PutBlob",
    blob_type: str = "BlockBlob",
) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "topic": f"/subscriptions/local/resourceGroups/local/providers/"
        f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": utc_now(),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {
            "api": api,
            "eTag": etag.strip('"'),
            "contentType": content_type or "application/octet-stream",
            "contentLength": size,
            "blobType": blob_type,
            "url": url,
            "sequencer": "0",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
    }


# -- XML-safe strings, in the order Azurite compares names (JavaScript: UTF-16 code units) ---
# XML 1.0 carries \t \n \r, U+0020..U+D7FF, U+E000..U+FFFD and U+10000..U+10FFFF. In UTF-16 order
# the astral characters (surrogate pairs, 0xD800…) sort between U+D7FF and U+E000.
_SAFE_RANGES = ((0x09, 0x0A), (0x0D, 0x0D), (0x20, 0xD7FF), (0x10000, 0x10FFFF), (0xE000, 0xFFFD))
_SAFE_COUNT = sum(hi - lo + 1 for lo, hi in _SAFE_RANGES)


def _safe_char(rank: int) -> str:
    """The `rank`-th XML-safe character in UTF-16 order."""
    for lo, hi in _SAFE_RANGES:
        if rank <= hi - lo:
            return chr(lo + rank)
        rank -= hi - lo + 1
    raise IndexError(rank)


def _etag(etag: str) -> str:
    """Listings give etags bare, property reads in quotes: compare them bare."""
    return etag.strip('"')


def xml_safe(text: str) -> bool:
    return all(any(lo <= ord(ch) <= hi for lo, hi in _SAFE_RANGES) for ch in text)


# A listing costs time in proportion to the container (measured on Azurite: 35 ms for 20 blobs,
# 0.63 s and a quarter of a core on this side for 1,000), and there is no "changed since" to
# list. Polling every 0.5 s regardless made the stand-in alone use more than a core once a
# thousand uploads had accumulated, starving the pipeline it feeds. So the pause after a poll
# is at least LISTING_DUTY_FACTOR times what the poll took: the stand-in uses at most ~1/10 of
# the time, and a new upload is announced within ~10 listing-times (6 s at 1,000 blobs).
LISTING_DUTY_FACTOR = 9.0


def next_poll_in(interval: float, poll_seconds: float) -> float:
    """Seconds to wait before the next listing."""
    return max(interval, LISTING_DUTY_FACTOR * poll_seconds)


def utf16_key(text: str) -> bytes:
    """Sort key matching Azurite's string comparison."""
    return text.encode("utf-16-be", "surrogatepass")


class BlobEventSource(threading.Thread):
    def __init__(
        self,
        container: ContainerClient,
        webhook: str,
        state_file: Path,
        stop: threading.Event,
        interval: float = 0.5,
        azurite_db: Path | None = None,
    ) -> None:
        super().__init__(name=f"eventgrid-{container.container_name}", daemon=True)
        self.container, self.webhook, self.state_file = container, webhook, state_file
        self.stop, self.interval = stop, interval
        self.azurite_db = azurite_db
        self.delivered: dict[str, str] = (
            json.loads(state_file.read_text()) if state_file.exists() else {}
        )
        self._skips: dict[str, tuple[str, float]] = {}  # failing marker → (skip marker, found)
        self._reported: set[str] = set()  # unlistable names already logged
        self._reported_ranges: set[tuple[str, str]] = set()
        self._pending_unlistable: set[str] = set()
        self._db_cache: tuple[float, set[str]] | None = None

    def run(self) -> None:
        wait = self.interval
        while not self.stop.wait(wait):
            started = time.perf_counter()
            try:
                self.poll_once()
            except Exception as exc:  # emulator restarting, host busy: try on the next tick
                log.warning("event source for %s: %s", self.container.container_name, exc)
            wait = next_poll_in(self.interval, time.perf_counter() - started)

    # -- listing --------------------------------------------------------------------------
    def _page(self, marker: str | None, size: int) -> tuple[list, str | None]:
        pages = self.container.list_blobs(
            include=["copy"], results_per_page=size, retry_total=0
        ).by_page(continuation_token=marker or None)
        try:
            page = list(next(pages))
        except StopIteration:
            return [], None
        return page, pages.continuation_token

    def _fails(self, marker: str) -> bool:
        """Does the first blob after `marker` break Azurite's listing?"""
        try:
            self._page(marker, 1)
        except HttpResponseError as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                return True
            raise
        return False

    def _skip_marker(self, marker: str) -> str | None:
        """The smallest XML-safe string X ≥ `marker` after which the listing works again, or
        None if the failure was not a name (it went away). Built one character at a time: the
        next character is the smallest c for which the listing after X + c + the largest
        safe suffix works."""
        if not self._fails(marker):
            return None
        found = ""
        for _ in range(1024):  # a blob name has at most 1024 characters
            lo, hi = 0, _SAFE_COUNT - 1
            while lo < hi:
                mid = (lo + hi) // 2
                probe = found + _safe_char(mid) + _SAFE_SUFFIX
                if utf16_key(probe) < utf16_key(marker) or self._fails(probe):
                    lo = mid + 1
                else:
                    hi = mid
            found += _safe_char(lo)
            if utf16_key(found) >= utf16_key(marker) and not self._fails(found):
                return found
        return None

    def _listing(self) -> Iterator:
        """Every listable blob, in pages, stepping over ranges Azurite cannot list. A page that
        fails is asked again smaller (÷4), down to one blob; a one-blob page that fails starts
        an unlistable range, stepped over with `_skip_marker`."""
        marker: str | None = None
        size = PAGE_SIZE
        while not self.stop.is_set():
            try:
                page, next_marker = self._page(marker, size)
            except HttpResponseError as exc:
                if exc.status_code is None or exc.status_code < 500:
                    raise
                if size > 1:
                    size = max(1, size // 4)
                    continue
                skip = self._skip_for(marker or "")
                if skip is None:
                    raise
                self._report_unlistable(marker or "", skip)
                exact = self.container.get_blob_client(skip)
                try:  # a marker is exclusive: a blob named exactly like the skip is listed here
                    props = exact.get_blob_properties()
                    props.name = skip
                    yield props
                except ResourceNotFoundError:
                    pass
                marker, size = skip, PAGE_SIZE
                continue
            yield from page
            if not next_marker:
                return
            marker, size = next_marker, min(PAGE_SIZE, size * 4)

    def _skip_for(self, marker: str) -> str | None:
        cached = self._skips.get(marker)
        if (
            cached
            and time.monotonic() - cached[1] < SKIP_REFRESH_SECONDS
            and self._fails(marker)
            and not self._fails(cached[0])
        ):
            return cached[0]
        skip = self._skip_marker(marker)
        if skip is not None:
            self._skips[marker] = (skip, time.monotonic())
        return skip

    # -- unlistable blobs -----------------------------------------------------------------
    def _unlistable_names(self, after: str, until: str) -> list[str]:
        """Names in (after, until) read from Azurite's own metadata file, if this stack's."""
        if self.azurite_db is None or not self.azurite_db.exists():
            return []
        try:
            mtime = self.azurite_db.stat().st_mtime
            if self._db_cache and self._db_cache[0] == mtime:
                names = self._db_cache[1]
            else:
                db = json.loads(self.azurite_db.read_text())
                blobs = next(c for c in db["collections"] if c["name"] == "$BLOBS_COLLECTION$")
                names = {
                    b["name"]
                    for b in blobs["data"]
                    if b.get("containerName") == self.container.container_name
                    and not b.get("snapshot")
                    and not xml_safe(b["name"])
                }
                self._db_cache = (mtime, names)
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            return []  # a file written meanwhile, or another version's format: name unknown
        low, high = utf16_key(after), utf16_key(until)
        return sorted(n for n in names if low < utf16_key(n) < high)

    def _report_unlistable(self, after: str, until: str) -> None:
        """Queue the range's names for announcement (every poll, until delivered); log each
        name once, escaped (repr): a raw name could forge log lines or colour a terminal."""
        names = self._unlistable_names(after, until)
        if not names and (after, until) not in self._reported_ranges:
            self._reported_ranges.add((after, until))
            log.warning(
                "%s: a blob after %r has a name Azurite cannot list (characters XML cannot "
                "carry); the listing steps over it to %r; its name is not known yet",
                self.container.container_name,
                after,
                until,
            )
        for name in names:
            if name not in self._reported:
                self._reported.add(name)
                log.warning(
                    "%s: blob %r has a name Azurite cannot list (characters XML cannot carry); "
                    "the listing steps over it and it is announced on its own",
                    self.container.container_name,
                    name,
                )
            self._pending_unlistable.add(name)

    # -- events ---------------------------------------------------------------------------
    def poll_once(self) -> int:
        self._pending_unlistable = set()
        try:
            blobs = list(self._listing())
        except ResourceNotFoundError:
            return 0
        except HttpResponseError as exc:
            if exc.error_code == "ContainerNotFound":
                return 0
            raise
        for name in sorted(self._pending_unlistable):
            try:
                props = self.container.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                continue  # deleted since Azurite last saved its metadata
            props.name = name
            blobs.append(props)
        fresh = [b for b in blobs if self.delivered.get(b.name) != _etag(b.etag)]
        sent = 0
        try:
            for start in range(0, len(fresh), EVENTS_PER_POST):
                if self.stop.is_set():
                    break
                batch = fresh[start : start + EVENTS_PER_POST]
                self._post([self._event(blob) for blob in batch])
                for blob in batch:
                    self.delivered[blob.name] = _etag(blob.etag)
                sent += len(batch)
        finally:
            if sent:
                self._save()
        return sent

    def _event(self, blob) -> dict:
        return blob_created_event(
            self.container.account_name,
            self.container.container_name,
            blob.name,
            self.container.get_blob_client(blob.name).url,
            blob.etag,
            blob.content_settings.content_type,
            blob.size,
            created_by(blob),
            getattr(blob.blob_type, "value", blob.blob_type),
        )

    def _post(self, events: list[dict]) -> None:
        request = urllib.request.Request(
            self.webhook,
            data=json.dumps(events).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.delivered))
        tmp.replace(self.state_file)
