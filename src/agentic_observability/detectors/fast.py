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

CHUNK = 48  # measured best of 30-120 with bench/detect_throughput.py


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
        chunks = self._chunk_reductions(values, starts)
        before = self._before_each_chunk(chunks)  # state at every chunk start, then at the end
        scores = np.zeros(values.shape)
        for index, start in enumerate(starts):
            length = min(CHUNK, values.shape[1] - start)
            rows = np.flatnonzero(self._may_breach(before, chunks, index, length))
            if rows.size:
                window = values[rows, start : start + CHUNK]
                at_start = [a[rows, index] for a in before]
                scores[rows, start : start + CHUNK] = self._exact(window, at_start, self._state.origin[rows])
        state = self._state
        state.low, state.high, state.count, state.sum, state.sum_sq = (a[:, -1].copy() for a in before)
        return scores

    def _set_origin(self, values: np.ndarray) -> None:
        unset = np.flatnonzero(np.isnan(self._state.origin))
        if unset.size:  # any finite sample of the series will do: the first, else the largest
            first = values[unset, 0]
            gaps = np.isnan(first)
            first[gaps] = np.fmax.reduce(values[unset[gaps]], axis=1) if gaps.any() else first[gaps]
            self._state.origin[unset] = first

    def _chunk_reductions(self, values: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
        """Per series and chunk: min, max, count, and the sums around the origin (NaN skipped)."""
        whole = values.shape[1] // CHUNK * CHUNK
        parts = [self._reduce_whole(values[:, :whole])] if whole else []
        if whole < values.shape[1]:
            parts.append(self._reduce_whole(values[:, whole:], values.shape[1] - whole))
        low, high, count, total, squares = (np.hstack(p) for p in zip(*parts, strict=True))
        origin = self._state.origin[:, None]
        return [
            low,
            high,
            count,
            total - count * origin,  # sums around the origin, from plain sums
            squares - 2 * origin * total + count * origin * origin,
        ]

    @staticmethod
    def _reduce_whole(values: np.ndarray, size: int = CHUNK) -> tuple[np.ndarray, ...]:
        """Reductions over chunks of ``size`` (the width must be a multiple of it): one strided
        reduction each, no temporaries; series with NaNs are redone NaN-aware."""
        shaped = values.reshape(values.shape[0], -1, size)
        total = shaped.sum(axis=2)
        squares = np.einsum("ijk,ijk->ij", shaped, shaped)
        low, high = shaped.min(axis=2), shaped.max(axis=2)
        count = np.full(total.shape, float(size))
        gaps = np.flatnonzero(np.isnan(total).any(axis=1))
        if gaps.size:
            some = shaped[gaps]
            present = ~np.isnan(some)
            clean = np.where(present, some, 0.0)
            total[gaps], squares[gaps] = clean.sum(axis=2), (clean * clean).sum(axis=2)
            low[gaps], high[gaps] = np.fmin.reduce(some, axis=2), np.fmax.reduce(some, axis=2)
            count[gaps] = present.sum(axis=2)
        return low, high, count, total, squares

    def _before_each_chunk(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        state = self._state
        begin = [state.low, state.high, state.count, state.sum, state.sum_sq]
        combine = [np.fmin, np.fmax, np.add, np.add, np.add]
        return [
            how.accumulate(np.column_stack([first, part]), axis=1)
            for part, how, first in zip(chunks, combine, begin, strict=True)
        ]

    def _may_breach(
        self, before: list[np.ndarray], chunks: list[np.ndarray], index: int, length: int
    ) -> np.ndarray:
        """Necessary conditions for a breach in the chunk, from its reductions alone. The range only
        widens, so the margin at the chunk's start is a lower bound. The mean before any sample of
        the chunk lies between the mean at its start and the chunk's own extremes, and adding
        ``length`` samples can shrink the variance by at most count / (count + length)."""
        low, high, count, total, squares = (a[:, index] for a in before)
        bottom, top = chunks[0][:, index], chunks[1][:, index]
        with np.errstate(invalid="ignore", divide="ignore"):  # before any sample: (inf, -inf), 0/0
            level = np.maximum(np.abs(low), np.abs(high))
            margin = np.maximum(MARGIN * (high - low), LEVEL_FLOOR * level)
            mean = total / count + self._state.origin
            spread = np.sqrt(
                np.maximum(squares / count - (total / count) ** 2, 0.0) * count / (count + length)
            )
            far = SIGMAS * spread
            up = (top > high + margin) & (top - np.minimum(mean, bottom) > far)
            down = (bottom < low - margin) & (np.maximum(mean, top) - bottom > far)
        early = count < length  # too few samples before the chunk for the bounds: score it exactly
        return (count + length > self.learn) & (up | down | early)

    def _exact(self, values: np.ndarray, start: list[np.ndarray], origin: np.ndarray) -> np.ndarray:
        """Scores of one chunk for the given rows: first the new extremes (cheap), then the moments
        at those samples only."""
        low0, high0, count0, sum0, sum_sq0 = start
        high = np.fmax.accumulate(np.column_stack([high0, values]), axis=1)[:, :-1]
        low = np.fmin.accumulate(np.column_stack([low0, values]), axis=1)[:, :-1]
        with np.errstate(invalid="ignore"):
            rows, cols = np.nonzero((values > high) | (values < low))
        scores = np.zeros(values.shape)
        if rows.size == 0:
            return scores
        present = ~np.isnan(values)
        centred = np.where(present, values - origin[:, None], 0.0)
        before_sum = np.cumsum(centred, axis=1) - centred  # of the chunk's samples before each one
        before_sq = np.cumsum(centred * centred, axis=1) - centred * centred
        before_count = np.cumsum(present, axis=1) - present
        count = count0[rows] + before_count[rows, cols]
        mean = (sum0[rows] + before_sum[rows, cols]) / np.maximum(count, 1)
        variance = (sum_sq0[rows] + before_sq[rows, cols]) / np.maximum(count, 1) - mean * mean
        x, hi, lo = centred[rows, cols], high[rows, cols], low[rows, cols]
        value = x + origin[rows]
        spread = hi - lo
        margin = np.maximum(MARGIN * spread, LEVEL_FLOOR * np.maximum(np.abs(lo), np.abs(hi)))
        beyond = np.maximum(value - (hi + margin), (lo - margin) - value)
        breach = (count >= self.learn) & (spread > 0) & (beyond > 0)
        breach &= np.abs(x - mean) > SIGMAS * np.sqrt(np.maximum(variance, 0.0))
        excess = beyond[breach] / spread[breach]
        scores[rows[breach], cols[breach]] = np.minimum(1.0, self.threshold + (1 - self.threshold) * excess)
        return scores
