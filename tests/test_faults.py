"""Downstream faults: Prometheus down, incident memory unreachable, the model timing out, Slack and
PagerDuty failing — all at once. The service keeps accepting alerts, readiness names what is degraded,
reports still go out (rules reasoner, no memory), and everything catches up when the parts return."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from agentic_observability.config import Tunables
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from tests.conftest import auth_headers, fixture_body
from tests.fakes import MODEL_TOKEN, FakeModel
from tests.test_actions import Sinks, sinks  # noqa: F401  (the fixture)
from tests.test_webhook import incidents, post, wait_for

Client = Callable[..., Awaitable[TestClient]]
FAILING = [(500, {}, {"ok": False, "message": "down"})] * 10_000


async def ready(client: TestClient) -> dict[str, Any]:
    response = await client.get("/api/v1/health/ready")
    assert response.status == 200  # degraded is still ready: alerts are being stored
    return dict(await response.json())


async def test_everything_downstream_fails_then_returns(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
) -> None:
    blocked = tmp_path / "state" / "memory"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the memory directory should be: Qdrant Edge cannot open")
    model = TestServer(FakeModel("timeout").app(), host="127.0.0.1")
    await model.start_server()
    sinks.slack.script = list(FAILING)
    sinks.pagerduty.script = list(FAILING)
    config = sinks.config(tmp_path)
    reasoning = config.file.reasoning.model_copy(
        update={"backend": "llm", "base_url": str(model.make_url("")), "timeout": 1.0}
    )
    config = config.model_copy(
        update={
            "file": config.file.model_copy(update={"reasoning": reasoning}),
            "secrets": config.secrets.model_copy(update={"huggingface_token": SecretStr(MODEL_TOKEN)}),
            "tunables": Tunables(circuit_breaker_threshold=3, circuit_breaker_reset=1.0),
        }
    )
    client = await aiohttp_client(init_app(config))
    try:
        assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202

        async def reported() -> bool:
            found = await incidents(client)
            return bool(found) and found[0]["report"] is not None

        await wait_for(reported, within=15)
        report = (await incidents(client))[0]["report"]
        assert report["reasoner"] == "rules" and "did not answer within 1s" in report["reasoner_note"]
        assert "Incident memory could not be searched" in report["summary"]

        async def breakers_open() -> bool:
            checks = (await ready(client))["checks"]
            return checks["slack"]["breaker"] == "open" or checks["pagerduty"]["breaker"] == "open"

        await wait_for(breakers_open, within=20)
        status = await ready(client)
        assert status["status"] == "degraded"
        assert status["checks"]["prometheus"]["status"] == "down"
        assert status["checks"]["memory"]["status"] == "down"
        assert (await post(client, fixture_body("am-0.25-resolved.json"))).status == 202  # still accepting

        sinks.slack.script.clear()
        sinks.pagerduty.script.clear()
        blocked.unlink()

        async def caught_up() -> bool:
            rows = await client.app[STORE].outbox_rows()
            return len(rows) >= 10 and all(r["state"] == "delivered" for r in rows)

        await wait_for(caught_up, within=60)
        assert (await ready(client))["checks"]["memory"]["status"] == "ok"
        assert len(sinks.slack.parents()) == 1 and len(sinks.pagerduty.events("trigger")) == 1
        assert sinks.errors() == []
    finally:
        await model.close()
    followup = await post(client, {**fixture_body("am-0.25-firing.json"), "groupKey": "again"})
    assert followup.status == 202
    response = await client.get("/api/v1/incidents", headers=auth_headers())
    assert response.status == 200
