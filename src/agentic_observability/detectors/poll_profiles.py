"""The discord's distances for one new sample per series (a watch's poll), O(history) per series.

``NearestDistance`` (discord.py) measures the newest window against ~3,000 earlier ones per sample:
48,000 multiply-adds, which for 100,000 series is more than numpy does in a poll's budget. But the
distances of consecutive windows are related (``D`` the squared distance of windows at ``i``, ``j``)::

    D(i + 1, j + 1) = D(i, j) - (x[i] - x[j])**2 + (x[i + w] - x[j + w])**2

so each series keeps its last row of distances (its *profile*, float32) and a poll updates it in
six passes over the row, vectorised across series. The profile is only a guide: its rounding error
is bounded (``_bound``), every window within that bound of the smallest is then measured exactly as
``NearestDistance`` measures it (same numpy calls, so the same bits), and the profile is recomputed
exactly every ``REFRESH`` polls (staggered across series) so the bound stays small.

Layout: ``Histories`` are right-aligned, so for a series that has pushed ``P`` values, value ``i``
is at column ``keep - P + i`` and profile column ``c`` is the window starting at value
``P - 2w - J + c`` (``J = history - w`` columns; the newest window starts at ``P - w``): the same
columns for every series, whatever its age, which is what lets one numpy call cover them all.
"""

from __future__ import annotations

import math

import numpy as np

from agentic_observability.detectors.discord import RESOLUTION
from agentic_observability.detectors.histories import Histories, contiguous

REFRESH = 32  # polls between exact recomputes of a series' profile
TILE = 128  # series per numpy pass: the tile's rows (3 MiB of history) stay in cache between passes
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
        for tile in _tiles(stale):
            self._rebuild(histories, tile)
        self.steps[stale] = stale % REFRESH

    def poll(self, histories: Histories, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Push one of ``values`` to each of ``rows`` of ``histories`` and return what
        ``NearestDistance.update`` returns for it (NaN for None). Tile by tile: a tile's rows are
        still in cache when they are read after the push."""
        self.low[rows] = np.minimum(self.low[rows], values)
        self.high[rows] = np.maximum(self.high[rows], values)
        out = np.full(rows.size, np.nan)
        scratch = np.empty((2, min(TILE, rows.size), self.columns), np.float32)
        for start in range(0, rows.size, TILE):
            part = slice(start, start + TILE)
            histories.push(rows[part], values[part])
            out[part] = self._poll_tile(histories, rows[part], values[part], scratch)
        return out

    def _poll_tile(
        self, histories: Histories, rows: np.ndarray, values: np.ndarray, scratch: np.ndarray
    ) -> np.ndarray:
        fresh = (self.steps[rows] < 0) | (self.steps[rows] >= REFRESH - 1)
        self._advance(histories, rows, scratch)  # all of the tile (views); then the fresh anew
        self._rebuild(histories, rows[fresh])
        self.steps[rows] = np.where(fresh, 0, self.steps[rows] + 1)
        return self._nearest(histories, rows, values)

    def _advance(self, histories: Histories, rows: np.ndarray, scratch: np.ndarray) -> None:
        """One step of the recurrence, and the new window a young series gains at its low end.
        Differences in float64 (the values may sit far from zero), rounded once to float32."""
        w, columns, offset = self.width, self.columns, _offset(histories, self)
        where = contiguous(rows)
        held = histories.values[where]
        keep = held.shape[1]
        leaving, entering = scratch[0, : rows.size], scratch[1, : rows.size]
        np.subtract(
            held[:, offset + w - 1 : offset + w - 1 + columns],
            held[:, keep - w - 1, None],
            out=leaving,
            casting="unsafe",
        )
        np.subtract(
            held[:, offset + 2 * w - 1 : offset + 2 * w - 1 + columns],
            held[:, keep - 1, None],
            out=entering,
            casting="unsafe",
        )
        np.multiply(leaving, leaving, out=leaving)
        np.multiply(entering, entering, out=entering)
        np.subtract(entering, leaving, out=entering)
        if isinstance(where, slice):
            self.squared[where] += entering  # in place: no copy of the tile's profiles
        else:
            self.squared[where] = self.squared[where] + entering
        age = histories.pushed[rows] - 2 * w
        young = np.flatnonzero((age >= 1) & (age <= columns))
        if young.size:  # the window at value 0 joins while fewer than ``history`` windows are held
            self._first_window(histories, rows[young])

    def _first_window(self, histories: Histories, rows: np.ndarray) -> None:
        w, keep = self.width, histories.keep
        pushed = histories.pushed[rows]
        first = (keep - pushed)[:, None] + np.arange(w)  # columns of values 0 .. w - 1
        oldest = histories.values[rows[:, None], first]
        newest = histories.values[rows, keep - w :]
        column = self.columns - (pushed - 2 * w)
        self.squared[rows, column] = _exact(oldest, newest)

    def _rebuild(self, histories: Histories, rows: np.ndarray) -> None:
        """Exact profiles (up to one float32 rounding) of these rows, from their histories."""
        if not rows.size:
            return
        w, columns, offset = self.width, self.columns, _offset(histories, self)
        held = histories.values[contiguous(rows)]
        keep = held.shape[1]
        total = np.zeros((rows.size, columns))
        for k in range(w):
            total += np.square(
                held[:, offset + w + k : offset + w + k + columns] - held[:, keep - w + k, None]
            )
        valid = np.arange(columns)[None, :] >= (columns - (histories.pushed[rows] - 2 * w))[:, None]
        self.squared[rows] = np.where(valid, total, np.inf).astype(np.float32)

    def _bound(self, rows: np.ndarray) -> np.ndarray:
        """How far a profile value may be from the exact squared distance: each window term is at
        most range**2, a value at most (w + 1) * range**2; each update rounds four times and the
        exact recompute once, each by at most EPS32 of that."""
        spread = np.square(self.high[rows] - self.low[rows])
        return (2 + 4 * self.steps[rows]) * (self.width + 1) * EPS32 * spread

    def _nearest(self, histories: Histories, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.full(rows.size, np.nan)
        profile = self.squared[contiguous(rows)]
        nearest = profile.argmin(axis=1)
        smallest = profile[np.arange(rows.size), nearest].astype(float)
        bound = self._bound(rows)
        limit = (smallest + bound) * (1 + 1e-6) + bound  # any window that may be as near
        floor = RESOLUTION * np.abs(values) * math.sqrt(self.width)
        defined = np.isfinite(smallest)
        settled = defined & (smallest + bound < floor * floor * (1 - 1e-9))  # below rounding noise
        out[settled] = 0.0
        measure = np.flatnonzero(defined & ~settled)
        if measure.size:
            exact = self._measure(histories, rows, profile, nearest, limit, measure)
            out[measure] = np.where(exact > floor[measure], exact, 0.0)
        return out

    def _measure(
        self,
        histories: Histories,
        rows: np.ndarray,
        profile: np.ndarray,
        nearest: np.ndarray,
        limit: np.ndarray,
        measure: np.ndarray,
    ) -> np.ndarray:
        """Exact nearest distances of ``rows[measure]``: the profile's nearest window and any other
        within ``limit`` (the second smallest tells whether there is one) measured as
        ``NearestDistance`` measures them."""
        columns = nearest[measure]
        best = self._squared(histories, rows[measure], columns)
        picked = profile[measure, columns].copy()
        profile[measure, columns] = np.inf
        second = profile.min(axis=1)[measure]
        profile[measure, columns] = picked
        rivals = np.flatnonzero(second <= limit[measure])
        if rivals.size:
            best[rivals] = np.minimum(
                best[rivals], self._rivals(histories, rows, profile, limit, measure[rivals])
            )
        return np.sqrt(best)

    def _rivals(
        self,
        histories: Histories,
        rows: np.ndarray,
        profile: np.ndarray,
        limit: np.ndarray,
        which: np.ndarray,
    ) -> np.ndarray:
        """The smallest exact squared distance among each row's windows within its limit."""
        index, column = np.nonzero(profile[which] <= limit[which, None])
        counts = np.bincount(index, minlength=which.size)
        best = np.full(which.size, np.inf)
        few = counts[index] <= CAP
        np.minimum.at(best, index[few], self._squared(histories, rows[which[index[few]]], column[few]))
        for many in np.flatnonzero(counts > CAP):  # a flat or repeating series: measure it whole
            best[many] = self._whole(histories, int(rows[which[many]]))
        return best

    def _squared(self, histories: Histories, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Exact squared distances from each row's newest window to the one at its profile column."""
        w, keep, offset = self.width, histories.keep, _offset(histories, self)
        starts = offset + w + columns
        windows = histories.values[rows[:, None], starts[:, None] + np.arange(w)]
        return _exact(windows, histories.values[rows, keep - w :])

    def _whole(self, histories: Histories, row: int) -> float:
        w, columns, offset = self.width, self.columns, _offset(histories, self)
        held = histories.values[row]
        first = max(0, columns - (int(histories.pushed[row]) - 2 * w))
        starts = offset + w + np.arange(first, columns)
        windows = held[starts[:, None] + np.arange(w)]
        return float(np.min(_exact(windows, held[held.size - w :])))


def _exact(windows: np.ndarray, newest: np.ndarray) -> np.ndarray:
    """Squared distances computed as ``NearestDistance._nearest`` computes them (same bits)."""
    difference = windows - newest
    return np.einsum("ij,ij->i", difference, difference)


def _offset(histories: Histories, profiles: Profiles) -> int:
    """Columns a history keeps beyond the discord's own ``history + 2 w`` (for the day-ago part)."""
    return histories.keep - (profiles.columns + 3 * profiles.width)


def _tiles(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[start : start + TILE] for start in range(0, rows.size, TILE)]
