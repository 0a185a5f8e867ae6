"""Model monitoring: what each analyzer answers over time, and whether that drifted.

A vision model in production rarely fails loudly: a new camera, a changed upload app or an
upgraded model shifts what it outputs while every image still ends `done`. This module turns an
image's `analysis` into per-capability observations (`observations`) and compares two windows of
them: the latest `DARKROOM_DRIFT_WINDOW_HOURS` against the `DARKROOM_DRIFT_BASELINE_HOURS`
before it (`check`, read from the image documents in Cosmos DB, shown by `python -m pipeline
status`).

Per capability it compares
- the score distribution, binned in tenths of [0, 1], by the population stability index
  PSI = Σ (c - b) · ln(c / b) over the bins' shares c (latest) and b (baseline), each share
  floored at EPSILON so an empty bin does not divide by zero: tags by the top tag's score,
  objects and faces by every detection's score, text by every line's confidence, moderation by
  its score;
- the share of images with a finding (a tag, an object, a face, some text; an `unsafe` verdict
  for moderation), as an absolute difference;
- the error rate (`analysis.errors`) of the latest window, against a ceiling.

The same observations are emitted as metrics when the analyze step records its output
(pipeline.observability.metrics: `darkroom.analysis.outcomes` and `darkroom.analysis.scores`,
binned the same
way), and the Bicep drift alert computes the same PSI, shares and error rate from them in Kusto
with the same thresholds, so the laptop and Azure Monitor give one verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipeline.observability.settings import DriftSettings
from pipeline.vision.capabilities import capabilities
from pipeline.vision.capability import Outcome

BIN_COUNT = 10
BINS: tuple[str, ...] = tuple(f"{i / BIN_COUNT:.1f}" for i in range(BIN_COUNT))  # lower edges
EPSILON = 1e-4  # floor of a bin's share in the PSI (the Kusto of the drift alert uses it too)
Verdict = Literal["ok", "drift", "insufficient data"]
# The outcome that counts as "a finding" in the share compared between windows, per capability
# (each declares its own: `found`, or `unsafe` for moderation).
POSITIVE: dict[str, Outcome] = {name: c.positive for name, c in capabilities().items()}


def score_bin(score: float) -> str:
    """The bin of a score: its tenth of [0, 1] by lower edge ("0.0" … "0.9"; 1.0 is "0.9")."""
    index = min(BIN_COUNT - 1, max(0, math.floor(float(score) * BIN_COUNT)))
    return BINS[index]


@dataclass(frozen=True)
class Observation:
    """What one capability answered for one image."""

    capability: str
    outcome: Outcome
    scores: tuple[float, ...]  # the scores its distribution is judged by (none for errors)
    model: str | None


def observations(
    analysis: Mapping[str, Any] | None, only: Iterable[str] | None = None
) -> list[Observation]:
    """Per capability answered (or failed) in `analysis`, what it found and its scores.

    `only` limits them to capabilities that ran in this delivery (the queue's analyze of an
    image the sync path analysed answers its deferred capabilities only). Capabilities neither
    answered nor failed (disabled, or still deferred) give nothing."""
    if not isinstance(analysis, Mapping):
        return []
    errors = analysis.get("errors") or {}
    models = analysis.get("models") or {}
    chosen = set(only) if only is not None else None
    found = []
    for capability, declared in capabilities().items():
        if chosen is not None and capability not in chosen:
            continue
        model = models.get(capability)
        if capability in errors:
            found.append(Observation(capability, "error", (), model))
        elif analysis.get(capability) is not None:
            value = analysis[capability]
            try:
                scores = declared.scores(value)
            except (KeyError, TypeError, ValueError):
                scores = ()  # a document from an older schema: its outcome still counts
            found.append(Observation(capability, declared.outcome(value), scores, model))
    return found


# ------------------------------------------------------------------ windows and the verdict


class WindowStats(BaseModel):
    """One capability over one window."""

    images: int = Field(0, description="Images the capability answered or failed on.")
    errors: int = 0
    positives: int = Field(0, description="Images with a finding (moderation: unsafe).")
    scores: int = Field(0, description="Scores in the distribution.")
    bins: dict[str, int] = Field(default_factory=dict, description="Scores per bin.")
    models: dict[str, int] = Field(default_factory=dict, description="Images per model.")

    @property
    def answered(self) -> int:
        return self.images - self.errors

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.images if self.images else None

    @property
    def positive_share(self) -> float | None:
        return self.positives / self.answered if self.answered else None

    def add(self, observation: Observation) -> None:
        self.images += 1
        if observation.model:
            self.models[observation.model] = self.models.get(observation.model, 0) + 1
        if observation.outcome == "error":
            self.errors += 1
            return
        if observation.outcome == POSITIVE[observation.capability]:
            self.positives += 1
        for score in observation.scores:
            label = score_bin(score)
            self.bins[label] = self.bins.get(label, 0) + 1
            self.scores += 1


def psi(current: Mapping[str, int], baseline: Mapping[str, int]) -> float | None:
    """Population stability index of two binned distributions (None if either is empty)."""
    current_total, baseline_total = sum(current.values()), sum(baseline.values())
    if not current_total or not baseline_total:
        return None
    total = 0.0
    for label in BINS:
        c = max(current.get(label, 0) / current_total, EPSILON)
        b = max(baseline.get(label, 0) / baseline_total, EPSILON)
        total += (c - b) * math.log(c / b)
    return total


class CapabilityDrift(BaseModel):
    capability: str
    current: WindowStats
    baseline: WindowStats
    psi: float | None = Field(description="PSI of the score distributions (None: too few scores).")
    share_change: float | None = Field(description="Latest minus baseline share of findings.")
    error_rate: float | None = Field(description="Error rate of the latest window.")
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)


def judge(
    capability: str, current: WindowStats, baseline: WindowStats, settings: DriftSettings
) -> CapabilityDrift:
    """The verdict on one capability: insufficient data when either window has fewer than
    `min_images` images; drift when the PSI (over at least `min_images` scores a window), the
    change in the share of findings or the latest error rate reach their thresholds."""
    enough = min(current.images, baseline.images) >= settings.min_images
    value = psi(current.bins, baseline.bins)
    if min(current.scores, baseline.scores) < settings.min_images:
        value = None
    share = None
    if current.positive_share is not None and baseline.positive_share is not None:
        share = current.positive_share - baseline.positive_share
    reasons = []
    if enough:
        if value is not None and value >= settings.psi_threshold:
            reasons.append(f"score distribution PSI {value:.2f} >= {settings.psi_threshold}")
        if share is not None and abs(share) >= settings.share_threshold:
            reasons.append(
                f"share of {POSITIVE[capability]} images {baseline.positive_share:.0%} → "
                f"{current.positive_share:.0%} (change >= {settings.share_threshold:.0%})"
            )
        rate = current.error_rate
        if current.errors and rate is not None and rate >= settings.error_rate_threshold:
            reasons.append(f"error rate {rate:.1%} >= {settings.error_rate_threshold:.0%}")
        models = set(current.models) - set(baseline.models)
        if reasons and models:
            reasons.append(f"new model since the baseline: {', '.join(sorted(models))}")
    verdict: Verdict = "insufficient data" if not enough else ("drift" if reasons else "ok")
    return CapabilityDrift(
        capability=capability,
        current=current,
        baseline=baseline,
        psi=None if value is None else round(value, 4),
        share_change=None if share is None else round(share, 4),
        error_rate=current.error_rate,
        verdict=verdict,
        reasons=reasons,
    )


class Window(BaseModel):
    start: str
    end: str
    images: int = Field(description="Images analysed in the window.")


class DriftReport(BaseModel):
    current: Window
    baseline: Window
    thresholds: dict[str, float | int]
    capabilities: list[CapabilityDrift]

    @property
    def drifted(self) -> list[str]:
        return [c.capability for c in self.capabilities if c.verdict == "drift"]

    def summary(self) -> dict[str, Any]:
        """The report as `status --json` shows it: one entry per capability."""
        return {
            "current": self.current.model_dump(),
            "baseline": self.baseline.model_dump(),
            "thresholds": self.thresholds,
            "drifted": self.drifted,
            "capabilities": {
                c.capability: {
                    "verdict": c.verdict,
                    "reasons": c.reasons,
                    "psi": c.psi,
                    "share_change": c.share_change,
                    "error_rate": c.error_rate,
                    "images": {"current": c.current.images, "baseline": c.baseline.images},
                    "positive_share": {
                        "current": c.current.positive_share,
                        "baseline": c.baseline.positive_share,
                    },
                    "models": {"current": c.current.models, "baseline": c.baseline.models},
                }
                for c in self.capabilities
            },
        }


def compare(
    current: Iterable[Mapping[str, Any]],
    baseline: Iterable[Mapping[str, Any]],
    settings: DriftSettings,
    windows: tuple[Window, Window],
) -> DriftReport:
    """The report for two windows of `analysis` objects."""
    stats: dict[str, dict[str, WindowStats]] = {}
    counts = [0, 0]
    for index, analyses in enumerate((current, baseline)):
        for analysis in analyses:
            counts[index] += 1
            for observation in observations(analysis):
                pair = stats.setdefault(observation.capability, {})
                pair.setdefault("current", WindowStats())
                pair.setdefault("baseline", WindowStats())
                pair["current" if index == 0 else "baseline"].add(observation)
    now_window, base_window = windows
    return DriftReport(
        current=now_window.model_copy(update={"images": counts[0]}),
        baseline=base_window.model_copy(update={"images": counts[1]}),
        thresholds={
            "psi": settings.psi_threshold,
            "share_change": settings.share_threshold,
            "error_rate": settings.error_rate_threshold,
            "min_images": settings.min_images,
        },
        capabilities=[
            judge(c, stats[c]["current"], stats[c]["baseline"], settings)
            for c in capabilities()
            if c in stats
        ],
    )


# ------------------------------------------------------------------ from the image documents

_WINDOW_QUERY = (
    "SELECT c.analysis FROM c WHERE c.steps.analyze.status = 'done' "
    "AND c.steps.analyze.finished_at >= @start AND c.steps.analyze.finished_at < @end"
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def analyses_between(store: Any, start: datetime, end: datetime) -> Iterator[Mapping[str, Any]]:
    """The `analysis` of every image whose analyze step finished in [start, end): a
    cross-partition query on the images container (a ResultsStore), newest runs only (a
    reprocessed image counts once, when it was last analysed)."""
    for row in store.query(_WINDOW_QUERY, {"@start": _iso(start), "@end": _iso(end)}):
        if isinstance(row.get("analysis"), Mapping):
            yield row["analysis"]


def check(store: Any, settings: DriftSettings, now: datetime | None = None) -> DriftReport:
    """Drift of the latest window against the baseline before it, from the stored documents."""
    now = now or datetime.now(UTC)
    boundary = now - timedelta(hours=settings.window_hours)
    start = boundary - timedelta(hours=settings.baseline_hours)
    windows = (
        Window(start=_iso(boundary), end=_iso(now), images=0),
        Window(start=_iso(start), end=_iso(boundary), images=0),
    )
    return compare(
        list(analyses_between(store, boundary, now)),
        list(analyses_between(store, start, boundary)),
        settings,
        windows,
    )
