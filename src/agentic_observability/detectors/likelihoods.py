"""``TailLikelihood`` (likelihood.py) for many series at once: one step updates every series.

The running sums take the same floating-point steps in the same order as the per-series class (a
sum of floats depends on its order); only the order *across* series is free, and that is what is
vectorised. ``erfc`` and ``log10`` come from ``math`` (numpy's and scipy's differ in the last bit).

One difference, for memory: the older raw scores are held as float32 (16 KiB rather than 32 for a
4,000-score history), and a score enters the running sums as it is held, rounded (relative error at
most 2**-24), so that adding it and later taking it out cancel exactly. The mean and spread then
differ from the per-series class's by about that relative error; tests/test_detect_bulk.py bounds
the effect on the scores.
"""

from __future__ import annotations

import math

import numpy as np

from agentic_observability.detectors.likelihood import DECADES_AT_ONE

FLOAT32_MAX = float(np.finfo(np.float32).max)
QUANTILE_CHUNK = 1024  # rings per quantile call: ~32 MiB of float64 at a time
_erfc = np.frompyfunc(math.erfc, 1, 1)
_log10 = np.frompyfunc(math.log10, 1, 1)


class Likelihoods:
    def __init__(
        self,
        series: int,
        history: int = 4000,
        recent: int = 10,
        minimum: int = 20,
        decades: float = DECADES_AT_ONE,
    ) -> None:
        self._decades, self._minimum, self._recent_len = decades, minimum, recent
        self._recent = np.zeros((series, recent))  # a ring: the newest ``recent`` raw scores
        self._recent_count = np.zeros(series, np.int64)  # raw scores added so far
        self._recent_sum = np.zeros(series)
        self._past = np.zeros((series, history - recent), np.float32)
        self._count = np.zeros(series, np.int64)  # values pushed into ``_past`` so far
        self._sum = np.zeros(series)
        self._sum_sq = np.zeros(series)
        self._since_exact = np.zeros(series, np.int64)

    @property
    def nbytes(self) -> int:
        arrays = (self._recent, self._recent_count, self._recent_sum, self._past, self._count)
        return sum(a.nbytes for a in arrays) + 3 * self._sum.nbytes

    def update(self, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Add ``raw[i]`` to series ``rows[i]``; return those series' likelihood scores."""
        recent_len = self._recent_len
        slot = self._recent_count[rows] % recent_len
        leaving = self._recent[rows, slot]  # the raw score that drops out of ``recent`` (if full)
        full = self._recent_count[rows] >= recent_len
        self._recent[rows, slot] = raw
        self._recent_count[rows] += 1
        self._recent_sum[rows] += raw
        if full.any():
            self._push_past(leaving[full], rows[full])
        return self._score(rows)

    def quantile(self, row: int, q: float) -> float | None:
        """The ``q`` quantile of series ``row``'s older raw scores (None before there are any)."""
        count = int(self._count[row])
        held = self._past[row, : min(count, self._past.shape[1])].astype(float)
        return float(np.quantile(held, q)) if count else None

    def quantiles(self, rows: np.ndarray, q: float) -> np.ndarray:
        """``quantile`` of each of ``rows`` (NaN for None): rows whose ring is full a chunk at a time
        (a cluster-wide incident starts an episode on every series at once: as one float64 copy,
        100,000 rings would take 3 GB)."""
        count = self._count[rows]
        full = np.flatnonzero(count >= self._past.shape[1])
        out = np.full(rows.size, np.nan)
        for start in range(0, full.size, QUANTILE_CHUNK):
            chunk = full[start : start + QUANTILE_CHUNK]
            out[chunk] = np.quantile(self._past[rows[chunk]].astype(float), q, axis=1)
        for index in np.flatnonzero((count < self._past.shape[1]) & (count > 0)).tolist():
            found = self.quantile(int(rows[index]), q)
            out[index] = np.nan if found is None else found
        return out

    def _push_past(self, leaving: np.ndarray, rows: np.ndarray) -> None:
        self._recent_sum[rows] -= leaving
        # as held (rounded; within float32's range): what enters the sums is what leaves them
        value = np.minimum(leaving, FLOAT32_MAX).astype(np.float32).astype(float)
        size = self._past.shape[1]
        slot = self._count[rows] % size
        wrapped = self._count[rows] >= size
        old = self._past[rows, slot].astype(float)
        self._past[rows, slot] = value
        self._count[rows] += 1
        self._sum[rows] += value
        self._sum_sq[rows] += value * value
        # x - 0.0 is x, so subtracting nothing where the ring was not full yet changes no bit
        self._sum[rows] -= np.where(wrapped, old, 0.0)
        self._sum_sq[rows] -= np.where(wrapped, old * old, 0.0)
        self._since_exact[rows] += 1
        for row in rows[self._since_exact[rows] >= size]:  # running sums drift: recompute now and then
            held = self._past[row].astype(float)
            self._sum[row] = math.fsum(held)
            self._sum_sq[row] = math.fsum(held * held)
            self._since_exact[row] = 0

    def _score(self, rows: np.ndarray) -> np.ndarray:
        scores = np.zeros(rows.size)
        count = np.minimum(self._count[rows], self._past.shape[1])
        ready = (count >= self._minimum) & (self._recent_count[rows] >= self._recent_len)
        mean = self._sum[rows] / np.maximum(count, 1)
        variance = np.maximum(self._sum_sq[rows] / np.maximum(count, 1) - mean * mean, 0.0)
        spread = np.sqrt(variance) + 1e-9 + 1e-3 * np.abs(mean)
        recent = self._recent_sum[rows] / self._recent_len
        high = ready & (recent > mean)  # only unusually high raw scores matter
        if high.any():
            z = (recent[high] - mean[high]) / spread[high] / math.sqrt(2)
            tail = np.maximum(0.5 * _erfc(z).astype(float), 1e-300)
            scores[high] = np.minimum(1.0, -_log10(tail).astype(float) / self._decades)
        return scores
