"""The latest samples of many series, right-aligned in one array: the bulk detector's memory.

Row ``i`` holds the last ``min(pushed[i], keep)`` values series ``i`` was given, ending at the last
column; every component reads its window of the same row (one shared history per series).
"""

from __future__ import annotations

import numpy as np


class Histories:
    def __init__(self, series: int, keep: int) -> None:
        self.keep = keep
        self.values: np.ndarray = np.zeros((series, keep))
        self.pushed = np.zeros(series, np.int64)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.pushed.nbytes

    def held(self, row: int) -> np.ndarray:
        return self.values[row, self.keep - min(int(self.pushed[row]), self.keep) :].astype(float)

    def extend(self, row: int, new: np.ndarray) -> np.ndarray:
        """The row's held values followed by ``new`` (what a block is scored on); stores the tail."""
        joined = np.concatenate((self.held(row), new))
        tail = joined[-self.keep :]
        self.values[row, self.keep - tail.size :] = tail
        self.pushed[row] += new.size
        return joined

    def push(self, rows: np.ndarray, new: np.ndarray) -> None:
        """One new value for each of ``rows`` (a poll): each row moves one column to the left."""
        where = contiguous(rows)  # the usual poll, every series in row order: views, no copies
        self.values[where, :-1] = self.values[where, 1:]
        self.values[where, -1] = new
        self.pushed[where] += 1


def contiguous(rows: np.ndarray) -> slice | np.ndarray:
    """``rows`` as a slice when they are consecutive ascending rows (numpy then gives views)."""
    if rows.size and int(rows[-1]) - int(rows[0]) == rows.size - 1 and bool(np.all(np.diff(rows) == 1)):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows
