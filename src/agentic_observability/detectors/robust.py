"""Robust baseline: each sample against a rolling median, in units of the rolling MAD, and against
the same time yesterday and last week when the sampling interval is known.

- The scale is floored relative to the level and the range, so flat or near-constant series never
  divide by ~0 (a flat line scores 0).
- Seasonal references (the idea of grafana/promql-anomaly-detection's ``robust`` strategy): with
  one sample every ``interval`` seconds, the samples one day, two days and one week back (± 2
  samples) give a reference level. A sample counts as deviating only if it is unusual against both
  the recent level and that reference, so a daily peak that happened yesterday too is not news.
- A short-window mean catches level shifts that single points miss.
The deviation then goes through the anomaly likelihood (likelihood.py).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from agentic_observability.detectors import DEFAULT_THRESHOLD
from agentic_observability.detectors.likelihood import TailLikelihood
from agentic_observability.detectors.ring import Ring

BAND_WIDTH = 4.0  # robust deviations either side of the reference that count as expected
DAY, WEEK = 86_400.0, 7 * 86_400.0
NEIGHBOURS = 2
EXTREME = 20.0  # robust deviations that reach the default threshold on their own


def centre_and_scale(history: np.ndarray, spread_share: float) -> tuple[float, float]:
    """Median and robust scale (1.4826 MAD), the scale floored at ``spread_share`` of the range and
    a thousandth of the level, so flat or near-constant history never divides by ~0."""
    median = float(np.median(history))
    mad = 1.4826 * float(np.median(np.abs(history - median)))
    spread = float(history.max() - history.min())
    return median, max(mad, spread_share * spread, 1e-3 * abs(median), 1e-9)


class SeasonalHistory:
    """A ring of the last week of samples, read back at day and week lags."""

    def __init__(self, interval: float) -> None:
        self.lags = [round(DAY / interval), round(2 * DAY / interval), round(WEEK / interval)]
        self._ring = Ring(self.lags[-1] + NEIGHBOURS + 1)
        self.push = self._ring.push

    def reference(self) -> float | None:
        """Median of the samples around each available lag before the next sample (NaN-free)."""
        around = 2 * NEIGHBOURS + 1  # the lag's own sample and NEIGHBOURS either side
        stretches = [self._ring.stretch(lag - NEIGHBOURS - 1, around) for lag in self.lags]
        picks = np.concatenate([s for s in stretches if s is not None] or [np.empty(0)])
        found = picks[np.isfinite(picks)]
        return float(np.median(found)) if found.size else None


class RobustDeviation:
    def __init__(self, window: int = 1000, short: int = 5, interval: float | None = None) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._recent: deque[float] = deque(maxlen=short)
        self._seasons = SeasonalHistory(interval) if interval and interval < DAY / 4 else None
        self._likelihood = TailLikelihood(history=1000, recent=8)
        self._band: tuple[float, float] | None = None

    def band(self) -> tuple[float, float] | None:
        return self._band

    def update(self, value: float) -> float:
        deviation = self._deviation(value)
        self._values.append(value)
        self._recent.append(value)
        if self._seasons:
            self._seasons.push(value)
        if deviation is None:
            return 0.0
        # a point beyond EXTREME deviations alerts on its own, however the recent average looks
        return max(
            self._likelihood.update(math.log1p(deviation)), min(1.0, DEFAULT_THRESHOLD * deviation / EXTREME)
        )

    def _deviation(self, value: float) -> float | None:
        if len(self._values) < 10:
            return None
        median, scale = centre_and_scale(np.fromiter(self._values, float), spread_share=0.01)
        reference = self._seasons.reference() if self._seasons else None
        centre = median if reference is None else reference
        self._band = (centre - BAND_WIDTH * scale, centre + BAND_WIDTH * scale)
        recent = [*self._recent, value]
        point = abs(value - median) / scale
        shift = abs(sum(recent) / len(recent) - median) / scale * math.sqrt(len(recent)) / 2
        deviation = max(point, shift)
        if reference is not None:  # unusual against the recent level *and* the seasonal one
            deviation = min(deviation, abs(value - reference) / scale)
        return deviation
