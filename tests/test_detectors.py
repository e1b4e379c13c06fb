"""Detectors on synthetic series with known answers, the registry, and the detect CLI contract."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from agentic_observability import detectors
from agentic_observability.cli import main
from agentic_observability.detectors import DEFAULT_THRESHOLD, create, register

N = 1500


def noisy(seed: int = 1) -> np.ndarray:
    return 10.0 + np.random.default_rng(seed).normal(0, 1.0, N)


def test_spike_is_detected_and_clean_noise_is_not() -> None:
    clean = create("default").score(noisy())
    assert clean.max() < DEFAULT_THRESHOLD
    series = noisy()
    series[1200] += 25
    scores = create("default").score(series)
    assert scores[1200] >= DEFAULT_THRESHOLD
    assert np.flatnonzero(scores >= DEFAULT_THRESHOLD).min() >= 1200


def test_level_shift_is_detected_once_per_episode() -> None:
    series = noisy(2)
    series[1000:] += 8
    scores = create("default").score(series)
    alerts = np.flatnonzero(scores >= DEFAULT_THRESHOLD)
    assert alerts.size >= 1 and 1000 <= alerts[0] <= 1010
    assert alerts.size == 1  # the refractory period keeps one episode to one alert


def test_flat_and_near_flat_lines_never_alert() -> None:
    flat = np.full(N, 42.0)
    assert create("default").score(flat).max() == 0.0
    near = flat + np.where(np.arange(N) % 97 == 0, 1e-9, 0.0)
    assert create("default").score(near).max() < DEFAULT_THRESHOLD


def test_warmup_never_alerts() -> None:
    series = noisy(3)
    series[50] += 100
    assert create("default").score(series)[:150].max() == 0.0


def test_causal_and_incremental() -> None:
    series = noisy(4)
    series[900] += 30
    whole = create("default").score(series)
    prefix = create("default").score(series[:950])
    np.testing.assert_array_equal(whole[:950], prefix)  # appending rows never changes earlier scores
    detector = create("default")
    chunked = np.concatenate([detector.score(series[i : i + 137]) for i in range(0, N, 137)])
    np.testing.assert_array_equal(whole, chunked)  # state carries across calls


def test_registry_rejects_duplicates_and_lists_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("robust", detectors.DETECTORS["robust"])
    with pytest.raises(ValueError, match="known: default, robust"):
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
    assert rows[1300]["anomaly"] == "1" and sum(r["anomaly"] == "1" for r in rows) <= 3


def test_detect_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,x\n1,1\n2,oops\n")
    assert main(["detect", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    assert main(["detect", str(bad), "--output", str(tmp_path / "o.csv"), "--detector", "nope"]) == 2
    err = capsys.readouterr().err
    assert "row 3, column 'x'" in err and "unknown detector 'nope'" in err
