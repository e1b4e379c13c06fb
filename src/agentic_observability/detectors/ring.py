"""A fixed-size ring of the latest samples, read back by lag: the seasonal detectors' memory."""

from __future__ import annotations

import numpy as np


class Ring:
    def __init__(self, size: int) -> None:
        self._data = np.full(size, np.nan)
        self.count = 0  # samples pushed so far

    def push(self, value: float) -> None:
        self._data[self.count % self._data.size] = value
        self.count += 1

    def stretch(self, lag: int, width: int) -> np.ndarray | None:
        """The ``width`` samples that end ``lag`` samples before the next one (lag 0: the newest
        ``width``); None while they are not all pushed yet or no longer held."""
        end = self.count - lag
        if end - width < 0 or lag + width > self._data.size:
            return None
        return self._data[np.arange(end - width, end) % self._data.size]
