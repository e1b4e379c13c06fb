"""Ranking never raises, whatever the series look like: a pod that stopped reporting, a 0/0 ratio,
a single point, a constant, ±Inf, timestamps and values of different lengths or out of order."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_observability.investigation import SignalSeries, rank_entities
from agentic_observability.investigation.rank import RankConfig

INCIDENT = 10_000.0
ODD_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, math.nan, math.inf, -math.inf, 1e308, -1e308]),
)


@st.composite
def odd_series(draw: st.DrawFn) -> SignalSeries:
    size = draw(st.integers(0, 40))
    kind = draw(st.sampled_from(["empty", "nan", "constant", "single", "misaligned", "shuffled", "wild"]))
    ts = np.arange(size, dtype=float) * draw(st.sampled_from([1.0, 15.0, 60.0, 300.0])) + INCIDENT - 600
    values = np.asarray(draw(st.lists(ODD_VALUES, min_size=size, max_size=size)), dtype=float)
    if kind == "empty":
        ts, values = ts[:0], values[:0]
    elif kind == "nan":
        values = np.full(size, np.nan)
    elif kind == "constant":
        values = np.full(size, draw(ODD_VALUES))
    elif kind == "single":
        ts, values = ts[:1], values[:1]
    elif kind == "misaligned":
        values = values[: draw(st.integers(0, size))]
    elif kind == "shuffled":
        order = np.asarray(draw(st.permutations(list(range(size)))), dtype=int)
        ts = ts[order] if size else ts
    entity = draw(st.sampled_from(["carts", "orders", "db"]))
    signal = draw(st.sampled_from(["cpu", "latency"]))
    return SignalSeries(entity, signal, {"service": entity}, ts, values)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(odd_series(), max_size=8),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=2e4),
)
def test_ranking_never_raises_and_stays_finite(series: list[SignalSeries], incident_time: float) -> None:
    config = RankConfig(calls=(("orders", "carts"), ("carts", "db")))
    ranking = rank_entities(series, incident_time, config)
    for candidate in ranking:
        assert math.isfinite(candidate.score)
        assert all(math.isfinite(e.deviation) for e in candidate.evidence)
    assert [c.score for c in ranking] == sorted((c.score for c in ranking), reverse=True)


def _healthy(entity: str, jump: float) -> SignalSeries:
    ts = np.arange(0, 1800, 15.0) + INCIDENT - 1200
    values = np.random.default_rng(len(entity)).normal(1.0, 0.01, ts.size)
    values[ts >= INCIDENT - 60] += jump
    return SignalSeries(entity, "cpu", {"service": entity}, ts, values)


def test_a_vanished_and_a_nan_series_do_not_hide_the_cause() -> None:
    """The chaos case in miniature: one pod stopped before the window's end, one ratio is 0/0."""
    stopped = SignalSeries(
        "orders", "cpu", {"service": "orders", "pod": "orders-1"}, np.array([]), np.array([])
    )
    nan_ratio = SignalSeries("payment", "errors", {"service": "payment"}, np.arange(5.0), np.full(5, np.nan))
    ranking = rank_entities(
        [_healthy("carts", 5.0), _healthy("front-end", 0.0), stopped, nan_ratio], INCIDENT
    )
    assert ranking[0].entity == "carts"
