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
        self._buffer = np.empty(self._keep + self._keep // 4)  # trimmed every keep/4 samples
        self._windows = sliding_window_view(self._buffer, width)  # a view: follows the buffer
        self._length = 0
        self.pushed = 0  # samples seen; sample n is buffer[n - (pushed - _length)] while held

    def update(self, value: float) -> float | None:
        if self._length == self._buffer.size:  # amortised trim: keep the last ``_keep`` samples
            self._buffer[: self._keep] = self._buffer[self._length - self._keep : self._length]
            self._length = self._keep
        self._buffer[self._length] = value
        self._length += 1
        self.pushed += 1
        if self._length < 2 * self.width + 1:
            return None
        newest = self._length - self.width  # earlier subsequences must not overlap the newest
        distance = self._nearest(max(0, newest - self.history), newest - self.width)
        if distance is None:
            return None
        floor = RESOLUTION * abs(value) * math.sqrt(self.width)
        return distance if distance > floor else 0.0

    def nearest_before(self, cut: int) -> float | None:
        """Distance from the newest subsequence to the nearest one that ended before sample ``cut``
        (None if none is still held)."""
        first = self.pushed - self._length  # the sample number of buffer[0]
        newest = self._length - self.width
        end = min(cut - first - self.width + 1, newest - self.width)
        return self._nearest(max(0, newest - self.history), end)

    def _nearest(self, start: int, end: int) -> float | None:
        if end - start < 1:
            return None
        difference = self._windows[start:end] - self._windows[self._length - self.width]
        return math.sqrt(float(np.min(np.einsum("ij,ij->i", difference, difference))))


class DiscordScale:
    """One time scale: samples averaged in blocks of ``block``, discord, likelihood."""

    def __init__(self, block: int, width: int, history: int, likelihood_history: int) -> None:
        self.block = block
        self.distance = NearestDistance(width, history)
        self._likelihood = TailLikelihood(history=likelihood_history, recent=10)
        self._pending: list[float] = []
        self.score = 0.0

    def update(self, value: float) -> float:
        self._pending.append(value)
        if len(self._pending) == self.block:  # a block completes: its mean is the next sample
            distance = self.distance.update(sum(self._pending) / self.block)
            self._pending.clear()
            if distance is not None:
                self.score = self._likelihood.update(distance)
        return self.score

    def usual_distance(self) -> float | None:
        """The 95th percentile of the nearest-neighbour distances in the likelihood's history."""
        return self._likelihood.quantile(0.95)


class Discord:
    """The discord score of one series: the highest over its time scales.

    Given the alert ``threshold``, it also says when an anomaly is over. Its scores stay high while
    the anomaly is inside their windows (an hour at the coarse scale, at one sample a minute), which
    would hold a watch's episode open long after the metric recovered. So from the first high score
    on, the newest stretch is also compared with the series *before* that moment; once it is as
    close to that as stretches usually are to their neighbours, the score stays just below the
    threshold until it falls on its own.
    """

    def __init__(
        self,
        width: int = 16,
        history: int = 3000,
        blocks: tuple[int, ...] = (1, 4),
        threshold: float | None = None,
    ) -> None:
        self._scales = tuple(
            DiscordScale(block, width, history, likelihood_history=4000 // block) for block in blocks
        )
        self.threshold = threshold
        self._before: tuple[int, float | None] | None = None  # (cut, usual distance) of this episode

    def update(self, value: float) -> float:
        score = max(scale.update(value) for scale in self._scales)
        if self.threshold is None or score < self.threshold:
            self._before = None
            return score
        fine = self._scales[0]
        if self._before is None:  # the cut leaves out stretches that may hold the onset already
            self._before = (fine.distance.pushed - 2 * fine.distance.width, fine.usual_distance())
            return score
        cut, usual = self._before
        distance = fine.distance.nearest_before(cut)
        if usual is not None and distance is not None and distance <= usual:
            return self.threshold * 0.999  # the newest stretch looks like before again
        return score


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
