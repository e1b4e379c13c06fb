"""Incident API, health, readiness, metrics, ad-hoc analysis and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agentic_observability.config import Config, Tunables
from agentic_observability.demo.stack import ManagedProcess, free_port
from agentic_observability.service import init_app
from agentic_observability.service.keys import ANALYZE_PROMETHEUS, PROMETHEUS
from agentic_observability.service.routes.openapi import document
from tests.conftest import auth_headers, fixture_body
from tests.test_webhook import incidents, post, wait_for

Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: Client, config_factory: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(init_app(config_factory()))


async def test_openapi_lists_exactly_the_routes(client: TestClient) -> None:
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not isinstance(route.resource, web.StaticResource)  # /docs/static: Swagger UI's files
    }
    response = await client.get("/api/v1/openapi.json")
    spec = await response.json()
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == documented
    assert spec == document()
    assert spec["openapi"].startswith("3.")


async def test_docs_page_points_at_the_spec(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert "/api/v1/openapi.json" in await response.text()


async def test_docs_page_loads_swagger_ui_from_the_service_not_a_cdn(client: TestClient) -> None:
    page = await (await client.get("/docs")).text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/docs/static/") for a in assets), assets
    for asset in assets:  # open like /docs itself, although auth is on
        response = await client.get(asset)
        assert response.status == 200, asset
        assert response.content_type in ("text/css", "application/javascript", "text/javascript")


async def test_openapi_version_is_one_the_bundled_swagger_ui_renders(client: TestClient) -> None:
    # swagger-ui-bundle ships Swagger UI 4, which shows "Unable to render this definition" for
    # anything but swagger 2.0 and openapi 3.0.n.
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert re.fullmatch(r"3\.0\.\d+", spec["openapi"])
    assert "nullable" in json.dumps(spec) and '["string", "null"]' not in json.dumps(spec)


async def test_health_is_open_and_cheap(client: TestClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.status == 200 and (await response.json())["status"] == "ok"


async def test_readiness_reports_prometheus_down_as_degraded(client: TestClient) -> None:
    response = await client.get("/api/v1/health/ready")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["store"]["status"] == "ok"
    assert body["checks"]["prometheus"]["status"] == "down"


async def test_readiness_ok_with_prometheus(
    aiohttp_client: Client, config_factory: Callable[..., Any], prometheus: ManagedProcess
) -> None:
    client = await aiohttp_client(init_app(config_factory(prometheus={"url": prometheus.url})))
    body = await (await client.get("/api/v1/health/ready")).json()
    assert body["status"] == "ok", body


async def test_metrics_expose_counts_and_queue_depth(client: TestClient) -> None:
    await post(client, fixture_body("am-0.25-firing.json"))
    await post(client, fixture_body("am-0.25-firing.json"))
    await wait_for(lambda: _reported(client))
    text = await (await client.get("/metrics")).text()
    assert 'agentic_obs_alerts_received_total{status="firing"} 2.0' in text
    assert "agentic_obs_alerts_duplicate_total 1.0" in text
    assert 'agentic_obs_webhook_requests_total{code="202"} 2.0' in text
    assert "agentic_obs_incidents_open 1.0" in text
    assert 'agentic_obs_incidents_opened_total{source="alertmanager"} 1.0' in text
    assert 'agentic_obs_queue_depth{queue="inbox"} 0.0' in text
    assert 'agentic_obs_stage_duration_seconds_count{stage="investigate"} 1.0' in text
    assert "agentic_obs_webhook_duration_seconds_bucket" in text
    snapshot = (await (await client.get("/api/v1/metrics")).json())["metrics"]
    assert snapshot["agentic_obs_incidents_open"] == 1.0


async def _reported(client: TestClient) -> bool:
    found = await incidents(client)
    return bool(found) and found[0]["report"] is not None


async def test_incident_filters_and_errors(client: TestClient) -> None:
    await post(client, fixture_body("am-0.25-firing.json"))
    await wait_for(lambda: _reported(client))
    assert len(await incidents(client, status="firing")) == 1
    assert await incidents(client, status="resolved") == []
    bad = await client.get("/api/v1/incidents", params={"status": "open"}, headers=auth_headers())
    assert bad.status == 400 and (await bad.json())["field"] == "status"
    bad = await client.get("/api/v1/incidents", params={"limit": "0"}, headers=auth_headers())
    assert bad.status == 400 and (await bad.json())["field"] == "limit"
    missing = await client.get("/api/v1/incidents/99999", headers=auth_headers())
    assert missing.status == 404
    odd = await client.get("/api/v1/incidents/../../etc", headers=auth_headers())
    assert odd.status == 404


async def test_analyze_queries_prometheus(
    aiohttp_client: Client, config_factory: Callable[..., Any], prometheus: ManagedProcess
) -> None:
    client = await aiohttp_client(init_app(config_factory(prometheus={"url": prometheus.url})))
    response = await client.post("/api/v1/analyze", json={"query": "vector(3) > 1"}, headers=auth_headers())
    assert response.status == 200
    evidence = (await response.json())["evidence"]
    assert evidence["query"] == "vector(3)"
    assert evidence["series"][0]["maximum"] == 3
    bad = await client.post("/api/v1/analyze", json={"query": "sum("}, headers=auth_headers())
    assert bad.status == 400
    wrong = await client.post(
        "/api/v1/analyze", json={"query": "up", "start": 10, "end": 5}, headers=auth_headers()
    )
    assert wrong.status == 400
    unknown = await client.post("/api/v1/analyze", json={"qeury": "up"}, headers=auth_headers())
    assert unknown.status == 400 and "qeury: Extra inputs" in (await unknown.json())["detail"]


class SlowOrBrokenPrometheus:
    """A Prometheus stand-in: instant queries (readiness) always answer; range queries (analyze) answer
    503 while ``broken``, or wait for ``release`` while ``slow``."""

    def __init__(self) -> None:
        self.broken = False
        self.slow = False
        self.release = asyncio.Event()
        self.waiting = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/query", self.query)
        app.router.add_post("/api/v1/query_range", self.query_range)
        return app

    async def query(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}})

    async def query_range(self, request: web.Request) -> web.Response:
        if self.broken:
            error = {"status": "error", "errorType": "unavailable", "error": "overloaded"}
            return web.json_response(error, status=503)
        if self.slow:
            self.waiting += 1
            await self.release.wait()
        return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": []}})


@pytest.fixture
async def fake_prometheus(
    aiohttp_server: Callable[..., Awaitable[Any]],
) -> tuple[SlowOrBrokenPrometheus, str]:
    fake = SlowOrBrokenPrometheus()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


async def test_analyze_failures_open_only_the_analyze_breaker(
    aiohttp_client: Client,
    config_factory: Callable[..., Config],
    fake_prometheus: tuple[SlowOrBrokenPrometheus, str],
) -> None:
    fake, url = fake_prometheus
    config = config_factory(prometheus={"url": url})
    config = config.model_copy(update={"tunables": Tunables(circuit_breaker_threshold=2)})
    client = await aiohttp_client(init_app(config))
    fake.broken = True
    for _ in range(4):
        response = await client.post("/api/v1/analyze", json={"query": "up"}, headers=auth_headers())
        assert response.status == 502
    assert "circuit open" in (await response.json())["detail"]
    assert client.app[ANALYZE_PROMETHEUS].guard.state == "open"
    assert client.app[PROMETHEUS].guard.state == "closed"  # incident analysis still queries
    ready = await (await client.get("/api/v1/health/ready")).json()
    assert ready["checks"]["prometheus"]["analyze_breaker"] == "open"
    assert ready["checks"]["prometheus"]["status"] == "ok", ready
    text = await (await client.get("/metrics")).text()
    assert 'agentic_obs_circuit_breaker_open{dependency="prometheus-analyze"} 1.0' in text
    assert 'agentic_obs_circuit_breaker_open{dependency="prometheus"} 0.0' in text


async def test_analyze_beyond_its_concurrency_gets_429(
    aiohttp_client: Client,
    config_factory: Callable[..., Config],
    fake_prometheus: tuple[SlowOrBrokenPrometheus, str],
) -> None:
    fake, url = fake_prometheus
    fake.slow = True
    client = await aiohttp_client(
        init_app(config_factory(prometheus={"url": url}, server={"analyze_concurrency": 1}))
    )
    first = asyncio.create_task(client.post("/api/v1/analyze", json={"query": "up"}, headers=auth_headers()))

    async def first_is_waiting() -> bool:
        return fake.waiting == 1

    await wait_for(first_is_waiting)
    refused = await client.post("/api/v1/analyze", json={"query": "up"}, headers=auth_headers())
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    body = await refused.json()
    assert body["error"] == "too many analyze requests" and "server.analyze_concurrency" in body["detail"]
    fake.release.set()
    assert (await first).status == 200
    again = await client.post("/api/v1/analyze", json={"query": "up"}, headers=auth_headers())
    assert again.status == 200  # the slot was given back


async def test_readiness_shows_the_prometheus_url_without_userinfo(
    aiohttp_client: Client, config_factory: Callable[..., Config]
) -> None:
    port = free_port()
    config = config_factory(prometheus={"url": f"http://agent:ready-pw@127.0.0.1:{port}"})
    client = await aiohttp_client(init_app(config))
    body = await (await client.get("/api/v1/health/ready")).json()
    check = body["checks"]["prometheus"]
    assert check["status"] == "down" and check["url"] == f"http://127.0.0.1:{port}"
    assert f"http://127.0.0.1:{port}" in check["detail"] and "ready-pw" not in str(body)


async def test_every_feedback_queues_its_own_memory_action(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second feedback on an incident is remembered too, even in the same millisecond as the first
    (the route's clock is frozen here): its memory action must not collide with the first and vanish."""
    from agentic_observability.service import feedback as incidents_route
    from agentic_observability.service.keys import STORE

    await post(client, fixture_body("am-0.25-firing.json"))

    async def reported() -> bool:
        found = await incidents(client)
        return bool(found) and found[0]["report"] is not None

    await wait_for(reported)
    monkeypatch.setattr(incidents_route, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    for body in ({"root_cause": "payments-db"}, {"resolution": "failed over the primary"}):
        response = await client.post("/api/v1/incidents/1/feedback", json=body, headers=auth_headers())
        assert response.status == 200 and (await response.json())["remembered"] is True
    memory = [r for r in await client.app[STORE].outbox_rows() if r["sink"] == "memory"]
    assert len(memory) == 2, memory
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        (last,) = db.execute("SELECT payload FROM outbox WHERE id = ?", (memory[-1]["id"],)).fetchone()
    assert "payments-db" in last and "failed over the primary" in last  # the second carries both
