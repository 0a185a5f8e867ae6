"""The stall sweep: images whose message is gone are found and sent on again from their document.

The documents are the record; queue messages are only the means. A message can be lost where
the pipeline cannot see it happen: Azurite keeps queues in memory and saves them every few
seconds, so a SIGKILL loses the last sends; on Azure, a crash between the document write and
the send, or a bug, does the same. Such an image stays `queued` or `processing` forever unless
something looks. This sweep runs on a timer (function `sweep_stalled`) on Azure and locally.

An image is stalled when all of these hold:
- it is `queued` or `processing`, and its document names the message it waits for (`pending`:
  step, lane, token, and when that message became receivable);
- that moment is more than `DARKROOM_STALL_SECONDS` ago (longer than a step may run, so a
  message being worked on is never taken for lost);
- the queue it waits on cannot be holding it: it is empty, or it holds at most 32 messages
  and none visible from before that moment. Queues are not FIFO, so a longer queue is a backlog
  that may hold anything; its images are judged once it has drained (lost messages are resumed
  within the drain time plus `DARKROOM_STALL_SECONDS`, and never while they may be waiting).

Resuming sends a new message built from the document, with a new token, by a conditional write:
if the image moved meanwhile, the sweep loses the write and leaves it alone. Should the old
message turn up after all, its token no longer matches and the runner drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from pipeline.engine.operations import message_from_document
from pipeline.framework.registry import step_name
from pipeline.observability import metrics, telemetry
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.results import ResultsStore, WriteConflict

log = logging.getLogger("darkroom.recovery")

_STALL_QUERY = (
    "SELECT * FROM c WHERE (c.status = 'queued' OR c.status = 'processing') "
    "AND IS_DEFINED(c.pending.visible_at) AND c.pending.visible_at < @cutoff"
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


PEEK_LIMIT = 32  # the most messages one peek returns


class _Queues:
    """Whether a queue may still hold an image's message, looked at once per queue per sweep.

    Queues are not FIFO (Azurite, like Azure, hands out messages by when they become visible,
    so a message whose lease ran out goes to the back), so the first message says nothing about
    the oldest. What can be told: an empty queue holds nothing; a queue of at most 32 messages
    shows all of its visible ones in one peek; a longer queue is a backlog that may hold
    anything — its images are looked at again when it has drained."""

    def __init__(self, azure: AzureClients) -> None:
        self.azure = azure
        self._seen: dict[str, tuple[int, datetime | None]] = {}

    def _look(self, queue: str) -> tuple[int, datetime | None]:
        if queue not in self._seen:
            client = self.azure.queue_service.get_queue_client(queue)
            try:
                count = client.get_queue_properties().approximate_message_count or 0
                oldest = None
                if 0 < count <= PEEK_LIMIT:
                    peeked = list(client.peek_messages(max_messages=PEEK_LIMIT))
                    oldest = min((m.inserted_on for m in peeked), default=None)
            except Exception as exc:  # a missing queue holds nothing
                log.debug("looking at %s: %s", queue, exc)
                count, oldest = 0, None
            self._seen[queue] = (count, oldest)
        return self._seen[queue]

    def may_hold(self, queue: str, receivable_since: datetime) -> bool:
        count, oldest = self._look(queue)
        if count == 0:
            return False
        if count > PEEK_LIMIT:
            return True
        # Visible messages from before ours: ours may be among them (or in a worker's batch).
        return oldest is not None and oldest <= receivable_since


def stalled_images(
    azure: AzureClients, store: ResultsStore, now: datetime | None = None
) -> Iterator[dict]:
    """Documents of stalled images (see the module docstring), oldest-first not guaranteed."""
    settings = azure.settings
    now = now or datetime.now(UTC)
    cutoff = _iso(now - timedelta(seconds=settings.stall_seconds))
    queues = _Queues(azure)
    for doc in store.query(_STALL_QUERY, {"@cutoff": cutoff}):
        pending = doc["pending"]
        queue = settings.queue_name(pending["step"], pending.get("lane", "live"))
        if queues.may_hold(queue, _parse(pending["visible_at"])):
            continue  # it may only be waiting its turn
        yield doc


def resume_stalled(azure: AzureClients, limit: int = 500) -> list[str]:
    """Send every stalled image on again from its document; returns the ids resumed."""
    from pipeline.engine.runner import StepRunner  # the runner owns sending (tokens, claim check)

    runner = StepRunner(azure)
    resumed: list[str] = []
    for doc in stalled_images(azure, runner.results):
        if len(resumed) >= limit:
            break
        pending = doc["pending"]
        route = tuple(doc["route"])
        specs = [s for s in route if step_name(s) == pending["step"]]
        if not specs:
            log.error("%s: pending step %r is not on its route %s", doc["id"], pending, route)
            continue
        message = message_from_document(doc, route, specs[0], pending.get("lane", "live"))
        _, version = runner.results.get_versioned(doc["id"])
        attributes = {"darkroom.image.id": doc["id"], "darkroom.step": pending["step"]}
        try:
            # A new trace: the lost message's context is gone with it.
            with telemetry.span("resume", attributes, root=True):
                runner.dispatch(message, doc["status"], version=version)
        except WriteConflict:
            continue  # it moved while we looked: not stalled after all
        log.warning(
            "%s: resumed at %s (its message was lost; waiting since %s)",
            doc["id"],
            pending["step"],
            pending["visible_at"],
        )
        resumed.append(doc["id"])
    return resumed


def sweep() -> list[str]:
    """The timer function's work: resume what stalled, with the process's clients."""
    from pipeline.stores.azure_clients import clients

    azure = clients()
    metrics.observe_queues(
        azure
    )  # this process reports the queue gauges (pipeline.observability.metrics)
    return resume_stalled(azure)
