"""Root-cause ranking over multivariate evidence (pure numpy, no I/O).

The method starts from BARO (FSE'24): score each signal by how far its values after the incident
move from its baseline, in robust units (median / interquartile range), and rank entities by their
strongest signal. It then adds what BARO lacks:

* a **scale floor** relative to the signal's own level, so a series that was flat in the baseline
  (IQR 0, e.g. memory in bytes between two garbage collections) cannot win with a tiny wiggle;
* an **onset estimate**: the given incident time is usually late (an alert fires after its ``for:``
  duration), so the start of the strongest change is searched for in the window before it, and the
  baseline is cut there rather than at the late time;
* **earliest change first**: an entity whose change started after the others' is likely a victim,
  and its score is discounted with the delay;
* a **dependency graph** when one is configured: when a caller and one of its callees both changed,
  the callee that changed no later is the better explanation, so the caller is discounted.

Each candidate carries its strongest signals as evidence: baseline and incident values, robust
deviation, onset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SignalSeries:
    """One time series of one signal of one entity (e.g. cpu of service carts, db container)."""

    entity: str
    signal: str
    labels: Mapping[str, str]
    timestamps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class SignalEvidence:
    signal: str
    labels: Mapping[str, str]
    baseline: float
    incident: float
    deviation: float
    onset: float | None


@dataclass(frozen=True)
class Candidate:
    entity: str
    score: float
    onset: float | None
    evidence: tuple[SignalEvidence, ...]


@dataclass(frozen=True)
class RankConfig:
    relative_floor: float = 0.01  # scale >= 1% of the baseline level
    min_baseline_points: int = 5
    onset_lookback: float = 600.0  # how far before the given time the real onset may lie
    onset_threshold: float = 6.0  # robust deviations that count as "changed"
    onset_persistence: int = 3  # consecutive points above the threshold
    # an entity whose change began this much after the first strong change keeps half its score
    delay_half_life: float = 60.0
    callee_discount: float = 0.5  # a caller whose callee changed as much (and no later) keeps this share
    evidence_per_candidate: int = 3
    calls: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (caller, callee) edges


@dataclass(frozen=True)
class _Scored:
    series: SignalSeries
    evidence: SignalEvidence


def robust_scale(baseline: np.ndarray, relative_floor: float) -> tuple[float, float]:
    """(median, scale): scale is the IQR, floored relative to the level and absolutely above zero."""
    median = float(np.median(baseline))
    q1, q3 = np.percentile(baseline, [25, 75])
    floor = max(relative_floor * abs(median), 1e-9)
    return median, max(float(q3 - q1), floor)


def _finite(ts: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    chosen = values[mask]
    return chosen[np.isfinite(chosen)]


def _first_persistent(times: np.ndarray, deviations: np.ndarray, threshold: float, run: int) -> float | None:
    """Time of the first point that starts ``run`` consecutive deviations above ``threshold``."""
    above = deviations > threshold
    if above.size < max(run, 1):  # a series that stopped (a deleted pod) leaves too few points
        return None
    if run <= 1:
        hits = np.flatnonzero(above)
        return float(times[hits[0]]) if hits.size else None
    window = np.convolve(above.astype(np.int32), np.ones(run, dtype=np.int32), mode="valid")
    hits = np.flatnonzero(window == run)
    return float(times[hits[0]]) if hits.size else None


def signal_onset(series: SignalSeries, incident_time: float, config: RankConfig) -> float | None:
    """When this signal started to deviate, searched from ``onset_lookback`` before the incident time.
    The reference is the data before that search window when there is enough, else all data before the
    incident time (median and IQR tolerate the contamination of a late incident time)."""
    ts, values = series.timestamps, series.values
    earliest = incident_time - config.onset_lookback
    reference = _finite(ts, values, ts < earliest)
    if reference.size < config.min_baseline_points:
        reference = _finite(ts, values, ts < incident_time)
    if reference.size < config.min_baseline_points:
        return None
    # MAD (50% breakdown) rather than IQR (25%): a late incident time can leave a third of the
    # reference already anomalous, which would inflate the IQR and hide the change being looked for
    median = float(np.median(reference))
    mad = 1.4826 * float(np.median(np.abs(reference - median)))
    scale = max(mad, config.relative_floor * abs(median), 1e-9)
    search = (ts >= earliest) & np.isfinite(values)
    deviations = np.abs(values[search] - median) / scale
    return _first_persistent(ts[search], deviations, config.onset_threshold, config.onset_persistence)


def estimate_onset(series: Sequence[SignalSeries], incident_time: float, config: RankConfig) -> float:
    """The incident's onset: the earliest persistent change among the signals that changed, never
    after the given time. Falls back to the given time when nothing changed before it."""
    onsets = [o for s in series if (o := signal_onset(s, incident_time, config)) is not None]
    onsets = [o for o in onsets if o <= incident_time]
    if not onsets:
        return incident_time
    # the median of the earliest few resists one noisy series that crossed the threshold early
    earliest = sorted(onsets)[: max(3, len(onsets) // 10)]
    return float(np.median(earliest))


def score_series(
    series: SignalSeries, onset: float, incident_time: float, config: RankConfig
) -> _Scored | None:
    ts, values = series.timestamps, series.values
    baseline = _finite(ts, values, ts < onset)
    after = _finite(ts, values, ts >= onset)
    if baseline.size < config.min_baseline_points or after.size == 0:
        return None
    median, scale = robust_scale(baseline, config.relative_floor)
    deviations = np.minimum(np.abs(after - median) / scale, MAX_DEVIATION)
    peak = int(np.argmax(deviations))
    own_onset = signal_onset(series, max(incident_time, onset), config)
    evidence = SignalEvidence(
        signal=series.signal,
        labels=series.labels,
        baseline=median,
        incident=float(after[peak]),
        deviation=float(deviations[peak]),
        onset=own_onset,
    )
    return _Scored(series, evidence)


VALUE_LIMIT = 1e200
MAX_DEVIATION = 1e9  # caps a flat or ±Inf-polluted baseline: the ranking stays finite and comparable


def clean_series(series: SignalSeries) -> SignalSeries | None:
    """The series as ranking needs it: equal-length, time-ordered, finite timestamps, ±Inf as
    missing. None when nothing usable is left (an empty, all-NaN or 0/0 ratio series)."""
    size = min(len(series.timestamps), len(series.values))
    ts = np.asarray(series.timestamps[:size], dtype=float)
    values = np.asarray(series.values[:size], dtype=float)
    keep = np.isfinite(ts)
    # ±Inf is missing; magnitudes beyond any real metric are clipped so spreads cannot overflow
    values = np.where(np.isfinite(values[keep]), np.clip(values[keep], -VALUE_LIMIT, VALUE_LIMIT), np.nan)
    ts = ts[keep]
    if not np.isfinite(values).any():
        return None
    order = np.argsort(ts, kind="stable")
    return SignalSeries(series.entity, series.signal, series.labels, ts[order], values[order])


def rank_entities(
    series: Iterable[SignalSeries], incident_time: float, config: RankConfig | None = None
) -> list[Candidate]:
    """Rank entities by how likely they caused the incident at ``incident_time``; best first. Never
    raises on odd data: unusable series are left out, as if the signal had not been configured."""
    cfg = config or RankConfig()
    all_series = [c for s in series if (c := clean_series(s)) is not None]
    onset = estimate_onset(all_series, incident_time, cfg)
    scored = [s for item in all_series if (s := score_series(item, onset, incident_time, cfg)) is not None]
    by_entity: dict[str, list[SignalEvidence]] = {}
    for item in scored:
        by_entity.setdefault(item.series.entity, []).append(item.evidence)
    candidates = [_candidate(entity, evidence, cfg) for entity, evidence in by_entity.items()]
    candidates = _discount_late(candidates, cfg)
    candidates = _discount_callers(candidates, cfg)
    return sorted(candidates, key=lambda c: (-c.score, c.entity))


def _candidate(entity: str, evidence: list[SignalEvidence], cfg: RankConfig) -> Candidate:
    strongest = sorted(evidence, key=lambda e: -e.deviation)
    # the entity changed when its strongest signal did (the others may be noise or later effects)
    onset = next((e.onset for e in strongest[: cfg.evidence_per_candidate] if e.onset is not None), None)
    # log1p compresses runaway ratios (a flat baseline) so that discounts act on comparable numbers
    score = math.log1p(strongest[0].deviation)
    return Candidate(entity, score, onset, tuple(strongest[: cfg.evidence_per_candidate]))


def _discount_late(candidates: list[Candidate], cfg: RankConfig) -> list[Candidate]:
    """Halve an entity's score for every ``delay_half_life`` its change started after the earliest
    strong candidate's change."""
    timed = [c.onset for c in candidates if c.onset is not None and c.score >= _strong(candidates)]
    if not timed:
        return candidates
    first = min(timed)
    return [
        c if c.onset is None else _rescore(c, 0.5 ** (max(c.onset - first, 0.0) / cfg.delay_half_life))
        for c in candidates
    ]


def _strong(candidates: Sequence[Candidate]) -> float:
    """Half the best score: only changes of comparable strength define 'first'."""
    return 0.5 * max((c.score for c in candidates), default=0.0)


def _discount_callers(candidates: list[Candidate], cfg: RankConfig) -> list[Candidate]:
    if not cfg.calls:
        return candidates
    by_name = {c.entity: c for c in candidates}
    result = []
    for candidate in candidates:
        callees = [
            by_name[callee]
            for caller, callee in cfg.calls
            if caller == candidate.entity and callee in by_name
        ]
        explained = any(_explains(callee, candidate) for callee in callees)
        result.append(_rescore(candidate, cfg.callee_discount) if explained else candidate)
    return result


def _explains(callee: Candidate, caller: Candidate) -> bool:
    no_later = callee.onset is None or caller.onset is None or callee.onset <= caller.onset
    return no_later and callee.score >= 0.8 * caller.score


def _rescore(candidate: Candidate, factor: float) -> Candidate:
    return Candidate(candidate.entity, candidate.score * factor, candidate.onset, candidate.evidence)
