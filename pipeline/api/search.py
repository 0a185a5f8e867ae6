"""Search by words (`GET /api/images?q=…`): the caller's images ranked by how well the words
they can be found by (`search.text`: pipeline.vision.search_words) match the query.

One Cosmos DB for NoSQL query, the same on Azure (full-text index and policy on the images
container, infra/bicep/modules/cosmos.bicep) and on the laptop's emulator (taught the same
functions, local/emulators/cosmos_fulltext.js):

    SELECT * FROM c WHERE c.owner = @owner AND … AND FullTextContainsAny(c.search.text, @w0, …)
    ORDER BY RANK FullTextScore(c.search.text, @w0, …) OFFSET n LIMIT m

`FullTextContainsAny` keeps the images that have at least one of the words (after the index's
English analysis: case, stemming, stop words), `FullTextScore` ranks them by BM25, so an image
with more of the words, or rarer ones, comes first. The caller's text reaches the query only as
parameters, one word each: quotes, operators and SQL in it are words to look for, never syntax.

With a text-embedding deployment configured (pipeline.vision.cloud.openai_embedding), the
query's meaning joins in: an image is kept if it has one of the words OR its caption's vector
is near the query's (cosine similarity ≥ SIMILARITY_FLOOR), and ranked by Reciprocal Rank
Fusion of the two orders (`ORDER BY RANK RRF(FullTextScore(…), VectorDistance(…))`), as Cosmos
DB's hybrid search does.
"""

from __future__ import annotations

import re

SEARCH_PATH = "c.search.text"
MAX_QUERY_CHARS = 200  # longer is refused (400): a search box, not a document
MAX_WORDS = 8  # the rest of a long query is ignored; BM25 gains little from more
MAX_WORD_CHARS = 40
# Deepest result a search pages to: the Azure SDK refuses a ranked query that asks for more
# (its hybrid-search limit, 1,000 by default), and nobody pages that far in a photo search.
MAX_RANKED = 1000

# Cosine similarity of text-embedding-3 vectors: unrelated sentences score ~0.1 to 0.2, a query
# and a caption about the same thing ≥ ~0.35. Below the floor the meaning alone finds nothing.
SIMILARITY_FLOOR = 0.3
VECTOR_PATH = "c.search.vector"

_WORD = re.compile(r"[^\W_]+")  # letters and digits, of any script


def words(query: str) -> list[str]:
    """The words searched for: letters and digits, lower-cased, each once, in order."""
    found = (w for w in _WORD.findall(query.casefold()) if len(w) <= MAX_WORD_CHARS)
    return list(dict.fromkeys(found))[:MAX_WORDS]


def ranked_query(
    where: list[str],
    params: dict[str, object],
    found: list[str],
    vector: list[float] | None = None,
) -> str:
    """The ranked query for `found` words (and the query's `vector`, if any) under the other
    filters `where` (with `params`, which gains the words), without its OFFSET/LIMIT."""
    names = [f"@w{i}" for i in range(len(found))]
    params.update(zip(names, found, strict=True))
    terms = ", ".join(names)
    words = f"FullTextContainsAny({SEARCH_PATH}, {terms})"
    score = f"FullTextScore({SEARCH_PATH}, {terms})"
    if vector is None:
        conditions = " AND ".join([*where, words])
        return f"SELECT * FROM c WHERE {conditions} ORDER BY RANK {score}"
    params["@v"] = vector
    params["@floor"] = SIMILARITY_FLOOR
    near = f"VectorDistance({VECTOR_PATH}, @v)"
    conditions = " AND ".join([*where, f"({words} OR {near} >= @floor)"])
    return f"SELECT * FROM c WHERE {conditions} ORDER BY RANK RRF({score}, {near})"


def page_of(query: str, offset: int, limit: int) -> str:
    """One page of a ranked query. Both numbers are ours (validated ints), never the caller's
    text, so they are written into the query."""
    return f"{query} OFFSET {int(offset)} LIMIT {int(limit)}"
