"""Bulk scoring of the default detector equals the per-sample detector, bit for bit, in blocks
and poll by poll (the incremental path, detectors/poll_profiles.py).

``BulkEnsemble`` (detectors/bulk.py) scores a (series x samples) block at once: for warm-up,
``detect``/``backtest`` and each poll of a watch. These tests feed the same data to one per-sample
``default`` detector per series and to one bulk call (or several, split at awkward places) and
require identical alert and raw scores: random series with spikes, gaps, integers, flat stretches,
a level shift and a repeated stretch, past the discord's 3,000-window history and the likelihood's
exact recompute; and real NAB series with their own sampling interval.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from agentic_observability.detectors import DEFAULT_EPISODE_GAP, DEFAULT_THRESHOLD, create
from agentic_observability.detectors.bulk import BulkEnsemble, KeyedEnsemble
from agentic_observability.detectors.discord import NearestDistance
from agentic_observability.detectors.profile import nearest_distances
from agentic_observability.offline.detect import load_nab_file, score_columns

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"


def per_sample(values: np.ndarray, interval: float | None) -> tuple[np.ndarray, np.ndarray]:
    alerts, raw = [], []
    for row in values:
        detector = create("default", interval=interval)
        alerts.append(detector.score(row))
        raw.append(detector.last_raw)  # type: ignore[attr-defined]
    return np.array(alerts), np.array(raw)


def in_blocks(values: np.ndarray, interval: float | None, cuts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    bulk = BulkEnsemble(values.shape[0], DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, interval)
    edges = [0, *cuts, values.shape[1]]
    parts = [bulk.score(values[:, a:b]) for a, b in itertools.pairwise(edges)]
    return np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts])


def awkward(points: int, per_day: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(points)
    values = 100 + 20 * np.sin(2 * np.pi * t / per_day) + rng.normal(0, 3, (6, points))
    values[0, points // 2 : points // 2 + 20] += 40  # a bump: the discord's episode look-back runs
    values[1, ::37] = np.nan  # gaps: skipped by the components, counted by the gating
    values[1, 5:9] = np.inf
    values[2] = np.round(values[2])  # integers: exact ties between windows
    values[3, : points // 3] = 42.0  # flat, then noisy
    values[4, points * 2 // 3 :] += 15  # a level shift: range breaches
    values[5, -300:] = values[5, 1000:1300]  # a stretch seen before: distance exactly 0
    return values


@pytest.mark.parametrize(("interval", "per_day", "points"), [(300.0, 288, 2500), (None, 1440, 2500)])
def test_bulk_equals_per_sample_on_random_series(interval: float | None, per_day: int, points: int) -> None:
    values = awkward(points, per_day, seed=3)
    expected = per_sample(values, interval)
    got = in_blocks(values, interval, [])
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert (expected[0] >= DEFAULT_THRESHOLD).any()  # the test exercises alerts, not only quiet


def test_bulk_in_uneven_blocks_equals_per_sample_past_every_buffer() -> None:
    """9,000 one-minute samples: past the 3,032-value history, the likelihood's 3,990-value ring and
    its exact recompute; blocks of 1 (a poll), 149/150 (warm-up edge) and thousands."""
    values = awkward(9000, 1440, seed=4)
    expected = per_sample(values, 60.0)
    got = in_blocks(values, 60.0, [1, 150, 151, 3000, 4001, 4002, 6000])
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_nearest_distances_equal_nearest_distance_including_none() -> None:
    values = np.random.default_rng(9).normal(0, 1, 3500) * 1e6 + 1e9  # large level, small spread
    reference = NearestDistance()
    expected = [reference.update(float(v)) for v in values]
    got = nearest_distances(values, 0, values.size)
    assert np.array_equal(np.isnan(got), [e is None for e in expected])
    assert np.array_equal(got[~np.isnan(got)], [e for e in expected if e is not None])


def _nab_files() -> list[tuple[np.ndarray, float | None]]:
    labels = NAB / "labels" / "combined_windows.json"
    if not labels.is_file():
        pytest.skip("NAB not found")
    windows = json.loads(labels.read_text())
    chosen = [
        "realTraffic/speed_7578.csv",
        "realAdExchange/exchange-3_cpc_results.csv",
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realKnownCause/cpu_utilization_asg_misconfiguration.csv",
    ]
    return [load_nab_file(NAB / "data" / key, windows[key])[::2] for key in chosen]


def test_bulk_equals_per_sample_on_nab_series() -> None:
    for values, interval in _nab_files():
        expected = per_sample(values[None, :], interval)
        alerts, raw = score_columns(values[:, None], "default", DEFAULT_THRESHOLD, interval)
        assert np.array_equal(alerts[:, 0], expected[0][0]) and np.array_equal(raw[:, 0], expected[1][0])


def test_keyed_rows_come_and_go_as_separate_detectors() -> None:
    """A watch's series: b appears late (a new row), a is forgotten and c takes its row (reset)."""
    values = awkward(1400, 1440, seed=5)[:3]
    keyed = KeyedEnsemble(DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, 60.0)
    a1, _ = keyed.score(["a"], values[:1, :700])
    a2, _ = keyed.score(["a", "b"], np.vstack((values[:1, 700:], values[1:2, :700])))
    keyed.forget("a")
    c, c_raw = keyed.score(["c", "b"], np.vstack((values[2:3, :700], values[1:2, 700:])))
    assert keyed.rows["c"] == 0  # a's row, started over
    expected = per_sample(values[[0]], 60.0)[0][0]
    assert np.array_equal(np.concatenate((a1[0], a2[0])), expected)
    assert np.array_equal(np.concatenate((a2[1], c[1])), per_sample(values[[1]], 60.0)[0][0])
    assert np.array_equal(c_raw[0], per_sample(values[[2], :700], 60.0)[1][0])


def polled(values: np.ndarray, interval: float | None, warm: int) -> tuple[np.ndarray, np.ndarray]:
    """A warm-up block of ``warm`` samples, then one poll (one sample per series) at a time."""
    bulk = BulkEnsemble(values.shape[0], DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, interval)
    parts = [bulk.score(values[:, :warm])]
    bulk.prepare()
    parts += [bulk.score(values[:, column : column + 1]) for column in range(warm, values.shape[1])]
    return np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts])


@pytest.mark.parametrize(("interval", "per_day", "warm"), [(300.0, 288, 40), (None, 1440, 700)])
def test_polls_equal_per_sample_past_every_buffer(interval: float | None, per_day: int, warm: int) -> None:
    """The incremental path (poll_profiles.py) from a young history to past the 3,032-value one,
    through its exact refreshes, the coarse scale's blocks, gaps, ties and flat stretches."""
    values = awkward(3700, per_day, seed=6)
    expected = per_sample(values, interval)
    got = polled(values, interval, warm)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert (expected[0] >= DEFAULT_THRESHOLD).any()


def test_keyed_polls_with_series_that_appear_vanish_and_reuse_rows() -> None:
    """A watch over time: ``a`` warms up and is polled throughout; ``b`` first appears in a poll;
    ``c`` is polled, then forgotten, and ``d`` takes its row later; ``d`` has gaps. Each key's
    scores are its own per-sample detector's, whatever rows and order the polls use."""
    values = awkward(1500, 288, seed=7)
    values[4, 100:140] = np.nan
    keyed = KeyedEnsemble(DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, 300.0)
    fed: dict[str, list[float]] = {"a": list(values[0, :400]), "b": [], "c": [], "d": []}
    got: dict[str, list[float]] = {key: [] for key in fed}
    alerts, _ = keyed.score(["a"], values[:1, :400])
    got["a"] += list(alerts[0])
    keyed.prepare(["a"])
    source = {"a": 0, "b": 2, "c": 3, "d": 4}
    for poll in range(1100):
        keys = ["a", *(["b"] if poll >= 150 else []), *(["c"] if poll < 500 else [])]
        keys += ["d"] if poll >= 650 else []
        if poll == 500:
            row_of_c = keyed.rows["c"]
            keyed.forget("c")
        keys = keys[::-1] if poll % 3 else keys  # rows in a different order now and then
        column = np.array([[values[source[k], 400 + poll if k == "a" else poll]] for k in keys])
        alerts, _ = keyed.score(keys, column)
        for key, value, alert in zip(keys, column[:, 0], alerts[:, 0], strict=True):
            fed[key].append(float(value))
            got[key].append(float(alert))
    assert keyed.rows["d"] == row_of_c and len(keyed.rows) == 3  # d started over in c's row
    for key in fed:
        expected = per_sample(np.array([fed[key]]), 300.0)[0][0]
        assert np.array_equal(np.array(got[key]), expected), key
