"""The fast path: the range-breach screen (extremes.py) for many series at once, vectorised.

``BreachScreen.score(matrix)`` takes a (series × samples) block and returns the same scores the
per-sample ``RangeBreach`` gives inside the ensemble (before its episode gap). State carries across
calls, so it can follow a watch poll by poll; NaN samples are skipped, as everywhere else.

Why it is fast: a breach needs a new extreme beyond the margin, and those are rare. Four reductions
per chunk of ``CHUNK`` samples (max, min, sum, sum of squares; each a fraction of one pass) give
every series' state at every chunk start, and show which chunks *could* hold a breach: the range
only widens, so the margin at the chunk's start bounds it from below. Only those chunks are scored
sample by sample. Sums are taken around each series' first value, for a stable variance.
"""

from __future__ import annotations

import numpy as np

from agentic_observability.detectors import DEFAULT_THRESHOLD
from agentic_observability.detectors.extremes import LEVEL_FLOOR, MARGIN, SIGMAS

CHUNK = 120


class _State:
    """Per series: the range, the count and the sums around ``origin`` of everything seen."""

    def __init__(self, series: int) -> None:
        self.low = np.full(series, np.inf)
        self.high = np.full(series, -np.inf)
        self.count = np.zeros(series)
        self.origin = np.full(series, np.nan)
        self.sum = np.zeros(series)
        self.sum_sq = np.zeros(series)


class BreachScreen:
    def __init__(self, series: int, threshold: float = DEFAULT_THRESHOLD, learn: int = 150) -> None:
        self.threshold, self.learn = threshold, learn
        self._state = _State(series)

    def score(self, block: np.ndarray) -> np.ndarray:
        values = np.asarray(block, dtype=float)
        self._set_origin(values)
        starts = np.arange(0, values.shape[1], CHUNK)
        before = self._chunk_starts(values, starts)  # state at every chunk start, then the end
        scores = np.zeros(values.shape)
        for index, start in enumerate(starts):
            rows = np.flatnonzero(self._may_breach(before, index, min(CHUNK, values.shape[1] - start)))
            if rows.size:
                window = values[rows, start : start + CHUNK]
                at_start = [a[rows, index] for a in before]
                scores[rows, start : start + CHUNK] = self._exact(window, at_start, self._state.origin[rows])
        state = self._state
        state.low, state.high, state.count, state.sum, state.sum_sq = (a[:, -1].copy() for a in before)
        return scores

    def _set_origin(self, values: np.ndarray) -> None:
        unset = np.isnan(self._state.origin)
        if unset.any():  # any finite sample of the series will do
            self._state.origin[unset] = np.fmax.reduce(values[unset], axis=1)

    def _chunk_starts(self, values: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
        """low, high, count, sum, sum_sq of everything before each chunk start (and after the last)."""
        state, origin = self._state, self._state.origin[:, None]
        missing = np.isnan(values)
        clean = np.where(missing, 0.0, values) if missing.any() else values
        count = np.add.reduceat(~missing, starts, axis=1).astype(float)
        total = np.add.reduceat(clean, starts, axis=1)
        squares = np.add.reduceat(clean * clean, starts, axis=1)
        centred = total - count * origin  # sums around the origin, from plain sums
        centred_sq = squares - 2 * origin * total + count * origin * origin
        parts = [
            (np.fmin.reduceat(values, starts, axis=1), np.fmin, state.low),
            (np.fmax.reduceat(values, starts, axis=1), np.fmax, state.high),
            (count, np.add, state.count),
            (centred, np.add, state.sum),
            (centred_sq, np.add, state.sum_sq),
        ]
        return [combine.accumulate(np.column_stack([begin, part]), axis=1) for part, combine, begin in parts]

    def _may_breach(self, before: list[np.ndarray], index: int, length: int) -> np.ndarray:
        low, high, count = before[0][:, index], before[1][:, index], before[2][:, index]
        top, bottom = before[1][:, index + 1], before[0][:, index + 1]
        with np.errstate(invalid="ignore"):  # before any sample the range is (inf, -inf): no breach
            level = np.maximum(np.abs(low), np.abs(high))
            margin = np.maximum(MARGIN * (high - low), LEVEL_FLOOR * level)
            outside = (top > high + margin) | (bottom < low - margin)
        return (count + length > self.learn) & outside

    def _exact(self, values: np.ndarray, start: list[np.ndarray], origin: np.ndarray) -> np.ndarray:
        low0, high0, count0, sum0, sum_sq0 = start
        low = np.fmin.accumulate(np.column_stack([low0, values]), axis=1)[:, :-1]
        high = np.fmax.accumulate(np.column_stack([high0, values]), axis=1)[:, :-1]
        count, mean, deviation = self._moments(values, origin, count0, sum0, sum_sq0)
        spread = high - low
        margin = np.maximum(MARGIN * spread, LEVEL_FLOOR * np.maximum(np.abs(low), np.abs(high)))
        with np.errstate(invalid="ignore"):
            beyond = np.maximum(values - (high + margin), (low - margin) - values)
            breach = (count >= self.learn) & (spread > 0) & (beyond > 0)
            breach &= np.abs(values - mean) > SIGMAS * deviation
            excess = np.where(breach, beyond / np.where(spread > 0, spread, 1.0), 0.0)
        return np.where(breach, np.minimum(1.0, self.threshold + (1 - self.threshold) * excess), 0.0)

    @staticmethod
    def _moments(
        values: np.ndarray, origin: np.ndarray, count0: np.ndarray, sum0: np.ndarray, sum_sq0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, mean and standard deviation of the samples before each one (NaN skipped)."""
        present = ~np.isnan(values)
        centred = np.where(present, values - origin[:, None], 0.0)
        counts = count0[:, None] + np.cumsum(present, axis=1) - present
        sums = sum0[:, None] + np.cumsum(centred, axis=1) - centred
        squares = sum_sq0[:, None] + np.cumsum(centred * centred, axis=1) - centred * centred
        safe = np.maximum(counts, 1)
        mean = sums / safe
        deviation = np.sqrt(np.maximum(squares / safe - mean * mean, 0.0))
        return counts, mean + origin[:, None], deviation
