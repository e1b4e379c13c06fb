"""Bulk scoring of the default detector gives the per-sample detector's scores, in blocks and poll
by poll (the incremental path, detectors/poll_profiles.py), to within ``BOUND``, and the same alerts.

``BulkEnsemble`` (detectors/bulk.py) scores a (series x samples) block at once: for warm-up,
``detect``/``backtest`` and each poll of a watch. These tests feed the same data to one per-sample
``default`` detector per series and to one bulk call (or several, split at awkward places): random
series with spikes, gaps, integers, flat stretches, a level shift and a repeated stretch, past the
discord's 3,000-window history and the likelihood's exact recompute; and real NAB series with their
own sampling interval.

Why not bit for bit: to hold a series in ~80 KiB rather than ~140, the bulk detector keeps its
history as float32 offsets from the series' first value and the likelihoods' older raw scores as
float32 (histories.py, likelihoods.py), each rounded by at most 2**-24 relative. Those roundings
move a likelihood's mean and spread by about 1e-7 relative, and the scores, smooth functions of
them, by at most 3.4e-7 on these series (measured). ``BOUND`` (1e-5) is thirty times that, and
seventy times below the 7e-4 between the threshold and the "same episode" score just under it
(0.999 x 0.7). A score within the bound of the threshold could still cross it, so the decisions
(score at or above the threshold) are checked too: on these series they are identical.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from agentic_observability.detectors import (
    DEFAULT_EPISODE_GAP,
    DEFAULT_THRESHOLD,
    create,
    histories,
    likelihoods,
    poll_profiles,
)
from agentic_observability.detectors.bulk import BulkEnsemble, KeyedEnsemble
from agentic_observability.detectors.discord import NearestDistance
from agentic_observability.detectors.likelihoods import Likelihoods
from agentic_observability.detectors.profile import nearest_before, nearest_distances
from agentic_observability.offline.detect import load_nab_file, score_columns

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"
BOUND = 1e-5


def assert_scores_match(got: np.ndarray, expected: np.ndarray) -> None:
    """Within ``BOUND`` everywhere, and the same alerting decisions."""
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected), initial=0.0) <= BOUND
    assert np.array_equal(got >= DEFAULT_THRESHOLD, expected >= DEFAULT_THRESHOLD)


def assert_same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    """(alerts, raw) as ``assert_scores_match`` wants them."""
    assert_scores_match(got[0], expected[0])
    assert_scores_match(got[1], expected[1])


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
    assert_same(in_blocks(values, interval, []), expected)
    assert (expected[0] >= DEFAULT_THRESHOLD).any()  # the test exercises alerts, not only quiet


def test_bulk_in_uneven_blocks_equals_per_sample_past_every_buffer() -> None:
    """9,000 one-minute samples: past the 3,032-value history, the likelihood's 3,990-value ring and
    its exact recompute; blocks of 1 (a poll), 149/150 (warm-up edge) and thousands."""
    values = awkward(9000, 1440, seed=4)
    expected = per_sample(values, 60.0)
    assert_same(in_blocks(values, 60.0, [1, 150, 151, 3000, 4001, 4002, 6000]), expected)


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
        assert_same((alerts.T, raw.T), expected)


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
    assert_scores_match(np.concatenate((a1[0], a2[0])), expected)
    assert_scores_match(np.concatenate((a2[1], c[1])), per_sample(values[[1]], 60.0)[0][0])
    assert_scores_match(c_raw[0], per_sample(values[[2], :700], 60.0)[1][0])


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
    assert_same(polled(values, interval, warm), expected)
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
        assert_scores_match(np.array(got[key]), expected)


def test_polls_of_series_at_different_ring_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Histories are rings (histories.py): series that were warmed on different lengths, or skip a
    poll (a gap), are at different phases: the compiled step reads each ring in its own logical
    order (profile_kernels.py), and ``columns`` slices at most one phase. Exact refreshes every 3
    updates, so every path runs often; scores stay each series' per-sample detector's."""
    monkeypatch.setattr(poll_profiles, "REFRESH", 3)
    monkeypatch.setattr(histories, "PHASES", 1)
    values = np.vstack((awkward(3400, 288, seed=11), awkward(3400, 288, seed=12)))
    values[7, 2000:2040] = np.nan  # a gap mid-polls: the row's phase moves against the others'
    values[9, 1500::53] = np.nan
    warm = [300, 300, 300, 301, 302, 302, 500, 500, 500, 700, 40, 1]
    bulk = BulkEnsemble(values.shape[0], DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, 300.0)
    got = [list(bulk.score(values[[row], :count], np.array([row]))[0][0]) for row, count in enumerate(warm)]
    bulk.prepare()
    for column in range(min(warm), values.shape[1]):
        rows = np.array([row for row, count in enumerate(warm) if count <= column])
        rows = rows[::-1] if column % 2 else rows  # not always in row order
        alerts, _ = bulk.score(values[rows, column, None], rows)
        for row, alert in zip(rows.tolist(), alerts[:, 0], strict=True):
            got[row].append(float(alert))
    for row in range(values.shape[0]):
        assert_scores_match(np.array(got[row]), per_sample(values[[row]], 300.0)[0][0])
    assert len({int(p) for p in bulk.fine.phase(np.arange(12))}) > 3


def test_a_high_level_series_keeps_its_detail_in_float32() -> None:
    """A gauge near 1e7 that moves by tens: float32 of the value itself would round it to units;
    offsets from the series' first value keep it to 1e-5 (histories.py)."""
    values = 1e7 + np.round(np.random.default_rng(8).normal(0, 50, (1, 2000)), 1)
    values[0, 1500:1510] += 400  # a burst
    expected = per_sample(values, None)
    assert_same(polled(values, None, 600), expected)
    assert (expected[0] >= DEFAULT_THRESHOLD).any()


def test_state_per_series_at_a_one_minute_interval() -> None:
    """What a watch holds per series: float32 histories, profiles and likelihood rings."""
    bulk = BulkEnsemble(10, DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, 60.0)
    assert bulk.nbytes / 10 <= 84 * 1024


def test_episode_look_back_of_a_poll_reads_the_profiles() -> None:
    """In a poll, an episode's look back (the newest window against those before its cut) is the
    fine profile's prefix (poll_profiles.py), measured exactly: the distance ``nearest_before``
    finds in the held history, for cuts from before the first window to past the newest."""
    values = awkward(3300, 288, seed=13)
    bulk = BulkEnsemble(values.shape[0], DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, 300.0)
    bulk.score(values[:, :300])
    bulk.prepare()
    rows = np.arange(values.shape[0])
    for column in range(300, values.shape[1]):
        bulk.score(values[:, column, None])
        if column % 250:
            continue
        pushed = bulk.fine.pushed
        for back in (pushed, pushed - 40, pushed - 1000, pushed - 2900, np.full(rows.size, 5)):
            got = bulk._fine_profiles.nearest_before(bulk.fine, rows, back - 16 + 1)
            for row in rows.tolist():
                held = bulk.fine.held(row)
                expected = nearest_before(held, int(pushed[row]) - held.size, int(back[row]), 16, 3000)
                if expected is None:
                    assert np.isnan(got[row])
                else:
                    assert got[row] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_quantiles_of_many_rings_are_each_rings_quantile(monkeypatch: pytest.MonkeyPatch) -> None:
    """An episode's onset on many series at once (a cluster-wide incident) takes each one's usual
    distance in one call, a chunk of rings at a time: the same bits as one series at a time, rings
    full or not."""
    monkeypatch.setattr(likelihoods, "QUANTILE_CHUNK", 7)
    rng = np.random.default_rng(0)
    rings = Likelihoods(50, history=400)
    for step in range(500):
        rows = np.arange(50)[: 50 if step > 100 else 10 + step % 40]
        rings.update(rng.gamma(2, 3, rows.size) * (1 + rows), rows)
    got = rings.quantiles(np.arange(50), 0.95)
    for row in range(50):
        expected = rings.quantile(row, 0.95)
        assert np.isnan(got[row]) if expected is None else got[row] == expected
    empty = Likelihoods(2)
    assert np.isnan(empty.quantiles(np.arange(2), 0.95)).all()


def test_a_block_naming_a_series_twice_is_refused() -> None:
    """Each row's state steps once per sample: a poll listing a series twice would step it twice."""
    bulk = BulkEnsemble(2, DEFAULT_THRESHOLD, DEFAULT_EPISODE_GAP, 60.0)
    with pytest.raises(ValueError, match="more than one row"):
        bulk.score(np.ones((2, 1)), np.array([0, 0]))


def test_kernels_compile_uncached_when_the_cache_cannot_be_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache directory that numba accepted but cannot write to (a full ``/tmp``) makes the first
    calls raise OSError: ``ready`` then turns the disk cache off and compiles, and polls go on."""
    from numba.core.caching import NullCache

    from agentic_observability.detectors import profile_kernels

    real, failures = profile_kernels._first_calls, []

    def first_calls() -> None:
        if not failures:
            failures.append(True)
            raise OSError(28, "No space left on device")
        real()

    monkeypatch.setattr(profile_kernels, "_first_calls", first_calls)
    monkeypatch.setattr(profile_kernels, "_ready", False)
    for kernel in profile_kernels._KERNELS:
        monkeypatch.setattr(kernel, "_cache", kernel._cache)  # restored after the test
    profile_kernels.ready()
    assert failures and all(isinstance(kernel._cache, NullCache) for kernel in profile_kernels._KERNELS)
    values = awkward(1300, 288, seed=3)[:2]
    assert_same(polled(values, 300.0, 100), per_sample(values, 300.0))
