"""A watch's state stays bounded under pod churn: a series absent for ``forget_after`` polls is
forgotten (detector, labels, gauges), and past ``max_series`` new series are counted, not tracked."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from agentic_observability.config import WatchConfig
from agentic_observability.models import AcceptedAlert, Sample, Series
from agentic_observability.telemetry import Metrics
from agentic_observability.watch import WatchPoller


class ChurningPrometheus:
    """Serves one sample per pod of the current generation; each generation replaces every pod."""

    base_url = "http://prometheus.invalid"

    def __init__(self, pods: int) -> None:
        self.pods = pods
        self.generation = 0

    async def query(self, expr: str, at: float | None = None) -> list[Sample]:
        return [
            Sample({"pod": f"api-{self.generation}-{n}", "service": "api"}, at or 0.0, 0.5)
            for n in range(self.pods)
        ]

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        return []


class RecordingStore:
    def __init__(self) -> None:
        self.accepted: list[AcceptedAlert] = []

    async def accept(self, alerts: list[AcceptedAlert]) -> Any:
        self.accepted.extend(alerts)

    async def open_incidents_by_group(self, source: str) -> dict[str, str]:
        return {}


def poller(scored: bool, **watch: Any) -> tuple[WatchPoller, ChurningPrometheus, Metrics]:
    config = {"name": "pods", "query": "pod_cpu", "interval": "60s", "forget_after": 3, **watch}
    if not scored:
        config["above"] = 10
    prometheus, metrics = ChurningPrometheus(pods=20), Metrics()
    return (
        WatchPoller(WatchConfig.model_validate(config), prometheus, RecordingStore(), metrics),
        prometheus,
        metrics,
    )  # type: ignore[arg-type]


def score_gauges(metrics: Metrics) -> int:
    text = generate_latest(metrics.registry).decode()
    return sum(1 for line in text.splitlines() if line.startswith("agentic_obs_anomaly_score{"))


async def test_pods_that_went_away_are_forgotten() -> None:
    watch, prometheus, metrics = poller(scored=True, detector="robust")
    for poll in range(30):
        prometheus.generation = poll // 2  # every pod is replaced every other poll
        await watch.poll_once(now=1_700_000_000.0 + 60 * poll)
    # the current generation and the ones within forget_after polls, never all 15 generations
    assert len(watch._labels) <= 20 * 3
    assert len(watch._detectors) <= 20 * 3
    assert score_gauges(metrics) <= 20 * 3
    assert metrics.watch_series.labels("pods")._value.get() == len(watch._labels)


async def test_a_static_threshold_watch_forgets_too() -> None:
    watch, prometheus, _ = poller(scored=False)
    for poll in range(12):
        prometheus.generation = poll
        await watch.poll_once(now=1_700_000_000.0 + 60 * poll)
    assert len(watch._labels) <= 20 * 3


async def test_past_max_series_new_series_are_counted_not_tracked() -> None:
    watch, prometheus, metrics = poller(scored=True, detector="robust", max_series=25, forget_after=100)
    for poll in range(4):
        prometheus.generation = poll
        await watch.poll_once(now=1_700_000_000.0 + 60 * poll)
    assert len(watch._labels) == 25
    assert score_gauges(metrics) == 25
    assert metrics.watch_series_dropped.labels("pods")._value.get() == 4 * 20 - 25


async def test_a_threshold_watch_at_its_cap_keeps_polling() -> None:
    watch, prometheus, metrics = poller(scored=False, max_series=25, forget_after=100)
    for poll in range(4):
        prometheus.generation = poll
        await watch.poll_once(now=1_700_000_000.0 + 60 * poll)
    assert len(watch._labels) == 25
    assert metrics.watch_series_dropped.labels("pods")._value.get() == 4 * 20 - 25


class FailingStore(RecordingStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def accept(self, alerts: list[AcceptedAlert]) -> Any:
        if self.fail:
            raise RuntimeError("database or disk is full")
        await super().accept(alerts)


async def test_an_episode_the_store_refused_opens_again_on_the_next_poll() -> None:
    config = WatchConfig.model_validate({"name": "hot", "query": "pod_cpu", "interval": "60s", "above": 0.1})
    store, prometheus = FailingStore(), ChurningPrometheus(pods=1)
    watch = WatchPoller(config, prometheus, store, Metrics())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await watch.poll_once(now=1_700_000_000.0)
    store.fail = False
    assert await watch.poll_once(now=1_700_000_060.0) == 1  # the open is committed now, not lost
    assert [a.alert.status for a in store.accepted] == ["firing"]
