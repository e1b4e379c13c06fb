"""The Prometheus client against a real Prometheus (Debian binary) and against a dead port."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agentic_observability.demo.stack import ManagedProcess, free_port
from agentic_observability.errors import PrometheusQueryError, UpstreamUnavailableError
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.integrations.resilience import Guard


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def test_instant_and_range_queries(prometheus: ManagedProcess, session: aiohttp.ClientSession) -> None:
    client = PrometheusClient(prometheus.url, session)
    [sample] = await client.query('label_replace(vector(42), "service", "carts", "", "")')
    assert sample.value == 42 and sample.labels == {"service": "carts"}
    [scalar] = await client.query("scalar(vector(7))")
    assert scalar.value == 7
    now = time.time()
    [series] = await client.query_range("vector(time())", now - 60, now, 15)
    assert len(series.values) == 5
    assert series.values[-1] == pytest.approx(series.timestamps[-1])


async def test_invalid_query_carries_prometheus_message_and_is_not_retried(
    prometheus: ManagedProcess, session: aiohttp.ClientSession
) -> None:
    guard = Guard("prometheus", retries=3, fail_max=1, excluded=(PrometheusQueryError,))
    client = PrometheusClient(prometheus.url, session, guard=guard)
    started = time.monotonic()
    with pytest.raises(PrometheusQueryError, match="parse error"):
        await client.query("sum(rate(x[5m])")
    assert time.monotonic() - started < 1.0  # no backoff: it was not retried
    assert guard.state == "closed"  # a bad query says nothing about Prometheus's health


async def test_unreachable_prometheus_retries_then_opens_the_breaker(session: aiohttp.ClientSession) -> None:
    guard = Guard("prometheus", retries=1, fail_max=2, reset_after=60, max_backoff=0.05)
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", session, timeout=1, guard=guard)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailableError, match="unreachable"):
            await client.query("up")
    assert guard.state == "open"
    with pytest.raises(UpstreamUnavailableError, match="circuit open"):
        await client.query("up")
