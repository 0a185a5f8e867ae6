"""The synchronous path: an image in an HTTP body, its route's first steps run here and now.

`POST /api/analyze` answers with the document at once; the image then goes on through the
rest of its route on the queues, from the next step, so nothing is done twice:

1. the bytes are stored as an upload (the same container, the same checks as any upload);
2. the image's document is created at once, before any work (`processing`, waiting on the
   route's first step). Whichever of this and the Event Grid ingest of the same blob writes
   first owns the image (a conditional create): if ingest won, the image is simply on its
   asynchronous route and the answer says `queued`. If this process dies mid-way, the
   document's `pending` lets the stall sweep start the image from its first step: an upload
   accepted here is never lost;
3. the route's steps up to and including `analyze` run in-process with the same step code the
   queue functions run (prepare reads the bytes from memory, not back from storage);
   `analyze` runs only `DARKROOM_SYNC_CAPABILITIES`, and records the others as `deferred`:
   the analyze step on the queue then runs just those (OCR, by default). Model steps named in
   `DARKROOM_SYNC_MODEL_STEPS` that follow analyze directly run here too; on the queue they keep
   this answer (a model step answers once per image and configuration);
4. the image is dispatched to the next step of its route, conditional on the document from
   step 2, exactly as the queue path records a step.
A step that rejects the image ends it `rejected`, as on the queue path; any other failure
hands the image to the queue path from its first step (it is retried there, with backoff).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContentSettings

from pipeline.engine.context import BlobStepContext
from pipeline.engine.runner import Delivery, StepRunner, checked_output
from pipeline.framework.contract import PipelineMessage, SourceBlob, image_id
from pipeline.framework.registry import ensure_ready, load_step, step_name
from pipeline.framework.step_api import BlobRef, ImageRejected, over_byte_limit
from pipeline.observability import telemetry
from pipeline.settings import Settings
from pipeline.stores.results import WriteConflict, pending_document
from pipeline.stores.uploads import UploadPromise, record_promise

log = logging.getLogger("darkroom.sync")
SYNC_STEP_LAST = "analyze"
RESUME_AFTER_SECONDS = 60  # how long the document says the first step may take to start


class _InMemorySource(BlobStepContext):
    """The queue path's context, but the upload's bytes are already here, and what a step
    writes is kept for the next sync step too (it is stored as on the queue path)."""

    def __init__(
        self,
        runner: StepRunner,
        message: PipelineMessage,
        data: bytes,
        settings: Settings,
        written: dict[str, bytes],
    ):
        super().__init__(runner.azure, message, 1, 1)
        self._data = data
        self._written = written
        self.settings = settings

    def read_source(self) -> bytes:
        if refusal := over_byte_limit(len(self._data), self.settings.limits.max_bytes):
            raise refusal
        return self._data

    def read_artifact(self, ref):
        name = ref.name if isinstance(ref, BlobRef) else ref.get("name")
        if name in self._written:
            return self._written[name]
        return super().read_artifact(ref)

    def put_artifact(self, name, data, content_type, public=False) -> BlobRef:
        ref = super().put_artifact(name, data, content_type, public)
        self._written[ref.name] = data
        return ref


@dataclass
class SyncResult:
    document: dict
    status: int  # 200 analysed now, 202 handed to the queue path, 422 rejected


def sync_steps(route: tuple[str, ...], model_steps: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The steps run in-process: the route's steps up to and including `analyze`, then the
    model steps of DARKROOM_SYNC_MODEL_STEPS that follow it directly in the route."""
    names = [step_name(s) for s in route]
    last = names.index(SYNC_STEP_LAST) if SYNC_STEP_LAST in names else 0
    while last + 1 < len(names) and names[last + 1] in model_steps:
        last += 1
    return route[: last + 1]


def sync_settings(settings: Settings) -> tuple[Settings, list[str]]:
    """Settings whose analyze runs only the sync capabilities; and the deferred ones."""
    enabled = settings.analysis.capabilities
    now = tuple(c for c in enabled if c in settings.api.sync_capabilities)
    deferred = [c for c in enabled if c not in now]
    return replace(settings, analysis=replace(settings.analysis, capabilities=now)), deferred


def store_upload(runner: StepRunner, name: str, data: bytes, content_type: str) -> SourceBlob:
    settings = runner.settings
    # Ingest sees this blob too (and may see it first): it holds it to the same promise.
    record_promise(
        runner.azure,
        image_id(settings.upload_container, name),
        UploadPromise(name, len(data), content_type),
    )
    blob = runner.azure.blob_service.get_blob_client(settings.upload_container, name)
    try:
        result = blob.upload_blob(
            data, overwrite=False, content_settings=ContentSettings(content_type=content_type)
        )
    except ResourceExistsError as exc:  # names carry a fresh uuid: this is not a user error
        raise RuntimeError(f"upload name {name!r} already taken") from exc
    return SourceBlob(
        container=settings.upload_container,
        name=name,
        size=len(data),
        content_type=content_type,
        etag=result["etag"],
    )


def analyze_now(runner: StepRunner, name: str, data: bytes, content_type: str) -> SyncResult:
    """The image's trace starts here: a root span `sync` over the in-process steps (a span
    each) and the dispatch to the queue path, which carries the trace on."""
    with telemetry.span("sync", {"darkroom.source.bytes": len(data)}, root=True):
        return _analyze_now(runner, name, data, content_type)


def _analyze_now(runner: StepRunner, name: str, data: bytes, content_type: str) -> SyncResult:
    settings = runner.settings
    source = store_upload(runner, name, data, content_type)
    route = tuple(settings.pipeline_steps)
    message = PipelineMessage.starting(source, route).with_new_token()
    telemetry.annotate({"darkroom.image.id": message.id})
    first = pending_document(message, "processing", RESUME_AFTER_SECONDS)
    try:
        version = runner.results.save_if_unchanged(first, None)
    except WriteConflict:  # ingest of this blob won: the queue path has it
        return SyncResult(runner.results.get(message.id) or first, 202)

    step_settings, deferred = sync_settings(settings)
    written: dict[str, bytes] = {}
    in_process = sync_steps(route, settings.api.sync_model_steps)
    for spec in in_process:
        message = message.routed_to(spec)
        step = load_step(spec)
        delivery = Delivery(message, b"", spec, 1, time.perf_counter(), step.manifest.version)
        attributes = telemetry.step_attributes(message, 1, step.manifest.version)
        with telemetry.span(f"step {step_name(spec)}", {**attributes, "darkroom.lane": "sync"}):
            try:
                ensure_ready(step, settings)
                context = _InMemorySource(runner, message, data, step_settings, written)
                fields = checked_output(step.run(context), step.manifest)
            except ImageRejected as exc:
                rejected = message.with_result(delivery.record("rejected", exc.reason), {})
                telemetry.mark_current("rejected", exc.reason)
                runner.finish(rejected, "rejected", exc.reason, version)
                return SyncResult(runner.results.get(message.id) or {}, 422)
            except Exception as exc:
                # Not this caller's problem to retry: the queue path retries with backoff.
                log.warning(
                    "%s: sync %s failed (%s); the queue path takes over", message.id, spec, exc
                )
                telemetry.mark_current("retrying", f"{type(exc).__name__}: {exc}")
                start = message.routed_to(route[0])
                runner.dispatch(start, "queued", version=version)
                return SyncResult(runner.results.get(message.id) or {}, 202)
            telemetry.record_step_output(fields)
            telemetry.mark_current("done")
        if step_name(spec) == SYNC_STEP_LAST and deferred:
            fields = {**fields, "analysis": {**fields["analysis"], "deferred": deferred}}
        message = message.with_result(delivery.record("done"), fields)

    following = message.next_step()
    if deferred and SYNC_STEP_LAST in [step_name(s) for s in in_process]:
        # analyze again, for the deferred capabilities only; a model step after it that ran
        # here keeps its answer (same model, same settings: pipeline.vision.model_step)
        following = next(s for s in in_process if step_name(s) == SYNC_STEP_LAST)
    if following is None:
        runner.finish(message, "done", version=version)
        return SyncResult(runner.results.get(message.id) or {}, 200)
    onward = runner.dispatch(message.routed_to(following), "processing", version=version)
    return SyncResult(onward, 200)
