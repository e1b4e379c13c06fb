"""Root-cause ranking over multivariate evidence (pure numpy, no I/O).

The method starts from BARO (FSE'24): score each signal by how far its values after the incident
move from its baseline, in robust units, and rank entities by their strongest signal. It then adds
what BARO lacks:

* a **scale floor** relative to the signal's own level, so a series that was flat in the baseline
  (e.g. memory in bytes between two garbage collections) cannot win with a tiny wiggle;
* **per-signal calibration**: signals differ in how much they move in any incident (a latency
  percentile over a few requests jumps everywhere; memory hardly moves), so each entity's change on
  a signal is divided by the typical change of that signal across all entities;
* an **onset estimate**: the given incident time is usually late (an alert fires after its ``for:``
  duration), so the start of the strongest change is searched for in the last part of the window
  before it, and the baseline is cut there rather than at the late time;
* **earliest change first**: an entity whose change started after the others' is likely a victim,
  and its score is discounted with the delay, counted in the data's steps;
* **pods that came or went** are evidence (see ``series.fill_churn``);
* a **dependency graph** when one is configured: when a caller and one of its callees both changed,
  the callee that changed no later is the better explanation, so the caller is discounted.

Every time constant is in steps of the data or a share of the window, never in seconds. Each
candidate carries its strongest signals as evidence: baseline and incident values, robust
deviation, onset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from agentic_observability.investigation import blocks
from agentic_observability.investigation.series import (
    ABSENT_STEPS,
    SignalSeries,
    clean_series,
    fill_churn,
    infer_step,
    quantile,
)

__all__ = ["Candidate", "RankConfig", "SignalEvidence", "SignalSeries", "rank_entities"]


@dataclass(frozen=True)
class SignalEvidence:
    signal: str
    labels: Mapping[str, str]
    baseline: float
    incident: float
    deviation: float  # the peak change, in robust units of the series' own baseline
    onset: float | None
    weight: float = 0.0  # the change as ranked: sustained, and relative to this signal's typical change


@dataclass(frozen=True)
class Candidate:
    entity: str
    score: float
    onset: float | None
    evidence: tuple[SignalEvidence, ...]


@dataclass(frozen=True)
class RankConfig:
    relative_floor: float = 0.05  # scale >= 5% of the series' level
    min_baseline_points: int = 2
    onset_window: float = 1 / 3  # share of the history before the given time searched for the onset
    onset_threshold: float = 6.0  # robust deviations that count as "changed"
    onset_persistence: int = 3  # steps above the threshold (or until the data ends)
    # an entity whose change began this many steps after the first strong change keeps half its
    # score; a lag within ``delay_tolerance`` steps is below what the data can resolve
    delay_half_life: float = 3.0
    delay_tolerance: float = 1.0
    sustained: float = 0.75  # quantile of the deviations after the onset: a change held a quarter of it
    typical_floor: float = 0.01  # robust units: the least a signal's typical change is taken to be
    callee_discount: float = 0.5  # a caller whose callee changed as much (and no later) keeps this share
    evidence_per_candidate: int = 3
    calls: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (caller, callee) edges


@dataclass(frozen=True)
class _Scored:
    series: SignalSeries
    evidence: SignalEvidence
    strength: float


MAX_DEVIATION = 1e9  # caps a flat or ±Inf-polluted baseline: the ranking stays finite and comparable


def robust_scale(baseline: np.ndarray, relative_floor: float) -> tuple[float, float]:
    """(median, scale): scale is the MAD (as a standard deviation), floored relative to the level
    and absolutely above zero. MAD (50% breakdown) rather than IQR (25%): a late incident time can
    leave a third of the baseline already anomalous, which would inflate the IQR."""
    median = quantile(baseline, 0.5)
    spread = 1.4826 * quantile(np.abs(baseline - median), 0.5)
    return median, max(spread, relative_floor * abs(median), 1e-9)


def _finite(ts: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    chosen = values[mask]
    return chosen[np.isfinite(chosen)]


def _first_persistent(times: np.ndarray, above: np.ndarray, span: float, ongoing_at: float) -> float | None:
    """Start of the first run of ``above`` points that is still on at ``ongoing_at`` or begins later,
    and lasts ``span`` seconds or until the data ends."""
    if not above.any():
        return None
    edges = np.diff(np.concatenate(([0], above.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    for start, end in zip(starts, ends, strict=True):
        if end < above.size - 1 and times[end + 1] <= ongoing_at:
            continue  # came and went before the given time: an earlier episode, not this one
        if times[end] - times[start] >= span - 1e-9 or end == above.size - 1:
            return float(times[start])
    return None


def signal_onset(
    series: SignalSeries, incident_time: float, earliest: float, step: float, config: RankConfig
) -> float | None:
    """When this signal started to deviate, searched from ``earliest`` on. The reference is the data
    before ``earliest`` when there is enough, else all data before the incident time (median and
    MAD tolerate the contamination of a late incident time)."""
    ts, values = series.timestamps, series.values
    reference = _finite(ts, values, ts < earliest)
    if reference.size < config.min_baseline_points:
        reference = _finite(ts, values, ts < incident_time)
    if reference.size < config.min_baseline_points:
        return None
    median, scale = robust_scale(reference, config.relative_floor)
    search = (ts >= earliest) & np.isfinite(values)
    above = np.abs(values[search] - median) / scale > config.onset_threshold
    span = (config.onset_persistence - 1) * step
    return _first_persistent(ts[search], above, span, incident_time)


def onset_search_start(series: Sequence[SignalSeries], incident_time: float, config: RankConfig) -> float:
    """The onset is searched for in the last ``onset_window`` of the history before the given time."""
    first = min((float(s.timestamps[0]) for s in series if s.timestamps.size), default=incident_time)
    return _search_start(first, incident_time, config)


def _search_start(first: float, incident_time: float, config: RankConfig) -> float:
    return incident_time - config.onset_window * max(incident_time - first, 0.0)


def estimate_onset(onsets: Sequence[float | None], incident_time: float) -> float:
    """The incident's onset from its signals' onsets: the earliest persistent change among the
    signals that changed, never after the given time; the given time when nothing changed before."""
    before = sorted(o for o in onsets if o is not None and o <= incident_time)
    if not before:
        return incident_time
    # the median of the earliest few resists one noisy series that crossed the threshold early
    return float(np.median(before[: max(3, len(before) // 10)]))


def score_series(
    series: SignalSeries, own_onset: float | None, onset: float, config: RankConfig
) -> _Scored | None:
    """The series' change after the incident's onset, against its baseline before it."""
    ts, values = series.timestamps, series.values
    baseline = _finite(ts, values, ts < onset)
    after = _finite(ts, values, ts >= onset)
    if baseline.size < config.min_baseline_points or after.size == 0:
        return None
    median, scale = robust_scale(baseline, config.relative_floor)
    deviations = np.minimum(np.abs(after - median) / scale, MAX_DEVIATION)
    peak = int(np.argmax(deviations))
    evidence = SignalEvidence(
        signal=series.signal,
        labels=series.labels,
        baseline=median,
        incident=float(after[peak]),
        deviation=float(deviations[peak]),
        onset=own_onset,
    )
    return _Scored(series, evidence, quantile(deviations, config.sustained))


def rank_entities(
    series: Iterable[SignalSeries], incident_time: float, config: RankConfig | None = None
) -> list[Candidate]:
    """Rank entities by how likely they caused the incident at ``incident_time``; best first. Never
    raises on odd data: unusable series are left out, as if the signal had not been configured.

    Computed a block of series on one time axis at a time (``blocks``): the same ranking as
    ``rank_entities_per_series``, the rules series by series, without a Python call per series."""
    cfg = config or RankConfig()
    items = list(series)
    cleaned = [c for b in blocks.group(items) if (c := blocks.clean(b)) is not None]
    if not cleaned:
        return []
    step = _block_step(cleaned)
    earliest = _search_start(min(float(b.timestamps[0]) for b in cleaned), incident_time, cfg)
    if blocks.may_churn(cleaned, step, ABSENT_STEPS):  # rare: pods came or went; filled series by series
        items = fill_churn(blocks.to_series(cleaned, items), step, earliest)
        cleaned = blocks.group(items)
    own = [blocks.onsets(b, incident_time, earliest, step, cfg) for b in cleaned]
    onset = estimate_onset([o for o in np.concatenate(own).tolist() if not math.isnan(o)], incident_time)
    scored = [blocks.scores(b, onset, o, cfg, MAX_DEVIATION) for b, o in zip(cleaned, own, strict=True)]
    candidates = _block_candidates(items, scored, cfg)
    candidates = _discount_late(candidates, step, cfg)
    candidates = _discount_callers(candidates, cfg)
    return sorted(candidates, key=lambda c: (-c.score, c.entity))


def _block_step(cleaned: Sequence[blocks.Block]) -> float:
    """``infer_step`` over the blocks' rows."""
    spacings = np.concatenate([blocks.spacings(b) for b in cleaned])
    spacings = spacings[~np.isnan(spacings)]
    return float(np.median(spacings)) if spacings.size else 1.0


def _block_candidates(
    items: Sequence[SignalSeries], scored: Sequence[blocks.Scores], cfg: RankConfig
) -> list[Candidate]:
    """``_calibrated`` then ``_candidate`` per entity, on the blocks' scores: evidence objects are
    made only for each entity's strongest few."""
    rows = np.concatenate([s.rows for s in scored])
    if not rows.size:
        return []
    order = np.argsort(rows, kind="stable")  # the order of the series given: ties keep it
    rows = rows[order]
    pick = {name: np.concatenate([getattr(s, name) for s in scored])[order] for name in blocks.SCORE_FIELDS}
    entity, entities = _codes([items[r].entity for r in rows.tolist()])
    signal, _ = _codes([items[r].signal for r in rows.tolist()])
    weight = _block_weights(entity, signal, pick["strength"], entities, cfg)
    ranked = np.lexsort((np.arange(rows.size), -weight, entity))
    candidates = []
    for chunk in np.split(ranked, np.flatnonzero(np.diff(entity[ranked])) + 1):
        evidence = tuple(
            SignalEvidence(
                signal=items[rows[i]].signal,
                labels=items[rows[i]].labels,
                baseline=float(pick["baseline"][i]),
                incident=float(pick["incident"][i]),
                deviation=float(pick["deviation"][i]),
                onset=None if math.isnan(pick["onset"][i]) else float(pick["onset"][i]),
                weight=float(weight[i]),
            )
            for i in chunk[: cfg.evidence_per_candidate].tolist()
        )
        first = next((e.onset for e in evidence if e.onset is not None), None)
        name = items[rows[chunk[0]]].entity
        candidates.append(Candidate(name, math.log1p(evidence[0].weight), first, evidence))
    return candidates


def _codes(names: Sequence[str]) -> tuple[np.ndarray, int]:
    """A number per distinct name, and how many there are."""
    known: dict[str, int] = {}
    return np.array([known.setdefault(n, len(known)) for n in names], dtype=np.intp), len(known)


def _block_weights(
    entity: np.ndarray, signal: np.ndarray, strength: np.ndarray, entities: int, cfg: RankConfig
) -> np.ndarray:
    """``_calibrated``'s weights: each strength over its signal's typical change, the median over
    entities of each entity's strongest change on the signal."""
    pairs, inverse = np.unique(signal * entities + entity, return_inverse=True)
    strongest = np.zeros(pairs.size)
    np.maximum.at(strongest, inverse, strength)
    per_signal = np.split(strongest, np.flatnonzero(np.diff(pairs // entities)) + 1)
    typical = np.array([max(float(np.median(part)), cfg.typical_floor) for part in per_signal])
    return np.minimum(strength / typical[signal], MAX_DEVIATION)


def rank_entities_per_series(
    series: Iterable[SignalSeries], incident_time: float, config: RankConfig | None = None
) -> list[Candidate]:
    """``rank_entities`` series by series: the rules as written, the reference for the blocks."""
    cfg = config or RankConfig()
    cleaned = [c for s in series if (c := clean_series(s)) is not None]
    step = infer_step(cleaned)
    earliest = onset_search_start(cleaned, incident_time, cfg)
    cleaned = fill_churn(cleaned, step, earliest)
    onsets = [signal_onset(item, incident_time, earliest, step, cfg) for item in cleaned]
    onset = estimate_onset(onsets, incident_time)
    scored = [
        s
        for item, own in zip(cleaned, onsets, strict=True)
        if (s := score_series(item, own, onset, cfg)) is not None
    ]
    by_entity: dict[str, list[SignalEvidence]] = {}
    for entity, evidence in _calibrated(scored, cfg):
        by_entity.setdefault(entity, []).append(evidence)
    candidates = [_candidate(entity, evidence, cfg) for entity, evidence in by_entity.items()]
    candidates = _discount_late(candidates, step, cfg)
    candidates = _discount_callers(candidates, cfg)
    return sorted(candidates, key=lambda c: (-c.score, c.entity))


def _calibrated(scored: Sequence[_Scored], cfg: RankConfig) -> list[tuple[str, SignalEvidence]]:
    """Each change divided by its signal's typical change: the median, over the entities that have
    the signal, of each entity's strongest change on it."""
    strongest: dict[str, dict[str, float]] = {}
    for item in scored:
        per_entity = strongest.setdefault(item.series.signal, {})
        per_entity[item.series.entity] = max(per_entity.get(item.series.entity, 0.0), item.strength)
    typical = {
        signal: max(float(np.median(list(per_entity.values()))), cfg.typical_floor)
        for signal, per_entity in strongest.items()
    }
    return [
        (
            item.series.entity,
            replace(item.evidence, weight=min(item.strength / typical[item.series.signal], MAX_DEVIATION)),
        )
        for item in scored
    ]


def _candidate(entity: str, evidence: list[SignalEvidence], cfg: RankConfig) -> Candidate:
    strongest = sorted(evidence, key=lambda e: -e.weight)
    # the entity changed when its strongest signal did (the others may be noise or later effects)
    onset = next((e.onset for e in strongest[: cfg.evidence_per_candidate] if e.onset is not None), None)
    # log1p compresses runaway ratios (a flat baseline) so that discounts act on comparable numbers
    score = math.log1p(strongest[0].weight)
    return Candidate(entity, score, onset, tuple(strongest[: cfg.evidence_per_candidate]))


def _discount_late(candidates: list[Candidate], step: float, cfg: RankConfig) -> list[Candidate]:
    """Halve an entity's score for every ``delay_half_life`` steps its change started after the
    earliest strong candidate's change (beyond ``delay_tolerance`` steps)."""
    timed = [c.onset for c in candidates if c.onset is not None and c.score >= _strong(candidates)]
    if not timed or not cfg.delay_half_life > 0:
        return candidates
    first = min(timed) + cfg.delay_tolerance * step
    half_life = cfg.delay_half_life * step
    return [
        c if c.onset is None else _rescore(c, 0.5 ** (max(c.onset - first, 0.0) / half_life))
        for c in candidates
    ]


def _strong(candidates: Sequence[Candidate]) -> float:
    """Only changes of comparable strength define 'first': about half the best one's weight or more
    (scores are log1p of weights, so half the weight is log 2 less, give or take the 1)."""
    return max((c.score for c in candidates), default=0.0) - math.log(2.0)


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


# one kind of evidence beside the metrics: as if their change were twice as large
EVIDENCE_LIFT = math.log(2.0)


def with_evidence(candidates: Sequence[Candidate], supported: Mapping[str, int]) -> list[Candidate]:
    """Evidence beside the metrics, never the only evidence: each independent kind an entity has (a
    recent change on it, a rise in its error log lines) adds ``EVIDENCE_LIFT`` (``log 2``) to its score,
    as if its metric change were twice as large, only when the metrics already make it a strong
    suspect: a change at least its signal's typical one in this incident (score ``log 2``: calibrated
    weight 1) and at least about half the best's (``_strong``). So such evidence decides between
    comparable suspects; an entity with weak or no metric evidence is not moved by any of it, and a
    rollout or an error burst on a bystander whose metrics did not move leaves the ranking as it was.
    ``supported``: per entity, how many kinds of evidence it has (the bar is the metrics' alone)."""
    bar = max(_strong(candidates), math.log(2.0))
    rescored = [
        Candidate(c.entity, c.score + EVIDENCE_LIFT * supported[c.entity], c.onset, c.evidence)
        if supported.get(c.entity, 0) > 0 and c.score >= bar
        else c
        for c in candidates
    ]
    return sorted(rescored, key=lambda c: (-c.score, c.entity))


def with_changes(candidates: Sequence[Candidate], changed: Iterable[str]) -> list[Candidate]:
    """``with_evidence`` for a recent change (a rollout, a new image, a config edit) on each of
    ``changed``: the entities with one."""
    return with_evidence(candidates, dict.fromkeys(changed, 1))
