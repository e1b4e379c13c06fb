"""A detector watch against a real Prometheus whose history was loaded with promtool: one injected
anomaly opens exactly one incident (and closes it), the clean series opens none, and the scores and
expected bands are exported with each series' own labels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from prometheus_client import generate_latest

from agentic_observability.config import WatchConfig
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.detectors import DETECTORS, register
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.store import SqliteStore, Store
from agentic_observability.telemetry import Metrics
from agentic_observability.watch.poller import WatchPoller
from tests.conftest import prometheus_with_history

STEP, POINTS, ANOMALY = 60, 500, range(430, 450)
START = float(int(time.time() // STEP * STEP) - POINTS * STEP - 3600)


def _history() -> str:
    rng = np.random.default_rng(11)
    lines = ["# TYPE watch_latency_seconds gauge"]
    for service in ("clean", "faulty"):
        values = 0.2 + rng.normal(0, 0.01, POINTS)
        if service == "faulty":
            values[list(ANOMALY)] += 0.5
        lines += [
            f'watch_latency_seconds{{service="{service}"}} {v!r} {START + i * STEP:.0f}'
            for i, v in enumerate(map(float, values))
        ]
    return "\n".join([*lines, "# EOF"]) + "\n"


@pytest.fixture
def history_prometheus(tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = prometheus_with_history(tmp_path, _history())
    yield proc
    proc.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await SqliteStore.open(tmp_path / "state")
    yield opened
    await opened.close()


@pytest.mark.slow
async def test_one_incident_for_one_injected_anomaly(
    history_prometheus: ManagedProcess, store: Store
) -> None:
    watch = WatchConfig.model_validate(
        {
            "name": "LatencyAnomaly",
            "query": "watch_latency_seconds",
            "interval": STEP,
            "lookback": "6h",
            "for": "2m",
            "resolve_after": 3,
        }
    )
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        poller = WatchPoller(watch, PrometheusClient(history_prometheus.url, session), store, metrics)
        assert poller.uses_detector
        for i in range(400, POINTS):
            await poller.poll_once(now=START + i * STEP)
    jobs, _ = await store.ingest_pending()
    incidents = await store.list_incidents()
    assert len(incidents) == 1, [i.labels for i in incidents]
    [incident] = incidents
    assert incident.labels["service"] == "faulty" and incident.status == "resolved"
    assert START + ANOMALY.start * STEP <= incident.started_at <= START + (ANOMALY.start + 3) * STEP
    # closed once the newest 16 samples look like before again, plus resolve_after clean polls
    assert incident.resolved_at is not None
    assert incident.resolved_at <= START + (ANOMALY.stop + 16 + 3 + 2) * STEP
    assert [j.kind for j in jobs] == ["analyze", "resolve"]
    exposition = generate_latest(metrics.registry).decode()
    assert 'agentic_obs_anomaly_score{service="clean",watch="LatencyAnomaly"}' in exposition
    assert 'agentic_obs_anomaly_score_upper{service="faulty",watch="LatencyAnomaly"}' in exposition


class _SlowDetector:
    """Stands for a day of history on many series: each call holds the CPU for 0.3 s."""

    name = "slow-for-test"

    def __init__(self, **_: object) -> None:
        pass

    def score(self, values: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        while time.perf_counter() - started < 0.3:
            pass
        return np.zeros(len(values))

    def band(self) -> tuple[float, float] | None:
        return None


@pytest.mark.slow
async def test_detector_work_does_not_stall_the_event_loop(
    history_prometheus: ManagedProcess, store: Store
) -> None:
    if "slow-for-test" not in DETECTORS:
        register("slow-for-test", _SlowDetector)
    watch = WatchConfig.model_validate(
        {
            "name": "Slow",
            "query": "watch_latency_seconds",
            "interval": STEP,
            "lookback": "6h",
            "detector": "slow-for-test",
        }
    )
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with aiohttp.ClientSession() as session:
        poller = WatchPoller(watch, PrometheusClient(history_prometheus.url, session), store, Metrics())
        ticker = asyncio.create_task(tick())
        started = time.perf_counter()
        await poller.poll_once(now=START + 450 * STEP)  # warm-up (2 series) and one score each: 1.2 s
        await asyncio.sleep(0.05)  # let the ticker see the end of any stall before it stops
        ticker.cancel()
    assert time.perf_counter() - started >= 1.2
    assert max(gaps) < 0.2  # the loop kept turning while the detectors worked
