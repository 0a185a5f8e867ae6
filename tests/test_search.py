"""Search by words on the running stack: `GET /api/images?q=` over captions (a GPT vision
deployment: the loopback Azure OpenAI server of tests/openai_server.py, since no offline model
writes captions), tags and objects (the offline models), read text (PP-OCR) and a model step's
labels, through the host process, the API and the Cosmos emulator's full-text search."""

from __future__ import annotations

import pytest

from pipeline.vision.local.tags_efficientnet import load_labels
from tests.openai_server import OpenAIServer
from tests.test_api import Client, new_key
from tests.test_model_step import TAGGER

# The loopback deployment's captions, by the analysis image's size (each fixture's is unique).
CAPTIONS = {
    (768, 576): "A dog running on a sandy beach beside the sea.",
    (451, 300): "A cat asleep on a sofa next to a dog toy.",
    (600, 400): "A red bicycle leaning on a fence in a village street.",
    (556, 257): "A printed page of black text on a white background.",
}
PHOTOS = ("dog.jpg", "cat.jpg", "gps.jpg", "text-clean.png")
KEY = "aoai-test-key-0123456789"  # a key: the identity's tokens need https, loopback is http


@pytest.fixture(scope="module")
def deployment():
    def describe(image):
        return {
            "caption": CAPTIONS.get(image.size, "A photo."),
            "tags": [],
            "objects": [],
            "text": [],
        }

    with OpenAIServer(describe, deployment="captions", key=KEY) as server:
        yield server


@pytest.fixture
def searched(make_pipeline, deployment, fixture_bytes, tmp_path):
    """The four photos of `web`, and the dog photo of `other`, processed to the end."""
    keys = {who: new_key() for who in ("web", "other")}
    labels = tmp_path / "imagenet.txt"
    labels.write_text("\n".join(load_labels()))
    pipeline = make_pipeline(
        "prepare,analyze,species,transform,store",
        DARKROOM_API_KEYS=",".join(f"{who}:{digest}" for who, (_, digest) in keys.items()),
        DARKROOM_ANALYZERS="caption,tags,objects,text",
        DARKROOM_CAPTION_PROVIDER="openai",
        DARKROOM_OPENAI_ENDPOINT=deployment.url,
        DARKROOM_OPENAI_DEPLOYMENT="captions",
        DARKROOM_OPENAI_KEY=KEY,
        DARKROOM_RATE_PER_MINUTE="100000",  # the test polls; limits have tests of their own
        DARKROOM_RATE_BURST="10000",
        DARKROOM_MODEL_SPECIES__TASK="classify",
        DARKROOM_MODEL_SPECIES__ONNX=str(TAGGER),
        DARKROOM_MODEL_SPECIES__MEAN="127",
        DARKROOM_MODEL_SPECIES__STD="128",
        DARKROOM_MODEL_SPECIES__LABELS=str(labels),
        DARKROOM_MODEL_SPECIES__TOP_K="1",
        DARKROOM_MODEL_SPECIES__MIN_SCORE="0",
    )
    web, other = (Client(pipeline, keys[who][0]) for who in ("web", "other"))
    ids = {name: web.upload(fixture_bytes(name), name)["id"] for name in PHOTOS}
    theirs = other.upload(fixture_bytes("dog.jpg"), "dog.jpg")["id"]
    docs = {name: web.wait_final(image) for name, image in ids.items()}
    other.wait_final(theirs)
    return web, other, ids, docs, theirs


def found(client: Client, q: str, **params) -> list[str]:
    response = client.call("GET", "/api/images", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_words_find_photos_by_caption_tag_text_and_model_label_best_first(searched):
    web, other, ids, docs, theirs = searched
    for name, doc in docs.items():
        assert doc["status"] == "done", (name, doc["reason"], doc["analysis"].get("errors"))
    dog = docs["dog.jpg"]
    assert dog["analysis"].get("caption", {}).get("text") == CAPTIONS[(768, 576)], dog["analysis"]
    assert dog["analysis"]["usage"]["openai"]["input_tokens"] > 0

    # Caption words; stemming ("dogs" finds "dog"), and the better match first: the beach
    # photo has both words, the cat photo one of them (its caption's "dog toy").
    assert found(web, "dogs on the beach")[:2] == [ids["dog.jpg"], ids["cat.jpg"]]
    # Every photo whose words say bicycle (the caption of one, the detector's objects of any
    # other), and no other.
    having = {ids[n] for n, d in docs.items() if "bicycle" in d["search"]["text"].lower()}
    assert ids["gps.jpg"] in having and set(found(web, "bicycle")) == having
    assert found(web, "zebra crossing") == []
    # A tag of the offline tagger, an object of the detector, read text, a model-step label.
    tag = docs["cat.jpg"]["analysis"]["tags"][0]["name"]
    assert ids["cat.jpg"] in found(web, tag)
    word = max(docs["text-clean.png"]["analysis"]["text"]["full"].split(), key=len)
    assert found(web, word.lower())[0] == ids["text-clean.png"]
    label = docs["gps.jpg"]["species"]["labels"][0]["name"]
    assert ids["gps.jpg"] in found(web, label)
    # Other filters still apply.
    assert found(web, "dog", status="rejected") == []

    # Another caller's photo of the same dog is theirs alone.
    assert theirs not in found(web, "dog beach")
    assert found(other, "dog beach") == [theirs]
    assert found(other, "sofa") == []  # the cat photo is web's


def test_search_pages_and_hostile_queries_are_refused_or_find_nothing(searched):
    web, _other, ids, _docs, _theirs = searched
    everything = found(web, "dog beach sofa cat")
    first = web.call("GET", "/api/images", params={"q": "dog beach sofa cat", "limit": 1}).json()
    assert [i["id"] for i in first["items"]] == everything[:1] and first["continuation"]
    second = web.call(
        "GET",
        "/api/images",
        params={"q": "dog beach sofa cat", "limit": 1, "continuation": first["continuation"]},
    ).json()
    assert [i["id"] for i in second["items"]] == everything[1:2]
    # A continuation is bound to its query.
    moved = web.call(
        "GET",
        "/api/images",
        params={"q": "bicycle", "limit": 1, "continuation": first["continuation"]},
    )
    assert moved.status_code == 400

    for hostile in (
        '"dog" OR 1=1 --',
        "dog') ; DROP c; --",
        "FullTextContains(c.search.text, 'dog')",
        "@w0 @owner",
        "dog\x00\x1f\x7f beach",
        "\u202edog",
        "*",
        "",
        "   ",
    ):
        response = web.call("GET", "/api/images", params={"q": hostile})
        assert response.status_code in (200, 400), (hostile, response.status_code, response.text)
        if response.status_code == 200:
            assert all(i["id"] in ids.values() for i in response.json()["items"]), hostile
    huge = web.call("GET", "/api/images", params={"q": "dog " * 2500})
    assert huge.status_code == 400 and "q" in huge.json()["error"]


# A tiny stand-in for a text-embedding model: one axis per concept, so sentences about the same
# thing point the same way although they share no word ("puppy at the seaside" and "a dog on a
# sandy beach beside the sea"); a sentence of no known concept has no direction (no match).
CONCEPTS = {
    "dog": 0, "dogs": 0, "puppy": 0, "hound": 0,
    "cat": 1, "kitten": 1, "sofa": 1, "couch": 1,
    "beach": 2, "sea": 2, "seaside": 2, "shore": 2, "sandy": 2,
    "bicycle": 3, "bike": 3, "cycling": 3,
}  # fmt: skip


def concept_vector(text: str) -> list[float]:
    vector = [0.0] * 8
    for word in text.lower().replace(".", " ").split():
        if word in CONCEPTS:
            vector[CONCEPTS[word]] += 1.0
    return vector


def test_with_an_embedding_deployment_meaning_finds_what_words_miss_ranked_by_rrf(
    make_pipeline, fixture_bytes
):
    def describe(image):
        caption = CAPTIONS.get(image.size, "A photo.")
        return {"caption": caption, "tags": [], "objects": [], "text": []}

    with OpenAIServer(describe, deployment="captions", key=KEY, embed=concept_vector) as server:
        key, digest = new_key()
        pipeline = make_pipeline(
            "prepare,analyze,transform,store",
            DARKROOM_API_KEYS=f"web:{digest}",
            DARKROOM_ANALYZERS="caption,tags",
            DARKROOM_CAPTION_PROVIDER="openai",
            DARKROOM_OPENAI_ENDPOINT=server.url,
            DARKROOM_OPENAI_DEPLOYMENT="captions",
            DARKROOM_OPENAI_KEY=KEY,
            DARKROOM_RATE_PER_MINUTE="100000",
            DARKROOM_RATE_BURST="10000",
            DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT="embeddings",
            DARKROOM_OPENAI_EMBEDDING_DIMENSIONS="64",
        )
        web = Client(pipeline, key)
        ids = {n: web.upload(fixture_bytes(n), n)["id"] for n in ("dog.jpg", "cat.jpg", "gps.jpg")}
        docs = {n: web.wait_final(i) for n, i in ids.items()}
        assert all(d["status"] == "done" for d in docs.values())
        stored = pipeline.results.get(ids["dog.jpg"])["search"]["vector"]
        assert len(stored) == 64 and stored[:3] == [1, 0, 3]  # dog, -, sandy + beach + sea
        assert "vector" not in docs["dog.jpg"]["search"]  # ranking data, not an answer

        # No caption has "puppy" or "seaside": the meaning finds the beach dog, then the cat
        # photo (its "dog toy"), and nothing for the bicycle; a word match still counts.
        assert found(web, "puppy at the seaside") == [ids["dog.jpg"], ids["cat.jpg"]]
        assert found(web, "bike")[:1] == [ids["gps.jpg"]]
        assert found(web, "village")[:1] == [ids["gps.jpg"]]  # a word, no concept
        assert found(web, "zebra") == []
        embeds = [r for r in server.requests if r["path"].endswith("/embeddings")]
        assert len(embeds) == 3 + 4  # one per caption, one per search


def test_a_container_without_the_full_text_index_answers_503_not_500():
    """On Azure, a container made before search existed refuses FullTextScore (400): the caller
    gets a 503 saying so, and the log says why; the emulator cannot refuse, so the store is the
    one stand-in here (as Azure answers)."""
    from types import SimpleNamespace

    from azure.cosmos.exceptions import CosmosHttpResponseError
    from fastapi import HTTPException

    from pipeline.api.images import _search
    from pipeline.settings import Settings

    class RefusingStore:
        def query(self, query, params):
            raise CosmosHttpResponseError(
                status_code=400, message="Full Text Score requires a full text index"
            )

    svc = SimpleNamespace(store=RefusingStore(), settings=Settings.from_env({}))
    with pytest.raises(HTTPException) as refused:
        _search(svc, None, "dog", ["c.owner = @owner"], {"@owner": "web"}, 20, None)
    assert refused.value.status_code == 503 and "full-text index" in refused.value.detail
