"""Queue-triggered functions, driven the way the Functions host drives them.

Per queue: fetch up to `batchSize` messages, fetch more when in-flight work drops to
`newBatchThreshold`, and poll as the Functions host documents it: 100 ms after a fetch that found
messages, about 200 ms after one that found none, doubling after each empty fetch up to
`maxPollingInterval`. (Polling twice as eagerly made 624 queue fetches for 160 messages in a
30-photo chain, against 506 now; an empty fetch costs the worker and Azurite 2.4 ms of CPU, per
bench/bench_requests.py.) A message is leased
(invisible) while it runs and the lease is renewed, so a killed worker's message reappears after
one lease. On failure the message becomes visible again after host.json's `visibilityTimeout`,
and after `maxDequeueCount` deliveries it moves to `<queue>-poison` — as in Azure, where a
message delivered more than `maxDequeueCount` times (its earlier deliveries died with their
worker) goes to poison without running again: a message that crashes the worker is not retried
forever.

Renewing a lease changes the message's pop receipt, and only the newest one can delete it, so
renewal and settlement (delete, release, poison) of one message take turns under its own lock:
a message that finished while its lease was being renewed is still deleted, not run twice.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerMessage
from azure.storage.queue import QueueClient, QueueMessage

from local.host.functions import QueueFunction

log = logging.getLogger("darkroom.host.queue")
_AFTER_MESSAGES = 0.1  # the Functions host's wait after a fetch that found messages
_FIRST_IDLE = 0.2  # … and after the first fetch that found none
_FULL_WAIT = 0.5


class _Lease:
    """One delivery's current pop receipt; its renewal and settlement take turns on `lock`."""

    __slots__ = ("lock", "lost", "message_id", "receipt", "settled")

    def __init__(self, message: QueueMessage) -> None:
        self.lock = threading.Lock()
        self.message_id = message.id
        self.receipt = message.pop_receipt
        self.settled = False  # deleted, released or poisoned: renew no more
        self.lost = False  # the lease ran out and the message went to someone else


def _lease_gone(exc: Exception) -> bool:
    """The message was deleted, or re-received by another consumer (its pop receipt changed)."""
    if isinstance(exc, ResourceNotFoundError):
        return True
    code = getattr(exc, "error_code", None) or ""
    return isinstance(exc, HttpResponseError) and code in ("PopReceiptMismatch", "MessageNotFound")


class QueueListener(threading.Thread):
    def __init__(
        self,
        fn: QueueFunction,
        client: QueueClient,
        poison: QueueClient,
        options: dict,
        lease_seconds: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"listen-{fn.queue}", daemon=True)
        self.fn, self.client, self.poison = fn, client, poison
        self.batch_size = options["batchSize"]
        self.threshold = options["newBatchThreshold"]
        self.max_dequeue = options["maxDequeueCount"]
        self.retry_visibility = int(options["visibilityTimeout"])
        self.max_poll = options["maxPollingInterval"]
        self.lease = lease_seconds
        self.stop = stop
        self.pool = ThreadPoolExecutor(self.batch_size, thread_name_prefix=fn.name)
        self._leases: set[_Lease] = set()  # deliveries in flight (one message can be twice)
        self._lock = threading.Lock()
        # Leases are renewed until the last message taken has been settled, also while draining.
        self._renewing = threading.Event()
        # Set when a delivery finishes: a full listener waits for it instead of polling itself.
        self._room = threading.Event()

    def run(self) -> None:
        renewer = threading.Thread(
            target=self._renew_leases, daemon=True, name=f"lease-{self.fn.queue}"
        )
        renewer.start()
        interval = _FIRST_IDLE
        try:
            while not self.stop.is_set():
                self._room.clear()
                room = self.batch_size - self._in_flight()
                if self._in_flight() > self.threshold or room <= 0:
                    # Woken by the next delivery to finish (at the latest after _FULL_WAIT, to
                    # notice `stop`): a busy queue's listener costs nothing while it is full.
                    self._room.wait(_FULL_WAIT)
                    continue
                messages = self._receive(room)
                if not messages:
                    self.stop.wait(min(interval, self.max_poll))
                    interval = min(interval * 2, self.max_poll)
                    continue
                interval = _FIRST_IDLE
                for message in messages:
                    lease = _Lease(message)
                    with self._lock:
                        self._leases.add(lease)
                    self.pool.submit(self._process, message, lease)
                self.stop.wait(_AFTER_MESSAGES)
            self.pool.shutdown(wait=True)  # drain: finish what was taken, take nothing new
        finally:
            self._renewing.set()

    def _in_flight(self) -> int:
        with self._lock:
            return len(self._leases)

    def _receive(self, count: int) -> list[QueueMessage]:
        try:
            return list(
                self.client.receive_messages(
                    messages_per_page=count, max_messages=count, visibility_timeout=self.lease
                )
            )
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.client.create_queue()
        except Exception as exc:  # storage briefly unreachable: keep polling, gently
            log.warning("receive from %s failed: %s", self.fn.queue, exc)
            self.stop.wait(1.0)
        return []

    def _renew_leases(self) -> None:
        while not self._renewing.wait(self.lease / 3):
            with self._lock:
                current = list(self._leases)
            for lease in current:
                self._renew(lease)

    def _renew(self, lease: _Lease) -> None:
        message_id = lease.message_id
        with lease.lock:
            if lease.settled or lease.lost:
                return
            try:
                updated = self.client.update_message(
                    message_id, pop_receipt=lease.receipt, visibility_timeout=self.lease
                )
            except Exception as exc:
                if _lease_gone(exc):
                    # Renewal came too late (the worker was starved for a whole lease): the
                    # message is someone else's now and may run twice; steps are idempotent.
                    lease.lost = True
                    log.warning("lease of %s on %s lost: %s", message_id, self.fn.queue, exc)
                else:  # storage hiccup: try again on the next round
                    log.debug("lease renewal of %s skipped: %s", message_id, exc)
                return
            lease.receipt = updated.pop_receipt

    def _process(self, message: QueueMessage, lease: _Lease) -> None:
        try:
            self._invoke(message, lease)
        except Exception:
            log.exception("settling message %s on %s failed", message.id, self.fn.queue)
        finally:
            with self._lock:
                self._leases.discard(lease)
            self._room.set()

    def _settle(self, message: QueueMessage, lease: _Lease, action: str) -> None:
        """Delete the message, release it for a retry, or move it to poison: once, with the
        delivery's newest pop receipt."""
        with lease.lock:
            lease.settled = True
            try:
                if action == "release":
                    self.client.update_message(
                        message.id,
                        pop_receipt=lease.receipt,
                        visibility_timeout=self.retry_visibility,
                    )
                    return
                if action == "poison":  # copy first: a crash in between duplicates, never loses
                    self._send_to_poison(message.content)
                self.client.delete_message(message.id, pop_receipt=lease.receipt)
            except Exception as exc:
                if not _lease_gone(exc):
                    raise
                log.warning(
                    "%s of %s on %s skipped, the message was delivered again meanwhile: %s",
                    action,
                    message.id,
                    self.fn.queue,
                    exc,
                )

    def _invoke(self, message: QueueMessage, lease: _Lease) -> None:
        if message.dequeue_count > self.max_dequeue:
            # Azure's QueueProcessor does the same before invoking: the earlier deliveries never
            # completed (their worker died), so this message may be what kills the worker.
            log.error(
                "%s: message %s delivered %d times without completing; moving it to %s",
                self.fn.name,
                message.id,
                message.dequeue_count,
                self.poison.queue_name,
            )
            self._settle(message, lease, "poison")
            return
        try:
            body = base64.b64decode(message.content, validate=True)
        except (binascii.Error, ValueError):
            # The real host cannot bind a non-base64 payload either; it ends in poison.
            log.error("%s: message %s is not base64; moving it to poison", self.fn.name, message.id)
            self._settle(message, lease, "poison")
            return
        trigger = TriggerMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        try:
            self.fn.call(**{self.fn.arg_name: trigger})
        except Exception as exc:
            log.warning("%s failed (delivery %d): %s", self.fn.name, message.dequeue_count, exc)
            if message.dequeue_count >= self.max_dequeue:
                log.error("moving message %s to %s", message.id, self.poison.queue_name)
                self._settle(message, lease, "poison")
            else:
                self._settle(message, lease, "release")
            return
        self._settle(message, lease, "delete")

    def _send_to_poison(self, content: str) -> None:
        try:
            self.poison.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(content)


def run_listeners(
    functions: list[QueueFunction],
    connection: str,
    options: dict,
    lease_seconds: int,
    stop: threading.Event,
) -> list[QueueListener]:
    listeners = []
    for fn in functions:
        client = QueueClient.from_connection_string(connection, fn.queue)
        poison = QueueClient.from_connection_string(connection, f"{fn.queue}-poison")
        listener = QueueListener(fn, client, poison, options, lease_seconds, stop)
        listener.start()
        listeners.append(listener)
    return listeners
