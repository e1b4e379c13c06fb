"""Replicas on one store (issue 17): the heartbeat (``service/replica.py``) hands named leases (watches,
singleton loops) and jobs from a replica that stops, or dies, to another; a watch poller polls only
while its replica holds the watch, and picks up the open episodes when it takes the watch over.

Each test runs on SQLite and on a real PostgreSQL, two store objects on one database there (two
replicas), through the ``replicas`` fixture (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import generate_latest

from agentic_observability.config import WatchConfig
from agentic_observability.errors import StoreError
from agentic_observability.models import AcceptedAlert, Alert, Sample, Series
from agentic_observability.service import replica as replica_module
from agentic_observability.service.replica import PRESENCE, Replica
from agentic_observability.store import Job
from agentic_observability.telemetry import Metrics
from agentic_observability.watch import WatchPoller
from agentic_observability.watch.poller import watch_group_key
from tests.conftest import Replicas

NAMES = ["watch:a", "watch:b", "changes", "retention"]
LEASE = 1.0


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_stopping_replica_hands_its_leases_over_at_once(replicas: Replicas) -> None:
    one, two = await replicas(2)
    first, second = Replica(one, Metrics(), LEASE, NAMES), Replica(two, Metrics(), LEASE, NAMES)
    await first.beat()
    await second.beat()
    assert all(first.holds(n) for n in NAMES) and not any(second.holds(n) for n in NAMES)
    await second.beat()  # first's leases have not run out: still first's
    assert not any(second.holds(n) for n in NAMES)
    await first.stop()  # released: no lease period to wait
    await second.beat()
    assert all(second.holds(n) for n in NAMES) and not any(first.holds(n) for n in NAMES)
    assert metric(second._metrics, "agentic_obs_takeovers_total", kind="lease") == len(NAMES)
    held = generate_latest(second._metrics.registry).decode()
    assert 'agentic_obs_leases_held{name="watch:a"} 1.0' in held


async def test_a_dead_replica_loses_its_leases_and_jobs_within_two_lease_periods(replicas: Replicas) -> None:
    one, two = await replicas(2)
    dead, alive = Replica(one, Metrics(), LEASE, NAMES), Replica(two, Metrics(), LEASE, NAMES)
    claimed: list[Job] = []
    alive.on_jobs = claimed.extend
    await dead.beat()
    await one.accept([_alert("g1", "f1")])
    jobs, _ = await one.ingest_pending(owner=dead.id, lease=LEASE)  # the dead one's intake took it
    assert [j.kind for j in jobs] == ["analyze"]
    await alive.start()  # beats every third of a lease; the dead one never beats again
    died = time.monotonic()
    while not (all(alive.holds(n) for n in NAMES) and claimed):
        assert time.monotonic() - died < 2 * LEASE + 1.0, "not taken over within two lease periods"
        await asyncio.sleep(0.05)
    assert [(j.id, j.taken_from) for j in claimed] == [(jobs[0].id, dead.id)]
    assert metric(alive._metrics, "agentic_obs_takeovers_total", kind="job") == 1
    assert metric(alive._metrics, "agentic_obs_takeovers_total", kind="lease") == len(NAMES)
    await alive.stop()


async def test_a_replica_that_renewed_too_late_counts_the_conflict(replicas: Replicas) -> None:
    one, two = await replicas(2)
    slow, other = Replica(one, Metrics(), LEASE, NAMES), Replica(two, Metrics(), LEASE, NAMES)
    await slow.beat()
    await asyncio.sleep(LEASE + 0.2)  # slow stalls past its lease
    await other.beat()
    await slow.beat()
    assert not any(slow.holds(n) for n in NAMES) and all(other.holds(n) for n in NAMES)
    assert metric(slow._metrics, "agentic_obs_lease_conflicts_total") == len(NAMES)


# -- a watch moves between replicas --------------------------------------------------------------


class OneSeries:
    """One series, always above the watch's threshold: its episode stays open."""

    base_url = "http://prometheus.invalid"

    async def query(self, expr: str, at: float | None = None) -> list[Sample]:
        return [Sample({"service": "carts"}, at or 0.0, 0.95)]

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        return []


async def test_a_watch_polls_only_where_it_is_held_and_its_episode_stays_one_incident(
    replicas: Replicas,
) -> None:
    one, two = await replicas(2)
    watch = WatchConfig.model_validate({"name": "a", "query": "cpu", "interval": "60s", "above": 0.9})
    held = {"first": True, "second": False}
    first = WatchPoller(watch, OneSeries(), one, Metrics(), owns=lambda: held["first"])  # type: ignore[arg-type]
    second = WatchPoller(watch, OneSeries(), two, Metrics(), owns=lambda: held["second"])  # type: ignore[arg-type]
    await first._poll_if_held()
    await second._poll_if_held()  # not held: no poll
    jobs, _ = await one.ingest_pending()
    assert [j.kind for j in jobs] == ["analyze"]  # one episode opened, by the holder
    key = watch_group_key(watch, {"service": "carts"})
    assert first.tracker.started(key) and not second.tracker.started(key)

    held.update(first=False, second=True)  # the first replica lost the lease
    await first._poll_if_held()
    assert not first.tracker.states and not first._labels  # it forgot the series
    await second._poll_if_held()  # took it over: resumed the open episode from the store
    assert second.tracker.started(key)
    jobs, _ = await two.ingest_pending()
    assert jobs == [] and (await two.counts())["incidents_open"] == 1  # still one incident


def _alert(group: str, fingerprint: str) -> AcceptedAlert:
    labels = {"alertname": "A", "service": "carts"}
    alert = Alert("firing", labels, {}, time.time(), None, "", fingerprint)
    return AcceptedAlert(group_key=group, source="alertmanager", alert=alert)


async def test_named_leases_spread_over_the_live_replicas(replicas: Replicas) -> None:
    """Watches are spread: a replica holds at most its share (the names over the live replicas); past
    it (a replica joined) it lets the rest run out for the newcomer to take."""
    one, two = await replicas(2)
    first, second = Replica(one, Metrics(), LEASE, NAMES), Replica(two, Metrics(), LEASE, NAMES)
    await first.beat()
    assert first.held == set(NAMES)  # alone: everything
    await second.beat()  # joined: nothing is free yet
    await first.beat()  # two live replicas now: first keeps its share and lets the rest run out
    assert len(first.held) == len(NAMES) // 2
    await first.start()
    await second.start()  # both beat every third of a lease from here on
    await asyncio.sleep(2 * LEASE + 0.5)  # what first let go has run out and been taken
    assert first.held.isdisjoint(second.held) and first.held | second.held == set(NAMES)
    assert len(first.held) == len(second.held) == len(NAMES) // 2
    await first.stop()
    await second.stop()


async def test_a_draining_replica_gives_up_its_watches_at_once_and_keeps_its_work(replicas: Replicas) -> None:
    one, two = await replicas(2)
    leaving, staying = Replica(one, Metrics(), LEASE, NAMES), Replica(two, Metrics(), LEASE, NAMES)
    await leaving.beat()
    await one.accept([_alert("g1", "f1")])
    [job], _ = await one.ingest_pending(owner=leaving.id, lease=LEASE)
    await leaving.drain()  # shutting down: its job is still in flight
    assert leaving.held == set()
    claimed: list[Job] = []
    staying.on_jobs = claimed.extend
    await staying.beat()
    assert staying.held == set(NAMES) and claimed == []  # the watches at once; the job stays leaving's
    await leaving.beat()  # a draining beat renews the work in flight and takes nothing
    assert leaving.held == set() and not leaving.lapsed
    await leaving.stop()
    await staying.beat()
    assert [j.id for j in claimed] == [job.id]


class FailingRenewals:
    """A store whose renewals fail (a database blip): everything else is the real store's."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.failing = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def renew_leases(self, owner: str, lease: float) -> int:
        if self.failing:
            raise StoreError("the database is unreachable")
        return await self._store.renew_leases(owner, lease)  # type: ignore[attr-defined, no-any-return]


async def test_readiness_of_the_heartbeat_degrades_then_goes_down_after_a_lease(replicas: Replicas) -> None:
    (store,) = await replicas(1)
    flaky = FailingRenewals(store)
    replica = Replica(flaky, Metrics(), LEASE, NAMES)  # type: ignore[arg-type]
    await replica.start()
    assert replica.health()["status"] == "ok"
    flaky.failing = True
    await asyncio.sleep(LEASE / 3 + 0.2)
    assert replica.health()["status"] == "degraded"
    await asyncio.sleep(LEASE)
    # alone on the store (SQLite) nobody can have taken its work: degraded; shared, down (503)
    assert replica.health()["status"] == ("down" if store.shared else "degraded") and replica.lapsed
    flaky.failing = False
    await asyncio.sleep(LEASE / 3 + 0.2)
    assert replica.health()["status"] == "ok"
    await replica.stop()


async def test_a_claim_taken_over_meanwhile_is_left_to_its_new_owner(replicas: Replicas) -> None:
    one, two = await replicas(2)
    late, other = Replica(one, Metrics(), LEASE, NAMES), Replica(two, Metrics(), LEASE, NAMES)
    await late.beat()
    await one.accept([_alert("g1", "f1")])
    [job], _ = await one.ingest_pending(owner=late.id, lease=LEASE)
    assert await late.confirm("job", job.id)
    if not one.shared:
        return  # one process on the store: nobody else can take it, and confirm never asks
    await asyncio.sleep(LEASE + 0.2)  # late's heartbeat stalled past its lease
    taken: list[Job] = []
    other.on_jobs = taken.extend
    await other.beat()
    assert [j.id for j in taken] == [job.id]
    assert not await late.confirm("job", job.id)  # late must not run or commit it now


class Calm(OneSeries):
    async def query(self, expr: str, at: float | None = None) -> list[Sample]:
        return [Sample({"service": "carts"}, at or 0.0, 0.5)]


async def test_a_watch_lost_and_taken_back_between_two_polls_starts_afresh(replicas: Replicas) -> None:
    """A opens an episode; while another replica holds the watch the episode closes; A takes the watch
    back before its next poll and the series breaches again: A must open a new incident, not trust its
    stale memory that the episode is still open."""
    one, two = await replicas(2)
    config = {"name": "a", "query": "cpu", "interval": "60s", "above": 0.9, "resolve_after": 1}
    watch = WatchConfig.model_validate(config)
    a = WatchPoller(watch, OneSeries(), one, Metrics(), owns=lambda: True)  # type: ignore[arg-type]
    b = WatchPoller(watch, Calm(), two, Metrics(), owns=lambda: True)  # type: ignore[arg-type]
    await a._poll_if_held()
    assert [j.kind for j in (await one.ingest_pending())[0]] == ["analyze"]
    a.lease_changed(False)  # A lost the watch; B took it, and the series calmed down
    await b._poll_if_held()
    assert [j.kind for j in (await two.ingest_pending())[0]] == ["resolve"]
    a.lease_changed(True)  # A took it back before its next poll, and the series breaches again
    await a._poll_if_held()
    assert [j.kind for j in (await one.ingest_pending())[0]] == ["analyze"]  # a new incident
    assert (await one.counts())["incidents_open"] == 1


async def test_a_drain_during_a_beat_leaves_no_named_lease_held(replicas: Replicas) -> None:
    """Shutdown begins while a beat is between reading the leases and taking them: the beat must not
    take back what the drain gives up."""
    (store,) = await replicas(1)
    replica = Replica(store, Metrics(), 5.0, NAMES)
    await replica.beat()
    real, gate = store.lease_owners, asyncio.Event()

    async def owners_then_wait() -> dict[str, tuple[str, float]]:
        live = await real()
        await gate.wait()  # the beat is here when shutdown begins
        return live

    store.lease_owners = owners_then_wait  # type: ignore[method-assign]
    beat = asyncio.create_task(replica.beat())
    await asyncio.sleep(0.05)
    drain = asyncio.create_task(replica.drain())
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(beat, drain)
    store.lease_owners = real  # type: ignore[method-assign]
    assert replica.held == set()
    assert not any(owner == replica.id for owner, _ in (await real()).values())


async def test_a_claim_is_handed_out_even_when_the_beat_runs_long(replicas: Replicas) -> None:
    """Renewing is bounded by a beat's interval, claiming is not: a slow claim still reaches the
    workers (cut off after its commit, the job would be renewed for ever and never run)."""
    (store,) = await replicas(1)
    replica = Replica(store, Metrics(), 0.6, ["retention"])
    handed: list[Job] = []
    replica.on_jobs = handed.extend
    real = store.claim_jobs

    async def claim_slowly(owner: str, lease: float, limit: int = 100) -> list[Job]:
        jobs = await real(owner, lease, limit)
        await asyncio.sleep(0.3)  # longer than a beat's interval (0.2 s)
        return jobs

    store.claim_jobs = claim_slowly  # type: ignore[method-assign]
    await store.accept([_alert("g1", "f1")])
    jobs, _ = await store.ingest_pending()  # unclaimed: the heartbeat hands it out
    await replica.start()
    await asyncio.sleep(1.0)
    await replica.stop()
    assert [j.id for j in handed] == [jobs[0].id]


async def test_a_watch_only_a_newer_replica_knows_is_still_polled(replicas: Replicas) -> None:
    """A rolling deploy adds a watch: the old replica does not know it, so the new one takes it
    beyond its share rather than leave it unpolled."""
    one, two = await replicas(2)
    newer = Replica(one, Metrics(), LEASE, [*NAMES, "watch:new"])
    older = Replica(two, Metrics(), LEASE, NAMES)
    await newer.beat()
    await older.beat()
    await newer.start()
    await older.start()
    await asyncio.sleep(4 * LEASE)
    held = newer.held | older.held
    await newer.stop()
    await older.stop()
    assert "watch:new" in held and held >= set(NAMES)


async def test_a_replica_killed_long_ago_is_forgotten(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica killed without a stop leaves its presence lease: another one's sweep deletes it once
    it ran out long enough ago (an hour; here 0.2 s)."""
    monkeypatch.setattr(replica_module, "FORGOTTEN_AFTER", 0.2)
    one, two = await replicas(2)
    killed = Replica(one, Metrics(), 0.3, NAMES)
    await killed.beat()  # present, then gone: never stopped, nothing released
    await asyncio.sleep(0.3 + 0.4)
    assert await two.forget_leases(PRESENCE, 3600) == 0  # its row is still there (ran out recently)
    live = Replica(two, Metrics(), LEASE, NAMES)
    await live.beat()  # the first beat sweeps
    assert await two.forget_leases(PRESENCE, 0.0) == 0  # nothing expired is left: the killed one went
    assert set(await two.lease_owners()) == {f"{PRESENCE}{live.id}", *NAMES}
    await live.stop()
