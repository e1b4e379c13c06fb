"""Subsequence discord: how unlike anything in its recent past the latest stretch of the series is.

This is the left matrix profile: the distance from the newest ``width``-sample subsequence to its
nearest neighbour among the earlier subsequences in a bounded history (trivial matches, which
overlap the newest one, excluded). A daily pattern repeats, so its subsequences have near
neighbours; a spike, a dip, a missing jump or a change of rhythm does not. Run at two time scales
(raw samples, and means of ``coarse`` samples) so both sharp and slow anomalies show, then turned
into a likelihood so each series is judged against its own usual distances.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agentic_observability.detectors.likelihood import TailLikelihood
from agentic_observability.detectors.ring import Ring

RESOLUTION = 1e-6  # distances below this fraction of the level (per sample) are rounding noise


class NearestDistance:
    """Distance from the newest subsequence to its nearest earlier one, one sample at a time."""

    def __init__(self, width: int = 16, history: int = 3000) -> None:
        self.width, self.history = width, history
        self._keep = history + 2 * width
        self._buffer = np.empty(2 * self._keep)
        self._length = 0

    def update(self, value: float) -> float | None:
        if self._length == self._buffer.size:  # amortised trim: keep the last ``_keep`` samples
            self._buffer[: self._keep] = self._buffer[self._length - self._keep : self._length]
            self._length = self._keep
        self._buffer[self._length] = value
        self._length += 1
        if self._length < 2 * self.width + 1:
            return None
        windows = sliding_window_view(self._buffer[: self._length], self.width)
        newest = len(windows) - 1
        end = newest - self.width  # earlier subsequences that do not overlap the newest
        if end < 1:
            return None
        start = max(0, newest - self.history)
        difference = windows[start:end] - windows[newest]
        distance = math.sqrt(float(np.min(np.einsum("ij,ij->i", difference, difference))))
        floor = RESOLUTION * abs(value) * math.sqrt(self.width)
        return distance if distance > floor else 0.0


class DiscordScale:
    """One time scale: samples averaged in blocks of ``block``, discord, likelihood."""

    def __init__(self, block: int, width: int, history: int, likelihood_history: int) -> None:
        self.block = block
        self._distance = NearestDistance(width, history)
        self._likelihood = TailLikelihood(history=likelihood_history, recent=10)
        self._pending: list[float] = []
        self.score = 0.0

    def update(self, value: float) -> float:
        self._pending.append(value)
        if len(self._pending) == self.block:  # a block completes: its mean is the next sample
            distance = self._distance.update(sum(self._pending) / self.block)
            self._pending.clear()
            if distance is not None:
                self.score = self._likelihood.update(distance)
        return self.score


class Discord:
    """The discord score of one series: the highest over its time scales."""

    def __init__(self, width: int = 16, history: int = 3000, blocks: tuple[int, ...] = (1, 4)) -> None:
        self._scales = tuple(
            DiscordScale(block, width, history, likelihood_history=4000 // block) for block in blocks
        )

    def update(self, value: float) -> float:
        return max(scale.update(value) for scale in self._scales)


class SeasonalDistance:
    """The newest stretch against the same stretch one and two days earlier (the nearer of the two).

    A metric with a tight daily shape (a nightly job, a business-hours curve) repeats itself; when
    it does not (the job did not run, the peak came at the wrong hour) the distance jumps far above
    its usual level, although every value is an ordinary one. Only overwhelming evidence counts
    (``DECADES``: 0.7 at a tail probability of 1e-14), so series without a daily shape stay quiet.
    Lags count samples, so it needs the sampling interval.
    """

    DECADES = 20.0

    def __init__(self, interval: float, width: int = 64) -> None:
        per_day = round(86_400 / interval)
        self.width = min(width, max(per_day // 4, 1))
        self.lags = (per_day, 2 * per_day)
        self._ring = Ring(2 * per_day + self.width)
        self._likelihood = TailLikelihood(history=4000, recent=10, decades=self.DECADES)

    def update(self, value: float) -> float:
        self._ring.push(value)
        newest = self._ring.stretch(0, self.width)
        earlier = [self._ring.stretch(lag, self.width) for lag in self.lags]
        if newest is None or earlier[0] is None:
            return 0.0
        distances = [float(np.sqrt(np.sum((newest - e) ** 2))) for e in earlier if e is not None]
        return self._likelihood.update(min(distances))
