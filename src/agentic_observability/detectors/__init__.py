"""Anomaly detectors: pure numpy, no I/O, behind one Protocol and an explicit registry.

A detector is causal and incremental: ``score(values)`` takes the next samples of one series and
returns one score in [0, 1] per sample, using only that sample and earlier ones (it keeps its own
state between calls). One threshold (``ANOMALY_THRESHOLD``) turns scores into decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

# Chosen with `agentic-obs backtest nab` (flat between 0.5 and 0.7 there) and bench/detect_quiet.py
# (0.7 silences clean Gaussian and daily series); ANOMALY_THRESHOLD overrides.
DEFAULT_THRESHOLD = 0.7
DEFAULT_EPISODE_GAP = 200


class Detector(Protocol):
    name: str

    def score(self, values: np.ndarray) -> np.ndarray: ...

    def band(self) -> tuple[float, float] | None:
        """The range the next sample is expected in (None until the detector knows)."""
        ...


# Factories take three keywords: ``threshold`` (the score the product alerts at), ``episode_gap``
# (after alerting, stay just below the threshold for this many samples: one alert per episode when
# the scores themselves are the alerts, as in ``detect``; 0 where an episode tracker does that job)
# and ``interval`` (seconds between samples, None if unknown; seasonal detectors need it).
DetectorFactory = Callable[..., Detector]
DETECTORS: dict[str, DetectorFactory] = {}


def register(name: str, factory: DetectorFactory) -> None:
    if name in DETECTORS:
        raise ValueError(f"a detector named {name!r} is already registered")
    DETECTORS[name] = factory


def create(
    name: str,
    threshold: float = DEFAULT_THRESHOLD,
    episode_gap: int = DEFAULT_EPISODE_GAP,
    interval: float | None = None,
) -> Detector:
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    return factory(threshold=threshold, episode_gap=episode_gap, interval=interval)


def _register_builtin() -> None:
    from agentic_observability.detectors import builtin

    for name, factory in builtin.BUILTIN.items():
        register(name, factory)


_register_builtin()
