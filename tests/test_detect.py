from __future__ import annotations

from agentic_observability.detectors.episodes import EpisodeTracker, breaches


def test_breaches() -> None:
    assert breaches(2, above=1, below=None)
    assert not breaches(1, above=1, below=None)
    assert breaches(0, above=None, below=0.5)
    assert not breaches(5, above=None, below=None)


def test_episode_opens_after_hold_and_closes_with_hysteresis() -> None:
    tracker = EpisodeTracker(hold_for=10, resolve_after=2)
    seen = [
        tracker.observe("s", hit, t)
        for t, hit in [
            (0, True),
            (5, True),
            (10, True),
            (15, True),
            (20, False),
            (25, True),
            (30, False),
            (35, False),
        ]
    ]
    assert seen == [None, None, "open", None, None, None, None, "close"]


def test_short_blips_never_open() -> None:
    tracker = EpisodeTracker(hold_for=10, resolve_after=1)
    assert [tracker.observe("s", hit, t) for t, hit in [(0, True), (5, False), (10, True), (15, False)]] == [
        None
    ] * 4
    assert tracker.states == {}


def test_resumed_episode_can_close() -> None:
    tracker = EpisodeTracker(hold_for=0, resolve_after=1)
    tracker.mark_active("s", 100)
    assert tracker.observe("s", True, 101) is None
    assert tracker.observe("s", False, 102) == "close"
