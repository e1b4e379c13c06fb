"""When a watched series is an incident episode: pure rules over per-poll breaches, no I/O.

A breach is a static ``above``/``below`` threshold crossed, or a detector's score at or above the
anomaly threshold (the poller decides which). An episode opens once the breach has lasted ``for``
seconds (one incident per episode, not per sample) and closes after ``resolve_after`` consecutive
clean polls (hysteresis, so a flapping series does not page twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Transition = Literal["open", "close"] | None


def breaches(value: float, above: float | None, below: float | None) -> bool:
    return (above is not None and value > above) or (below is not None and value < below)


@dataclass
class EpisodeState:
    breaching_since: float | None = None
    active: bool = False
    clean_polls: int = 0
    opened_at: float | None = None


class EpisodeTracker:
    """One state per series; ``observe`` returns "open"/"close" when an episode starts or ends."""

    def __init__(self, hold_for: float, resolve_after: int) -> None:
        self.hold_for = hold_for
        self.resolve_after = resolve_after
        self.states: dict[str, EpisodeState] = {}

    def mark_active(self, key: str, opened_at: float) -> None:
        """Seed an episode that was open before a restart, so it can still close."""
        self.states[key] = EpisodeState(breaching_since=opened_at, active=True, opened_at=opened_at)

    def started(self, key: str) -> bool:
        """An episode of ``key`` is pending its ``hold_for`` or open."""
        return key in self.states

    def is_open(self, key: str) -> bool:
        state = self.states.get(key)
        return state is not None and state.active

    def breaching(self, key: str, alert: bool, held: bool) -> bool:
        """The one rule watches and ``detect`` share: a series not started breaches on a detector's
        alert (at most one per episode gap, so a flapping series is not paged again); a started one
        goes on while its ungated score is at the threshold (``held``)."""
        return held if self.started(key) else alert

    def observe(self, key: str, breaching: bool, now: float) -> Transition:
        state = self.states.setdefault(key, EpisodeState())
        if breaching:
            state.clean_polls = 0
            if state.breaching_since is None:
                state.breaching_since = now
            if not state.active and now - state.breaching_since >= self.hold_for:
                state.active, state.opened_at = True, state.breaching_since
                return "open"
            return None
        state.breaching_since = None
        if not state.active:
            self.states.pop(key, None)
            return None
        state.clean_polls += 1
        if state.clean_polls >= self.resolve_after:
            self.states.pop(key, None)
            return "close"
        return None


def episode_rows(
    opens: np.ndarray, continues: np.ndarray | None = None, resolve_after: int = 3
) -> np.ndarray:
    """1 on every row an incident would be open under a watch's rules, 0 elsewhere: what ``detect``
    writes as its ``anomaly`` column. An episode opens on an ``opens`` row (a detector's alert) and
    stays open while ``continues`` (its ungated score at the threshold) holds, closing after
    ``resolve_after`` rows without it."""
    held = opens if continues is None else continues
    tracker = EpisodeTracker(0.0, resolve_after)
    flags = np.zeros(len(opens), dtype=np.int8)
    for row, (alert, anomalous) in enumerate(
        zip(np.asarray(opens, bool), np.asarray(held, bool), strict=True)
    ):
        tracker.observe("", tracker.breaching("", bool(alert), bool(anomalous)), float(row))
        flags[row] = tracker.is_open("")  # open after this row: opened now or still held
    return flags
