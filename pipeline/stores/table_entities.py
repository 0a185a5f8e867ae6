"""One way to change a Table storage entity safely from many instances at once.

Read the entity, compute its new fields, write them conditional on the ETag read (or create it
if there was none); when another writer got there first, read again. Used for the API's
per-caller limits, the face matcher's per-owner lease and erasure markers: everything the app
keeps in its table (DARKROOM_LIMITS_TABLE), which is created on first use if missing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableServiceClient, UpdateMode

ATTEMPTS = 8
# After a lost race, wait a random time up to BACKOFF * 2**n (capped) before reading again:
# writers that collided spread out instead of colliding again in lockstep ("full jitter").
BACKOFF_SECONDS = 0.004
BACKOFF_CAP_SECONDS = 0.2

Change = Callable[[dict[str, Any] | None], dict[str, Any] | None]


class Contended(Exception):
    """Other writers won every attempt."""


def change_entity(
    tables: TableServiceClient,
    table: str,
    pk: str,
    rk: str,
    change: Change,
    attempts: int = ATTEMPTS,
) -> None:
    """Apply `change(current fields or None) -> new fields or None (write nothing)`; `change`
    may raise to refuse (its exception passes through). `change` is called again for every
    attempt, on what was read for it: it must compute from its argument (and the time now),
    never from a value captured before the first attempt."""
    client = tables.get_table_client(table)
    for attempt in range(attempts):
        if attempt:
            time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2**attempt)))
        try:
            current = client.get_entity(pk, rk)
        except ResourceNotFoundError as exc:
            if "TableNotFound" in str(getattr(exc, "error_code", "")) + str(exc):
                with suppress(ResourceExistsError):
                    tables.create_table(table)
                continue
            current = None
        fields = change(dict(current) if current is not None else None)
        if fields is None:
            return
        entity = {"PartitionKey": pk, "RowKey": rk, **fields}
        try:
            if current is None:
                client.create_entity(entity)
            else:
                client.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            return
        except (ResourceExistsError, ResourceModifiedError):
            continue
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                continue
            raise
    raise Contended(f"{table}/{pk}/{rk}: changed by others {attempts} times in a row")
