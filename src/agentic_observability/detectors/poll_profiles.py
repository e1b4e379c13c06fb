"""The discord's distances for one new sample per series (a watch's poll), O(history) per series.

``NearestDistance`` (discord.py) measures the newest window against ~3,000 earlier ones per sample:
48,000 multiply-adds, which for 100,000 series is more than numpy does in a poll's budget. But the
distances of consecutive windows are related (``D`` the squared distance of windows at ``i``, ``j``)::

    D(i + 1, j + 1) = D(i, j) - (x[i] - x[j])**2 + (x[i + w] - x[j + w])**2

so each series keeps its last row of distances (its *profile*, float32) and a poll updates it in
six passes over the row, vectorised across series. The profile is only a guide: its rounding error
is bounded (``_bound``), every window within that bound of the smallest is then measured exactly as
``NearestDistance`` measures it (same numpy calls, in float64, on the held float32 values: see
histories.py), and the profile is recomputed exactly every ``REFRESH`` polls (staggered across
series) so the bound stays small.

Layout: ``Histories`` are rings read right-aligned (histories.py), so for a series that has pushed
``P`` values, value ``i`` is at logical column ``keep - P + i`` and profile column ``c`` is the
window starting at value ``P - 2w - J + c`` (``J = history - w`` columns; the newest window starts
at ``P - w``): column ``c`` is always the same lag, so a poll updates the profile in place, and the
history is not moved either (a push writes one value). Rows at the same ring phase are read as one
or two slices per tile; the few at other phases are gathered.

A scale fed one sample in several (the coarse one: one mean per four samples) has its exact
refreshes done ``ahead``, on the polls between its samples, so that the poll where every series'
block completes does not also refresh.
"""

from __future__ import annotations

import math

import numpy as np

from agentic_observability.detectors.discord import RESOLUTION
from agentic_observability.detectors.histories import Histories, contiguous

REFRESH = 32  # polls between exact recomputes of a series' profile
TILE = 64  # series per numpy pass: the tile's rows (768 KiB of history) stay in cache between passes
CAP = 64  # candidate windows per series before it is measured whole instead
EPS32 = float(np.finfo(np.float32).eps)


class Profiles:
    def __init__(self, series: int, width: int, history: int) -> None:
        self.width, self.columns = width, history - width
        self.squared = np.full((series, self.columns), np.inf, np.float32)
        self.steps = np.full(series, -1, np.int64)  # updates since exact (-1: stale, recompute)
        self.low = np.full(series, np.inf)  # every value pushed: bounds the rounding error
        self.high = np.full(series, -np.inf)
        self._busy = np.zeros(series, bool)  # the row's refresh waits for the next poll
        self._left = np.zeros(series, bool)  # the next step's leaving windows already out (``ahead``)

    @property
    def nbytes(self) -> int:
        return self.squared.nbytes + self.steps.nbytes + 2 * self.low.nbytes + 2 * self._left.nbytes

    def stale(self, rows: np.ndarray, block: np.ndarray) -> None:
        """A block was pushed some other way: recompute these rows' profiles at their next poll
        (or at ``prepare``)."""
        self.steps[rows] = -1
        self._left[rows] = False
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

    def ahead(self, histories: Histories, rows: np.ndarray) -> None:
        """Do now what these rows' next poll can do before its value is known: recompute the
        profiles it would refresh, and take out the windows its step drops (``_leave``). For a
        scale that polls one sample in several (the coarse one) this moves work off that poll;
        the history does not change before it. Each leaving term is rounded as ``_advance``'s is,
        and the profile once more (within ``_bound``'s four roundings per step)."""
        due = rows[(self.steps[rows] < 0) | (self.steps[rows] >= REFRESH - 1)]
        for tile in _tiles(due):
            self._rebuild(histories, tile)
        self.steps[due] = 0
        rows = rows[~self._left[rows]]
        scratch = np.empty((min(TILE, rows.size), self.columns), np.float32)
        for same, phase in _by_phase(histories, rows):
            part = rows[same]
            for start in range(0, part.size, TILE):
                self._leave(histories, part[start : start + TILE], scratch, phase)

    def _leave(self, histories: Histories, rows: np.ndarray, scratch: np.ndarray, phase: int | None) -> None:
        """The first half of the next poll's step (``_advance``), before its value is pushed: the
        window that will leave each distance, subtracted now."""
        w, offset, keep = self.width, _offset(histories, self), histories.keep
        where = contiguous(rows)
        leaving = scratch[: rows.size]
        # before the push, logical column c is the one that is c - 1 after it
        end = histories.gather(rows, np.array([[keep - w]]))
        self._differences(histories, rows, where, phase, offset + w, end, leaving)
        np.multiply(leaving, leaving, out=leaving)
        if isinstance(where, slice):
            self.squared[where] -= leaving
        else:
            self.squared[where] = self.squared[where] - leaving
        self._left[rows] = True

    def poll(
        self, histories: Histories, rows: np.ndarray, values: np.ndarray, busy: np.ndarray | None = None
    ) -> np.ndarray:
        """Push one of ``values`` to each of ``rows`` of ``histories`` and return what
        ``NearestDistance.update`` returns for it (NaN for None). ``busy`` (per row): rows whose
        poll is a heavy one elsewhere (the coarse scale's); a refresh due there waits one poll."""
        self.low[rows] = np.minimum(self.low[rows], values)
        self.high[rows] = np.maximum(self.high[rows], values)
        histories.push(rows, values)  # one value per row (a ring): nothing moves
        if busy is not None:
            self._busy[rows] = busy
        out = np.full(rows.size, np.nan)
        scratch = np.empty((2, min(TILE, rows.size), self.columns), np.float32)
        for same, phase in _by_phase(histories, rows):
            part_rows, part_values = rows[same], values[same]
            found = np.empty(part_rows.size)
            for start in range(0, part_rows.size, TILE):
                tile = slice(start, start + TILE)
                found[tile] = self._poll_tile(histories, part_rows[tile], part_values[tile], scratch, phase)
            out[same] = found
        return out

    def _poll_tile(
        self,
        histories: Histories,
        rows: np.ndarray,
        values: np.ndarray,
        scratch: np.ndarray,
        phase: int | None,
    ) -> np.ndarray:
        steps = self.steps[rows]
        fresh = (steps < 0) | ((steps >= REFRESH - 1) & ~self._busy[rows])
        self._advance(histories, rows, scratch, phase)  # all of the tile (views); then the fresh anew
        self._rebuild(histories, rows[fresh])
        self.steps[rows] = np.where(fresh, 0, self.steps[rows] + 1)
        return self._nearest(histories, rows, values)

    def _advance(
        self, histories: Histories, rows: np.ndarray, scratch: np.ndarray, phase: int | None
    ) -> None:
        """One step of the recurrence, and the new window a young series gains at its low end.
        Differences of the float32 offsets (histories.py), rounded once to float32. ``phase``: the
        tile's rows' common ring phase (read as slices), or None (gathered)."""
        w, columns, offset, keep = self.width, self.columns, _offset(histories, self), histories.keep
        where = contiguous(rows)
        leaving, entering = scratch[0, : rows.size], scratch[1, : rows.size]
        ends = histories.gather(rows, np.array([[keep - w - 1, keep - 1]]))
        self._differences(histories, rows, where, phase, offset + 2 * w - 1, ends[:, 1:], entering)
        np.multiply(entering, entering, out=entering)
        left = self._left[rows]  # their leaving windows were taken out already (``ahead``)
        if not left.all():
            self._differences(histories, rows, where, phase, offset + w - 1, ends[:, :1], leaving)
            np.multiply(leaving, leaving, out=leaving)
            if left.any():
                leaving[left] = 0.0
            np.subtract(entering, leaving, out=entering)
        self._left[rows] = False
        if isinstance(where, slice):
            self.squared[where] += entering  # in place: no copy of the tile's profiles
        else:
            self.squared[where] = self.squared[where] + entering
        age = histories.pushed[rows] - 2 * w
        young = np.flatnonzero((age >= 1) & (age <= columns))
        if young.size:  # the window at value 0 joins while fewer than ``history`` windows are held
            self._first_window(histories, rows[young])

    def _differences(
        self,
        histories: Histories,
        rows: np.ndarray,
        where: slice | np.ndarray,
        phase: int | None,
        start: int,
        end: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """``out`` = logical columns [start, start + columns) of the rows minus ``end`` (rows x 1),
        in float32: sliced at a common ``phase``, else gathered."""
        columns = self.columns
        if phase is None:
            logical = np.broadcast_to(np.arange(start, start + columns), (rows.size, columns))
            np.subtract(histories.gather(rows, logical), end, out=out)
            return
        for at, first, last in histories.pieces(start, start + columns, phase):
            np.subtract(histories.values[where, first:last], end, out=out[:, at : at + last - first])

    def _first_window(self, histories: Histories, rows: np.ndarray) -> None:
        w, keep = self.width, histories.keep
        pushed = histories.pushed[rows]
        first = (keep - pushed)[:, None] + np.arange(w)  # logical columns of values 0 .. w - 1
        oldest = histories.gather(rows, first).astype(float)
        newest = histories.columns(rows, keep - w, keep).astype(float)
        column = self.columns - (pushed - 2 * w)
        self.squared[rows, column] = _exact(oldest, newest)

    def _rebuild(self, histories: Histories, rows: np.ndarray) -> None:
        """Exact profiles (up to one float32 rounding) of these rows, from their histories."""
        if not rows.size:
            return
        w, columns, offset = self.width, self.columns, _offset(histories, self)
        keep = histories.keep
        held = histories.columns(rows, 0, keep).astype(float)
        total = np.zeros((rows.size, columns))
        for k in range(w):
            total += np.square(
                held[:, offset + w + k : offset + w + k + columns] - held[:, keep - w + k, None]
            )
        valid = np.arange(columns)[None, :] >= (columns - (histories.pushed[rows] - 2 * w))[:, None]
        self.squared[rows] = np.where(valid, total, np.inf).astype(np.float32)
        self._left[rows] = False

    def nearest_before(self, histories: Histories, rows: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """``NearestDistance._nearest`` over the windows that start before ``ends`` (a value index
        per row), for rows just polled: the exact distance (NaN for None), found as ``_nearest``
        finds the unrestricted one. Profile column ``c`` is the window at value
        ``pushed - w - history + c`` (module doc), so the windows before the end are a prefix."""
        first = histories.pushed[rows] - 2 * self.width - self.columns
        upto = np.clip(ends - first, 0, self.columns)
        profile = self.squared[rows]  # a copy: columns from ``upto`` on ruled out
        profile[np.arange(self.columns)[None, :] >= upto[:, None]] = np.inf
        nearest = profile.argmin(axis=1)
        smallest = profile[np.arange(rows.size), nearest].astype(float)
        bound = self._bound(rows)
        limit = (smallest + bound) * (1 + 1e-6) + bound
        out = np.full(rows.size, np.nan)
        measure = np.flatnonzero(np.isfinite(smallest))
        if measure.size:
            out[measure] = self._measure(histories, rows, profile, nearest, limit, measure, upto)
        return out

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
        upto: np.ndarray | None = None,
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
                best[rivals], self._rivals(histories, rows, profile, limit, measure[rivals], upto)
            )
        return np.sqrt(best)

    def _rivals(
        self,
        histories: Histories,
        rows: np.ndarray,
        profile: np.ndarray,
        limit: np.ndarray,
        which: np.ndarray,
        upto: np.ndarray | None = None,
    ) -> np.ndarray:
        """The smallest exact squared distance among each row's windows within its limit (and
        before each row's column ``upto``, when given)."""
        index, column = np.nonzero(profile[which] <= limit[which, None])
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


def _offset(histories: Histories, profiles: Profiles) -> int:
    """Columns a history keeps beyond the discord's own ``history + 2 w`` (for the day-ago part)."""
    return histories.keep - (profiles.columns + 3 * profiles.width)


def _by_phase(histories: Histories, rows: np.ndarray) -> list[tuple[slice | np.ndarray, int | None]]:
    """``rows`` split by ring phase (histories.py): (which of them, their phase). Phases of fewer
    than ``TILE`` rows go together, gathered rather than sliced (phase None)."""
    phases = histories.phase(rows)
    distinct, counts = np.unique(phases, return_counts=True)
    if distinct.size == 1:
        return [(slice(None), int(distinct[0]))]
    groups: list[tuple[slice | np.ndarray, int | None]] = [
        (np.flatnonzero(phases == phase), phase) for phase in distinct[counts >= TILE].tolist()
    ]
    rest = np.flatnonzero(np.isin(phases, distinct[counts < TILE]))
    if rest.size:
        groups.append((rest, None))
    return groups


def _tiles(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[start : start + TILE] for start in range(0, rows.size, TILE)]
