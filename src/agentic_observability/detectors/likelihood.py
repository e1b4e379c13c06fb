"""Anomaly likelihood (the idea of Numenta's): how unusual the recent average of a raw score is
against that score's own history, as a Gaussian tail probability on a log scale.

A series whose raw score is always high (a noisy metric) therefore does not alert on its usual
noise; only a rise above its own normal does. Incremental, O(1) per sample.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

DECADES_AT_ONE = 5.0  # a tail probability of 1e-5 scores 1.0; 1e-3.5 scores 0.7


class TailLikelihood:
    def __init__(
        self, history: int = 4000, recent: int = 10, minimum: int = 20, decades: float = DECADES_AT_ONE
    ) -> None:
        self._decades = decades
        self._minimum = minimum
        self._recent: deque[float] = deque()
        # the older raw scores: a numpy ring (8 bytes a value; a watch may hold thousands of series)
        self._past = np.empty(history - recent)
        self._count = 0
        self._recent_sum = 0.0
        self._sum = self._sum_sq = 0.0
        self._recent_len = recent
        self._since_exact = 0

    def update(self, raw: float) -> float:
        """Add one raw score and return the likelihood score of the latest ``recent`` average."""
        self._recent.append(raw)
        self._recent_sum += raw
        if len(self._recent) > self._recent_len:
            self._push_past(self._recent.popleft())
        return self._score()

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the older raw scores (None before there are any)."""
        return float(np.quantile(self._held(), q)) if self._count else None

    def _held(self) -> np.ndarray:
        return self._past[: min(self._count, self._past.size)]

    def _push_past(self, value: float) -> None:
        self._recent_sum -= value
        slot = self._count % self._past.size
        old = float(self._past[slot]) if self._count >= self._past.size else None
        self._past[slot] = value
        self._count += 1
        self._sum += value
        self._sum_sq += value * value
        if old is not None:
            self._sum -= old
            self._sum_sq -= old * old
        self._since_exact += 1
        if self._since_exact >= self._past.size:  # running sums drift; recompute them now and then
            held = self._held()
            self._sum = math.fsum(held)
            self._sum_sq = math.fsum(held * held)
            self._since_exact = 0

    def _score(self) -> float:
        count = min(self._count, self._past.size)
        if count < self._minimum or len(self._recent) < self._recent_len:
            return 0.0
        mean = self._sum / count
        spread = math.sqrt(max(self._sum_sq / count - mean * mean, 0.0)) + 1e-9 + 1e-3 * abs(mean)
        recent = self._recent_sum / len(self._recent)
        if recent <= mean:
            return 0.0  # only unusually high raw scores matter (a flat line stays at exactly 0)
        tail = 0.5 * math.erfc((recent - mean) / spread / math.sqrt(2))
        return min(1.0, -math.log10(max(tail, 1e-300)) / self._decades)
