"""Model monitoring: drift of the analyzers' outputs between two windows of stored documents.

The unit tests pin the arithmetic (bins, PSI against a hand computation, verdict rules); the
stack tests run the real analyze step on sample photos, then judge windows of documents cloned
from those real analyses in the real Cosmos emulator, through `drift.check` and `status --json`.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.observability import drift
from pipeline.observability.settings import DriftSettings
from pipeline.stores.results import ResultsStore
from tests.harness import SAMPLES

# A document's `analysis` as the analyze step writes it (shape from steps/analyze.py).
REAL_SHAPE = {
    "tags": [{"name": "tabby", "score": 0.62}, {"name": "tiger cat", "score": 0.21}],
    "objects": [{"name": "cat", "score": 0.91, "box": [10.0, 12.0, 300.0, 280.0]}],
    "faces": [],
    "text": {"full": "STOP", "lines": [{"text": "STOP", "box": [1, 2, 3, 4], "confidence": 0.97}]},
    "moderation": {"score": 0.03, "verdict": "safe"},
    "models": {"tags": "efficientnet-lite0@1", "objects": "centernet@1", "faces": "blazeface@1"},
    "errors": {},
    "duration_ms": {"tags": 20.1, "objects": 70.2, "faces": 100.3, "text": 400.0},
}


def test_bins_are_tenths_by_lower_edge():
    assert [drift.score_bin(s) for s in (0, 0.05, 0.1, 0.59, 0.9, 0.999, 1.0)] == [
        "0.0", "0.0", "0.1", "0.5", "0.9", "0.9", "0.9",
    ]  # fmt: skip
    assert tuple(f"{i / 10:.1f}" for i in range(10)) == drift.BINS


def test_observations_follow_the_document_shape():
    found = {o.capability: o for o in drift.observations(REAL_SHAPE)}
    assert found["tags"].outcome == "found" and found["tags"].scores == (0.62,)  # the top tag
    assert found["objects"].scores == (0.91,) and found["objects"].model == "centernet@1"
    assert found["faces"].outcome == "none" and found["faces"].scores == ()
    assert found["text"].outcome == "found" and found["text"].scores == (0.97,)
    assert found["moderation"].outcome == "safe" and found["moderation"].scores == (0.03,)

    failed = {**REAL_SHAPE, "errors": {"faces": "RuntimeError: model gone"}}
    del failed["faces"]
    assert {o.capability: o.outcome for o in drift.observations(failed)}["faces"] == "error"
    # only the capabilities a delivery ran; a capability still deferred gives nothing
    assert [o.capability for o in drift.observations(REAL_SHAPE, ["text"])] == ["text"]
    assert [o.capability for o in drift.observations({"tags": [], "errors": {}})] == ["tags"]
    assert drift.observations(None) == []


def test_psi_is_the_textbook_sum_with_empty_bins_floored():
    current, baseline = {"0.1": 30, "0.5": 70}, {"0.1": 50, "0.5": 50}
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    assert drift.psi(current, baseline) == pytest.approx(expected)
    assert drift.psi(baseline, baseline) == 0
    one_sided = drift.psi({"0.9": 10}, {"0.0": 10})
    e = drift.EPSILON
    assert one_sided == pytest.approx(2 * (1 - e) * math.log(1 / e))
    assert drift.psi({}, baseline) is None


def _stats(analyses: list[dict]) -> dict[str, drift.WindowStats]:
    stats: dict[str, drift.WindowStats] = {}
    for analysis in analyses:
        for o in drift.observations(analysis):
            stats.setdefault(o.capability, drift.WindowStats()).add(o)
    return stats


def test_verdicts_need_enough_images_and_name_their_reasons():
    settings = DriftSettings(min_images=10)
    same = _stats([REAL_SHAPE] * 20)
    verdict = drift.judge("tags", same["tags"], same["tags"], settings)
    assert verdict.verdict == "ok" and verdict.psi == 0 and verdict.share_change == 0

    few = _stats([REAL_SHAPE] * 5)["tags"]
    assert drift.judge("tags", few, same["tags"], settings).verdict == "insufficient data"

    lower = copy.deepcopy(REAL_SHAPE)
    lower["tags"][0]["score"] = 0.12  # the tagger became unsure
    shifted = drift.judge("tags", _stats([lower] * 20)["tags"], same["tags"], settings)
    assert shifted.verdict == "drift" and shifted.psi > settings.psi_threshold
    assert "PSI" in shifted.reasons[0]

    faces = copy.deepcopy(REAL_SHAPE)
    faces["faces"] = [{"box": [0, 0, 5, 5], "score": 0.8, "landmarks": []}]
    mix = _stats([faces] * 8 + [REAL_SHAPE] * 12)["faces"]  # 40 % with a face
    none = _stats([REAL_SHAPE] * 20)["faces"]
    judged = drift.judge("faces", none, mix, settings)
    assert judged.verdict == "drift" and judged.share_change == pytest.approx(-0.4)
    assert any("share of found images 40% → 0%" in r for r in judged.reasons)

    broken = copy.deepcopy(REAL_SHAPE)
    del broken["moderation"]
    broken["errors"] = {"moderation": "OSError: weights missing"}
    errors = _stats([broken] * 2 + [REAL_SHAPE] * 18)["moderation"]
    judged = drift.judge("moderation", errors, same["moderation"], settings)
    assert judged.verdict == "drift" and judged.error_rate == pytest.approx(0.1)
    assert any("error rate 10.0%" in r for r in judged.reasons)


# ------------------------------------------------------------------ against the real stack

PHOTOS = (
    "astronaut-collins.jpg",
    "football-messi.jpg",
    "indoor-people-gray.jpg",
    "person-dog-horse.jpg",
    "cat-chelsea.jpg",
    "dog-bicycle.jpg",
    "fruits.jpg",
    "giraffe-zebra.jpg",
    "butterfly.jpg",
    "coffee-cup.jpg",
)


@pytest.fixture(scope="module")
def analysed(emulators, tmp_path_factory):
    """Real documents: the sample photos through prepare → analyze → store on the local host."""
    from tests.conftest import _numbers  # one numbering for every pipeline of the session
    from tests.harness import Pipeline, isolated_env

    env = isolated_env(
        emulators,
        f"drift{next(_numbers)}-",
        "prepare,analyze,store",
        DARKROOM_ANALYZERS="tags,objects,faces,moderation",
        DARKROOM_HOST_WORKERS="2",
    )
    pipeline = Pipeline(env).provision().start_host()
    try:
        uploads = [pipeline.upload(n, (SAMPLES / n).read_bytes()) for n in PHOTOS]
        docs = [pipeline.wait_final(image, etag, timeout=300) for image, etag in uploads]
    finally:
        pipeline.stop_host()
    assert all(d["status"] == "done" for d in docs), [d.get("reason") for d in docs]
    return pipeline, docs


def _clone(doc: dict, n: int, finished: datetime, edit=None) -> dict:
    clone = copy.deepcopy(doc)
    clone["id"] = f"{doc['id'][:20]}-{n:05d}"
    clone["steps"]["analyze"]["finished_at"] = drift._iso(finished)
    if edit:
        edit(clone["analysis"])
    return clone


def _windows(store: ResultsStore, now: datetime, baseline: list[dict], current: list[dict]):
    """Clone the real documents into both windows: baseline 20 h ago, current 1 h ago."""
    for n, doc in enumerate(baseline):
        store.save(_clone(doc, n, now - timedelta(hours=20)))
    for n, doc in enumerate(current):
        store.save(_clone(doc, 50_000 + n, now - timedelta(hours=1)))


def _clear(store: ResultsStore) -> None:
    for doc in list(store.query("SELECT c.id FROM c", {})):
        store.delete(doc["id"])


def test_same_population_is_ok_and_a_population_without_faces_drifts(analysed):
    pipeline, docs = analysed
    with_faces = [d for d in docs if d["analysis"]["faces"]]
    without = [d for d in docs if not d["analysis"]["faces"]]
    assert with_faces and without, [len(d["analysis"]["faces"]) for d in docs]
    store, now = pipeline.results, datetime.now(UTC)
    settings = DriftSettings()  # the defaults: 12 h against the 36 h before, 30 images a window
    _clear(store)
    _windows(store, now, docs * 4, docs * 4)  # 40 images each, the same photos

    report = drift.check(store, settings, now)
    assert report.current.images == 40 and report.baseline.images == 40
    verdicts = {c.capability: c for c in report.capabilities}
    assert set(verdicts) == {"tags", "objects", "faces", "moderation"}  # as enabled
    assert all(c.verdict == "ok" and c.psi in (0, None) for c in verdicts.values())
    assert verdicts["tags"].psi == 0  # one score an image: 40 a window, enough for a PSI
    share = len(with_faces) / len(docs)
    assert verdicts["faces"].current.positive_share == pytest.approx(share)
    assert verdicts["tags"].current.models == {docs[0]["analysis"]["models"]["tags"]: 40}

    _clear(store)
    _windows(store, now, docs * 4, without * (40 // len(without) + 1))
    report = drift.check(store, settings, now)
    faces = next(c for c in report.capabilities if c.capability == "faces")
    assert "faces" in report.drifted
    assert faces.current.positive_share == 0 and faces.share_change == pytest.approx(-share)
    assert any("share of found images" in r for r in faces.reasons)


def test_status_reports_drift_and_error_rate_beside_its_old_fields(analysed):
    pipeline, docs = analysed
    store, now = pipeline.results, datetime.now(UTC)
    _clear(store)

    def moderation_failed(analysis: dict) -> None:
        analysis.pop("moderation", None)
        analysis["errors"] = {"moderation": "RuntimeError: opennsfw session died"}

    baseline = [_clone(d, n, now - timedelta(hours=30)) for n, d in enumerate(docs * 4)]
    current = [
        _clone(d, 90_000 + n, now - timedelta(minutes=30), moderation_failed if n < 4 else None)
        for n, d in enumerate(docs * 4)
    ]
    for doc in baseline + current:
        store.save(doc)
    # an image analysed before the baseline and one still in flight count in neither window
    store.save(_clone(docs[0], 99_998, now - timedelta(hours=60)))
    in_flight = _clone(docs[0], 99_999, now - timedelta(minutes=5))
    in_flight["steps"]["analyze"]["status"] = "retrying"
    store.save(in_flight)

    result = pipeline.cli("status", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert {"queues", "images", "stalled", "route", "health"} <= set(report)  # kept
    assert report["images"]["done"] >= 80
    found = report["drift"]
    assert found["current"]["images"] == 40 and found["baseline"]["images"] == 40
    assert found["drifted"] == ["moderation"]
    moderation = found["capabilities"]["moderation"]
    assert moderation["verdict"] == "drift" and moderation["error_rate"] == pytest.approx(0.1)
    assert found["capabilities"]["tags"]["verdict"] == "ok"
    assert found["thresholds"]["psi"] == DriftSettings().psi_threshold

    text = pipeline.cli("status")
    assert text.returncode == 0, text.stderr[-2000:]
    assert "model drift:" in text.stdout and "error rate 10.0%" in text.stdout
    line = next(x for x in text.stdout.splitlines() if x.strip().startswith("moderation"))
    assert "drift" in line and "errors 10.0%" in line

    _clear(store)
    quiet = json.loads(pipeline.cli("status", "--json").stdout)["drift"]
    assert quiet["capabilities"] == {} and quiet["drifted"] == []
