"""``agentic-obs detect INPUT.csv --output OUT.csv`` and ``agentic-obs backtest nab DIR``.

detect replays what a watch over the input's columns would have done: each column is scored by its
own detector instance as a watch scores it, the row's score combines the columns (``combine``; with
several columns, also their joint deviation, detectors/joint.py), and ``anomaly`` is 1 on every row
an incident would be open under the watch's episode rules (``detectors/episodes.py``: it opens on a
score at the threshold and closes after ``resolve_after`` clean rows). Causal: row i uses rows <= i.
Timestamps are written back exactly as given.
backtest nab: runs the same detector over the NAB corpus and scores it with NAB's rules
(offline/nab.py): the three profiles with the threshold sweep (over the detector's one-alert-per-
episode scores), and at the product's own threshold from detect's ``anomaly`` column, the first row
of each flagged stretch being the detection.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from agentic_observability.detectors import DEFAULT_EPISODE_GAP, create
from agentic_observability.detectors.bulk import BULK
from agentic_observability.detectors.episodes import episode_rows
from agentic_observability.detectors.joint import joint_scores
from agentic_observability.errors import BadInputError, ConfigError
from agentic_observability.offline.metrics_csv import read_metrics_csv
from agentic_observability.offline.nab import (
    PROFILES,
    FileLabels,
    RowWeights,
    corpus_score,
    row_weights,
    sweep,
)
from agentic_observability.offline.progress import show_progress


def sample_interval(timestamps: np.ndarray) -> float | None:
    """The typical seconds between rows (the median step), for detectors with seasonal references."""
    steps = np.diff(timestamps)
    return float(np.median(steps)) if steps.size else None


RESOLVE_AFTER = 3  # the watch's default: clean rows before an episode closes


def score_columns(
    values: np.ndarray, detector: str, threshold: float, interval: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(alerts, raw): (rows x columns) scores, each column by its own detector as a watch scores it;
    ``alerts`` at most once per episode gap, ``raw`` every sample's score before that gating."""
    if values.shape[1] == 0:
        return np.zeros(values.shape), np.zeros(values.shape)
    if detector in BULK:  # every column in one call, with the per-column detector's scores (~1e-7)
        bulk = BULK[detector](values.shape[1], threshold, DEFAULT_EPISODE_GAP, interval)
        block_alerts, block_raw = bulk.score(values.T)
        return block_alerts.T, block_raw.T
    alerts, raw = [], []
    for column in range(values.shape[1]):
        scorer = create(detector, threshold, interval=interval)
        alerts.append(scorer.score(values[:, column]))
        raw.append(getattr(scorer, "last_raw", alerts[-1]))
    return np.column_stack(alerts), np.column_stack(raw)


# A row of k columns gives k chances for one column's noise to reach the threshold, so the row's
# score is its highest column's less a discount per decade of columns (half of Bonferroni's
# log10(k)/5 for likelihood scores: columns of one machine move together). Capped so a row of very
# many columns can still page. One column: no discount, a watch's score exactly. Chosen with
# bench/servers_variants.py (its "product" variants).
DISCOUNT_PER_DECADE = 0.1
MAX_DISCOUNT = 0.2


def combine(scores: np.ndarray) -> np.ndarray:
    """One score per row from its columns' scores: the highest, discounted for the column count."""
    if scores.shape[1] == 0:
        return np.zeros(scores.shape[0])
    discount = min(DISCOUNT_PER_DECADE * math.log10(scores.shape[1]), MAX_DISCOUNT)
    return np.maximum(np.max(scores, axis=1) - discount, 0.0)


def detect_rows(
    values: np.ndarray, detector: str, threshold: float, interval: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, anomaly, alerts) per row: ``score`` how anomalous the row is, ``anomaly`` 1 while an
    incident would be open, ``alerts`` the row scores that page (once per episode gap)."""
    alerts, raw = score_columns(values, detector, threshold, interval)
    together = joint_scores(values)  # one test of the whole row: no discount (0 on one column)
    paging, scores = np.maximum(combine(alerts), together), np.maximum(combine(raw), together)
    anomaly = episode_rows(paging >= threshold, scores >= threshold, resolve_after=RESOLVE_AFTER)
    return scores, anomaly, paging


def first_rows(anomaly: np.ndarray) -> np.ndarray:
    """1.0 on the first row of each flagged stretch: the detections NAB's scoring counts."""
    flags = np.asarray(anomaly, dtype=bool)
    starts = flags & ~np.concatenate(([False], flags[:-1]))
    return starts.astype(float)


def _known(detector: str) -> None:
    try:
        create(detector)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_detect(source: Path, output: Path, detector: str, threshold: float) -> int:
    _known(detector)
    table = read_metrics_csv(source)
    scores, anomaly, _ = detect_rows(table.values, detector, threshold, sample_interval(table.timestamps))
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "score", "anomaly"])
        for ts, score, flag in zip(table.timestamp_text, scores, anomaly, strict=True):
            writer.writerow([ts, f"{score:.6f}", int(flag)])
    return 0


def _unix(text: str) -> float:
    return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def load_nab_file(path: Path, windows: list[list[str]]) -> tuple[np.ndarray, FileLabels, float | None]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    times = np.array([_unix(r[0]) for r in rows])
    values = np.array([float(r[1]) for r in rows])
    limits = tuple(
        (int(np.argmax(times >= _unix(a))), int(np.flatnonzero(times <= _unix(b))[-1])) for a, b in windows
    )
    return values, FileLabels(len(values), limits), sample_interval(times)


def _score_nab_file(
    path: Path, windows: list[list[str]], detector: str, threshold: float
) -> tuple[RowWeights, np.ndarray, np.ndarray]:
    """The file's row weights, the one-alert-per-episode scores (for the sweep) and detect's
    detections (the first row of each stretch of its ``anomaly`` column)."""
    values, file_labels, interval = load_nab_file(path, windows)
    _, anomaly, alerts = detect_rows(values[:, None], detector, threshold, interval)
    return row_weights(file_labels), alerts, first_rows(anomaly)


def backtest_nab(
    directory: Path, detector: str, threshold: float, out: TextIO | None = None
) -> dict[str, float]:
    _known(detector)
    labels_path = directory / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        raise BadInputError(f"{directory}: expected labels/combined_windows.json and data/", field="DIR")
    labels = json.loads(labels_path.read_text())
    keys = sorted(labels)
    by_index: dict[int, tuple[RowWeights, np.ndarray, np.ndarray]] = {}
    started = time.perf_counter()
    # files are independent: score them on every core, keep the corpus order for the sweep
    with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, len(keys))) as pool:
        pending = {
            pool.submit(_score_nab_file, directory / "data" / key, labels[key], detector, threshold): index
            for index, key in enumerate(keys)
        }
        for done, future in enumerate(as_completed(pending), start=1):
            by_index[pending[future]] = future.result()
            show_progress(done, len(keys), started, sys.stderr, unit="files")
    scored = [by_index[index][:2] for index in range(len(keys))]
    detected = [(by_index[index][0], by_index[index][2]) for index in range(len(keys))]
    results = {}
    stream = out or sys.stdout
    stream.write(f"NAB, detector {detector!r}, {len(labels)} files\n")
    stream.write(f"{'profile':<20}{'swept':>8}{'at threshold':>14}{'own threshold':>15}\n")
    for profile in PROFILES:
        best = sweep(scored, profile)
        own = corpus_score(detected, profile, 0.5)  # detections are 1.0 on the first row of a stretch
        stream.write(f"{profile:<20}{best.normalised:>8.1f}{best.threshold:>14.4f}{own.normalised:>15.1f}\n")
        results[profile] = best.normalised
        results[f"{profile}@{threshold:g}"] = own.normalised
    stream.write(f"own threshold: {threshold:g}\n")
    return results
