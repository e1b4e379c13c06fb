"""The raw distances of the default detector's components for a block of one series' samples.

What ``Discord``'s two time scales and ``SeasonalDistance`` (discord.py) compute per sample before
their likelihoods, computed for a whole block: they depend only on the series' own history, so
they need no step-by-step state beyond it. Same arithmetic, same bits (see profile.py) for the
values of the block; the held values before it are float32 offsets (histories.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agentic_observability.detectors.histories import Histories
from agentic_observability.detectors.profile import nearest_distances


@dataclass(frozen=True)
class Seasonal:
    width: int
    lags: tuple[int, int]

    @property
    def keep(self) -> int:
        return self.lags[1] + self.width


def seasonal_reference(interval: float, width: int = 64) -> Seasonal:
    """The lags and width ``SeasonalDistance(interval)`` uses."""
    per_day = round(86_400 / interval)
    return Seasonal(min(width, max(per_day // 4, 1)), (per_day, 2 * per_day))


def seasonal_distances(joined: np.ndarray, pushed: int, new: int, seasonal: Seasonal) -> np.ndarray:
    """``SeasonalDistance``'s distance for each of the last ``new`` values of ``joined`` (``pushed``
    values came before ``joined[0]``): the nearer of one and two days back; NaN before a day."""
    out = np.full(new, np.nan)
    width, first = seasonal.width, joined.size - new
    counts = pushed + np.arange(first, joined.size) + 1  # values pushed once each new one is
    for lag in seasonal.lags:
        ready = counts - lag - width >= 0
        if not ready.any():
            continue
        start = first + int(np.argmax(ready))  # the first new value with this lag held
        squares = (joined[start - width + 1 :] - joined[start - width + 1 - lag : joined.size - lag]) ** 2
        distance = np.sqrt(sliding_window_view(squares, width).sum(axis=-1))
        part = out[start - first :]
        out[start - first :] = np.where(np.isnan(part), distance, np.minimum(part, distance))
    return out


def seasonal_poll(histories: Histories, rows: np.ndarray, seasonal: Seasonal) -> np.ndarray:
    """``seasonal_distances`` for one value just pushed to each of ``rows`` of ``histories``."""
    width, keep = seasonal.width, histories.keep
    pushed = histories.pushed[rows]
    newest = histories.columns(rows, keep - width, keep).astype(float)
    out = np.full(rows.size, np.nan)
    for lag in seasonal.lags:
        earlier = histories.columns(rows, keep - lag - width, keep - lag).astype(float)
        distance = np.sqrt(np.sum((newest - earlier) ** 2, axis=1))
        ready = pushed - lag - width >= 0
        out = np.where(ready, np.where(np.isnan(out), distance, np.minimum(out, distance)), out)
    return out


def block_means(
    pending: np.ndarray, new: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, at, left): the means of the blocks that ``new`` completes (after the ``pending``
    values of an unfinished one), the index in ``new`` of the value completing each, and the
    values left pending. Summed left to right, as ``sum()`` of the pending list does."""
    values = np.concatenate((pending, new))
    complete = values.size // block
    grouped = values[: complete * block].reshape(complete, block)
    total = grouped[:, 0].copy()
    for column in range(1, block):
        total += grouped[:, column]
    at = np.arange(1, complete + 1) * block - 1 - pending.size
    return total / block, at, values[complete * block :]


def fine_distances(joined: np.ndarray, pushed: int, new: int, width: int, history: int) -> np.ndarray:
    return nearest_distances(joined, pushed, new, width, history)
