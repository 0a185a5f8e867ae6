"""Face search on the local Cosmos emulator against NumPy brute force, one run.

Run: `.venv/bin/python -m bench.bench_vector_search [--sizes 1000,10000,100000] [--queries 6]`.

A Cosmos emulator of its own (no Azurite, temporary data folder) gets a container as the face
search would use it on Azure (partition key /owner, vectorEmbeddingPolicy cosine float32 128-d,
a quantizedFlat vector index, /embedding/* excluded), then synthetic normalized 128-d faces in
steps up to each size. At each size:

- **insert**: transactional batches of 100 through the Python SDK, 4 threads;
- **emulator**: the search query, TOP 10, through the SDK; the first query of a size on its
  own (cold), then the median of the others; once more with partition_key (the single-partition
  form the app would use);
- **numpy**: the same top 10 by brute force (matrix product + argpartition) over the same
  vectors, in this process: what the search costs without storage, HTTP and JSON;
- **fetch + numpy** (sizes up to --fetch-max): every embedding of the owner/model fetched
  through the SDK and ranked here, the other way an app could search;
- the node process's RSS, and its growth per face added at this size (every document is held
  in memory, and journaled). The data folder is removed at the end.

Every query's top 10 is compared with NumPy's (ids in order; scores within 1e-5 for the first).
Prints one JSON line per size, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from azure.cosmos import PartitionKey

from local.emulators import local_ports, start_cosmos
from pipeline.settings import Settings
from pipeline.stores.faces import vector_policies
from tests.harness import Pipeline, emulator_env

DIM, K, OWNER, MODEL = 128, 10, "owner-1", "facenet-v1"
QUERY = (
    "SELECT TOP @k c.id, c.person, VectorDistance(c.embedding, @q) AS score FROM c "
    "WHERE c.model = @model AND c.owner = @owner ORDER BY VectorDistance(c.embedding, @q)"
)
# The policies the app creates its faces container with (Bicep declares the same).
VECTOR_POLICY, INDEXING_POLICY = vector_policies("/embedding", DIM, "cosine")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def normalized(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def params(q: np.ndarray) -> list[dict]:
    return [
        {"name": "@k", "value": K},
        {"name": "@q", "value": [float(x) for x in q]},
        {"name": "@model", "value": MODEL},
        {"name": "@owner", "value": OWNER},
    ]


def numpy_top(matrix: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = matrix @ q
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])], scores


def run(sizes: list[int], n_queries: int, fetch_max: int) -> dict:
    rng = np.random.default_rng(11)
    vectors = normalized(rng, max(sizes))
    queries = normalized(rng, n_queries)
    data = Path(tempfile.mkdtemp(prefix="darkroom-bench-vector-"))
    env = emulator_env(data)
    settings = Settings.from_env(env)
    emulator = start_cosmos(settings, local_ports(settings))
    pid = emulator.process.pid
    rows = []
    try:
        client = Pipeline(env).azure.cosmos
        faces = client.create_database_if_not_exists("bench").create_container(
            "faces",
            partition_key=PartitionKey(path="/owner"),
            indexing_policy=INDEXING_POLICY,
            vector_embedding_policy=VECTOR_POLICY,
        )
        rss_empty = rss_mb(pid)

        def insert(lo: int, hi: int) -> None:
            ops = [
                (
                    "create",
                    (
                        {
                            "id": f"face-{i}",
                            "owner": OWNER,
                            "model": MODEL,
                            "image": f"img-{i // 3}",
                            "person": f"person-{i % 997}",
                            "embedding": [float(x) for x in vectors[i]],
                        },
                    ),
                )
                for i in range(lo, hi)
            ]
            faces.execute_item_batch(ops, partition_key=OWNER)

        stored = 0
        for n in sizes:
            rss_before, stored_before = rss_mb(pid), stored
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda lo, n=n: insert(lo, min(lo + 100, n)), range(stored, n, 100)))
            insert_s = time.perf_counter() - started
            rate = (n - stored) / insert_s
            stored = n
            matrix = vectors[:n]
            emulator_ms, numpy_ms, identical = [], [], 0
            for i, q in enumerate(queries):
                started = time.perf_counter()
                got = list(
                    faces.query_items(
                        QUERY, parameters=params(q), enable_cross_partition_query=True
                    )
                )
                emulator_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                top, scores = numpy_top(matrix, q)
                numpy_ms.append((time.perf_counter() - started) * 1000)
                identical += [g["id"] for g in got] == [f"face-{j}" for j in top]
                if i == 0:
                    worst = max(abs(g["score"] - float(scores[int(g["id"][5:])])) for g in got)
                    assert worst < 1e-5, f"score off by {worst}"
            started = time.perf_counter()
            list(faces.query_items(QUERY, parameters=params(queries[0]), partition_key=OWNER))
            pk_ms = (time.perf_counter() - started) * 1000
            fetch_ms = None
            if n <= fetch_max:
                started = time.perf_counter()
                items = list(
                    faces.query_items(
                        "SELECT c.id, c.person, c.embedding FROM c "
                        "WHERE c.model = @model AND c.owner = @owner",
                        parameters=params(queries[-1])[2:],
                        partition_key=OWNER,
                    )
                )
                fetched = np.asarray([it["embedding"] for it in items], dtype=np.float32)
                numpy_top(fetched, queries[-1])
                fetch_ms = (time.perf_counter() - started) * 1000
            rss = rss_mb(pid)
            row = {
                "faces": n,
                "insert_s": round(insert_s, 1),
                "insert_per_s": round(rate),
                "emulator_cold_ms": round(emulator_ms[0], 1),
                "emulator_median_ms": round(statistics.median(emulator_ms[1:] or emulator_ms), 1),
                "emulator_partition_key_ms": round(pk_ms, 1),
                "numpy_median_ms": round(statistics.median(numpy_ms[1:] or numpy_ms), 3),
                "top10_identical": f"{identical}/{len(queries)}",
                "fetch_all_numpy_ms": None if fetch_ms is None else round(fetch_ms, 1),
                "node_rss_mb": round(rss),
                "rss_kb_per_added_face": round((rss - rss_before) * 1024 / (n - stored_before), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        journal = settings.data_dir / "cosmos" / "journal.jsonl"
        summary = {
            "node_rss_empty_mb": round(rss_empty),
            "journal_mb": round(journal.stat().st_size / 2**20),
        }
    finally:
        emulator.stop()
        shutil.rmtree(data, ignore_errors=True)  # the journal alone is ~270 MB at 100k
    print(json.dumps(summary), flush=True)
    return {"sizes": rows, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--fetch-max", type=int, default=10000)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    run(sizes, max(args.queries, 2), args.fetch_max)


if __name__ == "__main__":
    main()
