"""Full-text search on the local Cosmos emulator (local/emulators/cosmos_fulltext.js).

The queries Azure Cosmos DB for NoSQL runs for a search by words (and, with a vector, a hybrid
search),

    SELECT * FROM c WHERE c.owner = @owner AND FullTextContainsAny(c.search.text, @w0, @w1, @w2)
    ORDER BY RANK FullTextScore(c.search.text, @w0, @w1, @w2) OFFSET @offset LIMIT @limit

    SELECT * FROM c WHERE c.owner = @owner
    ORDER BY RANK RRF(FullTextScore(c.search.text, @w0, @w1), VectorDistance(c.search.vector, @v))
    OFFSET @offset LIMIT @limit

run unchanged against the emulator (container partitioned by /id, queried cross-partition, as
the images container is) and return what an independent reference returns
(tests/fulltext_reference.py: the same analysis with PyPI's Snowball stemmer, BM25 and RRF
written from the formulas) on a fixed corpus of photo descriptions: the same sets for
FullTextContains/All/Any, the same order (equal scores by _rid) for FullTextScore and RRF, with
TOP, OFFSET/LIMIT and continuation paging. FullTextScore outside ORDER BY RANK is a 400, and the
full-text policy is kept, also across emulator restarts.

Everything runs against the real emulator through the azure-cosmos SDK.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from local.emulators import local_ports, start_cosmos
from pipeline.settings import Settings
from tests import fulltext_reference as ref
from tests.harness import Pipeline, emulator_env
from tests.test_cosmos_vector import across_restarts

PATH = "/search/text"
FULL_TEXT_POLICY = {
    "defaultLanguage": "en-US",
    "fullTextPaths": [{"path": PATH, "language": "en-US"}],
}
VECTOR_POLICY = {
    "vectorEmbeddings": [
        {
            "path": "/search/vector",
            "dataType": "float32",
            "distanceFunction": "cosine",
            "dimensions": 4,
        }
    ]
}
INDEXING_POLICY = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": "/search/vector/*"}, {"path": '/"_etag"/?'}],
    "fullTextIndexes": [{"path": PATH}],
    "vectorIndexes": [{"path": "/search/vector", "type": "flat"}],
}
A, B = "owner-a", "owner-b"
_numbers = itertools.count(1)

# Photo descriptions as the pipeline writes them (caption, labels, OCR'd text), some with a
# vector. Plurals and stems, repeated words, apostrophes (straight and curly), accents, digits,
# capitals, punctuation, other scripts, stop words.
TEXTS = [
    (A, "A brown dog running on a sandy beach. golden retriever. dog. NO PARKING"),
    (A, "Two dogs playing fetch in the park; a dog's red ball on the grass"),
    (A, "Golden retriever puppy sleeping on a sofa. dog. pet"),
    (A, "Sunset over the beach with palm trees and surfers"),
    (A, "A red bicycle leaning against a brick wall. bicycle. street"),
    (A, "Bicycles parked outside a café in Zürich. bikes. city"),
    (A, "Runner crossing the finish line of the city marathon. running. race"),
    (A, "Children running on the beach at low tide, dogs chasing seagulls"),
    (A, "Black cat sitting on a windowsill. cat. indoor"),
    (A, "Two cats sleeping together on a blanket. cats. kitten"),
    (A, "Mountain lake at dawn, mist over the water. landscape. nature"),
    (A, "Snowy mountains and a ski lift. winter. snow. skiing"),
    (A, "Birthday cake with candles on a kitchen table. party. food"),
    (A, "Plate of spaghetti with tomato sauce and basil. food. pasta"),
    (A, "Street sign: NO PARKING ANY TIME. sign. text"),
    (A, "STOP sign at a crossroads in the countryside. sign. road"),
    (A, "Old red tractor in a wheat field. farm. harvest"),
    (A, "Horses grazing in a green meadow. horse. farm"),
    (A, "The Eiffel Tower at night with lights. Paris. tower. landmark"),
    (A, "Tokyo tower and the skyline at dusk. 東京タワー. city"),
    (A, "A dog running after a frisbee in the park. dog. running dog"),
    (A, "Dog running dog running dog: three frames of the same dog"),
    (A, "Receipt from a café: 2 cappuccinos, 1 croissant. text. receipt"),
    (A, "Handwritten note: don't forget the keys! text. note"),
    (A, "A naïve painting of a lighthouse by the sea. art. lighthouse"),
    (A, "Lighthouse on rocky cliffs, waves crashing. sea. coast"),
    (A, "Family picnic in the 1990s, faded colours. vintage. people"),
    (A, "4K screenshot of a video game menu. screen. text"),
    (A, "Concert crowd with stage lights. music. people. night"),
    (A, "Guitar leaning against an amplifier. music. instrument"),
    (A, "A golden retriever and a black labrador running on the beach"),
    (A, "Sandy beach, blue sky, no people. beach. summer"),
    (A, "Parking lot full of cars at a shopping mall. cars. parking"),
    (A, "Car parked on a quiet street at night. car. street"),
    (A, "Bridge over a river in autumn, red and orange leaves. autumn. river"),
    (A, "Close-up of a bee on a sunflower. insect. flower. macro"),
    (A, "Bouquet of red roses. flowers. roses. gift"),
    (A, "Whiteboard with a diagram: user -> API -> queue. text. work"),
    (A, "Laptop and coffee on a wooden desk. work. coffee"),
    (A, "Coffee cup with latte art, café table. coffee. cafe"),
    (B, "A brown dog sleeping by the fireplace. dog. indoor"),
    (B, "Dogs running on a sandy beach at sunset. dogs. beach"),
    (B, "Beach volleyball game, players jumping. sport. beach"),
    (B, "Red bicycle on a beach boardwalk. bicycle. beach"),
    (B, "The dog\u2019s bowl and leash by the door. pet. dog"),
    (B, "Running shoes on a wooden floor. running. shoes"),
    (B, "Mountain bike race on a muddy trail. bicycle. race. mountain"),
    (B, "Cat and dog sleeping together on a rug. pets"),
    (B, "Street market with fruit stalls. market. food. people"),
    (B, "Sign reading 'Beach closed, no dogs'. sign. text. beach"),
    (B, "Lighthouse at sunset, golden light. lighthouse. sunset"),
    (B, "Stars over the desert at night. astrophotography. night. sky"),
    (B, "Golden hour in the city, runners in the park. running. city"),
    (B, "Zurich old town and the lake. Zürich. city. travel"),
    (B, "Parked cars and bicycles in front of the station. transport"),
    (B, "Selfie of two friends at a beach party. people. beach. party"),
]
VECTORS = {
    0: [0.9, 0.1, 0.2, 0.0],
    1: [0.8, 0.3, 0.1, 0.1],
    2: [0.7, 0.2, 0.5, 0.1],
    3: [0.1, 0.9, 0.3, 0.2],
    7: [0.6, 0.6, 0.1, 0.0],
    20: [0.85, 0.2, 0.1, 0.05],
    30: [0.75, 0.4, 0.2, 0.0],
    31: [0.2, 0.95, 0.1, 0.1],
    40: [0.9, 0.0, 0.3, 0.1],
    41: [0.6, 0.7, 0.2, 0.1],
    42: [0.1, 0.8, 0.6, 0.0],
    43: [0.3, 0.6, 0.0, 0.7],
    44: [0.7, 0.1, 0.6, 0.2],
}


def _corpus() -> list[dict]:
    docs = []
    for i, (owner, text) in enumerate(TEXTS):
        search: dict = {"text": text}
        if i in VECTORS:
            search["vector"] = VECTORS[i]
        docs.append({"id": f"img-{i:02d}", "owner": owner, "search": search})
    # Documents without usable text: no search at all, a number, empty, stop words only.
    docs.append({"id": "img-notext", "owner": A, "other": "dog beach"})
    docs.append({"id": "img-number", "owner": A, "search": {"text": 42}})
    docs.append({"id": "img-empty", "owner": B, "search": {"text": ""}})
    docs.append(
        {"id": "img-stop", "owner": B, "search": {"text": "The and of, to be or not to be!"}}
    )
    return docs


DOCS = _corpus()
_rng = random.Random(7)
_vocabulary = sorted({w for _, t in TEXTS for w in ref.tokens(t)})
LONG_TERM = " ".join(_rng.choice(_vocabulary) for _ in range(2500))[:10240]  # 10 KB
# fmt: off
TERMS = [
    # single words, plurals and stems, case
    "dog", "dogs", "Dog", "DOGS", "running", "run", "runs", "runner", "Runners", "beach",
    "beaches", "retriever", "bicycle", "bicycles", "bike", "parking", "parked", "park",
    "lighthouse", "sleeping", "sleep", "cats", "flowers", "night",
    # accents, apostrophes, digits, other scripts
    "café", "cafe", "Zürich", "zurich", "naïve", "dog's", "dog\u2019s", "don't", "1990s", "4k",
    "東京タワー", "東京",
    # phrases (stop words inside are dropped on both sides)
    "golden retriever", "retriever golden", "sandy beach", "brown dog", "dog running",
    "running dog", "no parking", "red bicycle leaning", "dog on the beach", "the beach",
    "beach sunset", "dog running dog", "two cats sleeping",
    # stop words only, unknown words, nothing
    "the", "The and of", "no", "xylophone", "dog xylophone", "", "   ", "!!!",
    # quotes, operators, punctuation, SQL: plain text, no syntax
    "dog AND cat", "dog OR cat", "-cat", '"golden retriever"', "dog*", "(beach)",
    "c.search.text", "'; DROP TABLE c; --", "user -> API", "a+b=c", "NOT dog",
    # control characters, a 10 KB term
    "\u0000dog\u0007", "\tbeach\r\n", "dog\u200bbeach", LONG_TERM,
]
SEARCHES = [
    ["dog"], ["dogs", "beach"], ["golden retriever"], ["running", "dog", "beach"],
    ["bicycle", "red"], ["café", "coffee"], ["the", "of"], ["xylophone"],
    ["sign", "text", "no parking"], ["night", "city", "lights"], ["Dog", "DOG", "dogs"],
    ["sunset", "lighthouse"], [LONG_TERM, "dog"],
]
# fmt: on


def _params(**values) -> list[dict]:
    return [{"name": f"@{k}", "value": v} for k, v in values.items()]


def _words(words: list[str]) -> tuple[str, dict]:
    names = [f"@w{i}" for i in range(len(words))]
    return ", ".join(names), {f"w{i}": w for i, w in enumerate(words)}


@pytest.fixture(scope="module")
def images(emulators):
    """A container like the images container (partition key /id, full-text and vector policies)
    holding DOCS; returns it with each document's _rid."""
    database = Pipeline(emulators).azure.cosmos.create_database_if_not_exists("fulltext-tests")
    container = database.create_container(
        f"images-{next(_numbers)}",
        partition_key=PartitionKey(path="/id"),
        indexing_policy=INDEXING_POLICY,
        full_text_policy=FULL_TEXT_POLICY,
        vector_embedding_policy=VECTOR_POLICY,
    )
    for doc in DOCS:
        container.create_item(doc)
    rids = {
        r["id"]: r["_rid"]
        for r in container.query_items(
            "SELECT c.id, c._rid FROM c", enable_cross_partition_query=True
        )
    }
    return container, rids


def _query(container, sql: str, **params) -> list:
    return list(
        container.query_items(sql, parameters=_params(**params), enable_cross_partition_query=True)
    )


def _text(doc: dict) -> object:
    return (doc.get("search") or {}).get("text")


def _ref_ranked(rids, rows, scores, offset, limit) -> list[str]:
    ordered = ref.ranked(rows, scores, lambda d: rids[d["id"]])
    return [d["id"] for d in ordered][offset : offset + limit]


# ------------------------------------------------------------------ FullTextContains*
@pytest.mark.parametrize("term", TERMS, ids=lambda t: repr(t[:30]))
def test_full_text_contains_matches_the_reference(images, term):
    container, _ = images
    got = _query(
        container,
        "SELECT VALUE c.id FROM c WHERE FullTextContains(c.search.text, @t)",
        t=term,
    )
    want = [d["id"] for d in DOCS if ref.contains(_text(d), term)]
    assert sorted(got) == sorted(want)


def test_the_analysis_finds_what_it_should(images):
    """A few answers spelled out, so the reference cannot agree with a shared mistake."""
    container, _ = images

    def ids(term):
        sql = "SELECT VALUE c.id FROM c WHERE FullTextContains(c.search.text, @t)"
        return set(_query(container, sql, t=term))

    assert ids("dogs") == ids("dog") and "img-00" in ids("dogs")  # plural = singular
    assert "img-06" in ids("run") and "img-45" in ids("run")  # running, Runner… → run
    assert ids("dog's") == ids("dog\u2019s") and "img-44" in ids("dog's")  # both apostrophes
    assert ids("no parking") == ids("parking")  # "no" is a stop word
    assert ids("the") == set() and ids("") == set()
    assert ids("golden retriever") == {"img-00", "img-02", "img-30"}
    assert "img-00" not in ids("retriever golden")  # a phrase keeps its order
    assert ids("Zürich") == {"img-05", "img-53"} and ids("zurich") == {"img-53"}  # no folding


def test_string_literals_work_as_well_as_parameters(images):
    container, _ = images
    got = _query(
        container,
        "SELECT VALUE c.id FROM c "
        "WHERE FullTextContainsAll(c.search.text, 'golden', \"retriever\")",
    )
    want = [d["id"] for d in DOCS if ref.contains_all(_text(d), ["golden", "retriever"])]
    assert sorted(got) == sorted(want) and len(want) == 3


@pytest.mark.parametrize("function", ["All", "Any"])
@pytest.mark.parametrize("words", SEARCHES, ids=lambda w: repr(" ".join(w)[:30]))
def test_full_text_contains_all_and_any_match_the_reference(images, function, words):
    container, _ = images
    names, params = _words(words)
    got = _query(
        container,
        f"SELECT VALUE c.id FROM c WHERE FullTextContains{function}(c.search.text, {names})",
        **params,
    )
    check = ref.contains_all if function == "All" else ref.contains_any
    assert sorted(got) == sorted(d["id"] for d in DOCS if check(_text(d), words))


def test_a_document_without_text_fails_the_filter_also_negated(images):
    container, _ = images
    got = set(
        _query(
            container, "SELECT VALUE c.id FROM c WHERE NOT FullTextContains(c.search.text, 'dog')"
        )
    )
    assert "img-03" in got and "img-empty" in got and "img-stop" in got
    assert not {"img-notext", "img-number"} & got and "img-00" not in got


# ------------------------------------------------------------------ FullTextScore
def _bm25_order(rids, rows, words, offset, limit):
    scores = ref.bm25([_text(d) for d in DOCS], [_text(d) for d in rows], words)
    return _ref_ranked(rids, rows, scores, offset, limit)


@pytest.mark.parametrize("words", SEARCHES, ids=lambda w: repr(" ".join(w)[:30]))
def test_full_text_score_orders_as_bm25(images, words):
    container, rids = images
    names, params = _words(words)
    sql = (
        f"SELECT c.id FROM c ORDER BY RANK FullTextScore(c.search.text, {names}) "
        "OFFSET @offset LIMIT @limit"
    )
    for offset, limit in [(0, 100), (0, 5), (3, 7), (58, 10)]:
        got = [r["id"] for r in _query(container, sql, offset=offset, limit=limit, **params)]
        assert got == _bm25_order(rids, DOCS, words, offset, limit), (offset, limit)
    top = _query(
        container,
        f"SELECT TOP 8 VALUE c.id FROM c ORDER BY RANK FullTextScore(c.search.text, {names})",
        **params,
    )
    assert top == _bm25_order(rids, DOCS, words, 0, 8)


@pytest.mark.parametrize("owner", [A, B])
@pytest.mark.parametrize("words", SEARCHES, ids=lambda w: repr(" ".join(w)[:30]))
def test_the_api_search_query_returns_the_reference_page(images, owner, words):
    """The API's query: owner filter + FullTextContainsAny + ORDER BY RANK FullTextScore, paged.
    The statistics stay those of the whole container (the WHERE does not change them)."""
    container, rids = images
    names, params = _words(words)
    sql = (
        f"SELECT * FROM c WHERE c.owner = @owner AND FullTextContainsAny(c.search.text, {names}) "
        f"ORDER BY RANK FullTextScore(c.search.text, {names}) OFFSET @offset LIMIT @limit"
    )
    rows = [d for d in DOCS if d["owner"] == owner and ref.contains_any(_text(d), words)]
    for offset, limit in [(0, 20), (0, 3), (2, 4)]:
        got = _query(container, sql, owner=owner, offset=offset, limit=limit, **params)
        assert [g["id"] for g in got] == _bm25_order(rids, rows, words, offset, limit)
        assert all(g["owner"] == owner and "search" in g for g in got)


def test_statistics_are_the_containers_not_the_filtered_rows(images):
    """N, the average length and the document frequencies cover the whole container (Azure's
    default full_text_score_scope "Global"): with the owner's rows only, img-03 would lead."""
    container, rids = images
    sql = (
        "SELECT VALUE c.id FROM c WHERE c.owner = @owner "
        "AND FullTextContainsAny(c.search.text, @w0, @w1) "
        "ORDER BY RANK FullTextScore(c.search.text, @w0, @w1) OFFSET 0 LIMIT 10"
    )
    got = _query(container, sql, owner=A, w0="sunset", w1="lighthouse")
    rows = [
        d for d in DOCS if d["owner"] == A and ref.contains_any(_text(d), ["sunset", "lighthouse"])
    ]
    texts = [_text(d) for d in rows]
    local = ref.ranked(rows, ref.bm25(texts, texts, ["sunset", "lighthouse"]), lambda d: d["id"])
    assert (
        got
        == ["img-24", "img-03", "img-25"]
        == _bm25_order(rids, rows, ["sunset", "lighthouse"], 0, 10)
    )
    assert [d["id"] for d in local] == ["img-03", "img-24", "img-25"]


def test_rank_pages_with_continuation_tokens_and_every_projection(images):
    container, rids = images
    words = ["dog", "beach", "running"]
    names, params = _words(words)
    order = " ".join([f"ORDER BY RANK FullTextScore(c.search.text, {names})", "OFFSET 0 LIMIT 50"])
    want = _bm25_order(rids, DOCS, words, 0, 50)
    pages = container.query_items(
        f"SELECT c.id, c.owner FROM c {order}",
        parameters=_params(**params),
        enable_cross_partition_query=True,
        max_item_count=7,
    ).by_page()
    got = [r for page in pages for r in page]
    assert [r["id"] for r in got] == want and set(got[0]) == {"id", "owner"}
    assert [r["id"] for r in _query(container, f"SELECT * FROM c {order}", **params)] == want
    assert _query(container, f"SELECT VALUE c.id FROM c {order}", **params) == want


# ------------------------------------------------------------------ RRF
QUERY_VECTOR = [0.3, 0.8, 0.4, 0.1]


def _rrf_order(rids, rows, components, weights, offset, limit):
    all_texts = [_text(d) for d in DOCS]
    values = []
    for kind, arg in components:
        if kind == "fts":
            values.append(ref.bm25(all_texts, [_text(d) for d in rows], arg))
        else:
            values.append(
                [
                    ref.vector_similarity(d.get("search", {}).get("vector"), arg, "cosine")
                    for d in rows
                ]
            )
    return _ref_ranked(rids, rows, ref.rrf(values, weights), offset, limit)


@pytest.mark.parametrize("owner", [A, B])
@pytest.mark.parametrize("words", [["dog", "beach"], ["golden retriever"], ["xylophone"]])
def test_the_api_hybrid_query_returns_the_reference_page(images, owner, words):
    container, rids = images
    names, params = _words(words)
    sql = (
        "SELECT * FROM c WHERE c.owner = @owner ORDER BY RANK "
        f"RRF(FullTextScore(c.search.text, {names}), VectorDistance(c.search.vector, @v)) "
        "OFFSET @offset LIMIT @limit"
    )
    rows = [d for d in DOCS if d["owner"] == owner]
    components = [("fts", words), ("vec", QUERY_VECTOR)]
    for offset, limit in [(0, 20), (0, 5), (4, 6)]:
        got = _query(
            container, sql, owner=owner, v=QUERY_VECTOR, offset=offset, limit=limit, **params
        )
        want = _rrf_order(rids, rows, components, None, offset, limit)
        assert [g["id"] for g in got] == want, (offset, limit)


@pytest.mark.parametrize(
    "weights", [[2, 1], [1, 3], [1, -1], [-0.5, 1], [0, 1]], ids=lambda w: str(w)
)
def test_rrf_weights_literal_and_parameter(images, weights):
    container, rids = images
    words = ["running", "dog"]
    components = [("fts", words), ("vec", QUERY_VECTOR)]
    want = _rrf_order(rids, DOCS, components, weights, 0, 15)
    rrf = "RRF(FullTextScore(c.search.text, @w0, @w1), VectorDistance(c.search.vector, @v), {})"
    for weights_sql, extra in [(str(weights), {}), ("@weights", {"weights": weights})]:
        got = _query(
            container,
            f"SELECT TOP 15 VALUE c.id FROM c ORDER BY RANK {rrf.format(weights_sql)}",
            w0="running",
            w1="dog",
            v=QUERY_VECTOR,
            **extra,
        )
        assert got == want, weights_sql


def test_rrf_of_two_full_text_scores(images):
    container, rids = images
    sql = (
        "SELECT VALUE c.id FROM c ORDER BY RANK RRF(FullTextScore(c.search.text, 'bicycle'), "
        "FullTextScore(c.search.text, 'red', 'street')) OFFSET 0 LIMIT 25"
    )
    components = [("fts", ["bicycle"]), ("fts", ["red", "street"])]
    assert _query(container, sql) == _rrf_order(rids, DOCS, components, None, 0, 25)


# ------------------------------------------------------------------ what Azure refuses
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT c.id, FullTextScore(c.search.text, 'dog') AS score FROM c",
        "SELECT VALUE FullTextScore(c.search.text, 'dog') FROM c",
        "SELECT c.id FROM c WHERE FullTextScore(c.search.text, 'dog') > 1",
        "SELECT TOP 5 c.id FROM c ORDER BY FullTextScore(c.search.text, 'dog')",
        "SELECT c.id, RRF(FullTextScore(c.search.text, 'a'), FullTextScore(c.search.text, 'b')) "
        "FROM c",
    ],
    ids=["projection", "value", "where", "order-by-without-rank", "rrf-projection"],
)
def test_full_text_score_outside_order_by_rank_is_a_400(images, sql):
    container, _ = images
    with pytest.raises(CosmosHttpResponseError) as refused:
        _query(container, sql)
    assert refused.value.status_code == 400
    assert "ORDER BY RANK" in refused.value.message


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT c.id FROM c ORDER BY RANK FullTextScore(c.search.text, 'dog')", "TOP or OFFSET"),
        (
            "SELECT TOP 3 c.id FROM c ORDER BY RANK FullTextScore(c.search.text, 'dog'), c.id",
            "combined",
        ),
        ("SELECT TOP 3 c.id FROM c ORDER BY RANK c.id", "scoring function"),
        ("SELECT TOP 3 c.id FROM c ORDER BY RANK FullTextScore(c.search.text, @n)", "string"),
        ("SELECT TOP 3 c.id FROM c WHERE FullTextContains(c.search.text)", "2 argument"),
        (
            "SELECT TOP 3 c.id FROM c ORDER BY RANK RRF(FullTextScore(c.search.text, 'a'), "
            "VectorDistance(c.search.vector, @v), [1])",
            "weights",
        ),
        ("SELECT c.id FROM c OFFSET @n LIMIT 3", "non-negative integers"),
    ],
)
def test_malformed_searches_are_a_400(images, sql, message):
    container, _ = images
    with pytest.raises(CosmosHttpResponseError) as refused:
        _query(container, sql, n=-1, v=QUERY_VECTOR)
    assert refused.value.status_code == 400
    assert message in refused.value.message


def test_existing_query_shapes_still_work(images):
    container, _ = images
    pk = {"enable_cross_partition_query": True}
    by_id = [r["id"] for r in container.query_items("SELECT c.id FROM c ORDER BY c.id DESC", **pk)]
    assert by_id == sorted((d["id"] for d in DOCS), reverse=True)
    paged = _query(container, "SELECT VALUE c.id FROM c ORDER BY c.id OFFSET 5 LIMIT 4")
    assert paged == sorted(d["id"] for d in DOCS)[5:9]
    count = _query(container, "SELECT VALUE COUNT(1) FROM c WHERE c.owner = @o", o=B)
    assert count == [sum(d["owner"] == B for d in DOCS)]
    quoted = _query(
        container, "SELECT VALUE c.id FROM c WHERE c.owner = 'ORDER BY RANK x OFFSET 1 LIMIT 2'"
    )
    assert quoted == []


# ------------------------------------------------------------------ the container policy
def _policies(container) -> tuple[dict, list]:
    props = container.read()
    return props["fullTextPolicy"], props["indexingPolicy"]["fullTextIndexes"]


@pytest.mark.parametrize(
    ("policy", "indexes", "message"),
    [
        (FULL_TEXT_POLICY, [{"path": "/other"}], "/other"),
        (
            {"defaultLanguage": "fr-FR", "fullTextPaths": [{"path": PATH, "language": "fr-FR"}]},
            [{"path": PATH}],
            "en-US",
        ),
        ({"defaultLanguage": "en-US", "fullTextPaths": [{"path": "/search/*"}]}, [], "wildcard"),
    ],
    ids=["index-outside-policy", "language", "wildcard"],
)
def test_a_full_text_policy_azure_would_refuse_is_refused(emulators, policy, indexes, message):
    database = Pipeline(emulators).azure.cosmos.create_database_if_not_exists("fulltext-tests")
    with pytest.raises(CosmosHttpResponseError) as refused:
        database.create_container(
            f"bad-{next(_numbers)}",
            partition_key=PartitionKey(path="/id"),
            indexing_policy={**INDEXING_POLICY, "fullTextIndexes": indexes, "vectorIndexes": []},
            full_text_policy=policy,
        )
    assert refused.value.status_code == 400 and message in refused.value.message


def test_the_policy_reads_back_and_survives_emulator_restarts(tmp_path: Path):
    """Own emulator (Cosmos only) on its own data folder: restart 1 replays the create as the
    SDK sent it, then compacts; restart 2 replays the compacted definition."""
    env = emulator_env(tmp_path / "data")
    settings = Settings.from_env(env)
    indexing = {**INDEXING_POLICY, "vectorIndexes": [], "excludedPaths": [{"path": '/"_etag"/?'}]}
    emulator = start_cosmos(settings, local_ports(settings))
    try:
        database = Pipeline(env).azure.cosmos.create_database_if_not_exists("fulltext-tests")
        container = database.create_container(
            "images",
            partition_key=PartitionKey(path="/id"),
            indexing_policy=indexing,
            full_text_policy=FULL_TEXT_POLICY,
        )
        container.create_item({"id": "a", "owner": A, "search": {"text": "Dogs on the beach"}})
        before = _policies(container)
        assert before == (FULL_TEXT_POLICY, [{"path": PATH}])
    finally:
        emulator.stop()

    def check(client, restart: int) -> None:
        container = client.get_database_client("fulltext-tests").get_container_client("images")
        assert _policies(container) == before, f"restart {restart}"
        got = _query(
            container,
            "SELECT TOP 1 VALUE c.id FROM c WHERE FullTextContains(c.search.text, 'dog') "
            "ORDER BY RANK FullTextScore(c.search.text, 'dog')",
        )
        assert got == ["a"]

    journal = across_restarts(settings, env, check)
    assert '"fullTextPolicy"' in journal.read_text()
