"""Queue-triggered functions, driven the way the Functions host drives them.

Per queue: fetch up to `batchSize` messages, fetch more when in-flight work drops to
`newBatchThreshold`, back off polling up to `maxPollingInterval` when idle. A message is leased
(invisible) while it runs and the lease is renewed, so a killed worker's message reappears after
one lease. On failure the message becomes visible again after host.json's `visibilityTimeout`,
and after `maxDequeueCount` deliveries it moves to `<queue>-poison` — as in Azure.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerMessage
from azure.storage.queue import QueueClient, QueueMessage

from pipeline.localhost.functions import QueueFunction

log = logging.getLogger("darkroom.host.queue")
_MIN_POLL = 0.05


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
        self._receipts: dict[str, str] = {}  # message id -> current pop receipt
        self._lock = threading.Lock()

    def run(self) -> None:
        renewer = threading.Thread(
            target=self._renew_leases, daemon=True, name=f"lease-{self.fn.queue}"
        )
        renewer.start()
        interval = _MIN_POLL
        while not self.stop.is_set():
            room = self.batch_size - self._in_flight()
            if self._in_flight() > self.threshold or room <= 0:
                self.stop.wait(_MIN_POLL)
                continue
            messages = self._receive(room)
            if not messages:
                self.stop.wait(interval)
                interval = min(interval * 2, self.max_poll)
                continue
            interval = _MIN_POLL
            for message in messages:
                with self._lock:
                    self._receipts[message.id] = message.pop_receipt
                self.pool.submit(self._process, message)
        self.pool.shutdown(wait=True)  # drain: finish what was taken, take nothing new

    def _in_flight(self) -> int:
        with self._lock:
            return len(self._receipts)

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

    def _receipt(self, message_id: str) -> str:
        with self._lock:
            return self._receipts[message_id]

    def _renew_leases(self) -> None:
        while not self.stop.wait(self.lease / 3):
            with self._lock:
                current = list(self._receipts.items())
            for message_id, receipt in current:
                try:
                    updated = self.client.update_message(
                        message_id, pop_receipt=receipt, visibility_timeout=self.lease
                    )
                except Exception as exc:  # finished meanwhile, or storage hiccup
                    log.debug("lease renewal of %s skipped: %s", message_id, exc)
                    continue
                with self._lock:
                    if message_id in self._receipts:
                        self._receipts[message_id] = updated.pop_receipt

    def _process(self, message: QueueMessage) -> None:
        try:
            self._invoke(message)
        except Exception:
            log.exception("settling message %s on %s failed", message.id, self.fn.queue)
        finally:
            with self._lock:
                self._receipts.pop(message.id, None)

    def _invoke(self, message: QueueMessage) -> None:
        try:
            body = base64.b64decode(message.content, validate=True)
        except (binascii.Error, ValueError):
            # The real host cannot bind a non-base64 payload either; it ends in poison.
            self._to_poison(message)
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
                self._to_poison(message)
            else:
                self.client.update_message(
                    message.id,
                    pop_receipt=self._receipt(message.id),
                    visibility_timeout=self.retry_visibility,
                )
            return
        self.client.delete_message(message.id, pop_receipt=self._receipt(message.id))

    def _to_poison(self, message: QueueMessage) -> None:
        try:
            self.poison.send_message(message.content)
        except ResourceNotFoundError:
            self.poison.create_queue()
            self.poison.send_message(message.content)
        self.client.delete_message(message.id, pop_receipt=self._receipt(message.id))
        log.error("moved message %s to %s", message.id, self.poison.queue_name)


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
