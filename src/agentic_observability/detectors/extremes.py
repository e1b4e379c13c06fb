"""Range breach: a value beyond everything the series has shown so far, by more than a margin.

The margin is a fraction of the range seen (5%, as in Numenta's "spatial anomaly" check), floored
relative to the level so near-constant series cannot breach on rounding noise. A breach must also
lie more than ``SIGMAS`` standard deviations from the mean of everything seen: plain noise sets new
records now and then, just not that far out. Cheap, and on real server metrics the most reliable
single signal: a new all-time high in latency or errors matters.
"""

from __future__ import annotations

import math

MARGIN = 0.05
LEVEL_FLOOR = 1e-3  # the margin is at least this fraction of the level
SIGMAS = 4.0


class RangeBreach:
    def __init__(self, learn: int = 150) -> None:
        self._learn = learn
        self._seen = 0
        self.low = math.inf
        self.high = -math.inf
        self._mean = self._sum_sq_dev = 0.0  # Welford's running mean and variance

    def update(self, value: float) -> float:
        """How far beyond the range (margin included) the value is, as a fraction of the range;
        0 inside it. Learns the value afterwards."""
        excess = self._excess(value) if self._seen >= self._learn else 0.0
        self._seen += 1
        self.low, self.high = min(self.low, value), max(self.high, value)
        delta = value - self._mean
        self._mean += delta / self._seen
        self._sum_sq_dev += delta * (value - self._mean)
        return excess

    def band(self) -> tuple[float, float] | None:
        if self._seen < self._learn:
            return None
        margin = self._margin()
        return self.low - margin, self.high + margin

    def _margin(self) -> float:
        level = max(abs(self.low), abs(self.high))
        return max(MARGIN * (self.high - self.low), LEVEL_FLOOR * level)

    def _excess(self, value: float) -> float:
        spread = self.high - self.low
        if spread <= 0:
            return 0.0  # a flat history has no range to breach yet; the discord score covers it
        margin = self._margin()
        beyond = max(value - (self.high + margin), (self.low - margin) - value)
        deviation = math.sqrt(self._sum_sq_dev / self._seen)
        if beyond <= 0 or abs(value - self._mean) <= SIGMAS * deviation:
            return 0.0
        return beyond / spread
