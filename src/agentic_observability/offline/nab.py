"""The Numenta Anomaly Benchmark's scoring rules (NAB v1.1), re-implemented from its documentation.

Per file: the first 15% of rows (at most 750) is probation and not scored. Inside a labelled window
only the earliest detection counts, rewarded by a scaled sigmoid of its position (≈ the full TP
weight at the left edge, → 0 at the right edge). A window with no detection costs the FN weight.
A detection outside every window costs the FP weight times a sigmoid of its distance after the
previous window (in window widths); before the first window, the full weight. One threshold per
profile for the whole corpus, chosen by sweeping every distinct score. Normalised so that the null
detector scores 0 and one full reward per window scores 100.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROFILES: dict[str, tuple[float, float, float]] = {  # (tp, fn, fp) weights
    "standard": (1.0, 1.0, 0.11),
    "reward_low_FP_rate": (1.0, 1.0, 0.22),
    "reward_low_FN_rate": (1.0, 2.0, 0.11),
}


def scaled_sigmoid(position: float) -> float:
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(length: int) -> int:
    return min(math.floor(0.15 * length), 750)


@dataclass(frozen=True)
class FileLabels:
    """One file: its length and its windows as inclusive row-index ranges, ascending."""

    length: int
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RowWeights:
    """What a detection at each row would earn (unit weights; profiles scale them later)."""

    window: np.ndarray  # window index per row, -1 outside windows
    tp: np.ndarray  # reward if this is the first detection in its window
    fp: np.ndarray  # cost (negative) if this row is a detection outside windows
    scored: np.ndarray  # bool: after probation


def row_weights(labels: FileLabels) -> RowWeights:
    n = labels.length
    window = np.full(n, -1)
    tp = np.zeros(n)
    fp = np.full(n, -1.0)  # before the first window: the full weight
    for index, (left, right) in enumerate(labels.windows):
        width = right - left + 1
        rows = np.arange(left, right + 1)
        window[rows] = index
        tp[rows] = [scaled_sigmoid(-(right - i + 1) / width) for i in rows]
        following = labels.windows[index + 1][0] if index + 1 < len(labels.windows) else n
        after = np.arange(right + 1, following)
        denominator = max(width - 1, 1)
        fp[after] = [scaled_sigmoid(abs(right - i) / denominator) for i in after]
    scored = np.arange(n) >= probation_rows(n)
    return RowWeights(window, tp, fp, scored)


def file_score(weights: RowWeights, detections: np.ndarray, profile: tuple[float, float, float]) -> float:
    """Raw NAB score of one file for boolean detections per row."""
    tp_w, fn_w, fp_w = profile
    hits = detections & weights.scored
    total = 0.0
    windows = int(weights.window.max()) + 1 if weights.window.size else 0
    for index in range(windows):
        in_window = np.flatnonzero(hits & (weights.window == index))
        total += tp_w * weights.tp[in_window[0]] if in_window.size else -fn_w
    outside = hits & (weights.window < 0)
    return total + fp_w * float(weights.fp[outside].sum())


def normalise(raw: float, windows: int, profile: tuple[float, float, float]) -> float:
    tp_w, fn_w, _ = profile
    null, perfect = -fn_w * windows, tp_w * windows
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    normalised: float


def corpus_score(
    files: Sequence[tuple[RowWeights, np.ndarray]], profile_name: str, threshold: float
) -> ProfileResult:
    profile = PROFILES[profile_name]
    raw = sum(file_score(w, scores >= threshold, profile) for w, scores in files)
    windows = sum(int(w.window.max()) + 1 for w, _ in files if w.window.size)
    return ProfileResult(profile_name, threshold, raw, normalise(raw, windows, profile))


def sweep(files: Sequence[tuple[RowWeights, np.ndarray]], profile_name: str) -> ProfileResult:
    """The best single corpus-wide threshold among every distinct score value (ties all in or out),
    computed incrementally: lowering the threshold past a value adds exactly the rows holding it."""
    profile = PROFILES[profile_name]
    tp_w, fn_w, fp_w = profile
    rows: list[tuple[float, int, int]] = []  # (score, file, row)
    windows_total = 0
    for f, (w, scores) in enumerate(files):
        windows_total += int(w.window.max()) + 1 if w.window.size else 0
        rows.extend((float(scores[i]), f, int(i)) for i in np.flatnonzero(w.scored))
    rows.sort(key=lambda r: -r[0])
    first_hit: dict[tuple[int, int], int] = {}  # (file, window) -> earliest detected row
    raw = -fn_w * windows_total
    best = ProfileResult(profile_name, math.inf, raw, normalise(raw, windows_total, profile))
    position = 0
    while position < len(rows):
        value = rows[position][0]
        while position < len(rows) and rows[position][0] == value:
            _, f, i = rows[position]
            raw += _gain(files[f][0], f, i, first_hit, tp_w, fn_w, fp_w)
            position += 1
        if raw > best.raw:
            best = ProfileResult(profile_name, value, raw, normalise(raw, windows_total, profile))
    return best


def _gain(
    w: RowWeights,
    f: int,
    i: int,
    first_hit: dict[tuple[int, int], int],
    tp_w: float,
    fn_w: float,
    fp_w: float,
) -> float:
    window = int(w.window[i])
    if window < 0:
        return fp_w * float(w.fp[i])
    key = (f, window)
    previous = first_hit.get(key)
    if previous is None:
        first_hit[key] = i
        return fn_w + tp_w * float(w.tp[i])  # the window stops costing FN and earns its reward
    if i < previous:
        first_hit[key] = i
        return tp_w * float(w.tp[i] - w.tp[previous])
    return 0.0
