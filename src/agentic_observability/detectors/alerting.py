"""Turns component scores into one detector: warm-up, one scale, one alert per episode.

Every component maps a sample to [0, 1]. The detector's score is the highest of them, with two
rules on top, because a threshold on raw scores would fire on every sample of a long anomaly:
- Warm-up: nothing scores above 0 before ``warmup`` samples.
- Episodes: after a sample crosses the threshold, the same kind of signal stays just below it for
  ``episode_gap`` samples. A range breach (a new extreme) has its own, shorter gap, so an extreme
  right after an unrelated alert is not swallowed by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from agentic_observability.detectors.extremes import RangeBreach

BREACH_GAP = 20


class Component(Protocol):
    def update(self, value: float) -> float: ...


class BandSource(Protocol):
    def band(self) -> tuple[float, float] | None: ...


class Alerting:
    def __init__(
        self,
        name: str,
        components: Sequence[Component],
        threshold: float,
        episode_gap: int,
        breach: RangeBreach | None = None,
        band_source: BandSource | None = None,
        warmup: int = 150,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self._components = list(components)
        self._breach = breach
        self._band_source = band_source or breach
        self._warmup, self._gap = warmup, episode_gap
        self._breach_gap = min(BREACH_GAP, episode_gap)
        self._seen = 0
        self._since_alert = self._since_breach = episode_gap
        self.last_raw = np.zeros(0)

    def rearm(self) -> None:
        """Forget when it last alerted (after warming up on history: the live series may page)."""
        self._since_alert = self._since_breach = self._gap

    def band(self) -> tuple[float, float] | None:
        return self._band_source.band() if self._band_source else None

    def score(self, values: np.ndarray) -> np.ndarray:
        """Alert scores: at most one at the threshold per ``episode_gap`` samples (one page per
        episode). ``last_raw`` keeps the same samples' scores before that gating: how anomalous each
        sample is, which is what keeps an open episode open."""
        pairs = [self._one(float(v)) for v in np.asarray(values, dtype=float)]
        self.last_raw = np.array([raw for _, raw in pairs])
        return np.array([gated for gated, _ in pairs])

    def _one(self, value: float) -> tuple[float, float]:
        self._seen += 1
        self._since_alert += 1
        self._since_breach += 1
        if not math.isfinite(value):
            return 0.0, 0.0  # a gap in the data is not evidence of anything; it is skipped
        breach = self._breach_score(value)
        score = max((c.update(value) for c in self._components), default=0.0)
        if self._seen <= self._warmup:
            return 0.0, 0.0
        raw = max(breach, score)
        if breach >= self.threshold and self._since_breach >= self._breach_gap:
            self._since_breach = 0
            return raw, raw
        return self._gated(max(score, min(breach, self.threshold * 0.999))), raw

    def _breach_score(self, value: float) -> float:
        if self._breach is None:
            return 0.0
        excess = self._breach.update(value)
        if excess <= 0:
            return 0.0
        return min(1.0, self.threshold + (1 - self.threshold) * excess)

    def _gated(self, score: float) -> float:
        if score < self.threshold:
            return score
        if self._since_alert < self._gap:
            return self.threshold * 0.999  # same episode: stay just below
        self._since_alert = 0
        return score
