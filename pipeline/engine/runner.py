"""The step wrapper: receive → run the step → record → forward to the next queue of the route.

Failure policy lives here, not in steps:
- `ImageRejected` ends the image as `rejected` with the step's reason; never retried.
- An invalid message goes straight to the poison queue; retrying cannot fix its bytes.
- Any other exception is transient: the message is sent again with a growing visibility delay
  and this delivery completes (the Functions host alone would retry at once, five times in a
  row). After the last attempt the image ends `failed` and the message lands in `<queue>-poison`.
- If recording itself fails (storage or Cosmos down), the exception escapes and the host's own
  redelivery takes over: nothing is acknowledged that was not recorded.
Order — document first, then the next message — makes every crash point safe to replay.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine import claim_check, runtime_threads
from pipeline.engine.compute_slots import SlotTiming, process_slots
from pipeline.engine.context import BlobStepContext
from pipeline.engine.notify import Notifier
from pipeline.framework.contract import InvalidMessage, PipelineMessage, StepRecord, utc_now
from pipeline.framework.registry import (
    RouteError,
    StepUnavailable,
    ensure_ready,
    load_step,
    registered_step_specs,
    step_name,
)
from pipeline.framework.step_api import (
    ArtifactMissing,
    ImageRejected,
    SourceChanged,
    StepContractViolation,
    StepFailed,
    StepManifest,
    TryLater,
)
from pipeline.observability import telemetry
from pipeline.settings import FINAL_STATUSES, queue_host_options
from pipeline.stores import erase
from pipeline.stores.azure_clients import AzureClients, clients
from pipeline.stores.results import ResultsStore, WriteConflict, pending_document, render
from pipeline.stores.storage import send_to_queue
from pipeline.stores.uploads import discard_upload

log = logging.getLogger("darkroom.runner")


MAX_REWINDS = 3  # an artifact that vanishes again and again is not a glitch


def _writer_of(message: PipelineMessage, blob_name: str) -> str | None:
    """The earliest step of the route whose declared output holds a reference to the blob."""
    holders = {
        key for key, value in message.fields.items() if blob_name in json.dumps(value, default=str)
    }
    for spec in message.route[: message.route.index(message.step)]:
        try:
            writes = load_step(spec).manifest.writes
        except RouteError:
            continue
        if holders.intersection(writes):
            return spec
    return None


def backoff_seconds(attempt: int, base: float, ceiling: float) -> int:
    """Delay before attempt `attempt + 1`: base, 2*base, 4*base… capped; whole seconds for Azure."""
    return max(1, round(min(ceiling, base * 2 ** (attempt - 1))))


@dataclass
class Delivery:
    """One delivery of a message to a step, as the failure paths need it."""

    message: PipelineMessage
    body: bytes
    spec: str
    attempts: int  # the wrapper's scheduled attempts plus the host's redeliveries
    started: float = field(default_factory=time.perf_counter)
    version: str = "unknown"  # the step's version, once it loaded
    # The document's Cosmos `_etag` when the message was accepted (None: no document yet):
    # every record of this delivery is conditional on it, so a delivery that lost a race (the
    # image was erased, resumed by the sweep, or re-uploaded meanwhile) records nothing.
    doc_etag: str | None = ""
    # What the delivery recorded (status, reason), for its span; None: nothing recorded.
    outcome: tuple[str, str | None] | None = None

    # Slot wait, storage I/O and CPU of the step's run (None: the step never ran).
    timing: SlotTiming | None = None

    def record(self, status: str, reason: str | None = None) -> StepRecord:
        self.outcome = (status, reason)
        timing = self.timing
        wall = time.perf_counter() - self.started - (timing.wait if timing else 0.0)
        return StepRecord(
            status=status,
            duration_ms=round(max(0.0, wall) * 1000, 1),
            cpu_ms=round(timing.cpu * 1000, 1) if timing else None,
            io_ms=round(timing.io * 1000, 1) if timing else None,
            wait_ms=round(timing.wait * 1000, 1) if timing else None,
            attempts=self.attempts,
            version=self.version,
            reason=reason,
            finished_at=utc_now(),
        )


def checked_output(output: Any, manifest: StepManifest) -> dict[str, Any]:
    """The step's fields, checked against its manifest: only declared fields, each matching the
    manifest's output model (StepContractViolation, with a short reason, otherwise). The step's
    own dict is what gets stored, so documents keep exactly the JSON the step wrote."""
    return manifest.check_output(output)


class StepRunner:
    def __init__(self, azure: AzureClients) -> None:
        self.azure = azure
        self.settings = azure.settings
        self.results = ResultsStore(azure.images_container)
        self.notifier = Notifier(azure)
        self.max_attempts = queue_host_options()["maxDequeueCount"]
        # The steps this deployment has functions for (function_app registers the same list).
        self.known_specs = frozenset(registered_step_specs(self.settings.pipeline_steps))
        telemetry.configure(self.settings)  # once per process: the first runner's settings
        self.slots = process_slots(self.settings.step_concurrency)
        runtime_threads.configure(1)  # one thread per slot: see pipeline.engine.runtime_threads

    def send(self, message: PipelineMessage, delay: int | None = None) -> None:
        body = claim_check.pack(self.azure, message)
        queue = self.settings.queue_name(step_name(message.step), message.lane)
        send_to_queue(self.azure, queue, body, delay)

    def dispatch(
        self,
        message: PipelineMessage,
        status: str,
        delay: int | None = None,
        version: str | None = "",
    ) -> dict:
        """Record the image as waiting for `message`, then send it: the one way an image moves.

        The document names the message by a fresh token (`pending`), so only that message may
        move the image on: an older copy (a redelivery, or a message a stall sweep replaced) is
        dropped on receipt. `version` "" writes unconditionally; None or a Cosmos `_etag` makes
        the write conditional (ingest, the stall sweep), raising WriteConflict if it lost.
        Returns the document written. The message carries the current span's trace context,
        so the step that receives it continues the image's trace."""
        message = message.with_new_token().with_trace(telemetry.current_carrier())
        document = pending_document(message, status, delay)
        if version == "":
            self.results.save(document)
        else:
            self.results.save_if_unchanged(document, version)
        self.send(message, delay)
        return document

    def finish(
        self,
        message: PipelineMessage,
        status: str,
        reason: str | None = None,
        version: str | None = "",
    ) -> None:
        """Final document first, then the completion event, then what the channels answered.

        The event follows the write, so a subscriber that reads the document on the event sees
        the final state. `version` as in `dispatch`. A rejected image's original is deleted
        last (nothing will read it again, and it may be anything but an image); a crash before
        that leaves it to the redelivered message (see `_is_stale`)."""
        self.finish_document(render(message, status, reason), version)
        if status == "rejected":
            discard_upload(
                self.azure, message.source.container, message.source.name, message.source.etag
            )

    def finish_document(self, document: dict, version: str | None = "") -> None:
        if version == "":
            self.results.save(document)
        else:
            self.results.save_if_unchanged(document, version)
        document["notifications"] = self.notifier.publish(document)
        self.results.save(document)

    def poison(self, spec: str, body: bytes, why: str, lane: str = "live") -> None:
        log.error("poison %s (%s lane): %s", spec, lane, why)
        send_to_queue(self.azure, self.settings.poison_queue_name(step_name(spec), lane), body)

    def handle(self, spec: str, body: bytes, dequeue_count: int, lane: str = "live") -> None:
        try:
            message = claim_check.unpack(self.azure, body)
            if message.step != spec:
                raise InvalidMessage(f"message for step {message.step!r} arrived at {spec!r}")
            if message.source.container != self.settings.upload_container:
                # Only uploads are sources: a forged container could make a step read (and
                # publish) internal blobs such as analysis images with faces.
                raise InvalidMessage(
                    f"source container {message.source.container!r} is not the upload container"
                )
        except InvalidMessage as exc:
            self.poison(spec, body, str(exc), lane)
            return
        current, doc_etag = self.results.get_versioned(message.id)
        if current is None and erase.erased_by(self.azure, message.id) is not None:
            log.info("%s was erased; dropping its %s message", message.id, message.step)
            return
        if self._is_stale(message, current):
            return
        delivery = Delivery(message, body, spec, message.attempt + max(dequeue_count, 1) - 1)
        delivery.doc_etag = doc_etag
        with telemetry.span(
            f"step {step_name(spec)}",
            telemetry.step_attributes(message, delivery.attempts),
            message.trace,
            message.tracestate,
        ) as span:
            try:
                self._deliver(delivery)
            except WriteConflict:
                delivery.outcome = ("lost_race", None)
                self._lost_race(message)
            except Exception:
                # Not recorded: the host redelivers it. The span records the exception.
                span.set_attribute("darkroom.step.version", delivery.version)
                raise
            span.set_attribute("darkroom.step.version", delivery.version)
            if timing := delivery.timing:  # the span's wall time includes the slot wait
                telemetry.set_attributes(
                    span,
                    {
                        "darkroom.step.cpu_ms": round(timing.cpu * 1000, 1),
                        "darkroom.step.io_ms": round(timing.io * 1000, 1),
                        "darkroom.step.wait_ms": round(timing.wait * 1000, 1),
                    },
                )
            telemetry.mark(span, *(delivery.outcome or ("dropped", None)))

    def _deliver(self, delivery: Delivery) -> None:
        message, spec = delivery.message, delivery.spec
        try:
            if foreign := [s for s in message.route if s not in self.known_specs]:
                # Forwarding would strand the image on a queue nobody reads.
                raise RouteError(
                    f"the message's route names steps this deployment does not run: {foreign}"
                )
            step = load_step(spec)
            delivery.version = step.manifest.version
            ensure_ready(step, self.settings)
        except TryLater as exc:
            reason = f"{step_name(spec)}: {exc}"[:2000]
            self._retry_or_fail(delivery, reason, at_least=exc.retry_after)
            return
        except (RouteError, StepUnavailable) as exc:
            # This deployment cannot run the route (a step removed, a model not installed):
            # retrying cannot help until it is fixed, so the image ends `failed` with the reason
            # at once and the message waits in poison for `poison replay`.
            self._fail_now(delivery, str(exc))
            return
        context = BlobStepContext(
            self.azure, message, delivery.attempts, self.max_attempts, self.slots
        )
        try:
            with self.slots.held(priority=message.route.index(message.step)) as delivery.timing:
                output = step.run(context)
            fields = checked_output(output, step.manifest)
        except StepContractViolation as exc:
            self._fail_now(delivery, str(exc))
            return
        except StepFailed as exc:
            self._fail_now(delivery, f"{step.name}: {exc.reason}"[:2000])
            return
        except ArtifactMissing as exc:
            self._rebuild(delivery, exc)
            return
        except ImageRejected as exc:
            rejected = message.with_result(delivery.record("rejected", exc.reason), {})
            self.finish(rejected, "rejected", exc.reason, delivery.doc_etag)
            log.info("%s rejected at %s: %s", message.id, step.name, exc.reason)
            return
        except SourceChanged as exc:
            log.info("%s dropped at %s: %s", message.id, step.name, exc)
            return
        except Exception as exc:
            wait = exc.retry_after if isinstance(exc, TryLater) else None
            reason = f"{step.name}: {type(exc).__name__}: {exc}"[:2000]
            self._retry_or_fail(delivery, reason, at_least=wait)
            return

        telemetry.record_step_output(fields)
        message = message.with_result(delivery.record("done"), fields)
        following = message.next_step()
        if following is None:
            self.finish(message, "done", version=delivery.doc_etag)
            return
        self.dispatch(message.routed_to(following), "processing", version=delivery.doc_etag)

    def _lost_race(self, message: PipelineMessage) -> None:
        """The document changed while the step ran: this delivery's result is not recorded.

        Erased meanwhile: what the step just wrote is erased too (it may show a face or
        carry GPS). Otherwise another delivery, the stall sweep or a newer upload owns the
        image now, and its own message carries it on."""
        if erase.erased_by(self.azure, message.id) is not None:
            erase.erase_blobs(self.azure, message.id, None)
            log.info("%s was erased while %s ran; its output erased too", message.id, message.step)
            return
        log.info(
            "%s changed while %s ran; dropping this delivery's result", message.id, message.step
        )

    def _is_stale(self, message: PipelineMessage, current: dict | None) -> bool:
        """Drop messages that must not run: finishing them would overwrite a better result.

        - A newer upload of the same name owns the document now.
        - The image is already final for this upload and its completion event went out: the
          message is a duplicate (a worker died after forwarding it but before acknowledging
          it). Replays and reprocessing first mark the image `queued`, so their messages are not
          mistaken for duplicates.
        """
        if not current:
            return False
        pending = current.get("pending") or {}
        if message.token and pending.get("token") and pending["token"] != message.token:
            log.info(
                "%s: dropping a superseded %s message (the image waits for another)",
                message.id,
                step_name(message.step),
            )
            return True
        if current["source"].get("etag") != message.source.etag:
            log.info(
                "%s: dropping a message for a replaced upload of %s",
                message.id,
                message.source.name,
            )
            return True
        # Final AND announced: a worker killed between the final write and the completion event
        # leaves the document without `notifications`; its message must run again to announce.
        if current["status"] in FINAL_STATUSES and current.get("notifications"):
            if current["status"] == "rejected":  # its original may outlive a crash in `finish`
                source = message.source
                discard_upload(self.azure, source.container, source.name, source.etag)
            log.info(
                "%s: dropping a duplicate %s message, the image is already %s",
                message.id,
                step_name(message.step),
                current["status"],
            )
            return True
        return False

    def _rebuild(self, delivery: Delivery, missing: ArtifactMissing) -> None:
        """Send the image back to the step that wrote the missing artifact, which makes it
        again (steps are idempotent); retrying this step could only fail the same way."""
        message = delivery.message
        writer = _writer_of(message, missing.ref.name)
        if writer is None or message.rewinds >= MAX_REWINDS:
            reason = f"{step_name(delivery.spec)}: {missing} and cannot be made again"
            self._fail_now(delivery, reason)
            return
        log.warning("%s: %s; back to %s to make it again", message.id, missing, step_name(writer))
        rewound = message.with_result(delivery.record("retrying", str(missing)), {})
        self.dispatch(rewound.rewound_to(writer), "processing", version=delivery.doc_etag)

    def _fail_now(self, delivery: Delivery, reason: str) -> None:
        """End the image `failed` and park its message in poison, without retries."""
        message = delivery.message
        failed = message.with_result(delivery.record("failed", reason), {})
        self.finish(failed, "failed", reason, delivery.doc_etag)
        self.poison(delivery.spec, delivery.body, reason, message.lane)

    def _retry_or_fail(
        self, delivery: Delivery, reason: str, at_least: float | None = None
    ) -> None:
        """Send the message again after a growing delay — not sooner than `at_least` seconds
        when the other side said so (capped by DARKROOM_RETRY_MAX_SECONDS) — or, on the last
        attempt, fail the image."""
        message, attempts = delivery.message, delivery.attempts
        if attempts >= self.max_attempts:
            self._fail_now(delivery, f"{reason} (after {attempts} attempts)")
            return
        record = delivery.record("retrying", reason)
        delay = backoff_seconds(
            attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds
        )
        if at_least:
            delay = max(delay, math.ceil(min(at_least, self.settings.retry_max_seconds)))
        log.warning(
            "%s attempt %d at %s failed, retry in %ds: %s",
            message.id,
            attempts,
            delivery.spec,
            delay,
            reason,
        )
        self.dispatch(message.retried(record), "processing", delay=delay, version=delivery.doc_etag)


_runner: StepRunner | None = None


def runner() -> StepRunner:
    global _runner
    azure = clients()
    if _runner is None or _runner.azure is not azure:
        _runner = StepRunner(azure)
    return _runner


def handle(spec: str, body: bytes, dequeue_count: int, lane: str = "live") -> None:
    """Entry point for the queue-triggered functions in function_app.py."""
    runner().handle(spec, body, dequeue_count, lane)
