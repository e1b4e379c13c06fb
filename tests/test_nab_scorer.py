"""The NAB scorer (offline/nab.py) on hand-computed cases and on the published anchors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from agentic_observability.cli import main
from agentic_observability.offline.detect import load_nab_file
from agentic_observability.offline.nab import (
    PROFILES,
    FileLabels,
    corpus_score,
    file_score,
    normalise,
    probation_rows,
    row_weights,
    scaled_sigmoid,
    sweep,
)
from tests.conftest import SHARED

LABELS = FileLabels(length=1000, windows=((400, 449), (800, 849)))


def test_sigmoid_shape() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)  # left edge of a window
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(3.5) == -1.0


def test_probation() -> None:
    assert probation_rows(1000) == 150 and probation_rows(10_000) == 750


def test_first_detection_in_a_window_counts_and_early_pays_more() -> None:
    weights = row_weights(LABELS)
    early, late = np.zeros(1000, bool), np.zeros(1000, bool)
    early[[400, 401, 440]] = True
    late[445] = True
    standard = PROFILES["standard"]
    missed_second = -1.0
    assert file_score(weights, early, standard) == pytest.approx(scaled_sigmoid(-1.0) + missed_second)
    assert file_score(weights, late, standard) < file_score(weights, early, standard)


def test_false_positives_cost_less_just_after_a_window() -> None:
    weights = row_weights(LABELS)
    near, far, before = (np.zeros(1000, bool) for _ in range(3))
    near[451], far[700], before[300] = True, True, True
    base = -2.0  # both windows missed
    standard = PROFILES["standard"]
    assert base > file_score(weights, near, standard) > file_score(weights, far, standard)
    assert file_score(weights, before, standard) == pytest.approx(base - 0.11)
    probation = np.zeros(1000, bool)
    probation[10] = True  # in the first 15%: not scored
    assert file_score(weights, probation, standard) == base


def test_sweep_finds_the_best_threshold() -> None:
    weights = row_weights(LABELS)
    scores = np.zeros(1000)
    scores[400], scores[800] = 0.9, 0.8
    scores[600] = 0.95  # a false positive scoring above both true positives
    result = sweep([(weights, scores)], "standard")
    assert result.threshold == 0.8
    assert result.raw == pytest.approx(corpus_score([(weights, scores)], "standard", 0.8).raw)


def test_normalisation_reproduces_the_published_windowed_gaussian_figures() -> None:
    # raw totals from NAB's own per-row output (dataset README) -> the published normalised scores
    assert normalise(-24.0131, 116, PROFILES["standard"]) == pytest.approx(39.65, abs=0.01)
    assert normalise(-67.5863, 116, PROFILES["reward_low_FP_rate"]) == pytest.approx(20.87, abs=0.01)
    assert normalise(-67.0131, 116, PROFILES["reward_low_FN_rate"]) == pytest.approx(47.41, abs=0.01)


def _corpus_windows() -> list[FileLabels]:
    root = SHARED / "datasets" / "nab"
    path = root / "labels" / "combined_windows.json"
    if not path.is_file():
        pytest.skip("NAB labels not found")
    windows = json.loads(path.read_text())
    return [load_nab_file(root / "data" / key, windows[key])[1] for key in sorted(windows)]


def test_corpus_anchors_null_is_0_and_perfect_is_one_full_reward_per_window() -> None:
    labels = _corpus_windows()
    assert sum(len(f.windows) for f in labels) == 116
    weights = [row_weights(f) for f in labels]
    null = [(w, np.zeros(f.length)) for w, f in zip(weights, labels, strict=True)]
    perfect = []
    for w, f in zip(weights, labels, strict=True):
        scores = np.zeros(f.length)
        scores[[left for left, _ in f.windows]] = 1.0
        perfect.append((w, scores))
    for profile in PROFILES:
        assert corpus_score(null, profile, 0.5).normalised == 0.0
        # firing on each window's first row earns 0.987 of the TP weight: 99.3-99.6, not more
        assert 99.3 < sweep(perfect, profile).normalised <= 100.0
    assert normalise(116.0, 116, PROFILES["standard"]) == 100.0


def _write_corpus(root: Path) -> None:
    """Two five-minute files in NAB's layout: one spike inside its window, one clean file."""
    rng = np.random.default_rng(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    labels = {}
    for name, spike in (("demo/spiky.csv", 1500), ("demo/clean.csv", None)):
        values = 50 + rng.normal(0, 1, 2000)
        if spike:
            values[spike] += 40
        stamps = [(start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(2000)]
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True))
        )
        labels[name] = [[stamps[spike - 50], stamps[spike + 50]]] if spike else []
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))


def test_backtest_nab_cli_scores_a_small_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_corpus(tmp_path)
    assert main(["backtest", "nab", str(tmp_path)]) == 0
    out = capsys.readouterr()
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.out.splitlines()
        if line.startswith(("standard", "reward"))
    }
    assert set(rows) == set(PROFILES)
    swept, own = float(rows["standard"][0]), float(rows["standard"][2])
    assert swept > 90 and own > 90  # the spike is found early in its window, the clean file stays quiet
    assert "2/2 files" in out.err  # the progress line
    assert main(["backtest", "nab", str(tmp_path / "missing")]) == 2
