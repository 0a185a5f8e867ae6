"""Per-caller limits kept in Table storage, so they hold across every instance of the app.

- requests per minute: a token bucket per caller (`DARKROOM_RATE_PER_MINUTE` refill,
  `DARKROOM_RATE_BURST` capacity); failed sign-ins are bucketed per client address instead, so
  guessing keys is slow too. Addresses are hashed into `SIGN_IN_BUCKETS` rows (IPv6 by /64), so
  no number of addresses can grow the table without bound, and no address is stored;
- images per UTC day (`DARKROOM_IMAGES_PER_DAY`): counted when an upload URL is issued or a
  sync analysis starts; face searches by image per UTC day (`DARKROOM_FACE_SEARCHES_PER_DAY`);
- concurrent sync analyses and face searches by image (`DARKROOM_SYNC_CONCURRENCY`, shared:
  both decode an image in the request): slots with a lease, so a crashed instance's slot frees
  itself after `SLOT_LEASE_SECONDS`.

Every change is a read then a write conditional on the entity's ETag (optimistic concurrency),
retried on conflict: two instances cannot both spend the last token. Over a limit →
`LimitExceeded` with the seconds until the same request can succeed (the API's 429 Retry-After).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableServiceClient

from pipeline.api.settings import ApiSettings
from pipeline.stores.table_entities import Change, Contended, change_entity

SLOT_LEASE_SECONDS = 120  # longer than a sync analysis may take (the body deadline is 30 s)
# Attempts at one change before "too many concurrent requests": measured on Azurite with 50
# threads spending one bucket (tests/test_api_limits.py), the slowest call needed 12-15.
CHANGE_ATTEMPTS = 40
# Rows for failed sign-ins, whatever the number of client addresses: enough that one address
# rarely shares its row with another, few enough that the table stays small. A shared row only
# slows the other address's failed sign-ins; a right key never touches these rows.
SIGN_IN_BUCKETS = 4096


def address_bucket(address: str) -> str:
    """The failed-sign-in row of a client address. An IPv6 client holds a whole /64 (often
    more), so it is bucketed by its /64; anything that is not an address shares one row."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "other"
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        key = str(mapped or ipaddress.ip_network(f"{ip}/64", strict=False))
    else:
        key = str(ip)
    digest = hashlib.sha256(key.encode()).digest()
    return str(int.from_bytes(digest[:4], "big") % SIGN_IN_BUCKETS)


class LimitExceeded(Exception):
    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class Limits:
    def __init__(
        self,
        tables: TableServiceClient,
        api: ApiSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tables = tables
        self._api = api
        self._clock = clock

    def _change(self, pk: str, rk: str, change: Change) -> None:
        """One optimistic change (pipeline.stores.table_entities); `change` raises LimitExceeded
        to refuse. A lost race is retried after a jittered pause, up to CHANGE_ATTEMPTS times:
        a caller's own requests all change one entity, so they contend with each other, and a
        refusal must mean the limit is reached, not that the caller's requests collided. Only
        a caller whose entity others keep changing past that is told to retry."""
        try:
            change_entity(
                self._tables, self._api.limits_table, pk, rk, change, attempts=CHANGE_ATTEMPTS
            )
        except Contended:
            raise LimitExceeded("too many concurrent requests for this caller", 1) from None

    # -- requests per minute -----------------------------------------------------------------
    def take_request(self, key: str, per_minute: int | None = None, burst: int | None = None):
        """Spend one token of `key`'s bucket (a caller id, or `ip-<address>`)."""
        rate = (per_minute or self._api.requests_per_minute) / 60.0
        capacity = float(burst or self._api.request_burst)

        def spend(current: dict | None) -> dict:
            # The time is read for each attempt, and the bucket's clock never goes back: an
            # attempt that lost a race and wrote the time of its FIRST read would rewind `at`,
            # and the next caller would be refilled for the same seconds twice (issue 17: 71-75
            # admitted under 50 threads where 67 tokens existed). Instances' clocks differ a
            # little on Azure too; `max` makes a late clock refill nothing rather than too much.
            now = self._clock()
            if current is None:
                tokens, at = capacity, now
            else:
                last = float(current["at"])
                tokens = min(capacity, float(current["tokens"]) + max(0.0, now - last) * rate)
                at = max(now, last)
            if tokens < 1.0:
                raise LimitExceeded("too many requests", (1.0 - tokens) / rate)
            return {"tokens": tokens - 1.0, "at": at}

        self._change(f"rate-{key}", "bucket", spend)

    def take_failed_sign_in(self, address: str) -> None:
        """Spend one of the client address's failed sign-ins (`address_bucket`)."""
        per_minute = self._api.failed_sign_ins_per_minute
        self.take_request(f"ip-{address_bucket(address)}", per_minute, per_minute)

    # -- per UTC day -------------------------------------------------------------------------
    def count_image(self, caller: str) -> None:
        self._count_today(f"day-{caller}", self._api.images_per_day, "images")

    def count_face_search(self, caller: str) -> None:
        self._count_today(f"search-{caller}", self._api.face_searches_per_day, "face searches")

    def _count_today(self, pk: str, limit: int, what: str) -> None:
        day = datetime.fromtimestamp(self._clock(), UTC)

        def add(current: dict | None) -> dict:
            count = 0 if current is None else int(current["count"])
            if count >= limit:
                midnight = (day + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                raise LimitExceeded(f"over {limit} {what} today", (midnight - day).total_seconds())
            return {"count": count + 1}

        self._change(pk, day.strftime("%Y-%m-%d"), add)

    # -- concurrent sync analyses ------------------------------------------------------------
    @contextmanager
    def sync_slot(self, caller: str) -> Iterator[None]:
        """Hold one of the caller's `DARKROOM_SYNC_CONCURRENCY` slots for the duration (a sync
        analysis or a face search by image)."""
        now = self._clock()
        held: str | None = None
        soonest = math.inf
        for slot in range(self._api.sync_concurrency):
            taken = False

            def claim(current: dict | None, now: float = now) -> dict:
                nonlocal taken, soonest
                until = 0.0 if current is None else float(current["until"])
                if until > now:
                    soonest = min(soonest, until - now)
                    taken = True
                    raise LimitExceeded("slot busy", until - now)
                return {"until": now + SLOT_LEASE_SECONDS}

            try:
                self._change(f"sync-{caller}", str(slot), claim)
            except LimitExceeded:
                if taken:
                    continue
                raise
            held = str(slot)
            break
        if held is None:
            raise LimitExceeded(
                f"{self._api.sync_concurrency} image analyses (sync analyses and face searches) "
                "already running for this caller",
                1,  # a sync analysis takes well under a second
            )
        try:
            yield
        finally:
            self._change(f"sync-{caller}", held, lambda current: {"until": 0.0})
