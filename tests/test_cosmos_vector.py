"""Vector search on the local Cosmos emulator (local/emulators/cosmos_vector.js).

The query Azure Cosmos DB for NoSQL runs for a face search,

    SELECT TOP @k c.id, c.person, VectorDistance(c.embedding, @q) AS score FROM c
    WHERE c.model = @model AND c.owner = @owner ORDER BY VectorDistance(c.embedding, @q)

runs unchanged against the emulator and returns what NumPy brute force returns: same ids, same
order, scores within 1e-5, for cosine (the container's policy), euclidean and dotproduct (the
options object). Containers keep their vector policies, also across emulator restarts (the
journal replays the definition as sent, then the compacted one). Query shapes the pipeline and
its tools already use (ORDER BY c._ts DESC, JOIN, COUNT, EXISTS, continuation paging) still work
with the query-engine patches in place.

Everything runs against the real emulator through the azure-cosmos SDK.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from local.emulators import local_ports, start_cosmos
from pipeline.settings import Settings
from pipeline.stores.faces import vector_policies
from tests.harness import Pipeline, emulator_env

DIM = 128
OWNER, OTHER_OWNER = "owner-1", "owner-2"
MODEL, OTHER_MODEL = "facenet-v1", "facenet-v2"
N = 300  # faces of OWNER and MODEL
QUERY = (
    "SELECT TOP @k c.id, c.person, VectorDistance(c.embedding, @q) AS score FROM c "
    "WHERE c.model = @model AND c.owner = @owner ORDER BY VectorDistance(c.embedding, @q)"
)
# The policies the app creates its faces container with (Bicep declares the same).
VECTOR_POLICY, INDEXING_POLICY = vector_policies("/embedding", DIM, "cosine")
_numbers = itertools.count(1)


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Float32 vectors of different lengths (0.5..2), so cosine, dotproduct and euclidean
    rank differently; returned as the float64 values the JSON carries."""
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v *= rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)
    return v.astype(np.float64)


def _params(q: np.ndarray, k: int, model: str = MODEL, owner: str = OWNER) -> list[dict]:
    return [
        {"name": "@k", "value": k},
        {"name": "@q", "value": [float(x) for x in q]},
        {"name": "@model", "value": model},
        {"name": "@owner", "value": owner},
    ]


def _create(database, name: str, policy: dict = VECTOR_POLICY, indexing: dict = INDEXING_POLICY):
    return database.create_container(
        name,
        partition_key=PartitionKey(path="/owner"),
        indexing_policy=indexing,
        vector_embedding_policy=policy,
    )


@pytest.fixture(scope="module")
def faces(emulators):
    """A vector container with N known faces of OWNER/MODEL, plus decoys that would win
    if the model or owner filter were ignored (copies of the query vector), and one face
    whose embedding has the wrong length."""
    client = Pipeline(emulators).azure.cosmos
    database = client.create_database_if_not_exists("vector-tests")
    container = _create(database, f"faces-{next(_numbers)}")
    rng = np.random.default_rng(11)
    embeddings = _vectors(rng, N)
    queries = _vectors(rng, 3)
    ops = [
        (
            "create",
            (
                {
                    "id": f"face-{i:03d}",
                    "owner": OWNER,
                    "model": MODEL,
                    "person": f"person-{i % 37}",
                    "tags": ["smile"] if i % 3 == 0 else [],
                    "embedding": [float(x) for x in embeddings[i]],
                },
            ),
        )
        for i in range(N)
    ]
    for lo in range(0, N, 100):
        container.execute_item_batch(ops[lo : lo + 100], partition_key=OWNER)
    decoy = [float(x) for x in queries[0]]
    container.create_item(
        {
            "id": "other-model",
            "owner": OWNER,
            "model": OTHER_MODEL,
            "person": "x",
            "embedding": decoy,
        }
    )
    container.create_item(
        {
            "id": "other-owner",
            "owner": OTHER_OWNER,
            "model": MODEL,
            "person": "x",
            "embedding": decoy,
        }
    )
    container.create_item(
        {"id": "short", "owner": OWNER, "model": MODEL, "person": "x", "embedding": decoy[:64]}
    )
    return container, embeddings, queries


def _numpy_top(embeddings: np.ndarray, q: np.ndarray, k: int, function: str):
    if function == "cosine":
        scores = embeddings @ q / (np.linalg.norm(embeddings, axis=1) * np.linalg.norm(q))
        order = np.argsort(-scores)
    elif function == "dotproduct":
        scores = embeddings @ q
        order = np.argsort(-scores)
    else:
        scores = np.linalg.norm(embeddings - q, axis=1)
        order = np.argsort(scores)
    return [(f"face-{i:03d}", float(scores[i])) for i in order[:k]]


def _assert_same(got: list[dict], want: list[tuple[str, float]]) -> None:
    assert [g["id"] for g in got] == [w[0] for w in want]
    for g, (_, score) in zip(got, want, strict=True):
        assert g["score"] == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("cross_partition", [False, True], ids=["partition-key", "cross-partition"])
def test_the_face_search_query_returns_the_numpy_top_k(faces, cross_partition):
    container, embeddings, queries = faces
    where = {"enable_cross_partition_query": True} if cross_partition else {"partition_key": OWNER}
    for q in queries:
        got = list(container.query_items(QUERY, parameters=_params(q, 10), **where))
        _assert_same(got, _numpy_top(embeddings, q, 10, "cosine"))
        assert {g["person"] for g in got} <= {f"person-{i}" for i in range(37)}


@pytest.mark.parametrize("function", ["euclidean", "dotproduct", "cosine"])
def test_the_options_object_chooses_the_distance_function(faces, function):
    container, embeddings, queries = faces
    call = f"VectorDistance(c.embedding, @q, false, {{'distanceFunction': '{function}'}})"
    sql = QUERY.replace("VectorDistance(c.embedding, @q)", call)
    got = list(container.query_items(sql, parameters=_params(queries[1], 15), partition_key=OWNER))
    _assert_same(got, _numpy_top(embeddings, queries[1], 15, function))


def test_the_filters_exclude_other_models_and_owners_even_with_a_perfect_match(faces):
    container, _, queries = faces
    everything = list(
        container.query_items(
            QUERY, parameters=_params(queries[0], N + 10), enable_cross_partition_query=True
        )
    )
    ids = {g["id"] for g in everything}
    assert "other-model" not in ids and "other-owner" not in ids
    # The decoys are the query itself (cosine 1): they would come first without the filters.
    other = list(
        container.query_items(
            QUERY, parameters=_params(queries[0], 3, model=OTHER_MODEL), partition_key=OWNER
        )
    )
    assert [(g["id"], round(g["score"], 6)) for g in other] == [("other-model", 1.0)]


def test_a_vector_of_another_length_gives_no_score(faces):
    container, _, queries = faces
    # The 64-d face never ranks (as on Azure: no score, the row is not among the results).
    ranked = list(
        container.query_items(QUERY, parameters=_params(queries[0], N + 10), partition_key=OWNER)
    )
    assert len(ranked) == N and "short" not in {g["id"] for g in ranked}
    # Without ORDER BY the row is there, without a score.
    rows = list(
        container.query_items(
            "SELECT c.id, VectorDistance(c.embedding, @q) AS score FROM c "
            "WHERE c.id = 'short' AND c.owner = @owner",
            parameters=_params(queries[0], 1)[1::2],
            partition_key=OWNER,
        )
    )
    assert rows == [{"id": "short"}]
    # A query vector of the wrong length scores nothing at all.
    short_query = list(
        container.query_items(QUERY, parameters=_params(queries[0][:64], 5), partition_key=OWNER)
    )
    assert [g["id"] for g in short_query] == ["short"]
    assert short_query[0]["score"] == pytest.approx(1.0, abs=1e-6)


def test_order_by_vector_distance_pages_with_continuation_tokens(faces):
    container, embeddings, queries = faces
    pages = container.query_items(
        QUERY, parameters=_params(queries[2], 25), partition_key=OWNER, max_item_count=7
    ).by_page()
    got = [item for page in pages for item in page]
    _assert_same(got, _numpy_top(embeddings, queries[2], 25, "cosine"))


def test_the_container_policy_decides_the_function_when_the_call_does_not(emulators):
    database = Pipeline(emulators).azure.cosmos.create_database_if_not_exists("vector-tests")
    euclidean = {
        "vectorEmbeddings": [
            {**VECTOR_POLICY["vectorEmbeddings"][0], "distanceFunction": "euclidean"}
        ]
    }
    container = _create(database, f"euclidean-{next(_numbers)}", policy=euclidean)
    rng = np.random.default_rng(5)
    embeddings, q = _vectors(rng, 40), _vectors(rng, 1)[0]
    for i, e in enumerate(embeddings):
        container.create_item(
            {
                "id": f"face-{i:03d}",
                "owner": OWNER,
                "model": MODEL,
                "embedding": [float(x) for x in e],
            }
        )
    got = list(container.query_items(QUERY, parameters=_params(q, 5), partition_key=OWNER))
    _assert_same(got, _numpy_top(embeddings, q, 5, "euclidean"))


def test_a_vector_index_on_a_path_outside_the_policy_is_refused(emulators):
    database = Pipeline(emulators).azure.cosmos.create_database_if_not_exists("vector-tests")
    bad = {**INDEXING_POLICY, "vectorIndexes": [{"path": "/other", "type": "diskANN"}]}
    with pytest.raises(CosmosHttpResponseError) as refused:
        _create(database, f"bad-{next(_numbers)}", indexing=bad)
    assert refused.value.status_code == 400
    assert "/other" in refused.value.message


def _policies(container) -> tuple[dict, list]:
    props = container.read()
    return props["vectorEmbeddingPolicy"], props["indexingPolicy"]["vectorIndexes"]


def test_the_policies_read_back_and_survive_emulator_restarts(tmp_path: Path):
    """Own emulator (Cosmos only) on its own data folder. Restart 1 replays the create as the
    SDK sent it, then compacts; restart 2 replays the compacted definition."""
    env = emulator_env(tmp_path / "data")
    settings = Settings.from_env(env)
    emulator = start_cosmos(settings, local_ports(settings))
    try:
        client = Pipeline(env).azure.cosmos
        container = _create(client.create_database_if_not_exists("vector-tests"), "faces")
        container.create_item(
            {"id": "a", "owner": OWNER, "model": MODEL, "embedding": [1.0] + [0.0] * (DIM - 1)}
        )
        before = _policies(container)
        assert before == (VECTOR_POLICY, INDEXING_POLICY["vectorIndexes"])
    finally:
        emulator.stop()

    def check(client, restart: int) -> None:
        container = client.get_database_client("vector-tests").get_container_client("faces")
        assert _policies(container) == before, f"restart {restart}"
        got = list(
            container.query_items(QUERY, parameters=_params(np.eye(DIM)[0], 1), partition_key=OWNER)
        )
        assert [(g["id"], g["score"]) for g in got] == [("a", 1.0)]

    journal = across_restarts(settings, env, check)
    assert '"vectorEmbeddingPolicy"' in journal.read_text()


def across_restarts(settings, env, check) -> Path:
    """Start the emulator twice more on the same data (replay, then replay after compaction),
    run `check(cosmos_client, restart)` each time, and return the journal's path."""
    for restart in (1, 2):
        emulator = start_cosmos(settings, local_ports(settings))
        try:
            check(Pipeline(env).azure.cosmos, restart)
        finally:
            emulator.stop()
    return settings.data_dir / "cosmos" / "journal.jsonl"


def test_existing_query_shapes_still_work(faces):
    """ORDER BY c._ts DESC, JOIN, COUNT, EXISTS and continuation paging, through the patched
    query engine (its FROM rows are now built in linear time)."""
    container, _, _ = faces
    # The package ignores the partition-key header and insists that a single-partition query
    # names the key in WHERE; these run cross-partition, over every document of the container.
    pk = {"enable_cross_partition_query": True}
    by_ts = list(container.query_items("SELECT c.id, c._ts FROM c ORDER BY c._ts DESC", **pk))
    assert len(by_ts) == N + 3  # the faces, the other-model and other-owner decoys, the short one
    assert [r["_ts"] for r in by_ts] == sorted((r["_ts"] for r in by_ts), reverse=True)
    smiles = {f"face-{i:03d}" for i in range(0, N, 3)}
    joined = list(container.query_items("SELECT c.id, t FROM c JOIN t IN c.tags", **pk))
    assert sorted(r["id"] for r in joined) == sorted(smiles)
    assert {r["t"] for r in joined} == {"smile"}
    count = list(
        container.query_items(
            "SELECT VALUE COUNT(1) FROM c WHERE c.model = @model",
            parameters=[{"name": "@model", "value": MODEL}],
            **pk,
        )
    )
    assert count == [N + 2]  # the faces, the other-owner decoy, the short one
    exists = list(
        container.query_items(
            "SELECT VALUE c.id FROM c "
            "WHERE EXISTS(SELECT VALUE t FROM t IN c.tags WHERE t = 'smile')",
            **pk,
        )
    )
    assert set(exists) == smiles
    pages = list(
        container.query_items("SELECT c.id FROM c ORDER BY c.id", max_item_count=40, **pk).by_page()
    )
    ids = [r["id"] for page in pages for r in page]
    assert len(pages) > 1 and ids == sorted(ids) and len(set(ids)) == N + 3
