"""Detectors on synthetic series with known answers, the registry, and the detect CLI contract."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from agentic_observability import detectors
from agentic_observability.cli import main
from agentic_observability.detectors import DEFAULT_THRESHOLD, create, register
from agentic_observability.detectors.joint import joint_scores
from agentic_observability.offline.detect import MAX_DISCOUNT, combine

N = 1500


def noisy(seed: int = 1) -> np.ndarray:
    return 10.0 + np.random.default_rng(seed).normal(0, 1.0, N)


FAST = ["default", "ensemble", "robust", "discord", "changepoint"]


def alerts(name: str, series: np.ndarray, **kwargs: float) -> np.ndarray:
    return np.flatnonzero(create(name, **kwargs).score(series) >= DEFAULT_THRESHOLD)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["default", "robust", "discord"])
def test_spike_is_detected_at_once(name: str) -> None:
    series = noisy()
    series[1200] += 25
    found = alerts(name, series)
    assert 1200 in found


@pytest.mark.parametrize("name", FAST)
def test_clean_noise_stays_quiet(name: str) -> None:
    """Ten clean series of 1,500 samples: at most one alert per 5,000 samples."""
    total = sum(alerts(name, noisy(seed)).size for seed in range(1, 11))
    assert total <= 3


@pytest.mark.parametrize("name", ["default", "robust", "changepoint"])
def test_level_shift_is_detected_once_per_episode(name: str) -> None:
    series = noisy(2)
    series[1000:] += 8
    found = alerts(name, series)
    assert found.size >= 1 and 1000 <= found[0] <= 1010
    assert found.size <= 2  # the episode gap keeps one shift to (at most) one more alert


@pytest.mark.parametrize("name", [*FAST, "forecast"])
def test_flat_and_near_flat_lines_never_alert(name: str) -> None:
    flat = np.full(600, 42.0)
    assert create(name).score(flat).max() == 0.0
    near = flat + np.where(np.arange(600) % 97 == 0, 1e-9, 0.0)
    assert create(name).score(near).max() < DEFAULT_THRESHOLD


@pytest.mark.parametrize("name", FAST)
def test_warmup_never_alerts(name: str) -> None:
    series = noisy(3)
    series[50] += 100
    assert create(name).score(series)[:150].max() == 0.0


def daily(days: int, per_day: int = 96, seed: int = 5) -> np.ndarray:
    t = np.arange(days * per_day)
    rng = np.random.default_rng(seed)
    return 100 + 40 * np.sin(2 * np.pi * t / per_day) ** 8 + rng.normal(0, 1.0, t.size)


def bands(name: str, series: np.ndarray, interval: float | None) -> list[tuple[float, float] | None]:
    detector, out = create(name, interval=interval), []
    for value in series:
        out.append(detector.band())  # the band offered *before* the sample arrives
        detector.score(np.array([value]))
    return out


def test_seasonal_reference_follows_the_daily_peak_and_flags_an_odd_hour() -> None:
    """15-minute samples with a sharp twice-daily peak. The day/week references move the expected
    band onto the peak, and a bump at a normally quiet hour alerts, which the rolling median alone
    (dominated by the quiet hours, spread by the peaks) misses."""
    series = daily(14)
    peak = 10 * 96 + 24
    seasonal = bands("robust", series, 900)[peak]
    plain = bands("robust", series, None)[peak]
    assert seasonal and plain
    assert abs(sum(seasonal) / 2 - series[peak]) < abs(sum(plain) / 2 - series[peak]) / 3
    odd = series.copy()
    night = 12 * 96 + 70
    odd[night : night + 4] += 40
    assert any(night <= a <= night + 4 for a in alerts("robust", odd, interval=900))
    assert not any(night <= a <= night + 4 for a in alerts("robust", odd))


def test_default_learns_a_daily_pattern_and_catches_a_missing_peak() -> None:
    series = daily(20, seed=6)
    assert alerts("default", series)[alerts("default", series) > 3 * 96].size <= 1
    broken = series.copy()
    missing = 15 * 96
    broken[missing : missing + 96] = 100 + np.random.default_rng(7).normal(0, 1.0, 96)
    found = alerts("default", broken)
    assert any(missing <= a <= missing + 96 for a in found)


def test_forecast_detector_flags_a_spike_on_a_trend() -> None:
    t = np.arange(500, dtype=float)
    series = 50 + 0.05 * t + np.random.default_rng(8).normal(0, 0.5, t.size)
    series[420] += 15
    found = alerts("forecast", series)
    assert 420 in found and found.size <= 2


@pytest.mark.parametrize("name", FAST)
def test_causal_and_incremental(name: str) -> None:
    series = noisy(4)
    series[900] += 30
    whole = create(name).score(series)
    prefix = create(name).score(series[:950])
    np.testing.assert_array_equal(whole[:950], prefix)  # appending rows never changes earlier scores
    detector = create(name)
    chunked = np.concatenate([detector.score(series[i : i + 137]) for i in range(0, N, 137)])
    np.testing.assert_array_equal(whole, chunked)  # state carries across calls


def test_registry_rejects_duplicates_and_lists_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("robust", detectors.DETECTORS["robust"])
    with pytest.raises(ValueError, match="known: changepoint, default, discord, ensemble, forecast, robust"):
        create("prophet")


def test_detect_cli_contract(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    series = noisy(5)
    series[1300] += 40
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", 'cpu{service="carts"}', "load"])
        for i, value in enumerate(series):
            writer.writerow([1_700_000_000 + 60 * i, value, 5.0])
    out = tmp_path / "out.csv"
    assert main(["detect", str(source), "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == N and list(rows[0]) == ["timestamp", "score", "anomaly"]
    scores = np.array([float(r["score"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    flagged = [i for i, r in enumerate(rows) if r["anomaly"] == "1"]
    # one episode, from the spike until a watch would close it (the discord's window, then
    # resolve_after clean rows), as every row of it is written, not only the first
    assert flagged[0] == 1300 and flagged == list(range(1300, flagged[-1] + 1))
    assert 3 < len(flagged) <= 40
    assert rows[0]["timestamp"] == "1700000000"  # written back exactly as given


def test_detect_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,x\n1,1\n2,oops\n")
    assert main(["detect", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    assert main(["detect", str(bad), "--output", str(tmp_path / "o.csv"), "--detector", "nope"]) == 2
    err = capsys.readouterr().err
    assert "row 3, column 'x'" in err and "unknown detector 'nope'" in err


def test_default_notices_a_nightly_job_that_did_not_run() -> None:
    """Five-minute samples; a batch job lifts the metric for an hour every night. The night it is
    missing every value is an ordinary one, and only the day-ago comparison can tell."""
    per_day = 288
    t = np.arange(12 * per_day)
    series = 10 + np.random.default_rng(9).normal(0, 0.2, t.size)
    series[(t % per_day >= 24) & (t % per_day < 36)] += 30
    missing = 9 * per_day
    series[missing + 24 : missing + 36] -= 30
    found = alerts("default", series, interval=300)
    assert any(missing + 24 <= a <= missing + 40 for a in found)
    assert not any(a > 3 * per_day and not missing <= a <= missing + 60 for a in found)
    assert not any(missing + 24 <= a <= missing + 40 for a in alerts("default", series))  # no interval


def test_forecast_detector_follows_a_long_daily_season_with_mstl() -> None:
    """Five-minute samples: 288 a day, too many seasons for seasonal ETS, so MSTL carries the day."""
    t = np.arange(4 * 288)
    series = 100 + 20 * np.sin(2 * np.pi * t / 288) + np.random.default_rng(10).normal(0, 0.5, t.size)
    series[3 * 288 + 100] += 12
    found = alerts("forecast", series, interval=300)
    assert 3 * 288 + 100 in found
    assert not any(a >= 2 * 288 and a != 3 * 288 + 100 for a in found)


def test_watch_scores_settle_soon_after_the_anomaly_ends() -> None:
    """Without an episode gap (as a watch runs it) the default stays high while the anomaly lasts
    and drops below the threshold once the newest 16 samples look like before again, not when the
    coarse window (64 samples) has moved past it."""
    series = 0.2 + np.random.default_rng(11).normal(0, 0.01, 700)
    series[500:540] += 0.5
    scores = create("default", episode_gap=0).score(series)
    high = np.flatnonzero(scores >= DEFAULT_THRESHOLD)
    assert high.min() == 500 and (scores[500:540] >= DEFAULT_THRESHOLD).mean() > 0.9
    assert high.max() <= 540 + 20


def test_row_score_is_the_highest_column_less_a_discount_for_many_columns() -> None:
    one = np.array([[0.2], [0.9]])
    np.testing.assert_array_equal(combine(one), [0.2, 0.9])  # one column: the watch's own score
    ten = np.zeros((1, 10))
    ten[0, 3] = 0.9
    assert combine(ten)[0] == pytest.approx(0.8)
    assert combine(np.full((1, 10_000), 1.0))[0] == pytest.approx(1.0 - MAX_DISCOUNT)  # capped
    assert combine(np.zeros((2, 38))).tolist() == [0.0, 0.0]


def test_joint_score_flags_a_row_that_breaks_the_columns_usual_relation() -> None:
    """Two metrics that move together (one in bytes, one a ratio): a row where they part is
    unusual jointly although each value is an ordinary one; clean rows and gaps stay below."""
    rng = np.random.default_rng(13)
    load = rng.normal(0, 1.0, 3000)
    values = np.column_stack([5e9 + 1e8 * load, 0.5 + 0.01 * (load + rng.normal(0, 0.1, 3000))])
    values[2500] = [5e9 + 1e8, 0.5 - 0.01]  # each within one deviation, together far out
    values[2600, 1] = np.nan
    scores = joint_scores(values)
    assert scores[2500] >= DEFAULT_THRESHOLD
    assert (np.delete(scores, 2500) >= DEFAULT_THRESHOLD).sum() <= 1
    assert scores[2600] == 0.0 and scores[:150].max() == 0.0  # gaps and warm-up never score
    assert joint_scores(values[:, :1]).max() == 0.0  # one column: nothing joint to measure
