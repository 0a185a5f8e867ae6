"""The Event Grid webhook of Event-Grid-sourced blob triggers, as Azure's blob extension runs it.

`POST /runtime/webhooks/blobs?functionName=Host.Functions.<fn>&code=<blobs_extension key>` is
the URL Azure gives a subscription; `/runtime/webhooks/EventGrid?functionName=<fn>` and the bare
function name are accepted too, so a subscription written either way works here unchanged.

Like Azure's extension, the webhook only *accepts* the events: it checks the key, the content
type and every event, writes the BlobCreated events to an internal queue and answers. A listener
in the workers runs the function for each event, with the queue's retries and poison queue.
Running 10,000 ingests inside the request took 233 s, while Event Grid gives up after 30 s and
delivers the whole batch again — so the answer must never wait for the work.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient
from azure.storage.queue import QueueClient

from local.host.functions import (
    EventGridBlobFunction,
    FunctionIndex,
    QueueFunction,
    local_connection_string,
)
from pipeline.settings import HOST_STORAGE_CONNECTION, Settings
from pipeline.stores.storage import encode_queue_payload

log = logging.getLogger("darkroom.host.webhooks")
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
SUBJECT_PREFIX = "/blobServices/default/containers/"
# A queue message holds 64 KiB of base64, i.e. 48 KiB of JSON; leave room for the envelope.
MESSAGE_JSON_BUDGET = 45_000


class BadEvents(ValueError):
    """The request's events are not what Event Grid sends; the message is safe to show."""


def parse_subject(subject: str) -> tuple[str, str]:
    """`/blobServices/default/containers/<c>/blobs/<name>` → (container, name)."""
    if not subject.startswith(SUBJECT_PREFIX) or "/blobs/" not in subject:
        raise BadEvents("not a blob subject")
    container, name = subject[len(SUBJECT_PREFIX) :].split("/blobs/", 1)
    if not container or not name:
        raise BadEvents("not a blob subject")
    return container, name


@dataclass(frozen=True)
class Accepted:
    """What a request carried: a validation code to answer, or blobs to ingest."""

    validation_code: str | None
    blobs: list[dict]  # {"id", "container", "name", "etag"} for the function's container


def read_events(body: bytes, container: str) -> Accepted:
    """Check every event before anything is queued: a request is taken whole or refused whole
    (400, which Event Grid does not retry), never half-queued."""
    try:
        events = json.loads(body)
    except RecursionError:
        raise BadEvents("body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise BadEvents("body is not JSON") from None
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        raise BadEvents("body must be a JSON array of events")
    blobs: list[dict] = []
    for number, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("eventType"), str):
            raise BadEvents(f"event {number}: not an Event Grid event")
        data = event.get("data")
        if event["eventType"] == VALIDATION:
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str):
                raise BadEvents(f"event {number}: validation event without validationCode")
            return Accepted(code, [])
        if event["eventType"] != BLOB_CREATED:
            continue  # other event types are not this trigger's business
        subject = event.get("subject")
        if not isinstance(subject, str):
            raise BadEvents(f"event {number}: no subject")
        try:
            event_container, name = parse_subject(subject)
        except BadEvents:
            raise BadEvents(f"event {number}: not a blob subject") from None
        if event_container != container:
            continue
        etag = data.get("eTag") if isinstance(data, dict) else None
        blobs.append(
            {
                "id": str(event.get("id", "")),
                "container": event_container,
                "name": name,
                "etag": etag if isinstance(etag, str) else None,
            }
        )
    return Accepted(None, blobs)


def batches(blobs: list[dict], budget: int = MESSAGE_JSON_BUDGET) -> Iterator[list[dict]]:
    """Pack events into queue messages of at most `budget` bytes of JSON: 10,000 events are
    about 60 messages, queued in well under a second (one message each took ~20 s)."""
    batch: list[dict] = []
    size = 0
    for blob in blobs:
        cost = len(json.dumps(blob)) + 2
        if batch and size + cost > budget:
            yield batch
            batch, size = [], 0
        batch.append(blob)
        size += cost
    if batch:
        yield batch


def trigger_queue_name(settings: Settings, function_name: str) -> str:
    """Azure's extension uses `azure-webjobs-blobtrigger-<host id>`; here the pipeline's prefix
    keeps two local stacks on one Azurite (tests run several) apart."""
    return f"{settings.queue_prefix}webjobs-blobtrigger-{function_name.replace('_', '-').lower()}"


def _host_storage(settings: Settings, fn: EventGridBlobFunction) -> str:
    """Azure keeps the extension's queue in the host's storage (AzureWebJobsStorage); fall back
    to the binding's account when the local settings name no host storage."""
    try:
        return local_connection_string(settings, HOST_STORAGE_CONNECTION)
    except Exception:
        return local_connection_string(settings, fn.connection)


class TriggerQueue:
    """The host side: puts accepted events on the function's internal queue."""

    def __init__(self, settings: Settings, fn: EventGridBlobFunction) -> None:
        self.client = QueueClient.from_connection_string(
            _host_storage(settings, fn), trigger_queue_name(settings, fn.name)
        )
        # The client's own retries are enough for a local emulator; don't add ours on top.

    def send(self, blobs: list[dict]) -> int:
        # Event Grid delivers at least once: the same blob version twice is one ingest.
        unique = {(b["container"], b["name"], b["etag"]): b for b in blobs}
        sent = 0
        for batch in batches(list(unique.values())):
            self._put({"events": batch})
            sent += 1
        return sent

    def split(self, blobs: list[dict]) -> None:
        """Two messages, one per half: the whole fan-out of a pack takes log2(n) steps of two
        sends each, so a worker killed mid-way loses almost nothing and retries almost nothing
        (re-sending after a crash only repeats idempotent ingests)."""
        middle = len(blobs) // 2
        for half in (blobs[:middle], blobs[middle:]):
            self._put({"events": half})

    def _put(self, body: dict) -> None:
        payload = encode_queue_payload(json.dumps(body).encode())
        try:
            self.client.send_message(payload)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.client.create_queue()
            self.client.send_message(payload)


def trigger_queues(index: FunctionIndex, settings: Settings) -> dict[str, TriggerQueue]:
    return {name: TriggerQueue(settings, fn) for name, fn in index.event_grid.items()}


def _ingest_events(
    fn: EventGridBlobFunction, connection: str, queue: TriggerQueue | None
) -> Callable[[func.QueueMessage], None]:
    """The worker side: run the blob function for the event of one queue message.

    A packed message (the webhook packs events to answer fast) is first split, in halves, down
    to one message per blob; a blob whose ingest fails then retries and ends in poison on its
    own, and a worker killed mid-way costs one blob a delivery, not a whole pack.
    """

    def run(msg: func.QueueMessage) -> None:
        try:
            events = json.loads(msg.get_body())["events"]
            if not isinstance(events, list) or not events:
                raise ValueError("no events")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a blob trigger message: {type(exc).__name__}") from None
        if len(events) > 1 and queue is not None:
            queue.split(events)
            return
        for event in events:
            client = BlobClient.from_connection_string(
                connection, event["container"], event["name"]
            )
            fn.call(**{fn.arg_name: client})

    return run


def trigger_queue_functions(index: FunctionIndex, settings: Settings) -> list[QueueFunction]:
    """Queue functions for the workers, one per Event Grid blob trigger, run by the ordinary
    queue listener (host.json's batch size, retries, `maxDequeueCount` → `<queue>-poison`)."""
    found = []
    for fn in index.event_grid.values():
        queue = TriggerQueue(settings, fn)
        call = _ingest_events(fn, local_connection_string(settings, fn.connection), queue)
        found.append(QueueFunction(fn.name, trigger_queue_name(settings, fn.name), "msg", call))
    return found
