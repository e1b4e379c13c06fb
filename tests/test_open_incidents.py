"""agentic_obs_incident_open follows the store's open incidents: one series per open fault (its root),
gone once the fault resolves or is pruned, bounded in rows and label length (issue 19)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.errors import StoreError
from agentic_observability.models import AcceptedAlert, Alert, Incident
from agentic_observability.service import init_app, open_incidents
from agentic_observability.service.open_incidents import OpenIncidents
from agentic_observability.store import SqliteStore
from agentic_observability.telemetry import OPEN_INCIDENT_LABELS, Metrics
from tests.conftest import auth_headers, fixture_body, make_config
from tests.test_retention import ingest

Client = Callable[..., Awaitable[TestClient]]
STARTS = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Any) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state")
    yield opened
    await opened.close()


def accepted(group: str, status: str = "firing", **labels: str) -> AcceptedAlert:
    alert = Alert(
        status="firing" if status == "firing" else "resolved",
        labels={"alertname": "HighLatency", "service": group, **labels},
        annotations={"summary": f"{group} is slow"},
        starts_at=STARTS,
        ends_at=None if status == "firing" else STARTS + 60,
        generator_url="",
        fingerprint=f"fp-{group}",
    )
    return AcceptedAlert(group_key=group, source="alertmanager", alert=alert)


async def analyse(store: SqliteStore, joins: Mapping[str, str] | None = None) -> None:
    """Complete every pending job; ``joins``: incident id -> the root it joins as one fault."""
    for job in await store.pending_jobs():
        root = (joins or {}).get(job.incident_id)
        why = {"reason": "same fault", "by": "correlation"} if root else None
        report = {"summary": job.kind, "facts": {"severity": "critical"}}
        await store.complete_job(job.id, job.incident_id, report, joins=root, joined=why)


def series(metrics: Metrics) -> list[dict[str, str]]:
    """The gauge's series (labels without the empty ones, as Prometheus stores them), by id."""
    found = [
        {k: v for k, v in sample.labels.items() if v}
        for family in metrics.registry.collect()
        if family.name == "agentic_obs_incident_open"
        for sample in family.samples
        if sample.value == 1
    ]
    return sorted(found, key=lambda labels: int(labels["id"]))


def ids(metrics: Metrics) -> list[str]:
    return [row["id"] for row in series(metrics)]


def omitted(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("agentic_obs_incident_open_omitted")


async def test_rows_follow_incidents_opening_joining_and_resolving(store: SqliteStore) -> None:
    metrics = Metrics()
    table = OpenIncidents(store, metrics)
    await table.refresh()
    assert series(metrics) == [] and omitted(metrics) == 0

    await ingest(store, [accepted("checkout", severity="warning"), accepted("cart"), accepted("db")])
    await table.refresh()
    assert series(metrics) == [
        {"id": "1", "title": "HighLatency: checkout is slow", "service": "checkout", "severity": "warning"},
        {"id": "2", "title": "HighLatency: cart is slow", "service": "cart"},  # not analysed yet
        {"id": "3", "title": "HighLatency: db is slow", "service": "db"},
    ]

    await analyse(store, joins={"3": "1"})  # db joins checkout's fault: a member, no row of its own
    await table.refresh()
    assert ids(metrics) == ["1", "2"]
    assert series(metrics)[1]["severity"] == "critical"  # the report's, once analysed

    await ingest(store, [accepted("checkout", "resolved"), accepted("cart", "resolved")])
    await table.refresh()
    assert ids(metrics) == ["1"]  # its member db still fires: the fault is open
    await ingest(store, [accepted("db", "resolved")])
    await table.refresh()
    assert series(metrics) == [] and omitted(metrics) == 0


async def test_a_pruned_incident_leaves_the_table(store: SqliteStore) -> None:
    """A firing incident no delivery touched for the silence (send_resolved: false) is pruned."""
    metrics = Metrics()
    table = OpenIncidents(store, metrics)
    await ingest(store, [accepted("silent"), accepted("newest")])
    await analyse(store)
    await table.refresh()
    assert ids(metrics) == ["1", "2"]

    pruned = await store.prune(time.time() - 3600, batch=100, silent_before=time.time() + 10)
    assert pruned["incidents"] == 1  # the newest one always stays
    await table.refresh()
    assert ids(metrics) == ["2"]


async def test_rows_are_bounded_and_the_rest_counted(store: SqliteStore) -> None:
    metrics = Metrics()
    table = OpenIncidents(store, metrics)
    long = "x" * 5000
    await ingest(store, [accepted(f"g{n}") for n in range(519)] + [accepted(long)])
    await table.refresh()
    rows = series(metrics)
    assert len(rows) == 500 and omitted(metrics) == 20
    assert [r["id"] for r in rows] == [str(n) for n in range(21, 521)]  # the newest
    assert max(len(v) for r in rows for v in r.values()) == 100  # title and service cut
    assert rows[-1]["service"] == "x" * 100

    await ingest(store, [accepted(f"more{n}") for n in range(600)])
    await table.refresh()
    assert len(series(metrics)) == 500 and omitted(metrics) == 500  # counted up to 500: at least


async def test_links_to_the_api_and_the_slack_thread(store: SqliteStore) -> None:
    asked: list[list[str]] = []

    async def slack_refs(incident_ids: Sequence[str]) -> dict[str, str]:
        asked.append(list(incident_ids))
        return {"1": "C0123ABC|1712345678.123456", "2": "not a ref"}

    metrics = Metrics()
    table = OpenIncidents(
        store, metrics, "https://user:secret@obs.example.com/base/", "team", slack_refs=slack_refs
    )
    await ingest(store, [accepted("checkout", team="payments"), accepted("cart")])
    await table.refresh()
    first, second = series(metrics)
    assert first == {
        "id": "1",
        "title": "HighLatency: checkout is slow",
        "service": "payments",  # investigation.entity_label
        "url": "https://obs.example.com/base/api/v1/incidents/1",  # never the userinfo
        "slack_channel": "C0123ABC",
        "slack_ts": "1712345678123456",  # as a Slack archive link wants it: /archives/C0123ABC/p…
    }
    assert "slack_channel" not in second and "service" not in second
    assert asked == [["2", "1"]]
    assert set(first) <= set(OPEN_INCIDENT_LABELS)


class FailingStore:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.failing = False
        self.reads = 0

    async def list_incidents(self, status: str | None = None, limit: int = 100) -> list[Incident]:
        self.reads += 1
        if self.failing:
            raise StoreError("disk I/O error")
        return await self.store.list_incidents(status, limit)


async def test_the_loop_reads_again_when_poked_and_keeps_the_last_rows_on_a_store_error(
    store: SqliteStore,
) -> None:
    metrics = Metrics()
    failing = FailingStore(store)
    table = OpenIncidents(failing, metrics, interval=60.0, min_gap=0.0)  # type: ignore[arg-type]
    await ingest(store, [accepted("checkout")])
    table.start()
    try:
        await _until(lambda: ids(metrics) == ["1"])
        await ingest(store, [accepted("cart")])
        table.poke()
        await _until(lambda: ids(metrics) == ["1", "2"])  # long before the 60 s interval

        failing.failing = True
        reads = failing.reads
        table.poke()
        await _until(lambda: failing.reads > reads)
        assert ids(metrics) == ["1", "2"]  # stale for an interval rather than empty
        assert metrics.registry.get_sample_value("agentic_obs_errors_total", {"component": "open_incidents"})
    finally:
        await table.stop()


async def test_pokes_in_a_burst_read_the_store_at_most_once_per_gap(store: SqliteStore) -> None:
    counting = FailingStore(store)
    table = OpenIncidents(counting, Metrics(), interval=60.0, min_gap=60.0)  # type: ignore[arg-type]
    table.start()
    try:
        await _until(lambda: counting.reads == 1)
        for _ in range(5):  # a storm's completions
            table.poke()
            await asyncio.sleep(0.02)
        assert counting.reads == 1
    finally:
        await table.stop()


async def test_the_app_keeps_the_gauge_current(
    aiohttp_client: Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(open_incidents, "REFRESH_SECONDS", 0.1)
    monkeypatch.setattr(open_incidents, "MIN_GAP_SECONDS", 0.0)
    config = make_config(tmp_path, server={"public_url": "https://obs.example.com"})
    client = await aiohttp_client(init_app(config))
    response = await client.post(
        "/api/v1/webhook/alertmanager", json=fixture_body("am-0.25-firing.json"), headers=auth_headers()
    )
    assert response.status == 202

    async def exported() -> str:
        return await (await client.get("/metrics")).text()

    deadline = asyncio.get_running_loop().time() + 10
    while 'agentic_obs_incident_open{id="1"' not in (text := await exported()):
        assert asyncio.get_running_loop().time() < deadline, "the open incident never appeared"
        await asyncio.sleep(0.05)
    [line] = [x for x in text.splitlines() if x.startswith("agentic_obs_incident_open{")]
    assert 'title="HighCheckoutLatency: checkout p99 latency above 2s"' in line
    assert 'url="https://obs.example.com/api/v1/incidents/1"' in line and line.endswith(" 1.0")


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
