"""``agentic-obs backtest servers DIR``: detection on multivariate server metrics with labelled ranges.

DIR holds datasets (``asd/``, ``smd/``), each a folder of machines, or is one dataset folder itself.
A machine folder has ``input.csv`` (the ``detect`` input: train rows, then test rows), ``labels.csv``
(``timestamp,label`` for the test rows) and ``meta.json`` (``test_start``). Each machine runs through
exactly what ``detect`` does; its ``anomaly`` column is joined to the labels by timestamp. Printed per
machine and micro per dataset: point-wise precision, recall and F1 (no point-adjust), and event
recall (the share of labelled stretches with at least one flagged row).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from agentic_observability.errors import BadInputError
from agentic_observability.offline.detect import detect_rows, sample_interval
from agentic_observability.offline.metrics_csv import read_metrics_csv
from agentic_observability.offline.progress import show_progress


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    events: int = 0
    events_found: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.tp, self.fp, self.fn, self.events, self.events_found)

    def line(self) -> str:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        events = self.events_found / self.events if self.events else 0.0
        return f"{precision:>10.3f}{recall:>8.3f}{f1:>8.3f}{events:>14.2f}"


def machines(directory: Path) -> dict[str, list[Path]]:
    """Dataset name -> machine folders (those holding ``input.csv``)."""
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a directory", field="DIR")
    if any((d / "input.csv").is_file() for d in directory.iterdir() if d.is_dir()):
        groups = {directory.name: directory}
    else:
        groups = {d.name: d for d in sorted(directory.iterdir()) if d.is_dir()}
    found = {
        name: sorted(m for m in folder.iterdir() if (m / "input.csv").is_file())
        for name, folder in groups.items()
    }
    found = {name: paths for name, paths in found.items() if paths}
    if not found:
        raise BadInputError(f"{directory}: no <dataset>/<machine>/input.csv found", field="DIR")
    return found


def score_machine(folder: Path, detector: str, threshold: float) -> Counts:
    table = read_metrics_csv(folder / "input.csv")
    _, anomaly, _ = detect_rows(table.values, detector, threshold, sample_interval(table.timestamps))
    flagged = dict(zip(table.timestamp_text, anomaly.astype(bool), strict=True))
    with (folder / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [r["timestamp"] for r in rows if r["timestamp"] not in flagged]
    if missing:
        raise BadInputError(f"{folder}: {len(missing)} labelled timestamps not in input.csv", field="labels")
    truth = np.array([r["label"] == "1" for r in rows])
    found = np.array([flagged[r["timestamp"]] for r in rows])
    return _counts(truth, found)


def _counts(truth: np.ndarray, found: np.ndarray) -> Counts:
    starts = np.flatnonzero(truth & ~np.concatenate(([False], truth[:-1])))
    ends = np.flatnonzero(truth & ~np.concatenate((truth[1:], [False])))
    hits = sum(bool(found[a : b + 1].any()) for a, b in zip(starts, ends, strict=True))
    return Counts(
        tp=int((truth & found).sum()),
        fp=int((~truth & found).sum()),
        fn=int((truth & ~found).sum()),
        events=len(starts),
        events_found=hits,
    )


def backtest_servers(
    directory: Path, detector: str, threshold: float, out: TextIO | None = None
) -> dict[str, Counts]:
    groups = machines(directory)
    jobs = [(name, folder) for name, folders in groups.items() for folder in folders]
    results: dict[tuple[str, str], Counts] = {}
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, len(jobs))) as pool:
        pending = {
            pool.submit(score_machine, folder, detector, threshold): (n, folder.name) for n, folder in jobs
        }
        for done, future in enumerate(as_completed(pending), start=1):
            results[pending[future]] = future.result()
            show_progress(done, len(jobs), started, sys.stderr, unit="machines")
    stream = out or sys.stdout
    stream.write(f"servers, detector {detector!r}, threshold {threshold:g}, test rows only\n")
    stream.write(
        f"{'dataset':<8}{'machine':<14}{'precision':>10}{'recall':>8}{'F1':>8}{'event recall':>14}\n"
    )
    totals: dict[str, Counts] = {}
    for name, folders in groups.items():
        for folder in folders:
            counts = results[(name, folder.name)]
            stream.write(f"{name:<8}{folder.name:<14}{counts.line()}\n")
            totals[name] = totals.get(name, Counts()) + counts
        stream.write(f"{name:<8}{'micro':<14}{totals[name].line()}\n")
    return totals
