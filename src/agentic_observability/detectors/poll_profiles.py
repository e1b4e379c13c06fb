"""The discord's distances for one new sample per series (a watch's poll), O(history) per series.

``NearestDistance`` (discord.py) measures the newest window against ~3,000 earlier ones per sample:
48,000 multiply-adds, which for 100,000 series is more than a poll's budget. But the distances of
consecutive windows are related (``D`` the squared distance of windows at ``i``, ``j``)::

    D(i + 1, j + 1) = D(i, j) - (x[i] - x[j])**2 + (x[i + w] - x[j + w])**2

so each series keeps its last row of distances (its *profile*, float32) and a poll updates it in
one compiled pass per series (profile_kernels.py), which also finds the nearest window and the next
nearest. The profile is only a guide: its rounding error is bounded (``_bound``), every window
within that bound of the smallest is then measured exactly as ``NearestDistance`` measures it (same
numpy calls, in float64, on the held float32 values: see histories.py), and the profile is
recomputed exactly every ``REFRESH`` polls (staggered across series) so the bound stays small.

Layout: ``Histories`` are rings read right-aligned (histories.py), so for a series that has pushed
``P`` values, value ``i`` is at logical column ``keep - P + i`` and profile column ``c`` is the
window starting at value ``P - 2w - J + c`` (``J = history - w`` columns; the newest window starts
at ``P - w``): column ``c`` is always the same lag, so a poll updates the profile in place.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from agentic_observability.detectors.discord import RESOLUTION
from agentic_observability.detectors.histories import Histories

REFRESH = 32  # polls between exact recomputes of a series' profile
CAP = 64  # candidate windows per series before it is measured whole instead
EPS32 = float(np.finfo(np.float32).eps)


class Profiles:
    def __init__(self, series: int, width: int, history: int) -> None:
        self.width, self.columns = width, history - width
        self.squared = np.full((series, self.columns), np.inf, np.float32)
        self.steps = np.full(series, -1, np.int64)  # updates since exact (-1: stale, recompute)
        self.low = np.full(series, np.inf)  # every value pushed: bounds the rounding error
        self.high = np.full(series, -np.inf)

    @property
    def nbytes(self) -> int:
        return self.squared.nbytes + self.steps.nbytes + 2 * self.low.nbytes

    @staticmethod
    def _kernels() -> ModuleType:
        """profile_kernels, imported at the first poll: numba costs ~0.2 s and ~120 MiB to import,
        which ``detect`` and ``backtest`` (block scoring only) need not pay."""
        from agentic_observability.detectors import profile_kernels

        profile_kernels.ready()
        return profile_kernels

    def stale(self, rows: np.ndarray, block: np.ndarray) -> None:
        """A block was pushed some other way: recompute these rows' profiles at their next poll
        (or at ``prepare``)."""
        self.steps[rows] = -1
        finite = np.isfinite(block)
        self.low[rows] = np.minimum(self.low[rows], np.where(finite, block, np.inf).min(axis=1))
        self.high[rows] = np.maximum(self.high[rows], np.where(finite, block, -np.inf).max(axis=1))

    def prepare(self, histories: Histories, rows: np.ndarray) -> None:
        """Recompute stale profiles now (after a warm-up), staggered so that their refreshes do not
        all fall on the same later poll."""
        stale = rows[self.steps[rows] < 0]
        self._step(histories, stale, np.ones(stale.size, bool))
        self.steps[stale] = stale % REFRESH

    def poll(self, histories: Histories, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Push one of ``values`` to each of ``rows`` (distinct) of ``histories`` and return what
        ``NearestDistance.update`` returns for it (NaN for None)."""
        self.low[rows] = np.minimum(self.low[rows], values)
        self.high[rows] = np.maximum(self.high[rows], values)
        histories.push(rows, values)  # one value per row (a ring): nothing moves
        steps = self.steps[rows]
        fresh = (steps < 0) | (steps >= REFRESH - 1)
        found = self._step(histories, rows, fresh)
        self.steps[rows] = np.where(fresh, 0, steps + 1)
        return self._nearest(histories, rows, values, found)

    def _step(
        self, histories: Histories, rows: np.ndarray, fresh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offset = _offset(histories, self)
        return self._kernels().step(
            histories.values, rows, histories.pushed, fresh, offset, self.width, self.squared
        )

    def nearest_before(self, histories: Histories, rows: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """``NearestDistance._nearest`` over the windows that start before ``ends`` (a value index
        per row), for rows just polled: the exact distance (NaN for None), found as ``_nearest``
        finds the unrestricted one. Profile column ``c`` is the window at value
        ``pushed - w - history + c`` (module doc), so the windows before the end are a prefix."""
        first = histories.pushed[rows] - 2 * self.width - self.columns
        upto = np.clip(ends - first, 0, self.columns).astype(np.int64)
        column, smallest, second = self._kernels().nearest(self.squared, rows, upto)
        out = np.full(rows.size, np.nan)
        measure = np.flatnonzero(np.isfinite(smallest))
        if measure.size:
            limit = _limit(smallest, self._bound(rows))
            out[measure] = self._measure(histories, rows, (column, second, limit), measure, upto)
        return out

    def _bound(self, rows: np.ndarray) -> np.ndarray:
        """How far a profile value may be from the exact squared distance: each window term is at
        most range**2, a value at most (w + 1) * range**2; each update rounds four times and the
        exact recompute once, each by at most EPS32 of that."""
        spread = np.square(self.high[rows] - self.low[rows])
        return (2 + 4 * self.steps[rows]) * (self.width + 1) * EPS32 * spread

    def _nearest(
        self,
        histories: Histories,
        rows: np.ndarray,
        values: np.ndarray,
        found: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Each row's exact nearest distance from what the step found (column, smallest, second)."""
        out = np.full(rows.size, np.nan)
        column, smallest, second = found
        floor = RESOLUTION * np.abs(values) * math.sqrt(self.width)
        defined = np.isfinite(smallest)
        bound = self._bound(rows)
        # below rounding noise: the per-sample detector returns 0 there whatever the window
        settled = defined & (smallest + bound < floor * floor * (1 - 1e-9))
        out[settled] = 0.0
        measure = np.flatnonzero(defined & ~settled)
        if measure.size:
            limit = _limit(smallest, bound)
            exact = self._measure(histories, rows, (column, second, limit), measure)
            out[measure] = np.where(exact > floor[measure], exact, 0.0)
        return out

    def _measure(
        self,
        histories: Histories,
        rows: np.ndarray,
        found: tuple[np.ndarray, np.ndarray, np.ndarray],
        measure: np.ndarray,
        upto: np.ndarray | None = None,
    ) -> np.ndarray:
        """Exact nearest distances of ``rows[measure]``: the profile's nearest window and any other
        within ``limit`` (the second smallest tells whether there is one) measured as
        ``NearestDistance`` measures them. ``found``: (column, second, limit) per row."""
        column, second, limit = found
        best = self._squared(histories, rows[measure], column[measure])
        rivals = np.flatnonzero(second[measure] <= limit[measure])
        if rivals.size:
            best[rivals] = np.minimum(
                best[rivals], self._rivals(histories, rows, limit, measure[rivals], upto)
            )
        return np.sqrt(best)

    def _rivals(
        self,
        histories: Histories,
        rows: np.ndarray,
        limit: np.ndarray,
        which: np.ndarray,
        upto: np.ndarray | None = None,
    ) -> np.ndarray:
        """The smallest exact squared distance among each row's windows within its limit (and
        before each row's column ``upto``, when given)."""
        profile = self.squared[rows[which]]
        if upto is not None:
            profile[np.arange(self.columns)[None, :] >= upto[which, None]] = np.inf
        index, column = np.nonzero(profile <= limit[which, None])
        counts = np.bincount(index, minlength=which.size)
        best = np.full(which.size, np.inf)
        few = counts[index] <= CAP
        np.minimum.at(best, index[few], self._squared(histories, rows[which[index[few]]], column[few]))
        for many in np.flatnonzero(counts > CAP):  # a flat or repeating series: measure it whole
            row = which[many]
            best[many] = self._whole(
                histories, int(rows[row]), self.columns if upto is None else int(upto[row])
            )
        return best

    def _squared(self, histories: Histories, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Exact squared distances from each row's newest window to the one at its profile column."""
        w, keep, offset = self.width, histories.keep, _offset(histories, self)
        starts = offset + w + columns
        windows = histories.gather(rows, starts[:, None] + np.arange(w)).astype(float)
        newest = histories.gather(rows, np.arange(keep - w, keep)[None, :])
        return _exact(windows, newest.astype(float))

    def _whole(self, histories: Histories, row: int, upto: int) -> float:
        w, columns, offset = self.width, self.columns, _offset(histories, self)
        held = histories.columns(np.array([row]), 0, histories.keep)[0].astype(float)
        first = max(0, columns - (int(histories.pushed[row]) - 2 * w))
        starts = offset + w + np.arange(first, upto)
        windows = held[starts[:, None] + np.arange(w)]
        return float(np.min(_exact(windows, held[held.size - w :])))


def _exact(windows: np.ndarray, newest: np.ndarray) -> np.ndarray:
    """Squared distances computed as ``NearestDistance._nearest`` computes them (same bits)."""
    difference = windows - newest
    return np.einsum("ij,ij->i", difference, difference)


def _limit(smallest: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """The largest profile value a window may have and still be as near as the nearest one."""
    return (smallest + bound) * (1 + 1e-6) + bound


def _offset(histories: Histories, profiles: Profiles) -> int:
    """Columns a history keeps beyond the discord's own ``history + 2 w`` (for the day-ago part)."""
    return histories.keep - (profiles.columns + 3 * profiles.width)
