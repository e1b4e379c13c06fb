"""The left matrix profile of ``NearestDistance`` (discord.py) for a whole block of samples at once.

Per sample, ``NearestDistance`` subtracts the newest window from every earlier one it holds (3,000
windows of 16 samples): 48,000 operations and a numpy call for each sample. Here all the block's
samples are done together: squared distances come from sliding dot products (one matrix product
per tile of rows: ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b``), which finds each row's nearest window up
to a rounding error with a known bound. The few windows within that bound of the nearest are then
measured exactly as ``NearestDistance`` measures them, so the result is the per-sample distance to
the last bit, not an approximation of it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agentic_observability.detectors.discord import RESOLUTION

TILE = 256  # rows of the block per matrix product
# |computed - exact| of a squared distance, relative to the two windows' squared norms (values
# centred): about 2.4e-6 in float32 (17-term products, rounded inputs) and 4e-15 in float64; these
# bounds leave a margin of ten or more. float32 first (three times faster); a tile where too many
# windows fall within its bound (a very smooth series) is redone in float64.
ERROR = {np.float32: 3e-5, np.float64: 1e-13}
RIVALS_PER_ROW = 4


def nearest_distances(
    held: np.ndarray, pushed: int, new: int, width: int = 16, history: int = 3000
) -> np.ndarray:
    """Distances ``NearestDistance.update`` returns for the last ``new`` values of ``held`` (NaN
    where it returns None). ``held`` ends with the new values; ``pushed`` counts the values pushed
    before ``held[0]`` was; ``held`` must reach back ``history + 2 * width`` values (or to the start)."""
    out = np.full(new, np.nan)
    first_query = held.size - new  # held index of the first new value
    # a distance exists once 2 * width + 1 values were pushed: the first query value must be >= 2w
    begin = max(first_query, 2 * width - pushed)
    if begin >= held.size:
        return out
    raw = sliding_window_view(held, width)
    # |a - b|^2 - |a|^2 = |b|^2 - 2 a.b as one product: [-2a, 1] . [b, |b|^2]; centred first, as
    # distances do not change and the rounding error shrinks with the values
    centred = np.ascontiguousarray(sliding_window_view(held - np.median(held), width))
    norms = np.einsum("ij,ij->i", centred, centred)
    queries = np.hstack((-2.0 * centred, np.ones((centred.shape[0], 1))))
    earlier = np.hstack((centred, norms[:, None]))
    products: dict[type, tuple[np.ndarray, np.ndarray]] = {
        np.float64: (queries, earlier),
        np.float32: (queries.astype(np.float32), earlier.astype(np.float32)),
    }
    for top in range(begin, held.size, TILE):
        rows = np.arange(top, min(top + TILE, held.size)) - width + 1  # query windows' starts
        found = _tile(raw, products, norms, rows, (pushed, width, history))
        out[rows + width - 1 - first_query] = found
    floor = RESOLUTION * np.abs(held[first_query:]) * math.sqrt(width)
    return np.where(out > floor, out, np.where(np.isnan(out), np.nan, 0.0))


def _tile(
    raw: np.ndarray,
    products: dict[type, tuple[np.ndarray, np.ndarray]],
    norms: np.ndarray,
    rows: np.ndarray,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Exact nearest distances of the query windows starting at ``rows`` (consecutive held indices)."""
    pushed, width, history = shape
    low = np.maximum(rows - history, -pushed).clip(0)  # earlier windows: [low, rows - width)
    high = rows - width
    first, last = int(low[0]), int(high[-1])
    scale = norms[rows] + norms[first:last].max()
    for precision in (np.float32, np.float64):
        queries, earlier = products[precision]
        approx = queries[rows] @ earlier[first:last].T  # |b|^2 - 2 a.b per (row, earlier window)
        _mask_band(approx, low - first, high - first)
        nearest = np.argmin(approx, axis=1)
        best = _exact(raw, rows, nearest + first)
        bound = best - norms[rows] + ERROR[precision] * scale
        # any other window that could be as near, once rounding is allowed for, is measured
        # exactly (the second nearest tells whether there is one; usually there is not)
        picked = approx[np.arange(rows.size), nearest].copy()
        approx[np.arange(rows.size), nearest] = np.inf
        unsure = np.flatnonzero((best > 0) & (approx.min(axis=1) <= bound))
        approx[np.arange(rows.size), nearest] = picked
        if not unsure.size:
            return np.sqrt(best)
        which, column = np.nonzero(approx[unsure] <= bound[unsure, None])
        if which.size <= RIVALS_PER_ROW * rows.size or precision is np.float64:
            break
    np.minimum.at(best, unsure[which], _exact(raw, rows[unsure[which]], column + first))
    return np.sqrt(best)


def _mask_band(approx: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Rule out, per row, the columns outside [low, high): both edges move at most one column per
    row, so only the columns between each edge's first and last position need looking at."""
    for edges, outside in ((low, np.less), (high, np.greater_equal)):
        begin, end = int(edges[0]), int(edges[-1])
        if end > begin:
            view = approx[:, begin:end]  # a view: masked in place
            view[outside(np.arange(begin, end)[None, :], edges[:, None])] = np.inf


def _exact(raw: np.ndarray, rows: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """Squared distances computed as ``NearestDistance._nearest`` computes them (same bits)."""
    difference = raw[earlier] - raw[rows]
    return np.einsum("ij,ij->i", difference, difference)


def nearest_before(held: np.ndarray, first: int, cut: int, width: int, history: int) -> float | None:
    """``NearestDistance.nearest_before(cut)`` once ``held`` was pushed (``first`` values before it):
    the newest window's distance to the nearest one that ended before value ``cut``."""
    pushed = first + held.size
    newest = pushed - width  # absolute indices from here on
    start, end = max(0, newest - history), min(cut - width + 1, newest - width)
    if end - start < 1:
        return None
    windows = sliding_window_view(held, width)
    difference = windows[start - first : end - first] - windows[newest - first]
    return math.sqrt(float(np.min(np.einsum("ij,ij->i", difference, difference))))
