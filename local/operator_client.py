"""The operator commands of `python -m pipeline`: submit, show, trace, status, failed, poison,
reprocess and keys add.

A client, not a stack: these commands work against whatever the settings point at — the local
emulators or a deployed Azure environment (set DARKROOM_STORAGE / DARKROOM_COSMOS, or their
identity-based forms, and sign in with `az login`) — and never start or stop anything (that is
local.stack). Of a local host they read only what it recorded (`status` shows its page line).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from azure.storage.blob import ContentSettings

from local.atomic import temporary_file
from local.cli_output import err
from local.emulators import unreachable_endpoints
from local.host.api_keys import KEY_SETTINGS, running_access
from pipeline.api.auth import key_digest
from pipeline.api.settings import KEY_NAME
from pipeline.engine import operations
from pipeline.engine.recovery import stalled_images
from pipeline.framework.contract import blob_name_problem, image_id
from pipeline.framework.document import summaries
from pipeline.framework.registry import step_name
from pipeline.observability import drift
from pipeline.observability.health import startup_warnings
from pipeline.observability.logsafe import clipped, printable
from pipeline.settings import FINAL_STATUSES, PROJECT_ROOT, get_settings
from pipeline.stores.azure_clients import clients
from pipeline.stores.results import IMAGE_STATUSES, ResultsStore, is_settled

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
}
_MIME = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
}


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.tty = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._last_pct = -1

    def advance(self, n: int = 1, note: str = "") -> None:
        with self._lock:
            self.done += n
            pct = 100 * self.done // max(self.total, 1)
            if self.tty:
                bar = "#" * (pct // 4) + "." * (25 - pct // 4)
                sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {note:<30}")
                if self.done >= self.total:
                    sys.stderr.write("\n")
                sys.stderr.flush()
            elif pct // 25 != self._last_pct // 25 or self.done >= self.total:
                err(f"{self.label}: {self.done}/{self.total} {note}")
            self._last_pct = pct


# ---------------------------------------------------------------- submit


def _collect(paths: list[str]) -> list[tuple[Path, str]]:
    """(file, blob name) pairs: files by name, folders recursively by their relative path."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((file, file.relative_to(path).as_posix()))
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    return found


def upload(files: list[tuple[Path, str]], progress: Progress) -> list[tuple[str, str, str]]:
    """Upload in parallel; returns (blob name, image id, etag) per file."""
    azure = clients()
    container = azure.blob_service.get_container_client(azure.settings.upload_container)

    def one(item: tuple[Path, str]) -> tuple[str, str, str]:
        path, name = item
        mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
        with open(path, "rb") as data:
            result = container.get_blob_client(name).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=mime)
            )
        progress.advance(note=clipped(name, 30))
        return name, image_id(container.container_name, name), result["etag"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, files))


# How far back the first poll looks: clocks of this machine and of Cosmos may disagree a little.
_CLOCK_MARGIN_S = 120
# With no news for this long, the images still pending are read one by one, once: a safety net
# if the clocks disagree by more than the margin.
_RECHECK_AFTER_S = 30.0


def wait_for(uploaded: list[tuple[str, str, str]], timeout: float) -> dict[str, dict]:
    """Poll the results store until every image reached a final status for its upload.

    Each poll is one query for the documents that became final since the last one (Cosmos
    `_ts`), not one read per pending image: the cost follows the images finishing, so waiting
    for 1,000 images costs what waiting for 20 does, per image."""
    store = ResultsStore(clients().images_container)
    pending = {image: etag for _, image, etag in uploaded}
    finished: dict[str, dict] = {}
    progress = Progress("processing", len(pending))
    deadline = time.monotonic() + timeout
    since = int(time.time()) - _CLOCK_MARGIN_S
    last_news = time.monotonic()

    def settle(doc: dict | None) -> None:
        image = doc["id"] if doc else None
        if image in pending and is_settled(doc, pending[image]):
            finished[image] = doc
            del pending[image]
            progress.advance(note=f"{clipped(doc['source']['name'], 20)} {doc['status']}")

    while pending and time.monotonic() < deadline:
        before = len(pending)
        docs, since = store.final_since(since)
        for doc in docs:
            settle(doc)
        if len(pending) < before:
            last_news = time.monotonic()
        elif time.monotonic() - last_news > _RECHECK_AFTER_S:
            for image in list(pending):
                settle(store.get(image))
            last_news = time.monotonic()
        if pending:
            time.sleep(0.25)
    return finished


def download_published(doc: dict, folder: Path) -> Path | None:
    """Copy an image's published derivative to a local file a person can open."""
    published = doc.get("published") or {}
    if "name" not in published:
        return None
    suffix = Path(published["name"]).suffix
    # Keep the upload's folders (a/x.jpg and b/x.jpg must not land on one file); the contract
    # already refuses names with `..` segments, and empty or absolute parts are dropped here.
    parts = [p for p in PurePosixPath(doc["source"]["name"]).parts if p not in ("", "/", ".")]
    relative = Path(*parts) if parts else Path(doc["id"])
    target = folder / relative.parent / f"{relative.stem}.published{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = clients().blob_service.get_blob_client(published["container"], published["name"])
    target.write_bytes(blob.download_blob().readall())
    return target


def describe(doc: dict, published_file: Path | None = None) -> str:
    """A few readable lines per image: what it is, then one line per step from its manifest's
    `summarize` (what was found, where the results are)."""
    image = doc.get("image") or {}
    size = f"{image.get('width')}x{image.get('height')}" if image else "-"
    took = sum(s.get("duration_ms", 0) for s in doc.get("steps", {}).values())
    lines = [
        f"{doc['status']:<9} {clipped(doc['source']['name'], 40):<40} {size:>11} {took:>7.0f} ms"
        f"  id {doc['id']}"
    ]
    if doc.get("reason"):
        lines.append(f"          reason: {printable(doc['reason'])}")
    for step, line in summaries(doc).items():
        lines.append(f"          {step}: {printable(line)}")
    if published_file:
        lines.append(f"          published file: {published_file}")
    return "\n".join(lines)


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        files = _collect(args.paths)
    except FileNotFoundError as exc:
        err(exc)
        return 2
    refused = [(path, name) for path, name in files if blob_name_problem(name)]
    for path, name in refused:
        # The pipeline would refuse it anyway; Azure's listings cannot even show such names.
        err(f"skipping {printable(str(path))}: {blob_name_problem(name)}")
    files = [item for item in files if item not in refused]
    if not files:
        err("no image files found")
        return 2
    uploaded = upload(files, Progress("uploading", len(files)))
    if not args.wait:
        for name, image, _ in uploaded:
            print(
                json.dumps({"name": name, "id": image})
                if args.json
                else f"{image}  {printable(name)}"
            )
        return 0
    finished = wait_for(uploaded, args.timeout)
    for name, image, _ in uploaded:
        doc = finished.get(image)
        if doc is None:
            err(f"timed out waiting for {name} ({image})")
            continue
        local = download_published(doc, Path(args.download)) if args.download else None
        if args.json:
            print(json.dumps(doc, sort_keys=True), flush=True)
        else:
            print(describe(doc, local))
    if not args.json:
        counts = {s: sum(1 for d in finished.values() if d["status"] == s) for s in FINAL_STATUSES}
        err(
            ", ".join(f"{n} {s}" for s, n in counts.items())
            + "  — details: python -m pipeline show <id or name>"
        )
    return 0 if len(finished) == len(uploaded) else 3


# ---------------------------------------------------------------- show / status


def cmd_show(args: argparse.Namespace) -> int:
    settings = get_settings()
    store = ResultsStore(clients().images_container)
    doc = store.get(args.image) or store.get(image_id(settings.upload_container, args.image))
    if doc is None:
        err(f"no image with id or name {args.image!r}")
        return 1
    print(json.dumps(doc, indent=2, sort_keys=True))
    if args.download:
        for path in download_blobs(doc, Path(args.download)):
            err(f"saved {path}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """An image's timeline from the local collector (pipeline.observability.telemetry): no emulator
    needed."""
    from pipeline.observability import telemetry

    settings = get_settings()
    spans = []
    for candidate in dict.fromkeys([args.image, image_id(settings.upload_container, args.image)]):
        if spans := telemetry.read_spans(settings, candidate):
            image = candidate
            break
    if not spans:
        where = telemetry.traces_dir(settings) / telemetry.SPANS_FILE
        err(f"no spans for an image with id or name {args.image!r} in {where}")
        if not settings.tracing.enabled:
            err("tracing is off (DARKROOM_TRACING=false)")
        return 1
    report = {"image": image, **telemetry.timeline(spans)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"image {image}  trace {', '.join(report['traces'])}")
    print(
        f"  {'span':<22} {'attempt':>7} {'lane':<8} {'queue wait':>11} {'slot wait':>11} "
        f"{'work':>11} {'cpu':>11}  outcome"
    )

    def as_ms(value: float | None) -> str:
        return "" if value is None else f"{value:.1f} ms"

    for row in report["rows"]:
        outcome = row["outcome"] or ("" if row["status"] == "UNSET" else row["status"].lower())
        if row["reason"]:
            outcome += f": {printable(row['reason'])[:80]}"
        print(
            f"  {row['span'][:22]:<22} {row['attempt'] or '':>7} {row['lane'] or '':<8} "
            f"{as_ms(row['queue_wait_ms']):>11} {as_ms(row['slot_wait_ms']):>11} "
            f"{as_ms(row['work_ms']):>11} {as_ms(row['cpu_ms']):>11}  {outcome}"
        )
        for capability, ms in row["analyzers"].items():
            print(f"      analyzer {capability:<12} {ms:>8.1f} ms")
    attempts = ", ".join(f"{step} {n}" for step, n in report["attempts"].items())
    print(
        f"end to end {report['total_ms']:.1f} ms: work {report['work_ms']:.1f} ms, "
        f"queue wait {report['queue_wait_ms']:.1f} ms, slot wait {report['slot_wait_ms']:.1f} "
        f"ms; attempts: {attempts}"
    )
    return 0


def download_blobs(doc: dict, folder: Path) -> list[Path]:
    """Every blob the pipeline wrote for an image (analysis image, thumbnail, archive, the
    published derivative) into `folder/<id>/`: the emulator's blob URLs need a signature."""
    azure = clients()
    settings = azure.settings
    target = folder / doc["id"]
    saved = []
    for container in (settings.derived_container, settings.publish.container):
        client = azure.blob_service.get_container_client(container)
        for blob in client.list_blobs(name_starts_with=f"{doc['id']}/"):
            path = target / container / blob.name.split("/", 1)[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.download_blob(blob.name).readall())
            saved.append(path)
    return saved


def cmd_status(args: argparse.Namespace) -> int:
    if missing := unreachable_endpoints(get_settings()):
        # Say it at once: the SDKs would retry an endpoint that does not answer for a minute.
        message = (
            f"the stack is not up: nothing answers at {', '.join(missing)}; start it with "
            "`python -m pipeline up` (or check the endpoints in those settings)"
        )
        if args.json:
            print(json.dumps({"up": False, "error": message, "unreachable": missing}, indent=2))
        err(message)
        return 3
    azure = clients()
    settings = azure.settings
    report: dict = {"queues": {}, "images": {}}
    for row in operations.queue_depths(azure):
        report["queues"][row["queue"]] = row["depth"]
        report["queues"][row["poison_queue"]] = row["poison"]
    results = settings.results_queue_name()
    try:
        props = azure.queue_service.get_queue_client(results).get_queue_properties()
        report["queues"][results] = props.approximate_message_count
    except Exception:
        report["queues"][results] = None
    store = ResultsStore(azure.images_container)
    report["images"] = store.count_by_status()
    report["stalled"] = [doc["id"] for doc in stalled_images(azure, store)]
    drift_report = drift.check(store, settings.drift)
    report["drift"] = drift_report.summary()
    report["route"] = [step_name(s) for s in settings.pipeline_steps]
    report["warnings"] = startup_warnings()
    # The page and health as the running local host recorded them (its port, its keys).
    access = running_access(settings.data_dir)
    base = access.url if access else f"http://127.0.0.1:{settings.host_port}/"
    report["health"] = f"{base}api/health"
    report["page"] = asdict(access) if access else None
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("route: " + " → ".join(report["route"]))
    print("queues (approximate messages):")
    for queue, depth in report["queues"].items():
        print(f"  {queue:<40} {'-' if depth is None else depth}")
    print("images: " + ", ".join(f"{report['images'][s]} {s}" for s in IMAGE_STATUSES))
    if report["stalled"]:
        print(
            f"stalled: {len(report['stalled'])} image(s) queued/processing for over "
            f"{settings.stall_seconds:.0f} s with no message left to move them (the stall sweep "
            f"resumes them; one: python -m pipeline show {report['stalled'][0]})"
        )
    _print_drift(drift_report)
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"health: {report['health']}   (local host; on Azure: https://<app>/api/health)")
    if access:
        print(access.describe())
    return 0


def _share(value: float | None, spec: str = ".0%") -> str:
    return "-" if value is None else format(value, spec)


def _print_drift(report: drift.DriftReport) -> None:
    """One line per capability: its verdict, PSI, share of findings and error rate."""
    print(
        f"model drift: analysed {report.current.start} → now ({report.current.images} images) "
        f"against the {report.baseline.images} before, since {report.baseline.start}"
    )
    if not report.capabilities:
        print("  no analysed images in either window")
    for c in report.capabilities:
        psi = "-" if c.psi is None else f"{c.psi:.3f}"
        print(
            f"  {c.capability:<11} {c.verdict:<17} psi {psi:<6} "
            f"{drift.POSITIVE[c.capability]} {_share(c.current.positive_share)}"
            f" (was {_share(c.baseline.positive_share)})"
            f"  errors {_share(c.error_rate, '.1%')}"
            f"  images {c.current.images}/{c.baseline.images}"
        )
        for reason in c.reasons:
            print(f"      {reason}")


# ---------------------------------------------------------------- operator tools


def _store() -> ResultsStore:
    return ResultsStore(clients().images_container)


def cmd_failed(args: argparse.Namespace) -> int:
    statuses = ("failed", "rejected") if args.status == "all" else (args.status,)
    rows = operations.failed_images(_store(), statuses, clients())
    if args.json:
        print(operations.as_json_lines(rows))
        return 0
    if not rows:  # on stdout: the answer, not a diagnostic (`failed | wc -l` reads 1 either way)
        print(f"no {' or '.join(statuses)} images")
        return 0
    for row in rows:
        print(
            f"{row['status']:<9} {clipped(row['name'], 40):<40} at {row['step'] or '-':<10} "
            f"{row['id']}  {row['reason']}"
        )
    err(f"{len(rows)} image(s)")
    return 0


def cmd_poison(args: argparse.Namespace) -> int:
    azure, store = clients(), _store()
    if args.action == "list":
        entries = [e.as_dict() for e in operations.poison_messages(azure, store, args.limit)]
        if args.json:
            print(operations.as_json_lines(entries))
        elif not entries:
            print("no poisoned messages")
            return 0
        for e in [] if args.json else entries:
            what = e["problem"] or f"image {e['image_id']} at {e['step']} ({e['lane']})"
            print(
                f"{e['queue']:<40} {e['message_id'][:8]}  delivered {e['dequeue_count']}x  "
                f"{what}  document: {e['document_status']} {e['document_reason'] or ''}"
            )
        err(f"{len(entries)} poisoned message(s)")
        return 0
    counts = operations.replay_poison(
        azure, store, step=args.step, image=args.image, limit=args.limit
    )
    err(", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    if args.missing:
        mode, step = "missing", args.missing
    else:
        mode, step = ("all", None) if args.all else ("model-changed", None)
    try:
        chosen = operations.reprocess(
            clients(),
            _store(),
            mode,
            step,
            start=args.start,
            lane=args.lane,
            dry_run=args.dry_run,
            limit=args.limit,
        )
    except ValueError as exc:
        err(exc)
        return 2
    if args.json:
        print(operations.as_json_lines(chosen))
    else:
        for row in chosen:
            print(f"{row['id']}  {printable(row['name'])}  from {row['from']}")
    verb = "would queue" if args.dry_run else f"queued on the {args.lane} lane"
    err(f"{verb}: {len(chosen)} image(s)")
    return 0


def cmd_keys_add(args: argparse.Namespace) -> int:
    """A new random key; only its SHA-256 goes into the settings (see pipeline.api.auth)."""
    if not KEY_NAME.match(args.name):
        err(
            f"key name {args.name!r}: letters, digits, _ or - only (up to 40), "
            "not starting with _ or -"
        )
        return 2
    key = "drk_" + secrets.token_urlsafe(32)  # a prefix secret scanners can match
    setting = "DARKROOM_ADMIN_KEYS" if args.admin else "DARKROOM_API_KEYS"
    entry = f"{args.name}:{key_digest(key)}"
    saved = None
    if args.save:
        try:
            saved = _save_key_entry(setting, args.name, entry)
        except ValueError as exc:
            err(exc)
            return 2
    if args.json:
        print(
            json.dumps(
                {
                    "name": args.name,
                    "key": key,
                    "setting": setting,
                    "entry": entry,
                    "saved_in": str(saved) if saved else None,
                }
            )
        )
        return 0
    print(f"key:   {key}")
    print(f"entry: {entry}")
    where = (
        f"It is now in {setting} in {saved}"
        if saved
        else f"Add the entry to {setting} (comma-separated with any others) in {_settings_name()}"
        " (or run again with --save)"
    )
    err(
        f"Give the key to its user (it is shown only now). {where}: a running local host "
        "takes it within a second, no restart needed (unless the environment sets "
        f"{setting}, which wins over the file). On Azure: azd env set {setting} '<entries>' && "
        "azd provision, which restarts the app with it (see docs/deploy.md)."
    )
    return 0


def _settings_name() -> str:
    path = get_settings().settings_file
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _save_key_entry(setting: str, name: str, entry: str) -> Path:
    """Append `entry` to `setting` in the local settings file (written whole, atomically)."""
    path = get_settings().settings_file
    if path.name == "local.settings.sample.json":
        raise ValueError("no local.settings.json yet: run `make setup` first, or set it by hand")
    document = json.loads(path.read_text())
    values = document.setdefault("Values", {})
    entries = [e.strip() for e in str(values.get(setting, "")).split(",") if e.strip()]
    names = {
        e.split(":", 1)[0]
        for key_setting in KEY_SETTINGS
        for e in str(values.get(key_setting, "")).split(",")
        if e.strip()
    }
    if name in names:
        raise ValueError(f"a key named {name!r} is in {path.name} already: choose another name")
    values[setting] = ",".join([*entries, entry])
    with temporary_file(path.parent, ".json") as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    return path
