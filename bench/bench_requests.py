"""What one storage or Cosmos request costs in CPU: this process's (the SDK) and the emulator's.

Run: `.venv/bin/python -m bench.bench_requests [--rounds 3] [--megabytes 4]`.

The chain makes about fifty requests per image (bench_chain's core-seconds put a third of a
12 MP image's cost outside the steps), so the price of each kind of request is what decides
where orchestration time goes. Each operation runs `--count` times per round against a fresh
local stack (Azurite, the Cosmos emulator) built by the test harness; the figures are medians
over rounds of CPU milliseconds per request, read from /proc for the emulators and from
`time.thread_time` for the client, plus the wall time.

It also compares, in the same rounds, a blob download through the pipeline's storage transport
(`pipeline.stores.azure_clients.STORAGE_TRANSPORT`: the storage SDK's own 256 KiB blocks) with the
same transport at azure-core's default 4 KiB blocks, which is what a transport passed to the
SDK got before the settings were carried over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from bench.bench_chain import cpu_seconds
from pipeline.settings import Settings
from pipeline.stores.azure_clients import STORAGE_TRANSPORT, AzureClients, http_transport
from tests.harness import Pipeline, emulator_env, running_emulators


def cost(fn: Callable[[], object], count: int, emulators: dict[str, int]) -> dict[str, float]:
    """Per call: this thread's CPU, each emulator's CPU, and the wall time, in ms."""
    fn()  # warm-up: a first connection, lazy imports
    before = {name: cpu_seconds(pid) or 0.0 for name, pid in emulators.items()}
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(count):
        fn()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    used = {name: (cpu_seconds(pid) or 0.0) - before[name] for name, pid in emulators.items()}
    return {
        "client_cpu_ms": cpu / count * 1000,
        **{f"{name}_cpu_ms": seconds / count * 1000 for name, seconds in used.items()},
        "wall_ms": wall / count * 1000,
    }


Operation = tuple[Callable[[], object], int]  # the call, and how many times a round makes it


def operations(env: dict[str, str], megabytes: float) -> dict[str, Operation]:
    azure = AzureClients(Settings.from_env(env))
    queue = azure.queue_service.get_queue_client("bench-requests")
    queue.create_queue()
    documents = azure.images_container
    document = {"id": "0" * 32, "status": "processing", "fields": "x" * 3000}  # ~3 KB, as mid-chain
    documents.upsert_item(document)
    azure.blob_service.create_container("bench-requests")
    blob = azure.blob_service.get_blob_client("bench-requests", "photo.jpg")
    data = os.urandom(int(megabytes * 1e6))
    blob.upload_blob(data, overwrite=True)
    # The same blob through a transport with azure-core's default blocks (everything else equal).
    small_blocks = BlobServiceClient.from_connection_string(
        env["DARKROOM_STORAGE"], transport=http_transport(True, connection_data_block_size=4096)
    ).get_blob_client("bench-requests", "photo.jpg")

    def send_receive_delete() -> None:
        queue.send_message("aGVsbG8=")
        for message in queue.receive_messages(max_messages=1, visibility_timeout=30):
            queue.delete_message(message)

    size = f"{megabytes:g} MB"
    return {
        "queue: receive, queue empty": (
            lambda: list(queue.receive_messages(messages_per_page=4, max_messages=4)),
            200,
        ),
        "queue: send + receive + delete": (send_receive_delete, 100),
        "cosmos: point read": (lambda: documents.read_item("0" * 32, partition_key="0" * 32), 200),
        "cosmos: upsert, 3 KB": (lambda: documents.upsert_item(document), 200),
        "blob: properties": (blob.get_blob_properties, 200),
        f"blob: download {size}": (lambda: blob.download_blob().readall(), 30),
        f"blob: download {size}, 4 KiB blocks": (
            lambda: small_blocks.download_blob().readall(),
            30,
        ),
        f"blob: upload {size}": (lambda: blob.upload_blob(data, overwrite=True), 30),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=float, default=4.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        env = emulator_env(Path(scratch))
        with running_emulators(env) as emulators:
            Pipeline(dict(env)).provision()
            pids = {e.name: e.process.pid for e in emulators}
            ops = operations(env, args.megabytes)
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in ops}
            for _ in range(args.rounds):  # interleaved: the machine's noise is shared
                for name, (fn, count) in ops.items():
                    samples[name].append(cost(fn, count, pids))
    result = {
        name: {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
        for name, runs in samples.items()
    }
    download = next(k for k in result if k.startswith("blob: download") and "KiB" not in k)
    result["download, client CPU: 4 KiB blocks ÷ the SDK's blocks"] = round(
        result[f"{download}, 4 KiB blocks"]["client_cpu_ms"] / result[download]["client_cpu_ms"], 2
    )
    print(json.dumps({"transport": STORAGE_TRANSPORT, "rounds": args.rounds, **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
