"""What an operator does when something went wrong: find it, look at it, run it again.

Everything here goes through the same settings and SDK clients as the functions, so it works
against the local emulators and, unchanged, against a deployed Azure environment.

- `failed_images`: failed and rejected images with their reasons and the step that ended them.
- `poison_messages` / `replay_poison`: what sits in the `<queue>-poison` queues, and sending it
  back to its step with a fresh attempt count.
- `reprocess`: run part of the route again for chosen images — those missing a step, all of
  them, or those whose recorded model versions differ from the current ones — starting at that
  step with everything the other steps produced kept, on the `backfill` lane so fresh uploads
  are not starved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from pipeline.engine import claim_check
from pipeline.framework.contract import InvalidMessage, PipelineMessage, SourceBlob, utc_now
from pipeline.framework.registry import registered_step_specs, step_name
from pipeline.settings import LANES
from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.results import ResultsStore
from pipeline.stores.storage import decode_queue_payload

# Document keys the pipeline owns; everything else is step output and travels as `fields`.
_PIPELINE_KEYS = {
    "id",
    "owner",
    "schema",
    "status",
    "reason",
    "source",
    "route",
    "steps",
    "ingested_at",
    "updated_at",
    "notifications",
    "pending",
}


@dataclass
class PoisonEntry:
    queue: str
    message_id: str
    inserted_on: str
    dequeue_count: int
    image_id: str | None
    step: str | None
    lane: str | None
    problem: str | None  # why the body could not be read, if it could not
    document_status: str | None = None
    document_reason: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def failed_images(
    store: ResultsStore,
    statuses: tuple[str, ...] = ("failed", "rejected"),
    azure: AzureClients | None = None,
) -> list[dict]:
    """Failed/rejected images; with `azure`, also images whose message sits in a poison queue
    while the document still says in flight (its worker died on every delivery)."""
    rows = []
    if azure is not None:
        for entry in poison_messages(azure, store):
            if entry.image_id and entry.document_status in ("queued", "processing"):
                doc = store.get(entry.image_id) or {}
                rows.append(
                    {
                        "id": entry.image_id,
                        "name": doc.get("source", {}).get("name"),
                        "status": "poisoned",
                        "step": entry.step,
                        "reason": f"message in {entry.queue} after {entry.dequeue_count} "
                        "deliveries that did not finish",
                        "updated_at": doc.get("updated_at"),
                    }
                )
    for status in statuses:
        for doc in store.find(status):
            ended = [
                name
                for name, rec in doc.get("steps", {}).items()
                if rec.get("status") in ("failed", "rejected")
            ]
            rows.append(
                {
                    "id": doc["id"],
                    "name": doc["source"]["name"],
                    "status": status,
                    "step": ended[-1] if ended else None,
                    "reason": doc.get("reason"),
                    "updated_at": doc.get("updated_at"),
                }
            )
    return sorted(rows, key=lambda r: r["updated_at"] or "", reverse=True)


def queue_depths(azure: AzureClients) -> list[dict]:
    """Per registered step and lane: its queue, poison queue and their approximate depths
    (None where a queue cannot be read, e.g. not created yet)."""

    def depth(queue: str) -> int | None:
        try:
            return (
                azure.queue_service.get_queue_client(queue)
                .get_queue_properties()
                .approximate_message_count
            )
        except Exception:
            return None

    settings = azure.settings
    rows = []
    for spec in registered_step_specs(settings.pipeline_steps):
        name = step_name(spec)
        for lane in LANES:
            queue, poison = settings.queue_name(name, lane), settings.poison_queue_name(name, lane)
            rows.append(
                {
                    "step": name,
                    "lane": lane,
                    "queue": queue,
                    "depth": depth(queue),
                    "poison_queue": poison,
                    "poison": depth(poison),
                }
            )
    return rows


def poison_queues(azure: AzureClients) -> list[tuple[str, str, str]]:
    """(step spec, lane, poison queue name) for every step the app registers."""
    settings = azure.settings
    return [
        (spec, lane, settings.poison_queue_name(step_name(spec), lane))
        for spec in registered_step_specs(settings.pipeline_steps)
        for lane in LANES
    ]


def _read(azure: AzureClients, content: str) -> tuple[PipelineMessage | None, str | None]:
    try:
        return claim_check.unpack(azure, decode_queue_payload(content)), None
    except (InvalidMessage, ValueError) as exc:
        return None, str(exc)[:300]


_PEEK_MAX = 32  # the most messages one peek returns


def _every_message(client, limit: int) -> list:
    """All messages of a queue, up to `limit`, left in it.

    Up to 32 messages a peek shows them all, and a peek hides nothing. Listing by receiving
    hides each message for a while: the page asks for the poison list and the failed list at
    once, both listed the poison queues, and whichever received a message first hid it from the
    other, so a poisoned image could be missing from the poison list for three refreshes in a
    row (a CI failure). Past 32 messages only receiving reaches the rest: each batch is received
    with a short invisibility and made visible again at once, so a listing never hides a message
    from a replay for long, though a second listing running at the same moment may miss some."""
    peeked = list(client.peek_messages(max_messages=min(limit, _PEEK_MAX)))
    if len(peeked) < _PEEK_MAX or limit <= _PEEK_MAX:
        return peeked
    seen: list = []
    while len(seen) < limit:
        batch = list(client.receive_messages(max_messages=32, visibility_timeout=30))
        if not batch:
            break
        seen.extend(batch[: limit - len(seen)])
    for item in seen:
        client.update_message(item, visibility_timeout=0)
    return seen


def poison_messages(
    azure: AzureClients, store: ResultsStore, limit: int = 1000
) -> Iterator[PoisonEntry]:
    """Every message (up to `limit` per queue) of every poison queue, with its image's status."""
    for _, _, queue in poison_queues(azure):
        client = azure.queue_service.get_queue_client(queue)
        try:
            listed = _every_message(client, limit)
        except Exception:  # queue not created yet: nothing poisoned there
            continue
        for item in listed:
            message, problem = _read(azure, item.content)
            doc = store.get(message.id) if message else None
            yield PoisonEntry(
                queue=queue,
                message_id=item.id,
                inserted_on=str(item.inserted_on),
                dequeue_count=item.dequeue_count,
                image_id=message.id if message else None,
                step=step_name(message.step) if message else None,
                lane=message.lane if message else None,
                problem=problem,
                document_status=doc["status"] if doc else None,
                document_reason=doc.get("reason") if doc else None,
            )


def requeue(azure: AzureClients, store: ResultsStore, message: PipelineMessage) -> None:
    """Send a message to its step's queue and show the image as queued again."""
    from pipeline.engine.runner import StepRunner  # the runner owns sending (claim check, lanes)

    StepRunner(azure).dispatch(message, "queued")


def replay_poison(
    azure: AzureClients,
    store: ResultsStore,
    step: str | None = None,
    image: str | None = None,
    limit: int = 1000,
) -> dict[str, int]:
    """Move poisoned messages back to their step's queue with attempt 1.

    Messages that cannot be read are left where they are (they would only come back)."""
    counts = {"replayed": 0, "skipped": 0, "unreadable": 0}
    for spec, _lane, queue in poison_queues(azure):
        if step and step_name(spec) != step:
            continue
        client = azure.queue_service.get_queue_client(queue)
        try:
            batch = list(client.receive_messages(max_messages=32, visibility_timeout=60))
        except Exception:
            continue
        while batch and counts["replayed"] < limit:
            for item in batch:
                message, _ = _read(azure, item.content)
                if message is None:
                    counts["unreadable"] += 1
                    continue
                if (image and message.id != image) or counts["replayed"] >= limit:
                    counts["skipped"] += 1
                    client.update_message(item, visibility_timeout=0)
                    continue
                requeue(azure, store, message.model_copy(update={"attempt": 1}))
                client.delete_message(item)
                counts["replayed"] += 1
            batch = list(client.receive_messages(max_messages=32, visibility_timeout=60))
    return counts


def message_from_document(
    doc: dict, route: tuple[str, ...], start: str, lane: str
) -> PipelineMessage:
    """A message that resumes `doc` at `start`, carrying every field the steps produced."""
    fields = {k: v for k, v in doc.items() if k not in _PIPELINE_KEYS and v is not None}
    source = SourceBlob.model_validate(
        {k: doc["source"][k] for k in ("container", "name", "size", "content_type", "etag")}
    )
    return PipelineMessage.model_validate(
        {
            "schema": 1,
            "id": doc["id"],
            "source": source,
            "route": route,
            "step": start,
            "lane": lane,
            "fields": fields,
            "steps": {k: v for k, v in doc.get("steps", {}).items() if v.get("status") == "done"},
            "ingested_at": doc.get("ingested_at") or utc_now(),
        }
    )


def current_model_versions(azure: AzureClients) -> dict[str, str]:
    """The analyzers' identities as this deployment would record them (loads the models)."""
    from pipeline.vision.providers import enabled_analyzers

    versions = {}
    for capability, analyzer in enabled_analyzers(azure.settings.analysis).items():
        analyzer.load()
        versions[capability] = analyzer.ident
    return versions


def select_for_reprocess(
    store: ResultsStore, mode: str, step: str | None, models: dict[str, str] | None
) -> Iterator[dict]:
    for doc in store.find():
        if doc["status"] in ("queued", "processing"):
            continue  # in flight already
        if mode == "missing":
            if (doc.get("steps", {}).get(step) or {}).get("status") != "done" and doc[
                "status"
            ] != "rejected":
                yield doc
        elif mode == "all":
            if doc["status"] != "rejected":
                yield doc
        elif mode == "model-changed":
            recorded = (doc.get("analysis") or {}).get("models", {})
            if doc["status"] == "done" and any(
                recorded.get(c) != v for c, v in (models or {}).items()
            ):
                yield doc
        else:
            raise ValueError(f"unknown reprocess mode {mode!r}")


def reprocess(
    azure: AzureClients,
    store: ResultsStore,
    mode: str,
    step: str | None = None,
    start: str | None = None,
    lane: str = "backfill",
    dry_run: bool = False,
    limit: int | None = None,
) -> list[dict]:
    """Queue the selected images to run again from `start` (default: the step in question)."""
    route = tuple(azure.settings.pipeline_steps)
    names = [step_name(s) for s in route]
    models = current_model_versions(azure) if mode == "model-changed" else None
    begin = start or {"missing": step, "model-changed": "analyze", "all": names[0]}[mode]
    if begin not in names:
        raise ValueError(f"step {begin!r} is not on the current route {names}")
    spec = route[names.index(begin)]
    chosen = []
    for doc in select_for_reprocess(store, mode, step, models):
        if limit is not None and len(chosen) >= limit:
            break
        chosen.append({"id": doc["id"], "name": doc["source"]["name"], "from": begin})
        if not dry_run:
            requeue(azure, store, message_from_document(doc, route, spec, lane))
    return chosen


def as_json_lines(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r, sort_keys=True, default=str) for r in rows)
