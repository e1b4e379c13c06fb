"""Level-shift detector: two-sided CUSUM (Page) on samples standardised by a robust baseline.

Small persistent shifts add up where single points stay inside the noise. After a change is
signalled the baseline is relearned at the new level, so one shift is one signal.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from agentic_observability.detectors import DEFAULT_THRESHOLD
from agentic_observability.detectors.robust import centre_and_scale

DRIFT = 0.5  # allowance per sample, in robust standard deviations
LIMIT = 12.0  # the accumulated excess (robust standard deviations) that reaches the default threshold
RELEARN = 30  # samples of the new level before scoring resumes


class LevelShift:
    def __init__(self, window: int = 300) -> None:
        self._baseline: deque[float] = deque(maxlen=window)
        self._up = self._down = 0.0
        self._centre = self._scale = 0.0
        self._stale = True

    def update(self, value: float) -> float:
        if len(self._baseline) < RELEARN:
            self._baseline.append(value)
            self._stale = True
            return 0.0
        if self._stale:
            self._refresh()
        z = (value - self._centre) / self._scale
        self._up = max(0.0, self._up + z - DRIFT)
        self._down = max(0.0, self._down - z - DRIFT)
        statistic = max(self._up, self._down)
        if statistic >= LIMIT:  # a change: relearn the level from here
            self._baseline.clear()
            self._up = self._down = 0.0
        else:
            self._baseline.append(value)
            if len(self._baseline) % 10 == 0:
                self._stale = True
        return min(1.0, DEFAULT_THRESHOLD * statistic / LIMIT)

    def _refresh(self) -> None:
        history = np.fromiter(self._baseline, float)
        self._centre, self._scale = centre_and_scale(history, spread_share=0.05)
        self._stale = False
