"""The install id: incident ids restart at 1 in every store, so whatever a receiver outside the store
keys by (the PagerDuty dedup key, the Grafana tag the crash-window search looks for, Slack message
metadata) says ``<install>-<id>``. Two installations sharing a routing key or a Grafana org, or one on
a wiped volume, never merge a new incident into another's open alert."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.config import Config
from agentic_observability.integrations.delivery import sink_guard
from agentic_observability.integrations.pagerduty import PagerDutySink
from agentic_observability.models import Alert, AlertStatus, Incident, OutboxItem
from agentic_observability.outbox.plan import ActSettings, plan_actions
from agentic_observability.outbox.sinks import build_sinks
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.store import SqliteStore
from agentic_observability.store.sqlite.schema import DB_FILENAME, MIGRATIONS, SCHEMA_VERSION
from tests.conftest import fixture_body, make_config
from tests.fakes import GRAFANA_TOKEN, PD_ROUTING_KEY, SLACK_TOKEN, FakeGrafana, FakePagerDuty
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]


async def _install_ids(folder: Path, times: int = 1) -> list[str]:
    store = await SqliteStore.open(folder)
    try:
        return [await store.install_id() for _ in range(times)]
    finally:
        await store.close()


async def test_the_install_id_is_made_once_and_kept(tmp_path: Path) -> None:
    made, again = await _install_ids(tmp_path / "a", times=2)
    assert re.fullmatch(r"[0-9a-f]{12}", made) and again == made
    assert await _install_ids(tmp_path / "a") == [made]  # durable: the same after a restart
    assert await _install_ids(tmp_path / "b") != [made]  # another installation, or a wiped volume


async def test_a_store_from_before_install_ids_gets_one(tmp_path: Path) -> None:
    """A store written by the previous schema migrates (its incidents kept) and then gets its id."""
    folder = tmp_path / "state"
    folder.mkdir()
    with sqlite3.connect(folder / DB_FILENAME) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version in range(1, SCHEMA_VERSION):
            db.executescript(MIGRATIONS[version])
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        db.execute(
            "INSERT INTO incidents (group_key, source, status, title, labels, started_at, created_at, "
            "updated_at) VALUES ('g', 'alertmanager', 'firing', 'Old', '{}', 1, 1, 1)"
        )
    store = await SqliteStore.open(folder)
    try:
        assert re.fullmatch(r"[0-9a-f]{12}", await store.install_id())
        assert [i.title for i in await store.list_incidents()] == ["Old"]
    finally:
        await store.close()
    with sqlite3.connect(folder / DB_FILENAME) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def _incident(incident_id: str, status: AlertStatus = "firing") -> Incident:
    alert = Alert(
        fingerprint="f1",
        status=status,
        labels={"alertname": "HighLatency", "service": "checkout", "severity": "critical"},
        annotations={},
        starts_at=time.time() - 600,
        ends_at=time.time() if status == "resolved" else None,
        generator_url="",
    )
    return Incident(
        id=incident_id,
        group_key="g",
        source="alertmanager",
        status=status,
        title="HighLatency",
        labels={},
        started_at=alert.starts_at,
        resolved_at=alert.ends_at,
        alerts=(alert,),
    )


def test_the_install_id_is_in_the_dedup_key_and_the_tag() -> None:
    enabled = frozenset({"grafana", "pagerduty"})
    report: dict[str, Any] = {"summary": "s", "facts": {"alertname": "HighLatency", "severity": "critical"}}
    for kind, incident in (("analyze", _incident("7")), ("resolve", _incident("7", "resolved"))):
        actions = plan_actions(
            incident, report, kind, ActSettings(enabled=enabled, install_id="0a1b2c3d4e5f")
        )
        by_sink = {a.sink: a.payload for a in actions}
        assert by_sink["pagerduty"]["dedup_key"] == "agentic-obs-0a1b2c3d4e5f-7"
        assert "incident:0a1b2c3d4e5f-7" in by_sink["grafana"]["tags"]
    bare = {
        a.sink: a.payload
        for a in plan_actions(_incident("7"), report, "analyze", ActSettings(enabled=enabled))
    }
    assert bare["pagerduty"]["dedup_key"] == "agentic-obs-7" and "incident:7" in bare["grafana"]["tags"]


async def test_slack_metadata_names_the_installation(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, secrets={"slack_bot_token": SLACK_TOKEN}, actions={"slack": {"channel": "#incidents"}}
    )
    async with aiohttp.ClientSession() as session:
        sink = build_sinks(config, session, None, "0a1b2c3d4e5f")["slack"]
    assert sink._install == "0a1b2c3d4e5f"  # type: ignore[attr-defined]


class Receivers:
    """One fake PagerDuty and one fake Grafana that two installations share."""

    def __init__(self) -> None:
        self.pagerduty, self.grafana = FakePagerDuty(), FakeGrafana()
        self.servers: list[TestServer] = []

    async def start(self) -> None:
        for fake in (self.pagerduty, self.grafana):
            server = TestServer(fake.app(), host="127.0.0.1")
            await server.start_server()
            self.servers.append(server)

    def config(self, state: Path) -> Config:
        return make_config(
            state,
            secrets={"grafana_token": GRAFANA_TOKEN, "pagerduty_routing_key": PD_ROUTING_KEY},
            actions={
                "grafana": {"url": str(self.servers[1].make_url("")), "provision_dashboards": False},
                "pagerduty": {"events_url": str(self.servers[0].make_url("/v2/enqueue"))},
                "first_retry": "0.2s",
            },
        )


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    started = Receivers()
    await started.start()
    yield started
    for server in started.servers:
        await server.close()


async def _delivered(client: TestClient, count: int) -> bool:
    rows = await client.app[STORE].outbox_rows()
    return len(rows) >= count and all(r["state"] == "delivered" for r in rows)


async def test_two_installations_sharing_receivers_never_merge_incidents(
    aiohttp_client: Client, tmp_path: Path, receivers: Receivers
) -> None:
    """Both stores number their first incident 1. Each pages under its own dedup key, and the second
    one's crash-window search does not find (and patch) the first one's annotation."""
    first = await aiohttp_client(init_app(receivers.config(tmp_path / "one")))
    second = await aiohttp_client(init_app(receivers.config(tmp_path / "two")))
    for client in (first, second):
        assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202
        await wait_for(partial(_delivered, client, 3))  # grafana, pagerduty, file
    installs = [await c.app[STORE].install_id() for c in (first, second)]
    triggers = [e["dedup_key"] for e in receivers.pagerduty.events("trigger")]
    assert triggers == [f"agentic-obs-{i}-1" for i in installs]
    tags = [
        next(t for t in a["tags"] if t.startswith("incident:"))
        for a in receivers.grafana.annotations.values()
    ]
    assert tags == [f"incident:{i}-1" for i in installs]
    assert [kind for kind, _ in receivers.grafana.requests] == ["add", "add"]
    assert receivers.pagerduty.errors == [] and receivers.grafana.errors == []


async def test_an_incident_paged_before_the_upgrade_resolves_under_its_old_key() -> None:
    """An incident triggered before install ids has ``agentic-obs-<id>`` recorded as its PagerDuty
    reference; its resolve, planned after the upgrade with the new key, goes out under the recorded one."""
    pagerduty = FakePagerDuty()
    server = TestServer(pagerduty.app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            sink = PagerDutySink(
                session, str(server.make_url("/v2/enqueue")), PD_ROUTING_KEY, 5.0, sink_guard("pd", 5, 30.0)
            )
            payload = {"event_action": "resolve", "dedup_key": "agentic-obs-0a1b2c3d4e5f-5"}
            item = OutboxItem(1, "5", "pagerduty", "resolve", payload, 0, time.time(), ref="agentic-obs-5")
            assert await sink.deliver(item) == "agentic-obs-5"
            fresh = OutboxItem(
                2, "6", "pagerduty", "resolve", {**payload, "dedup_key": "agentic-obs-x-6"}, 0, 0.0
            )
            assert await sink.deliver(fresh) == "agentic-obs-x-6"  # nothing recorded: the planned key
    finally:
        await server.close()
    assert [e["dedup_key"] for e in pagerduty.events("resolve")] == ["agentic-obs-5", "agentic-obs-x-6"]
