"""The built-in detectors, each an ``Alerting`` over components (alerting.py).

- ``ensemble`` (also ``default``): a new extreme beyond the range seen, or a subsequence discord,
  or (when the sampling interval is known) a stretch unlike the same stretch one and two days
  back. The default, scored with `agentic-obs backtest nab`.
- ``robust``: rolling median/MAD with day and week references.
- ``discord``: the matrix-profile discord alone.
- ``changepoint``: CUSUM level shifts alone.
- ``forecast``: statsforecast AutoETS intervals (slow; see bench/detect_throughput.py).
"""

from __future__ import annotations

from agentic_observability.detectors.alerting import Alerting, Component
from agentic_observability.detectors.changepoint import LevelShift
from agentic_observability.detectors.discord import Discord, SeasonalDistance
from agentic_observability.detectors.extremes import RangeBreach
from agentic_observability.detectors.forecast import Forecast
from agentic_observability.detectors.robust import RobustDeviation

SEASONAL_MAX_INTERVAL = 3600.0  # at least 24 samples a day for a daily shape to compare


def ensemble(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    breach = RangeBreach()
    components: list[Component] = [Discord(threshold=threshold)]
    if interval and interval <= SEASONAL_MAX_INTERVAL:
        components.append(SeasonalDistance(interval))
    return Alerting("ensemble", components, threshold, episode_gap, breach=breach)


def robust(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    deviation = RobustDeviation(interval=interval)
    return Alerting("robust", [deviation], threshold, episode_gap, band_source=deviation)


def discord(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    return Alerting("discord", [Discord(threshold=threshold)], threshold, episode_gap)


def changepoint(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    return Alerting("changepoint", [LevelShift()], threshold, episode_gap)


def forecast(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    model = Forecast(interval=interval)
    return Alerting("forecast", [model], threshold, episode_gap, band_source=model)


BUILTIN = {
    "default": ensemble,
    "ensemble": ensemble,
    "robust": robust,
    "discord": discord,
    "changepoint": changepoint,
    "forecast": forecast,
}
