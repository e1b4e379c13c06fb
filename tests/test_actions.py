"""Actions end to end through the service: Alertmanager webhook in, Grafana/Slack/PagerDuty out (local
fakes that check each request's shape), exactly once, through failures and a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.config import Config
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from tests.conftest import fixture_body, make_config
from tests.fakes import GRAFANA_TOKEN, PD_ROUTING_KEY, SLACK_TOKEN, FakeGrafana, FakePagerDuty, FakeSlack
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]


class Sinks:
    def __init__(self) -> None:
        self.slack, self.grafana, self.pagerduty = FakeSlack(), FakeGrafana(), FakePagerDuty()
        self.servers: list[TestServer] = []

    async def start(self) -> None:
        for fake in (self.slack, self.grafana, self.pagerduty):
            server = TestServer(fake.app(), host="127.0.0.1")
            await server.start_server()
            self.servers.append(server)

    def url(self, index: int, path: str = "") -> str:
        return str(self.servers[index].make_url(path))

    def config(self, tmp_path: Path, server: dict[str, Any] | None = None, **extra: Any) -> Config:
        return make_config(
            tmp_path,
            secrets={
                "slack_bot_token": SLACK_TOKEN,
                "grafana_token": GRAFANA_TOKEN,
                "pagerduty_routing_key": PD_ROUTING_KEY,
            },
            server={"public_url": "https://agentic-obs.example", **(server or {})},
            actions={
                "slack": {"api_url": self.url(0, "/api"), "channel": "#incidents"},
                "grafana": {"url": self.url(1), "dashboard_uid": "ops", "panel_id": 2},
                "pagerduty": {"events_url": self.url(2, "/v2/enqueue")},
                "first_retry": "0.2s",
                **extra,
            },
        )

    def errors(self) -> list[str]:
        return self.slack.errors + self.grafana.errors + self.pagerduty.errors


@pytest.fixture
async def sinks() -> AsyncIterator[Sinks]:
    started = Sinks()
    await started.start()
    yield started
    for server in started.servers:
        await server.close()


async def delivered(client: TestClient, count: int) -> bool:
    rows = await client.app[STORE].outbox_rows()
    return len(rows) >= count and all(r["state"] == "delivered" for r in rows)


async def test_lifecycle_each_sink_hears_once(aiohttp_client: Client, tmp_path: Path, sinks: Sinks) -> None:
    client = await aiohttp_client(init_app(sinks.config(tmp_path)))
    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202
    await wait_for(lambda: delivered(client, 5))  # grafana, slack parent + investigation, pagerduty, file
    (parent,) = sinks.slack.parents()
    assert parent["blocks"][0]["text"]["text"].startswith("[FIRING] HighCheckoutLatency")
    (annotation,) = sinks.grafana.annotations.values()
    assert {"agentic-obs", "HighCheckoutLatency", "checkout"} <= set(annotation["tags"])
    assert "timeEnd" not in annotation or annotation["timeEnd"] is None
    (trigger,) = sinks.pagerduty.events("trigger")
    install = await client.app[STORE].install_id()
    assert trigger["payload"]["severity"] == "critical" and trigger["dedup_key"] == f"agentic-obs-{install}-1"
    assert f"incident:{install}-1" in annotation["tags"]

    assert (await post(client, fixture_body("am-0.25-resolved.json"))).status == 202
    await wait_for(lambda: delivered(client, 11))  # + annotation end, update, reply, resolve, file, memory
    assert len(sinks.slack.parents()) == 1
    assert parent["blocks"][0]["text"]["text"].startswith("[RESOLVED]")  # updated in place
    investigation, resolved = sinks.slack.replies(parent["ts"])
    assert investigation["blocks"][0]["text"]["text"] == "*Investigation (rules reasoner)*"
    assert resolved["blocks"][0]["text"]["text"].startswith("*Resolved at")
    assert len(sinks.grafana.annotations) == 1 and annotation["timeEnd"] >= annotation["time"]
    assert set(annotation["tags"]) >= {"agentic-obs", "checkout"}  # the PATCH kept them
    (resolve,) = sinks.pagerduty.events("resolve")
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert sinks.errors() == []
    lines = (tmp_path / "state" / "actions.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert set(sinks.grafana.dashboards) == {
        "agentic-obs-health",
        "agentic-obs-anomalies",
        "agentic-obs-incidents",
    }
    assert sinks.grafana.folders["agentic-obs"]["title"] == "agentic-observability"


async def test_provision_command_pushes_dashboards(
    sinks: Sinks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from agentic_observability.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(f"actions: {{grafana: {{url: '{sinks.url(1)}', folder: Ops}}}}\n")
    monkeypatch.setenv("GRAFANA_TOKEN", GRAFANA_TOKEN)
    assert await asyncio.to_thread(main, ["provision", "--config", str(config)]) == 0
    assert len(sinks.grafana.dashboards) == 3 and sinks.grafana.folders["agentic-obs"]["title"] == "Ops"
    assert await asyncio.to_thread(main, ["provision", "--config", str(config)]) == 0  # overwrite is fine
    assert sinks.grafana.errors == []


async def test_faults_and_restart_still_deliver_exactly_once(
    aiohttp_client: Client, tmp_path: Path, sinks: Sinks
) -> None:
    sinks.slack.script = [(500, {}, {"ok": False})] * 2 + [(429, {"Retry-After": "1"}, {"ok": False})] * 3
    sinks.grafana.down = True
    config = sinks.config(tmp_path)
    first = await aiohttp_client(init_app(config))
    assert (await post(first, fixture_body("am-0.25-firing.json"))).status == 202

    async def tried() -> bool:
        rows = await first.app[STORE].outbox_rows()
        return any(r["sink"] == "slack" and r["attempts"] >= 2 for r in rows)

    await wait_for(tried, within=15)
    await first.close()  # restart while Slack and Grafana are still failing

    sinks.grafana.down = False
    second = await aiohttp_client(init_app(config))
    assert (await post(second, fixture_body("am-0.25-resolved.json"))).status == 202
    await wait_for(lambda: delivered(second, 11), within=30)
    assert len(sinks.slack.parents()) == 1
    assert len(sinks.slack.replies(sinks.slack.parents()[0]["ts"])) == 2
    assert len(sinks.grafana.annotations) == 1
    assert [a for a, _ in sinks.grafana.requests] == ["add", "patch"]
    assert len(sinks.pagerduty.events("trigger")) == 1 and len(sinks.pagerduty.events("resolve")) == 1
    assert sinks.slack.script == [] and sinks.errors() == []


async def test_pagerduty_400_is_not_retried(aiohttp_client: Client, tmp_path: Path, sinks: Sinks) -> None:
    sinks.pagerduty.script = [(400, {}, {"status": "invalid event", "message": "Event object is invalid"})]
    client = await aiohttp_client(init_app(sinks.config(tmp_path)))
    await post(client, fixture_body("am-0.25-firing.json"))

    async def settled() -> bool:
        rows = await client.app[STORE].outbox_rows()
        return len(rows) >= 4 and all(r["state"] != "pending" for r in rows)

    await wait_for(settled)
    (pd,) = [r for r in await client.app[STORE].outbox_rows() if r["sink"] == "pagerduty"]
    assert pd["state"] == "failed" and pd["attempts"] == 1 and "Event object is invalid" in pd["last_error"]


async def test_routes_send_only_matching_incidents(
    aiohttp_client: Client, tmp_path: Path, sinks: Sinks
) -> None:
    routes = [{"sink": "pagerduty", "severities": ["critical"], "matchers": ['team="platform"']}]
    client = await aiohttp_client(init_app(sinks.config(tmp_path, routes=routes)))
    await post(client, fixture_body("am-0.25-firing.json"))  # team="payments": no page
    await wait_for(lambda: delivered(client, 3))
    assert {r["sink"] for r in await client.app[STORE].outbox_rows()} == {"grafana", "slack", "file"}
    assert sinks.pagerduty.requests == []


async def test_feedback_reaches_memory_and_later_recall(aiohttp_client: Client, tmp_path: Path) -> None:
    from tests.conftest import auth_headers
    from tests.test_webhook import incidents

    client = await aiohttp_client(init_app(make_config(tmp_path)))
    await post(client, fixture_body("am-0.25-firing.json"))
    await post(client, fixture_body("am-0.25-resolved.json"))
    await wait_for(lambda: delivered(client, 3))  # file open + resolve, memory remember
    bad = await client.post("/api/v1/incidents/1/feedback", json={}, headers=auth_headers())
    assert bad.status == 400 and "at least one" in (await bad.json())["detail"]
    missing = await client.post(
        "/api/v1/incidents/99/feedback", json={"correct": True}, headers=auth_headers()
    )
    assert missing.status == 404
    body = {"root_cause": "payments-db", "resolution": "failed over the primary", "correct": False}
    response = await client.post("/api/v1/incidents/1/feedback", json=body, headers=auth_headers())
    assert response.status == 200 and (await response.json())["remembered"] is True
    await wait_for(lambda: delivered(client, 4))

    again = fixture_body("am-0.25-firing.json")
    again["groupKey"] += "-again"
    again["alerts"][0]["startsAt"] = "2030-01-01T00:00:00Z"
    await post(client, again)

    async def recalled() -> bool:
        found = await incidents(client)
        return len(found) == 2 and found[0]["report"] is not None

    await wait_for(recalled)
    newest = (await incidents(client))[0]
    detail = await (await client.get(f"/api/v1/incidents/{newest['id']}", headers=auth_headers())).json()
    (similar,) = detail["similar_incidents"]
    assert similar["id"] == "1" and similar["root_cause"] == "payments-db" and similar["confirmed"] is True
    assert "failed over the primary" in detail["report"]["summary"]
    assert detail["report"]["reasoner"] == "rules"


async def test_a_slow_receiver_does_not_hold_up_the_others(
    aiohttp_client: Client, tmp_path: Path, sinks: Sinks
) -> None:
    sinks.slack.delay = 3.0
    client = await aiohttp_client(init_app(sinks.config(tmp_path)))
    await post(client, fixture_body("am-0.25-firing.json"))

    async def slack_busy() -> bool:
        return sinks.slack.arrived >= 1

    await wait_for(slack_busy)
    second = fixture_body("am-0.25-firing.json")
    second["groupKey"] = "another-group"
    await post(client, second)

    async def both_paged() -> bool:
        return len(sinks.pagerduty.events("trigger")) == 2

    await wait_for(both_paged, within=2.0)  # while the first Slack post is still in flight
    assert sinks.slack.parents() == []
