"""A plain reference for the emulator's full-text search (local/emulators/cosmos_fulltext.js),
written from the rules and formulas, not from that code: what FullTextContains/All/Any,
ORDER BY RANK FullTextScore (BM25) and RRF must return for a set of documents.

Analysis (en-US): tokens are maximal runs of Unicode letters and digits (categories L* and N*),
with a single apostrophe (' or U+2019) kept between two such characters; each token is
lower-cased, dropped when it is a stop word, and stemmed with the Snowball English (Porter2)
stemmer from PyPI's `snowballstemmer` (pinned to the release whose English algorithm is the one
npm's snowball-stemmers implements). A term matches a text when its tokens occur there
consecutively, in order; a term without tokens matches nothing.

BM25: k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5)); N, the average length and n
over every document of the container; tf counts overlapping occurrences; a document without
text scores -1. RRF: per component, dense ranks (equal scores share one) of "higher is better"
values (no value: last), score = sum(|w| / (60 + rank)); a negative weight ranks its component
the other way round. Ties in the final order: by _rid.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterable, Sequence

import snowballstemmer

# Snowball's English stop-word list, https://snowballstem.org/algorithms/english/stop.txt
_STOP_TEXT = """
    i me my myself we our ours ourselves you your yours yourself yourselves
    he him his himself she her hers herself it its itself
    they them their theirs themselves
    what which who whom this that these those
    am is are was were be been being have has had having do does did doing
    would should could ought
    i'm you're he's she's it's we're they're i've you've we've they've
    i'd you'd he'd she'd we'd they'd i'll you'll he'll she'll we'll they'll
    isn't aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't
    won't wouldn't shan't shouldn't can't cannot couldn't mustn't
    let's that's who's what's here's there's when's where's why's how's
    a an the and but if or because as until while
    of at by for with about against between into through during
    before after above below to from up down in out on off over under
    again further then once here there when where why how
    all any both each few more most other some such
    no nor not only own same so than too very
    """
STOP_WORDS = frozenset(_STOP_TEXT.split())
K1, B, RRF_K = 1.2, 0.75, 60
APOSTROPHES = ("'", "\u2019")

_stemmer = snowballstemmer.stemmer("english")


def _word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def tokens(text: str) -> list[str]:
    """The text's tokens as written (before lower-casing)."""
    out: list[str] = []
    current: list[str] = []
    for i, ch in enumerate(text):
        inner_apostrophe = (
            ch in APOSTROPHES and bool(current) and i + 1 < len(text) and _word_char(text[i + 1])
        )
        if _word_char(ch) or inner_apostrophe:
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return out


def analyse(text: str) -> list[str]:
    """Stems of the text, stop words removed, in order."""
    stems = []
    for token in tokens(text):
        word = token.lower().replace("\u2019", "'")
        if word not in STOP_WORDS:
            stems.append(_stemmer.stemWord(word))
    return stems


def occurrences(stems: Sequence[str], phrase: Sequence[str]) -> int:
    """Places (overlapping) where `phrase` occurs in `stems`; 0 for an empty phrase."""
    m = len(phrase)
    if m == 0:
        return 0
    return sum(1 for i in range(len(stems) - m + 1) if list(stems[i : i + m]) == list(phrase))


def contains(text: object, term: str) -> bool | None:
    if not isinstance(text, str):
        return None
    return occurrences(analyse(text), analyse(term)) > 0


def contains_all(text: object, terms: Iterable[str]) -> bool | None:
    if not isinstance(text, str):
        return None
    return all(contains(text, t) for t in terms)


def contains_any(text: object, terms: Iterable[str]) -> bool | None:
    if not isinstance(text, str):
        return None
    return any(contains(text, t) for t in terms)


def bm25(all_texts: Sequence[object], texts: Sequence[object], terms: Sequence[str]) -> list[float]:
    """FullTextScore of each of `texts` (the rows), statistics over `all_texts` (one entry per
    document of the container, None where it has no text)."""
    analysed = [analyse(t) for t in all_texts if isinstance(t, str)]
    phrases = [analyse(t) for t in terms]
    n_docs = len(all_texts)
    total = sum(len(a) for a in analysed)
    avgdl = total / n_docs if n_docs > 0 and total > 0 else 1
    idf = []
    for phrase in phrases:
        n = sum(1 for a in analysed if occurrences(a, phrase) > 0)
        idf.append(math.log(1 + (n_docs - n + 0.5) / (n + 0.5)))
    scores = []
    for text in texts:
        if not isinstance(text, str):
            scores.append(-1.0)
            continue
        stems = analyse(text)
        norm = K1 * (1 - B + (B * len(stems)) / avgdl)
        score = 0.0
        for phrase, weight in zip(phrases, idf, strict=True):
            tf = occurrences(stems, phrase)
            if tf > 0:
                score += (weight * tf * (K1 + 1)) / (tf + norm)
        scores.append(score)
    return scores


def vector_similarity(a: object, b: Sequence[float], function: str) -> float | None:
    """Higher is more similar: cosine and dot product as they are, euclidean negated; None
    when `a` is not a vector of b's length (or a norm is 0, for cosine)."""
    if not (
        isinstance(a, list)
        and a
        and len(a) == len(b)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in a)
    ):
        return None
    if function == "cosine":
        dot = na = nb = 0.0
        for x, y in zip(a, b, strict=True):
            dot += x * y
            na += x * x
            nb += y * y
        return None if na == 0 or nb == 0 else dot / math.sqrt(na * nb)
    if function == "dotproduct":
        dot = 0.0
        for x, y in zip(a, b, strict=True):
            dot += x * y
        return dot
    total = 0.0
    for x, y in zip(a, b, strict=True):
        d = x - y
        total += d * d
    return -math.sqrt(total)


def dense_ranks(values: Sequence[float | None]) -> list[int]:
    """1 = best (highest); equal values share a rank; None ranks after every value."""
    distinct = sorted({v for v in values if v is not None}, reverse=True)
    rank_of = {v: i + 1 for i, v in enumerate(distinct)}
    last = len(distinct) + 1
    return [last if v is None else rank_of[v] for v in values]


def rrf(
    components: Sequence[Sequence[float | None]], weights: Sequence[float] | None = None
) -> list[float]:
    """Reciprocal rank fusion of per-row component values (higher better, None = no value)."""
    weights = [1.0] * len(components) if weights is None else list(weights)
    scores = [0.0] * len(components[0])
    for values, weight in zip(components, weights, strict=True):
        oriented = values if weight >= 0 else [None if v is None else -v for v in values]
        for i, rank in enumerate(dense_ranks(oriented)):
            scores[i] += abs(weight) / (RRF_K + rank)
    return scores


def ranked(rows: Sequence[dict], scores: Sequence[float], rid: Callable[[dict], str]) -> list[dict]:
    """Rows best first; equal scores by _rid."""
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], rid(rows[i])))
    return [rows[i] for i in order]
