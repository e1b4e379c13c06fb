"""Anomaly likelihood (the idea of Numenta's): how unusual the recent average of a raw score is
against that score's own history, as a Gaussian tail probability on a log scale.

A series whose raw score is always high (a noisy metric) therefore does not alert on its usual
noise; only a rise above its own normal does. Incremental, O(1) per sample.
"""

from __future__ import annotations

import math
from collections import deque

DECADES_AT_ONE = 5.0  # a tail probability of 1e-5 scores 1.0; 1e-3.5 scores 0.7


class TailLikelihood:
    def __init__(
        self, history: int = 4000, recent: int = 10, minimum: int = 20, decades: float = DECADES_AT_ONE
    ) -> None:
        self._history = history - recent
        self._decades = decades
        self._minimum = minimum
        self._recent: deque[float] = deque()
        self._past: deque[float] = deque()
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

    def _push_past(self, value: float) -> None:
        self._recent_sum -= value
        self._past.append(value)
        self._sum += value
        self._sum_sq += value * value
        if len(self._past) > self._history:
            old = self._past.popleft()
            self._sum -= old
            self._sum_sq -= old * old
        self._since_exact += 1
        if self._since_exact >= self._history:  # running sums drift; recompute them now and then
            self._sum = math.fsum(self._past)
            self._sum_sq = math.fsum(v * v for v in self._past)
            self._since_exact = 0

    def _score(self) -> float:
        count = len(self._past)
        if count < self._minimum or len(self._recent) < self._recent_len:
            return 0.0
        mean = self._sum / count
        spread = math.sqrt(max(self._sum_sq / count - mean * mean, 0.0)) + 1e-9 + 1e-3 * abs(mean)
        recent = self._recent_sum / len(self._recent)
        if recent <= mean:
            return 0.0  # only unusually high raw scores matter (a flat line stays at exactly 0)
        tail = 0.5 * math.erfc((recent - mean) / spread / math.sqrt(2))
        return min(1.0, -math.log10(max(tail, 1e-300)) / self._decades)
