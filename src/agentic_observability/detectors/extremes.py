"""Range breach: a value beyond everything the series has shown so far, by more than a margin.

The margin is a fraction of the range seen (5%, as in Numenta's "spatial anomaly" check), floored
relative to the level so near-constant series cannot breach on rounding noise. Cheap, and on real
server metrics the most reliable single signal: a new all-time high in latency or errors matters.
"""

from __future__ import annotations

import math

MARGIN = 0.05
LEVEL_FLOOR = 1e-3  # the margin is at least this fraction of the level


class RangeBreach:
    def __init__(self, learn: int = 150) -> None:
        self._learn = learn
        self._seen = 0
        self.low = math.inf
        self.high = -math.inf

    def update(self, value: float) -> float:
        """How far beyond the range (margin included) the value is, as a fraction of the range;
        0 inside it. Learns the value afterwards."""
        excess = self._excess(value) if self._seen >= self._learn else 0.0
        self._seen += 1
        self.low, self.high = min(self.low, value), max(self.high, value)
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
        return beyond / spread if beyond > 0 else 0.0
