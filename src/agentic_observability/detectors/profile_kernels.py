"""The poll's loops over each series' distance profile, compiled (numba): one pass per series.

In numpy a poll's step of the profiles (poll_profiles.py) took a dozen passes over each tile of
series, each through a temporary array: about 2.5 s for 100,000 series. Compiled, one loop per
series reads its ring once in logical order (into a scratch line) and updates its profile in place,
and the nearest window and the next nearest come from the same pass: about ten times less.

The arithmetic is what poll_profiles.py's error bound is written for: a step is float32 (two
differences, two squares, their difference and the sum), a refresh is float64 rounded once to
float32. Nothing here needs the exact bits of ``NearestDistance``: the windows the
profile names are measured exactly afterwards in numpy (poll_profiles.py, ``_exact``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba.core.caching import NullCache

_KERNELS: list[Any] = []
_ready = False


def _compiled(function: Callable[..., Any]) -> Any:
    """``njit``, cached on disk in the first writable one of ``NUMBA_CACHE_DIR``, the package's
    ``__pycache__`` and the user's cache; with none, compiled in each process (``ready``)."""
    try:
        kernel = numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # no cache locator: a read-only install with no writable cache directory
        kernel = numba.njit(nogil=True)(function)
    _KERNELS.append(kernel)
    return kernel


def ready() -> None:
    """Compile (or load) the kernels now, on a tiny profile, so that the first poll does not: a few
    seconds without a cache. A cache directory that passed numba's check but cannot be written (a
    full ``/tmp``) would make each first call raise; then the kernels compile uncached instead."""
    global _ready
    if _ready:
        return
    try:
        _first_calls()
    except OSError:
        for kernel in _KERNELS:
            kernel._cache = NullCache()
        _first_calls()
    _ready = True


def _first_calls() -> None:
    stored, rows = np.zeros((1, 8), np.float32), np.zeros(1, np.int64)
    profiles = np.zeros((1, 2), np.float32)
    step(stored, rows, np.full(1, 9, np.int64), np.ones(1, bool), 0, 2, profiles)
    nearest(profiles, rows, np.full(1, 2, np.int64))


@_compiled
def _logical(stored: np.ndarray, pushed: int, line: np.ndarray) -> None:
    """A ring row (histories.py) in logical order: logical column ``c`` is physical
    ``(c + pushed) % keep``."""
    keep = stored.size
    phase = pushed % keep
    head = keep - phase
    line[:head] = stored[phase:]
    line[head:] = stored[:phase]


@_compiled
def _exact_column(line: np.ndarray, start: int, width: int) -> np.float32:
    """Squared distance from the window at logical ``start`` to the newest one: float64, rounded once."""
    keep = line.size
    total = 0.0
    for k in range(width):
        difference = np.float64(line[start + k]) - np.float64(line[keep - width + k])
        total += difference * difference
    return np.float32(total)


@_compiled
def _rebuild_row(line: np.ndarray, pushed: int, offset: int, width: int, profile: np.ndarray) -> None:
    """The row's profile anew from its history: column ``c`` is the window at logical
    ``offset + width + c``; columns before the series' first window are infinite."""
    columns = profile.size
    first = min(columns, max(0, columns - (pushed - 2 * width)))
    profile[:first] = np.inf
    total = np.zeros(columns - first)
    for k in range(width):
        newest = np.float64(line[line.size - width + k])
        start = offset + width + k + first
        for c in range(columns - first):
            difference = np.float64(line[start + c]) - newest
            total[c] += difference * difference
    for c in range(columns - first):
        profile[first + c] = np.float32(total[c])


LANES = 16  # columns a scan takes side by side: the compiler keeps them in vector registers


@_compiled
def _advance_row(line: np.ndarray, pushed: int, offset: int, width: int, profile: np.ndarray) -> None:
    """One step of ``D(i + 1, j + 1) = D(i, j) - (x[i] - x[j])**2 + (x[i + w] - x[j + w])**2`` for
    every column (poll_profiles.py), in float32, and the window a young series gains at its low end."""
    keep, columns = line.size, profile.size
    entering_end, leaving_end = line[keep - 1], line[keep - width - 1]
    entering = line[offset + 2 * width - 1 : offset + 2 * width - 1 + columns]
    leaving = line[offset + width - 1 : offset + width - 1 + columns]
    for c in range(columns):
        step_in = entering[c] - entering_end
        step_out = leaving[c] - leaving_end
        profile[c] += step_in * step_in - step_out * step_out
    age = pushed - 2 * width
    if 1 <= age <= columns:  # the window at value 0 joins while fewer than ``history`` are held
        profile[columns - age] = _exact_column(line, keep - pushed, width)


@_compiled
def step(
    stored: np.ndarray,
    rows: np.ndarray,
    pushed: np.ndarray,
    refresh: np.ndarray,
    offset: int,
    width: int,
    profiles: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``rows``' profile after a value was pushed to its history (recomputed where
    ``refresh``, else advanced one step), and what ``nearest`` finds in it then."""
    line = np.empty(stored.shape[1], stored.dtype)
    found, lanes = _found(rows.size), _lanes()
    for index in range(rows.size):
        row = rows[index]
        _logical(stored[row], pushed[row], line)
        if refresh[index]:
            _rebuild_row(line, pushed[row], offset, width, profiles[row])
        else:
            _advance_row(line, pushed[row], offset, width, profiles[row])
        _scan(profiles[row], profiles.shape[1], found, index, lanes)
    return found


@_compiled
def nearest(
    profiles: np.ndarray, rows: np.ndarray, upto: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column, smallest, second) per row over its profile's columns before ``upto``: the first
    smallest value's column (-1: none), that value, and the smallest of the others (inf: none)."""
    found, lanes = _found(rows.size), _lanes()
    for index in range(rows.size):
        _scan(profiles[rows[index]], min(max(upto[index], 0), profiles.shape[1]), found, index, lanes)
    return found


@_compiled
def _found(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.full(size, -1, np.int64), np.full(size, np.inf), np.full(size, np.inf)


@_compiled
def _lanes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scan's scratch: each lane's smallest value, its second smallest, and where the smallest was."""
    return np.empty(LANES, np.float32), np.empty(LANES, np.float32), np.empty(LANES, np.int32)


@_compiled
def _scan(
    profile: np.ndarray,
    upto: int,
    found: tuple[np.ndarray, np.ndarray, np.ndarray],
    index: int,
    lanes: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """``nearest`` of one profile, written to ``found[.][index]``. Each lane keeps its smallest
    value, where it first was, and its second smallest, branch-free (so it vectorises); the lanes
    are then merged, ties going to the first column."""
    best, second, at = lanes
    best[:] = np.inf
    second[:] = np.inf
    at[:] = 0
    whole = upto // LANES * LANES
    for start in range(0, whole, LANES):
        for lane in range(LANES):
            _lane(profile[start + lane], start + lane, lane, best, second, at)
    for column in range(whole, upto):
        _lane(profile[column], column, column - whole, best, second, at)
    smallest, pick = np.float32(np.inf), -1
    for lane in range(LANES):
        if best[lane] < smallest or (best[lane] == smallest < np.inf and at[lane] < at[pick]):
            smallest, pick = best[lane], lane
    if pick < 0:
        return
    runner = second[pick]
    for lane in range(LANES):
        if lane != pick:
            runner = min(runner, best[lane])
    columns, smallests, seconds = found
    columns[index], smallests[index], seconds[index] = at[pick], smallest, runner


@_compiled
def _lane(
    value: np.float32, column: int, lane: int, best: np.ndarray, second: np.ndarray, at: np.ndarray
) -> None:
    value = value if value == value else np.float32(np.inf)  # NaN (an overflowed square): no window
    held = best[lane]
    second[lane] = min(second[lane], max(value, held))
    at[lane] = column if value < held else at[lane]
    best[lane] = min(value, held)
