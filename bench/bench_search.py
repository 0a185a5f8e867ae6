"""Search by words on the local Cosmos emulator, against the owner's newest-first listing, one run.

Run: `.venv/bin/python -m bench.bench_search [--sizes 1000,10000,100000] [--queries 30]`.

A Cosmos emulator of its own (no Azurite, temporary data folder) gets a container like the
images container (partition key /id, the full-text policy and index on /search/text), then
synthetic image documents in steps up to each size: ~200-600 characters of search text drawn
from a 3,000-word vocabulary with Zipf frequencies (plus stop words), one owner holding 10% of
the documents and 99 others sharing the rest. At each size, alternating, through the SDK and
cross-partition as the API queries:

- **search**: the API's query, `SELECT * FROM c WHERE c.owner = @owner AND
  FullTextContainsAny(c.search.text, @w0, @w1, @w2) ORDER BY RANK FullTextScore(c.search.text,
  @w0, @w1, @w2) OFFSET 0 LIMIT 20`, for the big owner, three words per query (two of middle
  frequency, one among the 100 most common); the first query after loading on its own (it also
  analyses the documents just added), then p50/p95 over the others;
- **baseline**: the owner's newest-first listing, `SELECT * FROM c WHERE c.owner = @owner
  ORDER BY c.ingested_at DESC`, first page of 20.

Prints one JSON line per size (p50/p95 of each, their ratios, the loading rate, the node
process's RSS), then a summary line. Ratios are what to compare across runs and machines; the
milliseconds only orient. The data folder is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.cosmos import PartitionKey

from local.emulators import local_ports, start_cosmos
from pipeline.settings import Settings
from tests.harness import Pipeline, emulator_env

PATH = "/search/text"
# The images container's policies (pipeline.stores.results; Bicep declares the same).
FULL_TEXT_POLICY = {
    "defaultLanguage": "en-US",
    "fullTextPaths": [{"path": PATH, "language": "en-US"}],
}
INDEXING_POLICY = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": "/analysis/*"}, {"path": '/"_etag"/?'}],
    "fullTextIndexes": [{"path": PATH}],
}
SEARCH = (
    "SELECT * FROM c WHERE c.owner = @owner AND FullTextContainsAny(c.search.text, @w0, @w1, @w2) "
    "ORDER BY RANK FullTextScore(c.search.text, @w0, @w1, @w2) OFFSET 0 LIMIT 20"
)
LISTING = "SELECT * FROM c WHERE c.owner = @owner ORDER BY c.ingested_at DESC"
PAGE = 20
OWNER = "owner-000"
VOCABULARY_SIZE = 3000
STOP = ["a", "the", "on", "in", "with", "and", "of", "at", "by", "is"]
ONSETS = ["b", "br", "c", "ch", "d", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "pl", "r",
          "s", "sh", "st", "t", "tr", "v", "w"]  # fmt: skip
NUCLEI = ["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou"]
CODAS = ["", "n", "r", "s", "t", "ck", "ld", "ng", "nt", "st"]
ENDINGS = ["", "", "", "s", "ing", "ed", "er", "ly"]


def vocabulary(rng: random.Random) -> list[str]:
    """3,000 distinct pseudo-words of 1-3 syllables, some with English endings to stem."""
    words: dict[str, None] = {}
    while len(words) < VOCABULARY_SIZE:
        syllables = rng.choice([1, 2, 2, 3])
        word = "".join(
            rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(syllables)
        )
        words[word + rng.choice(ENDINGS)] = None
    return list(words)


class Corpus:
    def __init__(self, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.weights = [1 / (rank + 1) for rank in range(len(self.words))]  # Zipf, s = 1
        self.start = datetime(2026, 1, 1, tzinfo=UTC)

    def text(self) -> str:
        target = self.rng.randint(200, 600)
        out: list[str] = []
        length = 0
        while length < target:
            sentence = self.rng.choices(self.words, self.weights, k=self.rng.randint(4, 10))
            for i in sorted(self.rng.sample(range(len(sentence)), k=len(sentence) // 3)):
                sentence.insert(i, self.rng.choice(STOP))
            part = " ".join(sentence).capitalize() + ". "
            out.append(part)
            length += len(part)
        return "".join(out)[:target].rstrip()

    def document(self, i: int) -> dict:
        owner = OWNER if i % 10 == 0 else f"owner-{1 + self.rng.randrange(99):03d}"
        labels = self.rng.choices(self.words[:200], k=3)
        return {
            "id": f"img-{i:06d}",
            "owner": owner,
            "status": "done",
            "name": f"IMG_{i:06d}.jpg",
            "ingested_at": (self.start + timedelta(seconds=37 * i)).isoformat(),
            "analysis": {"labels": [{"name": w, "score": 0.5} for w in labels]},
            "search": {"text": self.text()},
        }

    def query_words(self) -> list[str]:
        return [*self.rng.sample(self.words[100:1500], 2), self.rng.choice(self.words[:100])]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(sizes: list[int], n_queries: int, threads: int) -> dict:
    corpus = Corpus()
    data = Path(tempfile.mkdtemp(prefix="darkroom-bench-search-"))
    env = emulator_env(data)
    settings = Settings.from_env(env)
    emulator = start_cosmos(settings, local_ports(settings))
    pid = emulator.process.pid
    rows = []
    try:
        images = (
            Pipeline(env)
            .azure.cosmos.create_database_if_not_exists("bench")
            .create_container(
                "images",
                partition_key=PartitionKey(path="/id"),
                indexing_policy=INDEXING_POLICY,
                full_text_policy=FULL_TEXT_POLICY,
            )
        )

        def search(words: list[str]) -> list[dict]:
            params = [{"name": "@owner", "value": OWNER}] + [
                {"name": f"@w{i}", "value": w} for i, w in enumerate(words)
            ]
            return list(
                images.query_items(SEARCH, parameters=params, enable_cross_partition_query=True)
            )

        def listing() -> list[dict]:
            pages = images.query_items(
                LISTING,
                parameters=[{"name": "@owner", "value": OWNER}],
                enable_cross_partition_query=True,
                max_item_count=PAGE,
            ).by_page()
            return list(next(pages))

        def timed(fn, *args) -> tuple[float, list[dict]]:
            started = time.perf_counter()
            result = fn(*args)
            return (time.perf_counter() - started) * 1000, result

        stored = 0
        for n in sizes:
            docs = [corpus.document(i) for i in range(stored, n)]
            started = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(images.create_item, docs))
            load_s = time.perf_counter() - started
            rate = (n - stored) / load_s
            stored = n
            cold_ms, _ = timed(search, corpus.query_words())
            search_ms, listing_ms, hits = [], [], []
            timed(listing)  # the listing's own first run (the package compiles each new query)
            for _ in range(n_queries):
                ms, found = timed(search, corpus.query_words())
                search_ms.append(ms)
                hits.append(len(found))
                assert all(d["owner"] == OWNER for d in found) and len(found) <= PAGE
                ms, page = timed(listing)
                listing_ms.append(ms)
                assert len(page) == min(PAGE, n // 10 + (n % 10 > 0))
            row = {
                "documents": n,
                "owner_documents": sum(1 for i in range(n) if i % 10 == 0),
                "load_s": round(load_s, 1),
                "load_per_s": round(rate),
                "search_cold_ms": round(cold_ms, 1),
                "search_p50_ms": round(statistics.median(search_ms), 1),
                "search_p95_ms": round(p95(search_ms), 1),
                "listing_p50_ms": round(statistics.median(listing_ms), 1),
                "listing_p95_ms": round(p95(listing_ms), 1),
                "ratio_p50": round(statistics.median(search_ms) / statistics.median(listing_ms), 2),
                "ratio_p95": round(p95(search_ms) / p95(listing_ms), 2),
                "search_hits_median": statistics.median(hits),
                "node_rss_mb": round(rss_mb(pid)),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        journal = settings.data_dir / "cosmos" / "journal.jsonl"
        summary = {
            "queries_per_size": n_queries,
            "journal_mb": round(journal.stat().st_size / 2**20),
        }
    finally:
        emulator.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(summary), flush=True)
    return {"sizes": rows, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=8, help="loader threads (create_item)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    run(sizes, max(args.queries, 2), args.threads)


if __name__ == "__main__":
    main()
