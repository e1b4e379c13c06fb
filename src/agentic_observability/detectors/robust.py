"""Robust baseline detector with an anomaly likelihood on top.

1. Deviation: each sample against the median of the trailing ``window`` samples, in units of their
   MAD, floored relative to the level and the range so flat or near-constant series never divide by
   ~0 (a flat line scores 0). A short-window mean catches level shifts that single points miss.
2. Likelihood (the idea of Numenta's anomaly likelihood): how unusual the recent average deviation
   is compared with the series' own history of deviations, as a Gaussian tail probability on a log
   scale, so a series that is always noisy does not alert on its usual noise.
3. Warm-up: nothing scores above 0 before ``warmup`` samples. After a sample crosses the alert
   threshold, the same episode does not fire again for ``episode_gap`` samples (one alert per episode).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from agentic_observability.detectors import DEFAULT_THRESHOLD

BAND_WIDTH = 4.0  # robust deviations either side of the median that count as expected


class RobustLikelihood:
    name = "robust"

    def __init__(
        self,
        window: int = 1000,
        short: int = 5,
        likelihood_window: int = 1000,
        likelihood_short: int = 8,
        warmup: int = 150,
        episode_gap: int = 200,
        threshold: float = DEFAULT_THRESHOLD,
        extreme_at: float = 20.0,
    ) -> None:
        self.extreme_at = extreme_at
        self.window, self.short, self.warmup = window, short, warmup
        self.likelihood_short, self.episode_gap, self.threshold = likelihood_short, episode_gap, threshold
        self._values: deque[float] = deque(maxlen=window)
        self._recent: deque[float] = deque(maxlen=short)
        self._deviations: deque[float] = deque(maxlen=likelihood_window)
        self._seen = 0
        self._band: tuple[float, float] | None = None
        self._since_alert = episode_gap

    def band(self) -> tuple[float, float] | None:
        """The expected range for the next sample: the baseline median ± a few robust deviations."""
        return self._band

    def score(self, values: np.ndarray) -> np.ndarray:
        return np.array([self._one(float(v)) for v in np.asarray(values, dtype=float)])

    def _one(self, value: float) -> float:
        self._seen += 1
        self._since_alert += 1
        if not math.isfinite(value):
            return 0.0
        deviation = self._deviation(value)
        self._values.append(value)
        self._recent.append(value)
        if deviation is None:
            return 0.0
        likelihood = max(self._likelihood(math.log1p(deviation)), self._extreme(deviation))
        if self._seen <= self.warmup:
            return 0.0
        if likelihood >= self.threshold:
            if self._since_alert < self.episode_gap:
                return min(likelihood, self.threshold * 0.999)  # same episode: stay just below
            self._since_alert = 0
        return likelihood

    def _deviation(self, value: float) -> float | None:
        if len(self._values) < 10:
            return None
        history = np.fromiter(self._values, float)
        median = float(np.median(history))
        mad = 1.4826 * float(np.median(np.abs(history - median)))
        spread = float(history.max() - history.min())
        scale = max(mad, 0.01 * spread, 1e-3 * abs(median), 1e-9)
        self._band = (median - BAND_WIDTH * scale, median + BAND_WIDTH * scale)
        point = abs(value - median) / scale
        recent = np.fromiter(self._recent, float) if self._recent else np.array([value])
        shift = abs(float(np.mean([*recent, value])) - median) / scale * math.sqrt(len(recent) + 1) / 2
        return max(point, shift)

    def _extreme(self, deviation: float) -> float:
        """A point beyond ``extreme_at`` robust deviations alerts on its own, however the recent average
        looks: it scores the threshold there, rising to 1 at twice as far."""
        if deviation < self.extreme_at:
            return 0.0
        return min(
            self.threshold + (1 - self.threshold) * (deviation - self.extreme_at) / self.extreme_at, 1.0
        )

    def _likelihood(self, deviation: float) -> float:
        self._deviations.append(deviation)
        if len(self._deviations) < 20:
            return 0.0
        history = np.fromiter(self._deviations, float)
        past = history[: -self.likelihood_short] if len(history) > self.likelihood_short else history
        mean, std = float(past.mean()), float(past.std()) + 1e-3
        recent = float(history[-self.likelihood_short :].mean())
        if recent <= mean:
            return 0.0  # only unusually large deviations matter (a flat line stays at exactly 0)
        tail = 0.5 * math.erfc((recent - mean) / std / math.sqrt(2))
        return min(1.0, -math.log10(max(tail, 1e-300)) / 10)
