"""Bounded state: the store prunes old resolved incidents (and nothing with work left), the retention
loop never holds up intake, and actions.jsonl rotates."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.config import StorageConfig
from agentic_observability.errors import StoreError
from agentic_observability.integrations.filesink import FileSink
from agentic_observability.models import AcceptedAlert, Action, Alert, AuditEntry, OutboxItem
from agentic_observability.outbox.sinks import build_sinks
from agentic_observability.service import init_app
from agentic_observability.service.keys import METRICS
from agentic_observability.service.retention import Retention
from agentic_observability.store import SqliteStore, Store
from agentic_observability.telemetry import Metrics
from tests.conftest import auth_headers, fixture_body, make_config
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
STARTS = 1_700_000_000.0
FUTURE = 10.0  # a cutoff this far past now: every resolved incident counts as old


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state")
    yield opened
    await opened.close()


def accepted(group: str, status: str, starts_at: float = STARTS) -> AcceptedAlert:
    alert = Alert(
        status="firing" if status == "firing" else "resolved",
        labels={"alertname": "HighLatency", "service": group},
        annotations={},
        starts_at=starts_at,
        ends_at=None if status == "firing" else starts_at + 60,
        generator_url="",
        fingerprint=f"fp-{group}",
    )
    return AcceptedAlert(group_key=group, source="alertmanager", alert=alert)


async def ingest(store: SqliteStore, alerts: Sequence[AcceptedAlert]) -> None:
    await store.accept(alerts)
    await store.ingest_pending(limit=100_000)


async def finish_jobs(store: SqliteStore) -> None:
    """Complete every pending job, queueing a file and a Slack action for each."""
    for job in await store.pending_jobs():
        queued = [
            Action(job.incident_id, sink, f"{job.kind}:{sink}", {"n": job.id}) for sink in ("file", "slack")
        ]
        await store.complete_job(job.id, job.incident_id, {"summary": job.kind}, queued)


async def deliver_all(store: SqliteStore) -> None:
    while due := await store.due_actions(time.time() + 1):
        for item in due:
            await store.action_delivered(item, f"ref-{item.incident_id}" if item.sink == "slack" else None)


async def resolved_incidents(store: SqliteStore, groups: Sequence[str], starts_at: float = STARTS) -> None:
    """Incidents that fired, were analysed, resolved and whose actions were all delivered."""
    await ingest(store, [accepted(g, "firing", starts_at) for g in groups])
    await ingest(store, [accepted(g, "resolved", starts_at) for g in groups])
    await finish_jobs(store)
    await deliver_all(store)


def table_counts(store: SqliteStore) -> dict[str, int]:
    tables = ("incidents", "incident_alerts", "jobs", "action_refs", "outbox", "inbox", "audit", "changes")
    with sqlite3.connect(store.path) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


# -- the store -------------------------------------------------------------------------------------


async def test_prune_deletes_old_incidents_with_everything_they_own(store: SqliteStore) -> None:
    await resolved_incidents(store, ["a", "b", "c"])
    for incident in ("1", "2", "3"):  # a remediation was approved on each
        await store.record_audit(incident, [AuditEntry("approved", "restart", f"k{incident}", STARTS)])
    await ingest(store, [accepted("open", "firing")])  # still firing, and the newest
    before = table_counts(store)
    assert before["incidents"] == 4 and before["action_refs"] == 3 and before["audit"] == 3

    pruned = await store.prune(time.time() + FUTURE, batch=100)

    assert pruned == {
        "incident_alerts": 3,
        "jobs": 6,  # analyze + resolve
        "action_refs": 3,
        "outbox": 12,  # 2 sinks x 2 jobs
        "audit": 3,
        "incidents": 3,
        "inbox": 7,  # every delivery: 3 firing, 3 resolved, and the open one's
        "changes": 0,
    }
    assert [i.group_key for i in await store.list_incidents()] == ["open"]
    after = table_counts(store)
    assert {t: before[t] - after[t] for t in pruned} == pruned
    assert await store.prune(time.time() + FUTURE, batch=100) == dict.fromkeys(pruned, 0)


async def test_inbox_rows_stay_for_the_retention_and_until_processed(store: SqliteStore) -> None:
    groups = ["a", "b"]
    await resolved_incidents(store, groups)
    await store.accept([accepted("unprocessed", "firing")])  # committed, not ingested yet
    assert (await store.prune(time.time() - 3600, batch=100))["inbox"] == 0
    # Within the retention, a retried delivery is still a duplicate: it opens nothing again.
    result = await store.accept([accepted(g, s) for g in groups for s in ("firing", "resolved")])
    assert (result.accepted, result.duplicates) == (0, 4)

    pruned = await store.prune(time.time() + FUTURE, batch=100)
    assert (pruned["incidents"], pruned["inbox"]) == (1, 4)  # the unprocessed row waits for ingest
    jobs, _ = await store.ingest_pending()
    assert [(j.incident_id, j.kind) for j in jobs] == [("3", "analyze")]


async def test_work_left_keeps_an_incident(store: SqliteStore) -> None:
    await ingest(store, [accepted(g, "firing") for g in ("pending-job", "pending-action", "given-up")])
    await ingest(store, [accepted(g, "resolved") for g in ("pending-job", "pending-action", "given-up")])
    await ingest(store, [accepted("newest", "firing")])
    for job in await store.pending_jobs():
        if job.incident_id != "1" and job.kind == "resolve":
            queued = [Action(job.incident_id, "file", "resolve", {})]
            await store.complete_job(job.id, job.incident_id, {}, queued)
        elif job.kind == "analyze":
            await store.complete_job(job.id, job.incident_id, {})
    due = {i.incident_id: i for i in await store.due_actions(time.time() + 1)}
    await store.action_failed(due["3"], "gave up", None)  # given up: no longer work left

    pruned = await store.prune(time.time() + FUTURE, batch=100)
    assert pruned["incidents"] == 1 and pruned["outbox"] == 1
    assert {i.group_key for i in await store.list_incidents()} == {"pending-job", "pending-action", "newest"}

    [resolve] = [j for j in await store.pending_jobs() if j.incident_id == "1"]
    await store.finish_job(resolve.id)
    await store.action_delivered(due["2"], None)
    assert (await store.prune(time.time() + FUTURE, batch=100))["incidents"] == 2


async def test_the_newest_incident_stays_so_ids_are_never_reused(store: SqliteStore) -> None:
    await resolved_incidents(store, ["a", "b"])
    assert (await store.prune(time.time() + FUTURE, batch=100))["incidents"] == 1
    assert [i.id for i in await store.list_incidents()] == ["2"]
    await resolved_incidents(store, ["c"])
    assert [i.id for i in await store.list_incidents()] == ["3", "2"]  # not 2 again


async def test_a_replayed_incident_is_kept_until_untouched_for_the_retention(store: SqliteStore) -> None:
    old = time.time() - 40 * 86400  # alerts that ended 40 days ago, analysed only now
    await resolved_incidents(store, ["replayed", "newest"], starts_at=old)
    assert (await store.prune(time.time() - 30 * 86400, batch=100))["incidents"] == 0
    assert (await store.prune(time.time() + FUTURE, batch=100))["incidents"] == 1


async def test_an_alert_that_ends_in_the_future_is_pruned_on_this_services_clock(store: SqliteStore) -> None:
    """A sender with a skewed clock (or the soak's synthetic times) can resolve with an endsAt years
    ahead: retention counts from when the incident last changed here, so it still goes."""
    await resolved_incidents(store, ["skewed", "other"], starts_at=time.time() + 5 * 365 * 86400)
    pruned = await store.prune(time.time() + 1, batch=100)
    assert pruned["incidents"] == 1  # the newest one stays (ids are never reused)


async def test_a_firing_incident_goes_only_once_no_delivery_touched_it_for_the_silence(
    store: SqliteStore,
) -> None:
    """A receiver with send_resolved: false never resolves anything; Alertmanager re-sends a firing
    group every repeat_interval, and each delivery keeps its incident alive."""
    episode = replace(accepted("watch-episode", "firing"), source="watch")  # reported once, at open
    await ingest(store, [accepted(g, "firing") for g in ("silent", "alive")] + [episode])
    await ingest(store, [accepted("newest", "firing")])
    await finish_jobs(store)
    await deliver_all(store)
    silence_from = time.time()
    await asyncio.sleep(0.01)
    result = await store.accept([accepted("alive", "firing")])  # a repeat_interval re-send
    assert result.duplicates == 1  # stored once, yet a sign of life
    assert (await store.prune(time.time() - 3600, batch=100))["incidents"] == 0  # firing: kept
    pruned = await store.prune(time.time() - 3600, batch=100, silent_before=silence_from)
    assert pruned["incidents"] == 1
    assert {i.group_key for i in await store.list_incidents()} == {"alive", "watch-episode", "newest"}


async def test_each_call_deletes_at_most_a_batch(store: SqliteStore) -> None:
    await resolved_incidents(store, [f"g{n}" for n in range(6)])
    first = await store.prune(time.time() + FUTURE, batch=2)
    assert (first["incidents"], first["incident_alerts"], first["inbox"]) == (2, 2, 2)
    retention = Retention(store, _settings(batch=2), Metrics(), pause=0)
    total = await retention.prune_all(time.time() + FUTURE)
    assert (total["incidents"], total["inbox"]) == (3, 10)  # the newest incident stays
    assert table_counts(store)["incidents"] == 1


# -- the loop ----------------------------------------------------------------------------------------


def _settings(batch: int, retention: str = "0s", interval: str = "10m") -> StorageConfig:
    return StorageConfig.model_validate(
        {"retention": retention, "prune_batch": batch, "prune_interval": interval}
    )


async def _many_old_incidents(store: SqliteStore, count: int) -> None:
    """``count`` resolved incidents with nothing left to do, written in bulk (no per-job commits)."""
    groups = [f"g{n}" for n in range(count)]
    await ingest(store, [accepted(g, "firing") for g in groups])
    await ingest(store, [accepted(g, "resolved") for g in groups])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE jobs SET done_at = ?", (time.time(),))


async def test_a_long_prune_never_blocks_intake(store: SqliteStore) -> None:
    await _many_old_incidents(store, 1500)
    metrics = Metrics()
    retention = Retention(store, _settings(batch=50), metrics, pause=0.02)  # 30 batches
    pruning = asyncio.create_task(retention.prune_all(time.time() + FUTURE))
    await wait_for(lambda: _pruned_any(metrics), within=10)

    started = time.perf_counter()
    result = await store.accept([accepted("new", "firing", starts_at=time.time())])
    waited = time.perf_counter() - started

    assert result.accepted == 1 and not pruning.done()  # committed in the middle of the prune
    assert waited < 0.5, waited
    total = await pruning
    assert total["incidents"] == 1499  # the newest stays
    assert metrics.snapshot()['agentic_obs_pruned_rows_total{table="incidents"}'] == 1499


async def _pruned_any(metrics: Metrics) -> bool:
    return metrics.snapshot().get('agentic_obs_pruned_rows_total{table="incidents"}', 0) > 0


async def test_pruning_waits_while_intake_is_under_pressure(store: SqliteStore) -> None:
    await resolved_incidents(store, ["a", "b"])
    storm = True
    asked: list[bool] = []

    def busy() -> bool:
        asked.append(storm)
        return storm

    retention = Retention(store, _settings(batch=10), Metrics(), busy=busy, pause=0.01)
    pruning = asyncio.create_task(retention.prune_all(time.time() + FUTURE))

    async def waited_twice() -> bool:  # it asked, was told to wait, and asked again
        return len(asked) >= 2

    await wait_for(waited_twice)
    assert not pruning.done() and table_counts(store)["incidents"] == 2
    storm = False
    assert (await pruning)["incidents"] == 1


class _FailingStore:
    def __init__(self) -> None:
        self.calls = 0

    async def prune(
        self, older_than: float, batch: int, silent_before: float | None = None
    ) -> dict[str, int]:
        self.calls += 1
        raise StoreError("prune failed: disk I/O error")


async def test_a_failed_pass_is_counted_and_the_loop_goes_on() -> None:
    metrics, failing = Metrics(), _FailingStore()
    retention = Retention(cast(Store, failing), _settings(batch=10, interval="10ms"), metrics)
    retention.start()
    await wait_for(lambda: _at_least(failing.calls, 2))
    await retention.stop()
    assert metrics.snapshot()['agentic_obs_errors_total{component="retention"}'] >= 2


async def _at_least(value: int, minimum: int) -> bool:
    return value >= minimum


async def test_a_retention_shorter_than_retries_draws_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    retention = Retention(cast(Store, _FailingStore()), _settings(batch=10, retention="2m"), Metrics())
    with caplog.at_level(logging.WARNING, logger="agentic_observability.service.retention"):
        retention.start()
        await retention.stop()
    assert "storage.retention is 120s" in caplog.text


# -- the service -------------------------------------------------------------------------------------


async def test_the_service_prunes_in_the_background(aiohttp_client: Client, tmp_path: Path) -> None:
    config = make_config(tmp_path, storage={"retention": "0s", "prune_interval": "100ms"})
    client = await aiohttp_client(init_app(config))
    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202
    assert (await post(client, fixture_body("am-0.25-resolved.json"))).status == 202
    newer = fixture_body("am-0.25-firing.json")
    newer["groupKey"] = "a newer group"
    await wait_for(lambda: _incident_status(client, "1", "resolved"))
    assert (await post(client, newer)).status == 202  # incident 1 is no longer the newest
    await wait_for(lambda: _incident_status(client, "1", None), within=20)
    assert client.app is not None
    snapshot = client.app[METRICS].snapshot()
    assert snapshot['agentic_obs_pruned_rows_total{table="incidents"}'] == 1


async def _incident_status(client: TestClient, incident_id: str, status: str | None) -> bool:
    response = await client.get(f"/api/v1/incidents/{incident_id}", headers=auth_headers())
    if response.status == 404:
        return status is None
    return bool((await response.json())["status"] == status)


# -- actions.jsonl -----------------------------------------------------------------------------------


def _item(n: int, text: str = "") -> OutboxItem:
    return OutboxItem(n, str(n), "file", "open", {"text": text}, 0, 0.0)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_actions_file_rotates_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    sink = FileSink(path, max_bytes=1024, backups=2)
    for n in range(100):
        await sink.deliver(_item(n, "x" * 50))
    files = [path, path.with_name("actions.jsonl.1"), path.with_name("actions.jsonl.2")]
    assert not path.with_name("actions.jsonl.3").exists()  # the oldest was dropped
    assert all(0 < f.stat().st_size <= 1024 for f in files)
    kept = [int(line["incident_id"]) for f in reversed(files) for line in _lines(f)]
    assert kept == list(range(100 - len(kept), 100))  # the newest lines, in order, none torn


async def test_without_backups_the_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    sink = FileSink(path, max_bytes=1024, backups=0)
    for n in range(100):
        await sink.deliver(_item(n, "x" * 50))
    assert [p.name for p in _files(tmp_path)] == ["actions.jsonl"]
    assert _lines(path)[-1]["incident_id"] == "99"


async def test_concurrent_deliveries_lose_no_line_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    sink = FileSink(path, max_bytes=2048, backups=100)
    await asyncio.gather(*(sink.deliver(_item(n, "y" * 40)) for n in range(300)))
    every = [line for f in _files(tmp_path) for line in _lines(f)]
    assert sorted(int(line["incident_id"]) for line in every) == list(range(300))


async def test_build_sinks_passes_the_rotation_settings(tmp_path: Path) -> None:
    config = make_config(tmp_path, actions={"file": {"max_bytes": 4096, "backups": 5}})
    async with aiohttp.ClientSession() as session:
        sink = build_sinks(config, session, None)["file"]
    assert isinstance(sink, FileSink) and (sink.max_bytes, sink.backups) == (4096, 5)


async def test_a_fault_is_pruned_only_once_nothing_of_it_fires(store: SqliteStore) -> None:
    """A fault's members and root go together: not while any group of it still fires (its listing
    would lose a member), and never a root before its members (they point at it)."""
    await ingest(store, [accepted(g, "firing") for g in ("root", "member", "newest")])
    await finish_jobs(store)
    await store.regroup("2", "1", {"by": "hand"})
    await ingest(store, [accepted("root", "resolved")])
    await finish_jobs(store)
    await deliver_all(store)
    assert await store.prune(time.time() + FUTURE, batch=100) == {
        "incident_alerts": 0,
        "jobs": 0,
        "action_refs": 0,
        "outbox": 0,
        "audit": 0,
        "incidents": 0,
        "inbox": 4,  # 3 firing, 1 resolved: deliveries are not the fault's
        "changes": 0,
    }
    await ingest(store, [accepted("member", "resolved")])
    await finish_jobs(store)
    await deliver_all(store)
    first = await store.prune(time.time() + FUTURE, batch=100)
    assert first["incidents"] == 1  # the member; its root has a member until then
    second = await store.prune(time.time() + FUTURE, batch=100)
    assert second["incidents"] == 1
    assert [i.group_key for i in await store.list_incidents()] == ["newest"]


async def test_action_refs_reads_what_a_sink_gave_each_incident(store: SqliteStore) -> None:
    """The open-incidents table links each row to its Slack thread from these references."""
    await ingest(store, [accepted(g, "firing") for g in ("a", "b")])
    await finish_jobs(store)
    await deliver_all(store)  # slack gives "ref-<id>"; the file sink gives none
    assert await store.action_refs("slack", ["1", "2", "99", "x"]) == {"1": "ref-1", "2": "ref-2"}
    assert await store.action_refs("file", ["1"]) == {}
