"""``RangeBreach`` (extremes.py) and ``Alerting``'s gating (alerting.py) across many series, one
sample of each per step, with the per-series classes' arithmetic in the same order (same bits)."""

from __future__ import annotations

import numpy as np

from agentic_observability.detectors.extremes import LEVEL_FLOOR, MARGIN, SIGMAS

LEARN, WARMUP = 150, 150  # RangeBreach's and Alerting's defaults


class Breaches:
    def __init__(self, series: int) -> None:
        self.seen = np.zeros(series, np.int64)
        self.low = np.full(series, np.inf)
        self.high = np.full(series, -np.inf)
        self.mean = np.zeros(series)
        self.sum_sq_dev = np.zeros(series)  # Welford's running mean and variance

    @property
    def nbytes(self) -> int:
        return 5 * self.mean.nbytes

    def update(self, value: np.ndarray, rows: np.ndarray, threshold: float) -> np.ndarray:
        """``Alerting._breach_score`` of each value (``RangeBreach.update``, then mapped to [0, 1])."""
        excess = np.where(self.seen[rows] >= LEARN, self._excess(value, rows), 0.0)
        seen = self.seen[rows] + 1
        self.seen[rows] = seen
        self.low[rows] = np.minimum(self.low[rows], value)
        self.high[rows] = np.maximum(self.high[rows], value)
        delta = value - self.mean[rows]
        mean = self.mean[rows] + delta / seen
        self.mean[rows] = mean
        self.sum_sq_dev[rows] += delta * (value - mean)
        return np.where(excess > 0, np.minimum(1.0, threshold + (1 - threshold) * excess), 0.0)

    def bands(self) -> tuple[np.ndarray, np.ndarray]:
        margin = self._margin(self.low, self.high)
        learning = self.seen < LEARN
        return np.where(learning, np.nan, self.low - margin), np.where(learning, np.nan, self.high + margin)

    @staticmethod
    def _margin(low: np.ndarray, high: np.ndarray) -> np.ndarray:
        level = np.maximum(np.abs(low), np.abs(high))
        return np.maximum(MARGIN * (high - low), LEVEL_FLOOR * level)

    def _excess(self, value: np.ndarray, rows: np.ndarray) -> np.ndarray:
        low, high, mean = self.low[rows], self.high[rows], self.mean[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = high - low
            margin = self._margin(low, high)
            beyond = np.maximum(value - (high + margin), (low - margin) - value)
            deviation = np.sqrt(self.sum_sq_dev[rows] / np.maximum(self.seen[rows], 1))
            quiet = (spread <= 0) | (beyond <= 0) | (np.abs(value - mean) <= SIGMAS * deviation)
            return np.where(quiet, 0.0, beyond / np.where(spread > 0, spread, 1.0))


class Gating:
    """Warm-up and one alert per episode (``Alerting``), across series."""

    def __init__(self, series: int, threshold: float, gap: int, breach_gap: int) -> None:
        self.threshold, self.gap, self.breach_gap = threshold, gap, breach_gap
        self.seen = np.zeros(series, np.int64)
        self.since_alert = np.full(series, gap, np.int64)
        self.since_breach = np.full(series, gap, np.int64)

    @property
    def nbytes(self) -> int:
        return 3 * self.seen.nbytes

    def rearm(self, rows: np.ndarray | slice) -> None:
        self.since_alert[rows] = self.gap
        self.since_breach[rows] = self.gap

    def advance(self, rows: np.ndarray) -> None:
        """Every series counts every sample, a gap in its data included."""
        self.seen[rows] += 1
        self.since_alert[rows] += 1
        self.since_breach[rows] += 1

    def gate(self, rows: np.ndarray, breach: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        below = self.threshold * 0.999
        warm = self.seen[rows] > WARMUP
        raw = np.where(warm, np.maximum(breach, score), 0.0)
        paged = warm & (breach >= self.threshold) & (self.since_breach[rows] >= self.breach_gap)
        self.since_breach[rows[paged]] = 0
        candidate = np.maximum(score, np.minimum(breach, below))
        high = warm & ~paged & (candidate >= self.threshold)
        same_episode = high & (self.since_alert[rows] < self.gap)
        self.since_alert[rows[high & ~same_episode]] = 0
        alert = np.where(same_episode, below, candidate)
        return np.where(paged, raw, np.where(warm, alert, 0.0)), raw
