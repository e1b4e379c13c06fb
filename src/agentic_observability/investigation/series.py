"""Series as ranking needs them: cleaned, the data's step inferred, pods that came or went filled in.

Everything here measures time in the data's own step, so that the same rules hold at a 1 s scrape
and at 5-minute rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

VALUE_LIMIT = 1e200
ABSENT_STEPS = 2.0  # a pod silent this many steps at either end of the window came or went


@dataclass(frozen=True)
class SignalSeries:
    """One time series of one signal of one entity (e.g. cpu of service carts, pod carts-5f6-x2)."""

    entity: str
    signal: str
    labels: Mapping[str, str]
    timestamps: np.ndarray
    values: np.ndarray


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


def quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear interpolation) of a non-empty 1-D array, without its
    per-call overhead: ranking takes a few per series, and np.quantile's is ten times the work."""
    position = q * (values.size - 1)
    low = math.floor(position)
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (part[high] - part[low]) * (position - low))


def present(series: SignalSeries) -> np.ndarray:
    """Timestamps at which the series has a value."""
    return series.timestamps[np.isfinite(series.values)]


def infer_step(series: Sequence[SignalSeries]) -> float:
    """The data's resolution: the median over series of each one's median spacing of new samples.
    Held values (a query step finer than the scrape interval repeats each sample) are skipped, so
    the step is the scrape's; each series counts once, however often it changes."""
    spacings = []
    for item in series:
        finite = np.isfinite(item.values)
        fresh = np.flatnonzero(np.diff(item.values[finite], prepend=np.nan) != 0)
        gaps = np.diff(item.timestamps[finite][fresh])
        gaps = gaps[gaps > 0]
        if gaps.size:
            spacings.append(quantile(gaps, 0.5))
    return float(np.median(spacings)) if spacings else 1.0


Instance = tuple[str, frozenset[tuple[str, str]]]


def _instance(series: SignalSeries) -> Instance:
    """What reports the series: one pod (or container, or instance) of the entity, whatever the
    signal (its labels but the metric name)."""
    return series.entity, frozenset((k, v) for k, v in series.labels.items() if k != "__name__")


def _spans(series: Sequence[SignalSeries]) -> dict[Instance, tuple[float, float]]:
    """When each pod was first and last seen, over all its signals."""
    spans: dict[Instance, tuple[float, float]] = {}
    for item in series:
        seen = present(item)
        if seen.size:
            key = _instance(item)
            began, ended = spans.get(key, (math.inf, -math.inf))
            spans[key] = (min(began, float(seen[0])), max(ended, float(seen[-1])))
    return spans


def fill_churn(series: Sequence[SignalSeries], step: float, since: float) -> list[SignalSeries]:
    """Pods that came or went within the window, as evidence rather than gaps. A pod that started
    (2 steps or more after the window began) continues the pod it replaced: the one of its entity
    that stopped nearest its start, whose samples before it become its baseline; lacking one, its
    siblings that ran from the start, or 0 when the entity had none. A routine replacement is then
    no change, and a restart shows in what the new process does differently. A pod that stopped
    since ``since`` (the part of the window where the incident may have begun) and was not replaced
    reads 0 from then on, as the sum over the entity's pods would. Pods are told apart by their
    labels across signals: a sparse signal of a pod that reports others has gaps, not churn."""
    spans = _spans(series)
    first = min((s[0] for s in spans.values()), default=0.0)
    last = max((s[1] for s in spans.values()), default=0.0)
    margin = ABSENT_STEPS * step
    appeared = sorted((k for k, span in spans.items() if span[0] - first >= margin), key=lambda k: spans[k])
    stopped = {k for k, span in spans.items() if last - span[1] >= margin}
    if not appeared and not stopped:
        return list(series)
    replaced = _replaced(appeared, stopped, spans)
    grid = np.unique(np.concatenate([present(s) for s in series]))  # the timestamps the data has
    siblings = _sibling_baselines(series, spans, first + margin)
    members: dict[Instance, list[int]] = {}
    for index, item in enumerate(series):
        members.setdefault(_instance(item), []).append(index)
    result = list(series)
    latest = {(_instance(item), item.signal): item for item in series}  # as continued so far
    for key in appeared:  # in order of start, so the pod it replaced is already continued
        began = spans[key][0]
        for index in members[key]:
            item = series[index]
            predecessor = latest.get((replaced[key], item.signal)) if key in replaced else None
            before = siblings.get((item.entity, item.signal))
            if predecessor is not None:
                before = (predecessor.timestamps, predecessor.values)
            result[index] = _with_reference(item, before, began, grid[grid < began])
            latest[(key, item.signal)] = result[index]
    for key in stopped - set(replaced.values()):
        if spans[key][1] >= since:
            for index in members[key]:
                result[index] = _append_zeros(series[index], spans[key][1], grid[grid > spans[key][1]])
    return result


def _replaced(
    appeared: Sequence[Instance], stopped: set[Instance], spans: Mapping[Instance, tuple[float, float]]
) -> dict[Instance, Instance]:
    """For each pod that started, the pod of its entity it replaced: the one that stopped nearest
    its start, not yet taken by another."""
    free = set(stopped)
    pairs = {}
    for key in appeared:
        began = spans[key][0]
        options = [k for k in free if k[0] == key[0] and k != key]
        if options:
            chosen = min(options, key=lambda k: (abs(spans[k][1] - began), sorted(k[1])))
            pairs[key] = chosen
            free.discard(chosen)
    return pairs


def _sibling_baselines(
    series: Sequence[SignalSeries], spans: Mapping[Instance, tuple[float, float]], settled: float
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Per (entity, signal), the samples of the pods that were there from the start."""
    found: dict[tuple[str, str], list[SignalSeries]] = {}
    for item in series:
        span = spans.get(_instance(item))
        if span is not None and span[0] < settled:
            found.setdefault((item.entity, item.signal), []).append(item)
    pooled = {}
    for key, parts in found.items():
        ts = np.concatenate([p.timestamps for p in parts])
        values = np.concatenate([p.values for p in parts])
        order = np.argsort(ts, kind="stable")
        pooled[key] = (ts[order], values[order])
    return pooled


def _append_zeros(item: SignalSeries, ended: float, gone: np.ndarray) -> SignalSeries:
    """The series after its pod stopped reporting: 0 at the timestamps the other series have."""
    keep = item.timestamps <= ended
    return SignalSeries(
        item.entity,
        item.signal,
        item.labels,
        np.concatenate((item.timestamps[keep], gone)),
        np.concatenate((item.values[keep], np.zeros(gone.size))),
    )


def _with_reference(
    item: SignalSeries, reference: tuple[np.ndarray, np.ndarray] | None, began: float, before: np.ndarray
) -> SignalSeries:
    """The new pod's series, preceded by what stood in its place before it began (``reference``'s
    samples), or by 0 (nothing of the entity ran) at the timestamps the other series have."""
    if reference is not None:
        earlier = reference[0] < began
        ts, values = reference[0][earlier], reference[1][earlier]
    else:
        ts, values = before, np.zeros(before.size)
    later = item.timestamps >= began
    return SignalSeries(
        item.entity,
        item.signal,
        item.labels,
        np.concatenate((ts, item.timestamps[later])),
        np.concatenate((values, item.values[later])),
    )
