"""Joint deviation of a row of several series (one machine's metrics): the Mahalanobis distance of
the row from the rows before it, as a chi-square tail probability on a log scale.

Each column's own detector judges its shape over time; it misses a short blip that stays inside
the column's usual range or looks like an earlier stretch, and a row where several metrics move a
little together. The joint distance sees both: against the columns' means and correlations, such a
row is far out. Causal: each block of ``EVERY`` rows is measured against the ``WINDOW`` rows before
it, a long memory (two weeks of one-minute rows), so an incident of hours or days never becomes the
baseline it is measured against, while a lasting change does in time. Columns are standardised
first (scale floored as the other detectors floor it), so a metric in bytes does not drown one in
percent, and a ridge keeps near-flat or collinear columns from dividing by ~0. On one column there
is nothing joint to measure: scores are 0. Chosen with bench/servers_variants.py.
"""

from __future__ import annotations

import math

import numpy as np

WINDOW = 20_000  # rows the means and correlations are estimated from (a multiple of EVERY)
EVERY = 100  # rows between re-estimates (each block is scored, then learnt)
MINIMUM = 150  # rows before the first estimate (the per-column detectors' warm-up)
RIDGE = 0.01  # added to the standardised covariance's diagonal
DECADES = 10.0  # a tail probability of 1e-10 scores 1.0; 1e-7 scores 0.7
FLOOR = 1e-3  # a column's scale is at least this share of its range seen and of its level


class _Moments:
    """Running sums over the rows of the window, about an origin so large levels keep precision."""

    def __init__(self, columns: int) -> None:
        self.origin: np.ndarray | None = None
        self.count = 0
        self.sum = np.zeros(columns)
        self.outer = np.zeros((columns, columns))
        self.low, self.high = np.full(columns, np.inf), np.full(columns, -np.inf)

    def add(self, rows: np.ndarray, sign: int = 1) -> None:
        if not len(rows):
            return
        if self.origin is None:
            self.origin = rows[0].copy()
        shifted = rows - self.origin
        self.count += sign * len(rows)
        self.sum += sign * shifted.sum(axis=0)
        self.outer += sign * shifted.T @ shifted
        if sign > 0:  # the range is all-time: a floor, not an estimate
            self.low, self.high = (
                np.minimum(self.low, rows.min(axis=0)),
                np.maximum(self.high, rows.max(axis=0)),
            )

    def scores(self, block: np.ndarray) -> np.ndarray:
        assert self.origin is not None
        shift = self.sum / self.count
        covariance = self.outer / self.count - np.outer(shift, shift)
        mean = self.origin + shift
        deviation = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        scale = np.maximum.reduce([deviation, FLOOR * (self.high - self.low), FLOOR * np.abs(mean)])
        scale = np.maximum(scale, 1e-12)
        standard = covariance / np.outer(scale, scale) + RIDGE * np.eye(len(scale))
        offsets = (block - mean) / scale
        distance = np.einsum("ij,jk,ik->i", offsets, np.linalg.pinv(standard), offsets)
        tails = [_log10_chi2_tail(float(d), len(scale)) for d in distance]
        return np.array([min(1.0, -t / DECADES) if math.isfinite(t) else 0.0 for t in tails])


def joint_scores(values: np.ndarray) -> np.ndarray:
    """One score in [0, 1] per row (rows x columns in; rows with a gap score 0, and are not learnt)."""
    rows, columns = values.shape
    scores = np.zeros(rows)
    if columns < 2:
        return scores
    complete = np.isfinite(values).all(axis=1)
    moments = _Moments(columns)
    for start in range(0, rows, EVERY):
        block = slice(start, start + EVERY)
        if moments.count >= MINIMUM:
            scores[block] = moments.scores(values[block])
        moments.add(values[block][complete[block]])
        if start + EVERY > WINDOW:  # the block that leaves the window as this one enters
            gone = slice(start + EVERY - WINDOW - EVERY, start + EVERY - WINDOW)
            moments.add(values[gone][complete[gone]], sign=-1)
    return scores


def _log10_chi2_tail(distance: float, dof: int) -> float:
    """log10 P(chi2(dof) >= distance), by the Wilson-Hilferty normal approximation (numpy has no
    chi-square; the score saturates long before the approximation's error matters)."""
    if not math.isfinite(distance):
        return math.nan
    spread = 2.0 / (9.0 * dof)
    z = ((max(distance, 0.0) / dof) ** (1.0 / 3.0) - (1.0 - spread)) / math.sqrt(spread)
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    if tail > 0.0:
        return math.log10(tail)
    # far beyond erfc's range: the normal tail's leading term
    return (-z * z / 2.0 - math.log(z * math.sqrt(2.0 * math.pi))) / math.log(10.0)
