"""The ranking computed a block of series at a time equals the ranking series by series, to the last
bit: every candidate, score, onset and piece of evidence, on random incidents that mix what real
data holds (shared and separate timestamp arrays, gaps, held values, ±Inf, huge values, pods that
came or went, shuffled or misaligned series, a dependency graph)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_observability.investigation import blocks
from agentic_observability.investigation.rank import RankConfig, rank_entities, rank_entities_per_series
from agentic_observability.investigation.series import SignalSeries, quantile

STEP = 15.0
INCIDENT = 200 * STEP


def _values(rng: np.random.Generator, size: int) -> np.ndarray:
    level = rng.choice([0.0, 1.0, 100.0, 5e8])
    values = level + rng.normal(0, rng.choice([0.0, 0.01, 1.0]) * max(level, 1.0), size)
    values[int(rng.integers(size // 2, size)) :] += rng.choice([0.0, 0.0, 3.0, -50.0]) * max(level, 1.0)
    if rng.random() < 0.3:  # held values: a query step finer than the scrape
        values = np.repeat(values[::4], 4)[:size]
    if rng.random() < 0.3:  # gaps
        values[rng.random(size) < 0.1] = np.nan
    if rng.random() < 0.1:
        values[rng.integers(0, size, 3)] = rng.choice([np.inf, -np.inf, 1e300])
    if rng.random() < 0.05:
        values[:] = np.nan
    return values


def _series(rng: np.random.Generator, shared: np.ndarray, index: int) -> SignalSeries:
    entity = f"svc-{rng.integers(0, 6)}"
    signal = f"signal-{rng.integers(0, 3)}"
    ts = shared if rng.random() < 0.6 else shared.copy()  # one array, or equal arrays
    roll = rng.random()
    if roll < 0.1:  # a pod that came, or went
        cut = int(rng.integers(10, ts.size - 10))
        ts = ts[cut:] if rng.random() < 0.5 else ts[:cut]
    elif roll < 0.15:
        ts = ts[rng.permutation(ts.size)]
    elif roll < 0.2:
        ts = ts[: int(rng.integers(0, ts.size))]  # timestamps shorter than the values
    labels = {"service": entity, "pod": f"{entity}-{rng.integers(0, 2)}", "i": str(index % 3)}
    return SignalSeries(entity, signal, labels, ts, _values(rng, shared.size)[: max(ts.size, 1)])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_blocks_rank_exactly_as_series_by_series(seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    shared = np.arange(240) * STEP
    series = [_series(rng, shared, i) for i in range(count)]
    incident = INCIDENT + float(rng.integers(-20, 20)) * STEP
    config = RankConfig(calls=(("svc-1", "svc-2"), ("svc-0", "svc-1")))
    assert rank_entities(series, incident, config) == rank_entities_per_series(series, incident, config)


def test_a_large_incident_ranks_exactly_as_series_by_series() -> None:
    rng = np.random.default_rng(7)
    ts = np.arange(240) * STEP
    values = rng.normal(100.0, 5.0, (600, ts.size))
    values[37, ts >= INCIDENT] += 80.0
    series = [SignalSeries(f"svc-{i // 6}", f"s-{i % 6}", {}, ts, values[i]) for i in range(600)]
    ranking = rank_entities(series, INCIDENT)
    assert ranking[0].entity == "svc-6"
    assert ranking == rank_entities_per_series(series, INCIDENT)


def test_nothing_usable_ranks_nothing() -> None:
    empty = SignalSeries("a", "cpu", {}, np.array([]), np.array([]))
    nan = SignalSeries("b", "cpu", {}, np.arange(3.0), np.full(3, np.nan))
    assert rank_entities([empty, nan], 1.0) == rank_entities_per_series([empty, nan], 1.0) == []


@given(st.integers(0, 2**32 - 1), st.sampled_from([0.25, 0.5, 0.75]))
def test_a_row_quantile_is_the_quantile_of_the_rows_values(seed: int, q: float) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(20, int(rng.integers(1, 30))))
    values[rng.random(values.shape) < 0.3] = np.nan
    got = blocks.row_quantile(values, q)
    for row, value in zip(values, got, strict=True):
        present = row[~np.isnan(row)]
        assert math.isnan(value) if not present.size else value == quantile(present, q)
