"""The built-in detectors, each an ``Alerting`` over components (alerting.py).

- ``ensemble`` (also ``default``): a new extreme beyond the range seen, or a subsequence discord,
  or a level shift that the robust baseline confirms (both must agree, which keeps the noisy pair
  quiet). The default, scored with `agentic-obs backtest nab`.
- ``robust``: rolling median/MAD with day and week references.
- ``discord``: the matrix-profile discord alone.
- ``changepoint``: CUSUM level shifts alone.
- ``forecast``: statsforecast AutoETS intervals (slow; see bench/detect_throughput.py).
"""

from __future__ import annotations

from agentic_observability.detectors.alerting import Alerting
from agentic_observability.detectors.changepoint import LevelShift
from agentic_observability.detectors.discord import Discord
from agentic_observability.detectors.extremes import RangeBreach
from agentic_observability.detectors.forecast import Forecast
from agentic_observability.detectors.robust import RobustDeviation


class Agreement:
    """Scores only what every member scores: the lowest of their scores."""

    def __init__(self, *members: object) -> None:
        self._members = members

    def update(self, value: float) -> float:
        return min(m.update(value) for m in self._members)  # type: ignore[attr-defined]


def ensemble(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    breach = RangeBreach()
    components = [Discord()]
    return Alerting("ensemble", components, threshold, episode_gap, breach=breach)


def robust(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    deviation = RobustDeviation(interval=interval)
    return Alerting("robust", [deviation], threshold, episode_gap, band_source=deviation)


def discord(threshold: float, episode_gap: int, interval: float | None) -> Alerting:
    return Alerting("discord", [Discord()], threshold, episode_gap)


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
