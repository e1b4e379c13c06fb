"""``agentic-obs detect INPUT.csv --output OUT.csv`` and ``agentic-obs backtest nab DIR``.

detect: one combined score per row (the maximum over the input's columns, each scored by its own
detector instance), and ``anomaly`` = score >= the product's threshold. Causal: row i uses rows <= i.
backtest nab: runs the same detector over the NAB corpus and scores it with NAB's rules
(offline/nab.py): the three profiles with the threshold sweep, and with the product's own threshold.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from agentic_observability.detectors import create
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


def score_table(
    values: np.ndarray, detector: str, threshold: float, interval: float | None = None
) -> np.ndarray:
    """Score every column with its own detector; the row's score is the highest."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0])
    columns = [
        create(detector, threshold, interval=interval).score(values[:, i]) for i in range(values.shape[1])
    ]
    return np.max(np.vstack(columns), axis=0)


def _known(detector: str) -> None:
    try:
        create(detector)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_detect(source: Path, output: Path, detector: str, threshold: float) -> int:
    _known(detector)
    table = read_metrics_csv(source)
    scores = score_table(table.values, detector, threshold, sample_interval(table.timestamps))
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "score", "anomaly"])
        for ts, score in zip(table.timestamps, scores, strict=True):
            writer.writerow([f"{ts:g}", f"{score:.6f}", int(score >= threshold)])
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
) -> tuple[RowWeights, np.ndarray]:
    values, file_labels, interval = load_nab_file(path, windows)
    return row_weights(file_labels), create(detector, threshold, interval=interval).score(values)


def backtest_nab(
    directory: Path, detector: str, threshold: float, out: TextIO | None = None
) -> dict[str, float]:
    _known(detector)
    labels_path = directory / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        raise BadInputError(f"{directory}: expected labels/combined_windows.json and data/", field="DIR")
    labels = json.loads(labels_path.read_text())
    keys = sorted(labels)
    by_index: dict[int, tuple[RowWeights, np.ndarray]] = {}
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
    scored = [by_index[index] for index in range(len(keys))]
    results = {}
    stream = out or sys.stdout
    stream.write(f"NAB, detector {detector!r}, {len(labels)} files\n")
    stream.write(f"{'profile':<20}{'swept':>8}{'at threshold':>14}{'own threshold':>15}\n")
    for profile in PROFILES:
        best = sweep(scored, profile)
        own = corpus_score(scored, profile, threshold)
        stream.write(f"{profile:<20}{best.normalised:>8.1f}{best.threshold:>14.4f}{own.normalised:>15.1f}\n")
        results[profile] = best.normalised
        results[f"{profile}@{threshold:g}"] = own.normalised
    stream.write(f"own threshold: {threshold:g}\n")
    return results
