"""The ranking's per-series rules over blocks of series that share their timestamps, one numpy pass
per block instead of a few Python calls per series (10,000 series: ~0.2 s rather than ~1.2 s).

A block is a (series x samples) matrix, NaN where a series has no value. Each function here does
exactly the float operations of its per-series counterpart in ``rank.py`` or ``series.py``, on the
same order statistics (a partition or sort of the same values), so the ranking is the same to the
last bit; ``tests/test_rank_blocks.py`` checks it against the per-series rules on random inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agentic_observability.investigation.series import VALUE_LIMIT, SignalSeries

if TYPE_CHECKING:
    from agentic_observability.investigation.rank import RankConfig


@dataclass(frozen=True)
class Block:
    """Series on one time axis: ``rows[i]`` is the position of ``values[i]`` in the caller's list."""

    rows: np.ndarray  # (n,) int
    timestamps: np.ndarray  # (m,) float
    values: np.ndarray  # (n, m) float, NaN where missing


def _timestamps(item: SignalSeries, size: int) -> np.ndarray:
    return np.asarray(item.timestamps[:size], dtype=float)


def group(series: Sequence[SignalSeries]) -> list[Block]:
    """The series grouped by their timestamps (the same object or the same values), each cut to the
    shorter of its timestamps and values, as ``clean_series`` does."""
    keyed: dict[tuple[int, int], bytes] = {}  # by object: most callers share one timestamp array
    members: dict[bytes, list[int]] = {}
    for index, item in enumerate(series):
        size = min(len(item.timestamps), len(item.values))
        key = keyed.get((id(item.timestamps), size))
        if key is None:
            key = keyed[(id(item.timestamps), size)] = _timestamps(item, size).tobytes()
        members.setdefault(key, []).append(index)
    blocks = []
    for rows in members.values():
        first = series[rows[0]]
        size = min(len(first.timestamps), len(first.values))
        values = np.empty((len(rows), size))
        for i, row in enumerate(rows):
            values[i] = np.asarray(series[row].values[:size], dtype=float)
        blocks.append(Block(np.asarray(rows, dtype=np.intp), _timestamps(first, size), values))
    return blocks


def clean(block: Block) -> Block | None:
    """``clean_series`` on every row: finite timestamps in order, ±Inf as missing, huge values
    clipped; rows with no value left are dropped (None when none is left)."""
    keep = np.isfinite(block.timestamps)
    ts, raw = block.timestamps[keep], block.values[:, keep]
    with np.errstate(invalid="ignore"):
        ordinary = bool((np.abs(raw) <= VALUE_LIMIT).all())  # the usual case: nothing to replace
    values = raw if ordinary else np.where(np.isfinite(raw), np.clip(raw, -VALUE_LIMIT, VALUE_LIMIT), np.nan)
    usable = np.isfinite(values).any(axis=1)
    if not usable.any():
        return None
    if not usable.all():
        values = values[usable]
    if (ts[1:] >= ts[:-1]).all():  # already in order: the stable sort would not move a sample
        return Block(block.rows[usable], ts, values)
    order = np.argsort(ts, kind="stable")
    return Block(block.rows[usable], ts[order], values[:, order])


def to_series(blocks: Sequence[Block], originals: Sequence[SignalSeries]) -> list[SignalSeries]:
    """The blocks' rows as series again, in the order of their positions."""
    found = {
        int(row): SignalSeries(
            originals[row].entity, originals[row].signal, originals[row].labels, b.timestamps, b.values[i]
        )
        for b in blocks
        for i, row in enumerate(b.rows)
    }
    return [found[row] for row in sorted(found)]


def row_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """``series.quantile(row[~isnan(row)], q)`` for every row (NaN for a row with no value): the
    same order statistics and the same interpolation arithmetic. One sort of the block (NaN sorts
    last) rather than a partition: numpy's vectorised sort is several times faster on rows this
    short."""
    counts = np.count_nonzero(~np.isnan(values), axis=1)
    if not values.shape[1]:
        return np.full(values.shape[0], np.nan)
    ordered = np.sort(values, axis=1)
    position = q * (counts - 1)
    low = np.floor(position)
    high = np.minimum(low + 1, counts - 1)
    rows = np.arange(values.shape[0])
    below = ordered[rows, np.maximum(low, 0).astype(np.intp)]
    above = ordered[rows, np.maximum(high, 0).astype(np.intp)]
    result = below + (above - below) * (position - low)
    result[counts == 0] = np.nan
    return result


def robust_scales(
    values: np.ndarray, mask: np.ndarray, relative_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """``rank.robust_scale`` of each row's values under ``mask``."""
    columns = mask.any(axis=0)
    if not columns.all():  # the baseline is a part of the window: leave the rest out of the sorts
        values, mask = values[:, columns], mask[:, columns]
    chosen = values if mask.all() else np.where(mask, values, np.nan)
    median = row_quantile(chosen, 0.5)
    spread = 1.4826 * row_quantile(np.abs(chosen - median[:, None]), 0.5)
    return median, np.maximum(np.maximum(spread, relative_floor * np.abs(median)), 1e-9)


def spacings(block: Block) -> np.ndarray:
    """Each row's median spacing of new samples, as ``infer_step`` takes it (NaN: no spacing)."""
    finite = np.isfinite(block.values)
    if finite.all() and (block.values[:, 1:] != block.values[:, :-1]).all():
        # the usual case, every sample new: every row's spacings are the timestamps' own
        gaps = np.diff(block.timestamps)
        gaps = gaps[gaps > 0]
        spacing = row_quantile(gaps[None, :], 0.5) if gaps.size else np.array([np.nan])
        return np.repeat(spacing, block.values.shape[0])
    columns = np.arange(block.timestamps.size)
    # the previous finite value of each sample: held values are not new samples
    last_finite = np.maximum.accumulate(np.where(finite, columns, -1), axis=1)
    before = np.concatenate((np.full((finite.shape[0], 1), -1), last_finite[:, :-1]), axis=1)
    previous = np.where(before >= 0, np.take_along_axis(block.values, np.maximum(before, 0), 1), np.nan)
    fresh = finite & ((block.values - previous) != 0)
    last_fresh = np.maximum.accumulate(np.where(fresh, columns, -1), axis=1)
    since = np.concatenate((np.full((fresh.shape[0], 1), -1), last_fresh[:, :-1]), axis=1)
    gaps = block.timestamps - block.timestamps[np.maximum(since, 0)]
    return row_quantile(np.where(fresh & (since >= 0) & (gaps > 0), gaps, np.nan), 0.5)


def may_churn(blocks: Sequence[Block], step: float, absent_steps: float) -> bool:
    """False when no series starts or stops ``absent_steps`` steps inside the window, so that no pod
    can have (``fill_churn`` leaves the series as they are); True when one may have."""
    firsts, lasts = [], []
    for b in blocks:
        finite = np.isfinite(b.values)
        firsts.append(b.timestamps[np.argmax(finite, axis=1)])
        lasts.append(b.timestamps[b.timestamps.size - 1 - np.argmax(finite[:, ::-1], axis=1)])
    if not firsts:
        return False
    began, ended = np.concatenate(firsts), np.concatenate(lasts)
    margin = absent_steps * step
    return bool(((began - began.min()) >= margin).any() or ((ended.max() - ended) >= margin).any())


def onsets(block: Block, incident_time: float, earliest: float, step: float, cfg: RankConfig) -> np.ndarray:
    """``rank.signal_onset`` of every row (NaN for None)."""
    ts, values = block.timestamps, block.values
    finite = np.isfinite(values)
    early = finite & (ts < earliest)
    enough = np.count_nonzero(early, axis=1) >= cfg.min_baseline_points
    reference = early if enough.all() else np.where(enough[:, None], early, finite & (ts < incident_time))
    usable = np.count_nonzero(reference, axis=1) >= cfg.min_baseline_points
    median, scale = robust_scales(values, reference, cfg.relative_floor)
    searched = ts >= earliest
    times, found, window = ts[searched], finite[:, searched], values[:, searched]
    with np.errstate(invalid="ignore"):
        above = np.abs(window - median[:, None]) / scale[:, None] > cfg.onset_threshold
    span = (cfg.onset_persistence - 1) * step
    result = _first_persistent_rows(times, above, span, incident_time)
    for row in np.flatnonzero(usable & ~found.all(axis=1)):
        # a gap in the searched part: runs are counted over the samples present, as per series
        present = found[row]
        result[row] = _first_persistent_rows(
            times[present], above[row : row + 1, present], span, incident_time
        )[0]
    result[~usable] = np.nan
    return result


def _first_persistent_rows(
    times: np.ndarray, above: np.ndarray, span: float, ongoing_at: float
) -> np.ndarray:
    """``rank._first_persistent`` of every row of ``above`` (NaN for None)."""
    rows, size = above.shape
    if size == 0:
        return np.full(rows, np.nan)
    columns = np.arange(size)
    starts = above & ~np.concatenate((np.zeros((rows, 1), dtype=bool), above[:, :-1]), axis=1)
    # the end of the run through each sample: the next sample not above, less one
    next_below = np.minimum.accumulate(np.where(above, size, columns)[:, ::-1], axis=1)[:, ::-1]
    end = next_below - 1
    ends_early = end < size - 1
    earlier_episode = ends_early & (times[np.minimum(end + 1, size - 1)] <= ongoing_at)
    lasts = (times[np.maximum(end, 0)] - times >= span - 1e-9) | ~ends_early
    accepted = starts & ~earlier_episode & lasts
    first = np.argmax(accepted, axis=1)
    return np.where(accepted.any(axis=1), times[first], np.nan)


@dataclass(frozen=True)
class Scores:
    """``rank.score_series`` of the scored rows of a block."""

    rows: np.ndarray  # positions in the caller's list
    baseline: np.ndarray
    incident: np.ndarray
    deviation: np.ndarray
    strength: np.ndarray
    onset: np.ndarray  # the row's own onset, NaN for None


SCORE_FIELDS = ("baseline", "incident", "deviation", "strength", "onset")


def scores(block: Block, onset: float, own: np.ndarray, cfg: RankConfig, cap: float) -> Scores:
    """Each row's change after ``onset`` against its baseline before it, deviations capped at
    ``cap``, with its own onset (``own``); rows with fewer than ``min_baseline_points`` before or
    none after are left out."""
    ts, values = block.timestamps, block.values
    finite = np.isfinite(values)
    later = ts >= onset
    before, after = finite & (ts < onset), finite[:, later]
    usable = (np.count_nonzero(before, axis=1) >= cfg.min_baseline_points) & after.any(axis=1)
    if not usable.any():
        nothing = np.empty(0)
        return Scores(block.rows[usable], nothing, nothing, nothing, nothing, nothing)
    before, after, values = before[usable], after[usable], values[usable]
    median, scale = robust_scales(values, before, cfg.relative_floor)
    window = values[:, later]
    with np.errstate(invalid="ignore"):
        deviations = np.minimum(np.abs(window - median[:, None]) / scale[:, None], cap)
    if not after.all():
        deviations = np.where(after, deviations, np.nan)
    peak = np.argmax(np.where(after, deviations, -1.0), axis=1)  # the first of equal peaks
    picked = np.arange(peak.size)
    return Scores(
        rows=block.rows[usable],
        baseline=median,
        incident=window[picked, peak],
        deviation=deviations[picked, peak],
        strength=row_quantile(deviations, cfg.sustained),
        onset=own[usable],
    )
