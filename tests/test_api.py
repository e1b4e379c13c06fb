"""Incident API, health, readiness, metrics, ad-hoc analysis and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.service import init_app
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
        if route.resource is not None and route.method != "HEAD"
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
