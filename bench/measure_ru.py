"""What one image costs the services: Cosmos operations and RU, queue messages, blob traffic.

Run: `.venv/bin/python -m bench.measure_ru [--images 10] [--megapixels 12] [--out FILE]`.

Counted from the outside: the emulators (Azurite, the Cosmos emulator, both Node) are started
with `bench/request_meter.js` preloaded (`NODE_OPTIONS=--require …`), which appends every
request they answer to a log — method, path, the headers that tell operations apart, bytes in
and out, status, the request charge. So every call of the bench, the host and its worker
processes is seen with no change to the app, the host or the emulators. The bench's own calls
(uploads, polling for the final documents) carry the user agent `darkroom-meter-bench` and
are reported apart.

The run: the whole local stack (host with `--workers` workers), one warm-up image (models
load), an idle window (what the host does with nothing to do: queue polls, the event source's
listings), then `--images` photos uploaded at once, until every final document is settled.

RU: the Cosmos emulator answers `x-ms-request-charge: 1` for every request (it has no cost
model; checked here per request), so what the emulator measures is the operations and their
sizes. RU per image are estimated from them with Microsoft's published per-size costs of a
read and a write (learn.microsoft.com/azure/cosmos-db/understand-request-unit-consumption) and
stated assumptions for queries; on Azure the same log's operations can be checked against the
real `x-ms-request-charge`.

Writes a JSON (default `bench/results/capacity-costs.json`) that `bench/simulate_capacity.py`
reads: operations, bytes and RU per image, idle polling per second, and each step's measured
duration (from the documents' `steps.<name>.duration_ms`).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import unquote

from azure.cosmos import CosmosClient
from azure.storage.blob import BlobServiceClient, ContentSettings
from PIL import Image

from pipeline.framework.contract import image_id
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stores.results import is_settled
from tests.harness import SAMPLES, Pipeline, emulator_env, free_port, running_emulators

METER_JS = Path(__file__).with_name("request_meter.js")
BENCH_UA = "darkroom-meter-bench"
DEFAULT_OUT = Path(__file__).with_name("results") / "capacity-costs.json"

# learn.microsoft.com/azure/cosmos-db/understand-request-unit-consumption, "Document size"
# (session consistency, default indexing): KB → (read RU, write RU).
RU_TABLE_KB = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
RU_READ = [1.00, 1.04, 1.14, 1.33, 1.67, 2.19, 4.76, 9.95, 20.28, 40.95, 145.90, 291.80]
RU_WRITE = [4.95, 6.29, 6.67, 7.04, 9.52, 11.23, 22.67, 48.19, 98.29, 184.57, 625.00, 1250.00]
# Assumptions (not in that table), overridable: a query by id within one partition returning
# one document costs more than the 1-RU point read (optimize-cost-reads-writes orders them so);
# 2.8 RU is the usual figure for such a query over a small document (Azure portal's query stats
# for SELECT * WHERE c.id = @id), plus the read cost of what it returns beyond 1 KB. A vector
# query (VectorDistance, TOP k, quantizedFlat) depends on the vectors scanned: 10 RU assumed for
# a library of a few hundred faces. A delete costs about a write of the document.
QUERY_BASE_RU = 2.8
VECTOR_QUERY_RU = 10.0
VECTOR_CONTAINERS = ("faces", "people")  # DARKROOM_FACES_CONTAINER / _PEOPLE_CONTAINER defaults


def interpolate(kb: float, column: list[float]) -> float:
    """RU of an operation on a `kb` KB document, linear between the table's rows."""
    if kb <= RU_TABLE_KB[0]:
        return column[0]
    if kb >= RU_TABLE_KB[-1]:
        return column[-1] * kb / RU_TABLE_KB[-1]
    i = bisect.bisect_left(RU_TABLE_KB, kb)
    lo, hi = RU_TABLE_KB[i - 1], RU_TABLE_KB[i]
    return column[i - 1] + (column[i] - column[i - 1]) * (kb - lo) / (hi - lo)


def make_photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """`count` JPEGs from the samples (cycled): as they are (`megapixels` 0) or enlarged to
    about `megapixels`, 4:3, JPEG q90, as bench_chain does."""
    sources = sorted(SAMPLES.glob("*.jpg"))
    made = []
    for i in range(count):
        source = sources[i % len(sources)]
        path = folder / f"{i:04d}-{source.stem}.jpg"
        if megapixels <= 0:
            path.write_bytes(source.read_bytes())
        else:
            width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
            with Image.open(source) as image:
                image.convert("RGB").resize(
                    (width, round(width * 3 / 4)), Image.Resampling.LANCZOS
                ).save(path, "JPEG", quality=90)
        made.append(path)
    return made


# -- classifying the log ---------------------------------------------------------------------
def cosmos_op(entry: dict) -> tuple[str, str]:
    """(operation, container) of one Cosmos request."""
    parts = [unquote(p) for p in entry["path"].strip("/").split("/") if p]
    headers = entry["headers"]
    container = parts[3] if len(parts) >= 4 and parts[2] == "colls" else ""
    if len(parts) >= 5 and parts[4] == "docs":
        if len(parts) == 5 and entry["method"] == "POST":
            if headers.get("x-ms-cosmos-is-query-plan-request", "").lower() == "true":
                return "query_plan", container
            if headers.get("x-ms-documentdb-isquery", "").lower() == "true" or headers.get(
                "content-type", ""
            ).startswith("application/query+json"):
                return "query", container
            if headers.get("x-ms-documentdb-is-upsert", "").lower() == "true":
                return "upsert", container
            return "create", container
        if len(parts) == 5 and entry["method"] == "GET":
            return "read_feed", container
        return {"GET": "read", "PUT": "replace", "DELETE": "delete", "PATCH": "patch"}.get(
            entry["method"], entry["method"].lower()
        ), container
    return "metadata", container


def storage_op(entry: dict, service: str) -> tuple[str, str]:
    """(operation, container/queue/table) of one Azurite request."""
    parts = [unquote(p) for p in entry["path"].strip("/").split("/") if p]
    name = parts[1] if len(parts) > 1 else ""
    method, query = entry["method"], entry.get("query", "")
    if service == "queue":
        if len(parts) >= 3 and parts[2] == "messages":
            if len(parts) == 3:
                if method == "POST":
                    return "put", name
                if method == "GET":
                    return ("peek" if "peekonly=true" in query.lower() else "get"), name
                if method == "DELETE":
                    return "clear", name
            return {"DELETE": "delete", "PUT": "update"}.get(method, method.lower()), name
        return ("properties" if "comp=metadata" in query else "queue_other"), name
    if service == "blob":
        if len(parts) <= 2:
            return ("list" if "comp=list" in query else "container_other"), name
        if method == "PUT":
            return ("put_block" if "comp=block" in query else "put"), name
        return {"GET": "get", "HEAD": "head", "DELETE": "delete"}.get(method, method.lower()), name
    return {
        "GET": "query",
        "POST": "insert",
        "PUT": "upsert",
        "MERGE": "merge",
        "PATCH": "merge",
    }.get(method, method.lower()), name


def read_log(path: Path) -> list[dict]:
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by the emulator's stop
    return entries


def ports_of(env: dict) -> dict[int, str]:
    from local.emulators import local_ports

    ports = local_ports(Settings.from_env(env))
    return {ports.blob: "blob", ports.queue: "queue", ports.table: "table", ports.cosmos: "cosmos"}


def summarize(entries: list[dict], services: dict[int, str], start: float, end: float) -> dict:
    """Counts and bytes by service and operation in [start, end), the bench's own apart."""
    ops: dict = defaultdict(Counter)
    size: dict = defaultdict(Counter)
    charges = Counter()
    cosmos_writes: list[dict] = []
    cosmos_reads: list[dict] = []
    queue_received = Counter()
    for e in entries:
        if not start <= e["t"] < end or e["port"] not in services:
            continue
        service = services[e["port"]]
        who = "bench" if BENCH_UA in e.get("ua", "") else "app"
        if service == "cosmos":
            op, container = cosmos_op(e)
            charges[str(e.get("charge"))] += 1
            if who == "app" and op in ("create", "upsert", "replace"):
                cosmos_writes.append({"op": op, "container": container, "bytes": e["req_bytes"]})
            if who == "app" and op in ("read", "query"):
                cosmos_reads.append(
                    {
                        "op": op,
                        "container": container,
                        "bytes": e["res_bytes"],
                        "body": e["req_bytes"],
                    }
                )
        else:
            op, container = storage_op(e, service)
            if service == "queue" and op == "get" and who == "app":
                queue_received["with_messages" if e.get("messages") else "empty"] += 1
                queue_received["messages"] += e.get("messages") or 0
        key = f"{who}.{service}.{op}"
        ops[key][container] += 1
        size[key]["req_bytes"] += e["req_bytes"]
        size[key]["res_bytes"] += e["res_bytes"]
    return {
        "ops": {k: dict(v) for k, v in sorted(ops.items())},
        "bytes": {k: dict(v) for k, v in sorted(size.items())},
        "cosmos_charges_seen": dict(charges),
        "cosmos_writes": cosmos_writes,
        "cosmos_reads": cosmos_reads,
        "queue_gets": dict(queue_received),
    }


def ru_estimate(
    writes: list[dict], reads: list[dict], deletes: int, query_ru: float, vector_ru: float
) -> dict:
    """RU of the app's Cosmos operations by the size table and the query assumptions."""
    by: Counter = Counter()
    for w in writes:
        by[f"{w['op']}:{w['container']}"] += interpolate(w["bytes"] / 1024, RU_WRITE)
    for r in reads:
        kb = r["bytes"] / 1024
        if r["op"] == "read":
            by[f"read:{r['container']}"] += interpolate(kb, RU_READ)
        else:
            # a query's answer is the page of documents plus a small envelope
            # a VectorDistance query carries its 128-float vector (~2.5 KB of JSON)
            vector = r["container"] in VECTOR_CONTAINERS and r["body"] > 1500
            base = vector_ru if vector else query_ru
            by[f"query:{r['container']}"] += base + max(0.0, interpolate(kb, RU_READ) - 1.0)
    return {"by_operation": dict(by), "total": sum(by.values()), "deletes_not_priced": deletes}


# -- the run -----------------------------------------------------------------------------------
def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        files = make_photos(folder, args.images + 1, args.megapixels)
        log = Path(scratch) / "meter.jsonl"
        env = emulator_env(Path(scratch) / "stack")
        saved = {k: os.environ.get(k) for k in ("NODE_OPTIONS", "DARKROOM_METER_FILE")}
        os.environ["NODE_OPTIONS"] = f"--require {METER_JS}"
        os.environ["DARKROOM_METER_FILE"] = str(log)
        try:
            emulators = running_emulators(env)
            emulators.__enter__()
        finally:  # only the emulators carry the meter, not the host or its workers
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            return measure(args, env, files, log)
        finally:
            emulators.__exit__(None, None, None)


def measure(args: argparse.Namespace, env: dict, files: list[Path], log: Path) -> dict:
    extra = {"PIPELINE_STEPS": args.route} if args.route else {}
    pipeline = Pipeline(
        {
            **env,
            **extra,
            "DARKROOM_HOST_WORKERS": str(args.workers),
            "DARKROOM_HOST_PORT": str(free_port()),
            "DARKROOM_QUEUE_PREFIX": "meter-",
            "DARKROOM_UPLOAD_CONTAINER": "meter-uploads",
            "DARKROOM_COSMOS_CONTAINER": "meter",
        }
    ).provision()
    settings = pipeline.settings
    blobs = BlobServiceClient.from_connection_string(
        env["DARKROOM_STORAGE"], user_agent=BENCH_UA
    ).get_container_client(settings.upload_container)
    cosmos = (
        CosmosClient.from_connection_string(env["DARKROOM_COSMOS"], user_agent_suffix=BENCH_UA)
        .get_database_client(settings.cosmos_database)
        .get_container_client(settings.cosmos_container)
    )

    def upload(path: Path) -> tuple[str, str]:
        result = blobs.get_blob_client(path.name).upload_blob(
            path.read_bytes(),
            overwrite=True,
            content_settings=ContentSettings(content_type="image/jpeg"),
        )
        return image_id(settings.upload_container, path.name), result["etag"]

    def settled(pending: list[tuple[str, str]], timeout: float) -> list[dict]:
        deadline, docs = time.monotonic() + timeout, {}
        while time.monotonic() < deadline and len(docs) < len(pending):
            for doc_id, etag in pending:
                if doc_id in docs:
                    continue
                found = list(
                    cosmos.query_items(
                        "SELECT * FROM c WHERE c.id = @id",
                        parameters=[{"name": "@id", "value": doc_id}],
                        partition_key=doc_id,
                    )
                )
                if found and is_settled(found[0], etag):
                    docs[doc_id] = found[0]
            time.sleep(0.5)
        if len(docs) < len(pending):
            raise RuntimeError(f"{len(pending) - len(docs)} images not settled in {timeout}s")
        return list(docs.values())

    pipeline.start_host(timeout=180)
    try:
        settled([upload(files[0])], timeout=600)  # models load in each worker
        time.sleep(2)
        idle_start = time.time()
        time.sleep(args.idle)
        idle_end = run_start = time.time()
        pending = [upload(f) for f in files[1:]]
        docs = settled(pending, timeout=1800)
        time.sleep(args.tail)  # the last deletes and the final upsert's echo
        run_end = time.time()
    finally:
        pipeline.stop_host()
    time.sleep(1)
    entries = read_log(log)
    services = ports_of(env)
    idle = summarize(entries, services, idle_start, idle_end)
    window = summarize(entries, services, run_start, run_end)
    return report(args, docs, files[1:], idle, window, idle_end - idle_start, run_end - run_start)


def per_image(counts: dict, n: int) -> dict:
    return {k: round(sum(v.values()) / n, 3) for k, v in counts.items()}


def report(args, docs, files, idle, window, idle_seconds, run_seconds) -> dict:
    n = len(docs)
    ops = window["ops"]

    def total(key: str) -> int:
        return sum(ops.get(key, {}).values())

    deletes = total("app.cosmos.delete")
    ru = ru_estimate(
        window["cosmos_writes"], window["cosmos_reads"], deletes, args.query_ru, args.vector_ru
    )
    steps: dict = defaultdict(list)
    faces = []
    for doc in docs:
        for name, record in (doc.get("steps") or {}).items():
            if record.get("duration_ms") is not None:
                steps[name].append(record["duration_ms"])
        faces.append(len((doc.get("analysis") or {}).get("faces") or []))
    image_docs = [w["bytes"] for w in window["cosmos_writes"] if w["container"] == "meter"]
    blob_bytes = window["bytes"]
    queue_puts = ops.get("app.queue.put", {})
    return {
        "measured_at": time.strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "command": " ".join(
            [
                ".venv/bin/python -m bench.measure_ru",
                f"--images {args.images}",
                f"--megapixels {args.megapixels:g}",
                f"--workers {args.workers}",
            ]
            + ([f"--route {args.route}"] if args.route else [])
        ),
        "images": n,
        "route": docs[0]["route"],
        "upload_bytes_mean": round(statistics.mean(f.stat().st_size for f in files)),
        "faces_per_image_mean": round(statistics.mean(faces), 2),
        "run_seconds": round(run_seconds, 1),
        "cosmos_request_charges_seen": window["cosmos_charges_seen"],
        "per_image": {
            "cosmos_ops": {
                k.removeprefix("app.cosmos."): round(sum(v.values()) / n, 2)
                for k, v in ops.items()
                if k.startswith("app.cosmos.")
            },
            "cosmos_ops_by_container": {
                k.removeprefix("app.cosmos."): {c: round(x / n, 2) for c, x in v.items()}
                for k, v in ops.items()
                if k.startswith("app.cosmos.")
            },
            "image_document_writes": round(len(image_docs) / n, 2),
            "image_document_bytes": {
                "mean": round(statistics.mean(image_docs)) if image_docs else 0,
                "max": max(image_docs, default=0),
            },
            "ru_estimate": {k: round(v / n, 2) for k, v in ru["by_operation"].items()},
            "ru_total": round(ru["total"] / n, 1),
            "queue_ops": {
                k.removeprefix("app.queue."): round(sum(v.values()) / n, 2)
                for k, v in ops.items()
                if k.startswith("app.queue.")
            },
            "queue_messages_sent_by_queue": {q: round(c / n, 2) for q, c in queue_puts.items()},
            "queue_messages_sent": round(sum(queue_puts.values()) / n, 2),
            "queue_messages_received": round(window["queue_gets"].get("messages", 0) / n, 2),
            "queue_message_bytes": round(
                blob_bytes.get("app.queue.put", {}).get("req_bytes", 0)
                / max(1, sum(queue_puts.values()))
            ),
            "blob_ops": {
                k.removeprefix("app.blob."): round(sum(v.values()) / n, 2)
                for k, v in ops.items()
                if k.startswith("app.blob.")
            },
            "blob_bytes_written": round(
                sum(
                    blob_bytes.get(k, {}).get("req_bytes", 0)
                    for k in ("app.blob.put", "app.blob.put_block")
                )
                / n
            ),
            "blob_bytes_read": round(blob_bytes.get("app.blob.get", {}).get("res_bytes", 0) / n),
            "blob_writes_by_container": {
                c: round(x / n, 2) for c, x in ops.get("app.blob.put", {}).items()
            },
            "blob_reads_by_container": {
                c: round(x / n, 2) for c, x in ops.get("app.blob.get", {}).items()
            },
            "table_ops": {
                k.removeprefix("app.table."): round(sum(v.values()) / n, 2)
                for k, v in ops.items()
                if k.startswith("app.table.")
            },
        },
        "client_upload": {
            "puts": round(total("bench.blob.put") / n, 2),
            "bytes": round(blob_bytes.get("bench.blob.put", {}).get("req_bytes", 0) / n),
        },
        "bench_own_calls": {
            k.removeprefix("bench."): sum(v.values())
            for k, v in ops.items()
            if k.startswith("bench.")
        },
        "idle_per_second": {
            k.removeprefix("app."): round(sum(v.values()) / idle_seconds, 2)
            for k, v in idle["ops"].items()
            if k.startswith("app.")
        },
        "idle_seconds": round(idle_seconds, 1),
        "queue_gets_in_run": window["queue_gets"],
        "step_ms": {
            name: {
                "median": round(statistics.median(v), 1),
                "p90": round(sorted(v)[max(0, math.ceil(0.9 * len(v)) - 1)], 1),
                "max": round(max(v), 1),
            }
            for name, v in steps.items()
        },
        "ru_model": {
            "source": "learn.microsoft.com/azure/cosmos-db/understand-request-unit-consumption",
            "query_base_ru": args.query_ru,
            "vector_query_ru": args.vector_ru,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--megapixels", type=float, default=12.0, help="0: the samples as they are")
    parser.add_argument("--route", default="", help="PIPELINE_STEPS (default: the app's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle host metered")
    parser.add_argument("--tail", type=float, default=3.0)
    parser.add_argument("--query-ru", type=float, default=QUERY_BASE_RU)
    parser.add_argument("--vector-ru", type=float, default=VECTOR_QUERY_RU)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("images", "route", "per_image")}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
