"""Forecasting detector on statsforecast: AutoETS / MSTL prediction intervals, refitted on a schedule.

Every ``refit`` samples the model is fitted to the last ``window`` samples and forecasts the next
``refit`` with a 99% interval. The model: AutoETS, seasonal when a day is at most 24 samples; MSTL
(a daily season, AutoETS on the rest) when a day is longer but two of them fit in the window, since
seasonal ETS with hundreds of seasons takes seconds a fit; plain AutoETS otherwise. Each sample is
then scored by how far outside its interval it falls (in interval half-widths), through the anomaly
likelihood. statsforecast (and numba under it) loads on the first fit, not at import, so the other
detectors start fast.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from typing import Any

import numpy as np

from agentic_observability.detectors.likelihood import TailLikelihood

LEVEL = 99


SHORT_SEASON = 24  # the longest season seasonal ETS is fitted with (as R's ets)


def _model(season_length: int) -> Any:
    from statsforecast.models import MSTL, AutoETS  # lazy: a heavy import with JIT compilation

    if season_length > SHORT_SEASON:
        return MSTL(season_length=season_length, trend_forecaster=AutoETS(model="ZZN"))
    return AutoETS(season_length=season_length)


class Forecast:
    def __init__(
        self, window: int = 720, refit: int = 60, interval: float | None = None, minimum: int = 60
    ) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._refit, self._minimum = refit, minimum
        per_day = round(86_400 / interval) if interval else 0
        self._season = per_day if 2 <= per_day <= window // 2 else 1
        self._mean = self._lower = self._upper = np.empty(0)
        self._step = 0
        self._likelihood = TailLikelihood(history=1000, recent=5)

    def band(self) -> tuple[float, float] | None:
        if self._step >= self._mean.size:
            return None
        return float(self._lower[self._step]), float(self._upper[self._step])

    def update(self, value: float) -> float:
        if self._step >= self._mean.size and len(self._values) >= self._minimum:
            self._fit()
        raw = self._outside(value) if self._step < self._mean.size else None
        self._step += 1
        self._values.append(value)
        return 0.0 if raw is None else self._likelihood.update(raw)

    def _fit(self) -> None:
        history = np.fromiter(self._values, float)
        season = self._season if history.size >= 2 * self._season else 1
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # ETS on a near-constant series warns, then copes
                result = _model(season).forecast(y=history, h=self._refit, level=[LEVEL])
        except Exception:  # a fit that fails (degenerate history) leaves the median as the forecast
            result = {}
        self._mean = np.asarray(result.get("mean", np.full(self._refit, np.median(history))), float)
        self._lower = np.asarray(result.get(f"lo-{LEVEL}", self._mean), float)
        self._upper = np.asarray(result.get(f"hi-{LEVEL}", self._mean), float)
        self._step = 0

    def _outside(self, value: float) -> float:
        mean = float(self._mean[self._step])
        half = max(float(self._upper[self._step] - self._lower[self._step]) / 2, 1e-9, 1e-3 * abs(mean))
        if not math.isfinite(half):
            return 0.0
        return max(0.0, abs(value - mean) / half - 1.0)
