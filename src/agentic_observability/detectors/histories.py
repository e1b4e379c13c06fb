"""The latest samples of many series, each row a ring: the bulk detector's memory.

Row ``i`` holds the last ``min(pushed[i], keep)`` values series ``i`` was given; value number ``n``
(from 0) is stored at column ``n % keep``, so a push writes one value and moves none. Readers see
the row *right-aligned* (``columns``, ``gather``): logical column ``c`` is the value pushed
``keep - c`` values ago, at physical column ``(c + pushed) % keep``. Series that pushed the same
number of values modulo ``keep`` share that mapping (their *phase*); a watch's series usually do
(warmed and polled together), and ``columns`` then reads them as one or two plain slices.

Values are held as float32 offsets from the series' first value (``centre``, float64): half the
bytes of float64, and the rounding (2**-24 of the offset) is relative to how far the series moved,
not to its level, so a metric at 1e9 that moves by 10 keeps its detail. The components only take
differences of held values, in which the centre cancels; ``held`` adds it back.
"""

from __future__ import annotations

import numpy as np

STORED = np.float32
PHASES = 4  # distinct phases read slice by slice; more are gathered value by value


class Histories:
    def __init__(self, series: int, keep: int) -> None:
        self.keep = keep
        self.values: np.ndarray = np.zeros((series, keep), STORED)
        self.pushed = np.zeros(series, np.int64)
        self.centre = np.zeros(series)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.pushed.nbytes + self.centre.nbytes

    def held(self, row: int) -> np.ndarray:
        """The row's held values, oldest first (float64, centre added back)."""
        count = min(int(self.pushed[row]), self.keep)
        stored = self.columns(np.array([row]), self.keep - count, self.keep)[0]
        return stored.astype(float) + self.centre[row]

    def extend(self, row: int, new: np.ndarray) -> np.ndarray:
        """The row's held values followed by ``new`` (what a block is scored on); stores the tail."""
        if self.pushed[row] == 0 and new.size:
            self.centre[row] = new[0]
        joined = np.concatenate((self.held(row), new))
        tail = joined[-self.keep :]
        total = int(self.pushed[row]) + new.size
        self.values[row, np.arange(total - tail.size, total) % self.keep] = tail - self.centre[row]
        self.pushed[row] = total
        return joined

    def push(self, rows: np.ndarray, new: np.ndarray) -> None:
        """One new value for each of ``rows`` (a poll): written at each row's next column."""
        first = self.pushed[rows] == 0
        if first.any():
            self.centre[rows] = np.where(first, new, self.centre[rows])
        self.values[rows, self.pushed[rows] % self.keep] = new - self.centre[rows]
        self.pushed[rows] += 1

    def phase(self, rows: np.ndarray) -> np.ndarray:
        """Physical column of logical column 0, per row."""
        return self.pushed[rows] % self.keep

    def pieces(self, start: int, stop: int, phase: int) -> list[tuple[int, int, int]]:
        """Logical columns [start, stop) of rows of this phase as (offset in the result, physical
        first, physical end): one slice, or two where the ring wraps."""
        first = (start + phase) % self.keep
        size = stop - start
        if first + size <= self.keep:
            return [(0, first, first + size)]
        head = self.keep - first
        return [(0, first, self.keep), (head, 0, size - head)]

    def columns(self, rows: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Logical columns [start, stop) of ``rows`` (float32, a copy)."""
        phases = self.phase(rows)
        distinct = np.unique(phases)
        if distinct.size > PHASES:
            return self.gather(rows, np.broadcast_to(np.arange(start, stop), (rows.size, stop - start)))
        out = np.empty((rows.size, stop - start), STORED)
        for phase in distinct.tolist():
            same = slice(None) if distinct.size == 1 else np.flatnonzero(phases == phase)
            where = contiguous(rows[same])
            for offset, first, end in self.pieces(start, stop, phase):
                out[same, offset : offset + end - first] = self.values[where, first:end]
        return out

    def gather(self, rows: np.ndarray, logical: np.ndarray) -> np.ndarray:
        """The held float32 values at per-row logical columns (``logical``: rows x k)."""
        physical = (logical + self.pushed[rows, None]) % self.keep
        return self.values[rows[:, None], physical]


def contiguous(rows: np.ndarray) -> slice | np.ndarray:
    """``rows`` as a slice when they are consecutive ascending rows (numpy then gives views)."""
    if rows.size and int(rows[-1]) - int(rows[0]) == rows.size - 1 and bool(np.all(np.diff(rows) == 1)):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows
