"""End to end on real processes: exporter -> Prometheus rule -> Alertmanager -> webhook -> incident,
and a PromQL watch polling the same Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.demo.stack import free_port, start_prometheus
from agentic_observability.service import init_app
from agentic_observability.service.keys import METRICS, STORE
from tests.conftest import auth_headers
from tests.test_webhook import incidents, wait_for

RULES = """
groups:
  - name: e2e
    rules:
      - alert: CheckoutSlow
        expr: e2e_latency_seconds{service="checkout"} > 0.5
        for: 1s
        labels: {severity: critical}
        annotations: {summary: checkout is slow, runbook_url: "https://runbooks.example.com/checkout"}
"""


class Gauge:
    """A one-metric exporter whose value the test sets."""

    def __init__(self) -> None:
        self.value = 0.1

    def app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            text = f'e2e_latency_seconds{{service="checkout"}} {self.value}\n'
            return web.Response(text=text, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app


@pytest.fixture
async def exporter(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Gauge, str]:
    gauge = Gauge()
    server = await aiohttp_server(gauge.app())
    return gauge, f"127.0.0.1:{server.port}"


async def _report_with_evidence(client: TestClient, status: str) -> dict[str, Any] | None:
    found = await incidents(client, status=status)
    if not found or not found[0]["report"] or found[0]["report"]["status"] != status:
        return None
    detail = await client.get(f"/api/v1/incidents/{found[0]['id']}", headers=auth_headers())
    return dict(await detail.json())


@pytest.mark.slow
async def test_rule_fires_and_resolves_through_alertmanager(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    config_factory: Callable[..., Any],
    stack_factory: Callable[..., Any],
    exporter: tuple[Gauge, str],
) -> None:
    gauge, target = exporter
    port = free_port()  # Alertmanager needs the service's URL before the service starts
    webhook = f"http://127.0.0.1:{port}/api/v1/webhook/alertmanager"
    prom, _ = await asyncio.to_thread(stack_factory, webhook, [target], RULES)
    app = init_app(config_factory(prometheus={"url": prom.url}))
    client = await aiohttp_client(app, server_kwargs={"port": port})

    gauge.value = 1.5
    firing: dict[str, Any] = {}

    async def fired() -> bool:
        firing.update(await _report_with_evidence(client, "firing") or {})
        return bool(firing) and bool(firing["report"]["evidence"][0]["series"])

    await wait_for(fired, within=45)
    assert firing["title"] == "CheckoutSlow: checkout is slow"
    assert firing["labels"] == {"alertname": "CheckoutSlow", "service": "checkout"}
    evidence = firing["report"]["evidence"][0]
    assert evidence["query"] == 'e2e_latency_seconds{service="checkout"}'
    assert evidence["series"][0]["maximum"] == 1.5
    assert "rule threshold > 500 ms" in firing["report"]["summary"]

    gauge.value = 0.1
    resolved: dict[str, Any] = {}

    async def cleared() -> bool:
        resolved.update(await _report_with_evidence(client, "resolved") or {})
        return bool(resolved)

    await wait_for(cleared, within=45)
    assert resolved["id"] == firing["id"]
    assert resolved["resolved_at"] is not None
    assert len(await incidents(client)) == 1


@pytest.mark.slow
async def test_watch_opens_one_incident_per_episode(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    config_factory: Callable[..., Any],
    prometheus_with_target: Callable[[str], Any],
    exporter: tuple[Gauge, str],
) -> None:
    gauge, target = exporter
    prom = await asyncio.to_thread(prometheus_with_target, target)
    watch = {
        "name": "CheckoutLatency",
        "query": 'e2e_latency_seconds{service="checkout"}',
        "interval": "1s",
        "for": "2s",
        "above": 0.5,
        "resolve_after": 2,
    }
    client = await aiohttp_client(init_app(config_factory(prometheus={"url": prom.url}, watches=[watch])))
    await _watched(client, "CheckoutLatency", polls=4)
    assert await incidents(client) == []  # clean series: nothing opens

    gauge.value = 2.0
    await wait_for(lambda: _count(client, "firing", 1), within=30)
    await _watched(client, "CheckoutLatency", polls=4)  # still breaching: the same episode
    assert len(await incidents(client)) == 1

    gauge.value = 0.1
    await wait_for(lambda: _count(client, "resolved", 1), within=30)
    [incident] = await incidents(client)
    assert incident["labels"]["watch"] == "CheckoutLatency"
    assert incident["labels"]["service"] == "checkout"


async def _watched(client: TestClient, watch: str, polls: int) -> None:
    """Until the watch has finished ``polls`` more polls with its series in view (long enough for its
    ``for`` to pass), and intake has taken in whatever they committed: any incident those polls would
    open exists by then. The evaluation counter goes up at the start of a poll, so one more is
    waited for, which the previous poll had to finish first."""
    metrics = client.app[METRICS]
    series = f'agentic_obs_watch_series{{watch="{watch}"}}'
    polled = f'agentic_obs_watch_evaluations_total{{outcome="ok",watch="{watch}"}}'

    async def in_view() -> bool:
        return bool(metrics.snapshot().get(series, 0) >= 1)

    await wait_for(in_view, within=30)
    start = metrics.snapshot().get(polled, 0)

    async def polled_enough() -> bool:
        return bool(metrics.snapshot().get(polled, 0) >= start + polls + 1)

    async def taken_in() -> bool:
        return (await client.app[STORE].counts())["inbox_pending"] == 0

    await wait_for(polled_enough, within=30)
    await wait_for(taken_in)


async def _count(client: TestClient, status: str, expected: int) -> bool:
    return len(await incidents(client, status=status)) == expected


@pytest.fixture
def prometheus_with_target(tmp_path: Any) -> Any:
    started = []

    def start(target: str) -> Any:
        proc = start_prometheus(tmp_path / "prom", [target])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
