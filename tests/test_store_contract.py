"""One suite, both backends: every test runs on SQLite and on a real PostgreSQL (tests/pg.py).

``replicas(n)`` gives n store objects on one database: on PostgreSQL n separate stores (n replicas
of the service); on SQLite, where one file has one process, the same store n times, so the lease
tests still show the semantics (two owners), and the PostgreSQL runs show them under concurrency.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agentic_observability.config import PostgresConfig, load_config
from agentic_observability.errors import ConfigError, StoreError
from agentic_observability.models import AcceptedAlert, Action, Alert, AuditEntry, Change
from agentic_observability.service import init_app
from agentic_observability.store import AcceptResult, SqliteStore, Store, open_store
from tests import pg
from tests.conftest import Replicas, make_config

NOW = time.time()


@pytest.fixture
async def store(replicas: Replicas) -> Store:
    return (await replicas(1))[0]


def accepted(group: str, status: str = "firing", fp: str = "a", starts: float = NOW) -> AcceptedAlert:
    alert = Alert(
        status="firing" if status == "firing" else "resolved",
        labels={"alertname": "HighLatency", "service": group, "fp": fp},
        annotations={"summary": f"{group} is slow"},
        starts_at=starts,
        ends_at=None if status == "firing" else starts + 60,
        generator_url="",
        fingerprint=f"{group}-{fp}",
    )
    return AcceptedAlert(group_key=group, source="alertmanager", alert=alert)


async def ingest_all(store: Store) -> list[tuple[str, str]]:
    """(incident id, kind) of every job created until the inbox is empty."""
    made: list[tuple[str, str]] = []
    while True:
        jobs, more = await store.ingest_pending(limit=50)
        made += [(j.incident_id, j.kind) for j in jobs]
        if not more:
            return made


def action(incident: str, sink: str, name: str, not_before: float = 0.0) -> Action:
    return Action(incident, sink, name, {"say": name}, not_before)


# -- inbox and ingest ------------------------------------------------------------------------------------
async def test_accept_stores_each_alert_once(store: Store) -> None:
    alerts = [accepted("g1", fp="a"), accepted("g1", fp="b"), accepted("g2")]
    assert await store.accept(alerts) == AcceptResult(3, 0)
    assert await store.accept([*alerts, accepted("g3")]) == AcceptResult(1, 3)
    assert (await store.counts())["inbox_pending"] == 4


async def test_ingest_opens_one_incident_per_group_and_resolves_when_all_alerts_have(store: Store) -> None:
    await store.accept([accepted("g1", fp="a"), accepted("g1", fp="b"), accepted("g2")])
    assert sorted(k for _, k in await ingest_all(store)) == ["analyze", "analyze"]
    by_group = await store.open_incidents_by_group("alertmanager")
    assert sorted(by_group) == ["g1", "g2"]
    g1 = await store.get_incident(by_group["g1"])
    assert g1 is not None and g1.title == "HighLatency: g1 is slow"
    assert [a.fingerprint for a in g1.alerts] == ["g1-a", "g1-b"]

    await store.accept([accepted("g1", "resolved", fp="a")])
    assert await ingest_all(store) == []  # g1-b still fires
    await store.accept([accepted("g1", "resolved", fp="b"), accepted("g9", "resolved")])
    assert await ingest_all(store) == [(by_group["g1"], "resolve")]  # g9: a resolve never seen firing
    g1 = await store.get_incident(by_group["g1"])
    assert g1 is not None and g1.status == "resolved" and g1.resolved_at == NOW + 60
    assert await store.counts() == {
        "inbox_pending": 0,
        "jobs_pending": 3,
        "incidents_open": 1,
        "outbox_pending": 0,
    }
    await store.accept([accepted("g1", starts=NOW + 100)])  # fires again: a new incident
    assert [k for _, k in await ingest_all(store)] == ["analyze"]
    assert (await store.open_incidents_by_group("alertmanager"))["g1"] not in (by_group["g1"], by_group["g2"])


async def test_reads_list_get_and_count(store: Store) -> None:
    await store.accept([accepted(f"g{n}") for n in range(3)])
    await ingest_all(store)
    await store.accept([accepted("g0", "resolved")])
    await ingest_all(store)
    listed = await store.list_incidents()
    assert [i.group_key for i in listed] == ["g2", "g1", "g0"]  # newest first
    assert [i.group_key for i in await store.list_incidents(status="resolved")] == ["g0"]
    assert [i.group_key for i in await store.list_incidents(status="firing", limit=1)] == ["g2"]
    assert await store.get_incident("999999") is None
    assert await store.get_incident("1; DROP TABLE incidents") is None
    oldest = await store.oldest_pending_job_at()
    assert oldest is not None and abs(oldest - time.time()) < 60
    assert (await store.counts())["jobs_pending"] == 4


async def test_a_group_that_resolves_and_fires_again_in_one_batch_opens_a_new_incident(store: Store) -> None:
    """One ingest batch closes a group's open incident and opens its next: the old one must be closed
    before the new one is written (one open incident per group), or the batch fails for good and
    intake stalls behind it. A new incident that also resolves within the batch is written resolved."""
    await store.accept([accepted("g", fp="a")])
    assert await ingest_all(store) == [("1", "analyze")]
    await store.accept([accepted("g", "resolved", fp="a"), accepted("g", fp="b")])
    made = await ingest_all(store)
    assert sorted(kind for _, kind in made) == ["analyze", "resolve"]
    firing = await store.list_incidents(status="firing")
    assert len(firing) == 1 and firing[0].id != "1"
    second = await store.get_incident(firing[0].id)
    assert second is not None and [a.fingerprint for a in second.alerts] == ["g-b"]
    await store.accept(
        [accepted("g", "resolved", fp="b"), accepted("g", fp="c"), accepted("g", "resolved", fp="c")]
    )
    await ingest_all(store)
    assert (await store.counts())["incidents_open"] == 0
    assert [i.status for i in await store.list_incidents()] == ["resolved", "resolved", "resolved"]
    await store.accept([accepted("h")])
    assert [kind for _, kind in await ingest_all(store)] == ["analyze"]  # intake goes on


async def test_install_id_is_made_once(replicas: Replicas) -> None:
    first, second = await replicas(2)
    made = await first.install_id()
    assert len(made) == 12 and await first.install_id() == made and await second.install_id() == made


# -- jobs, reports, outbox -------------------------------------------------------------------------------
async def test_complete_job_saves_report_actions_and_done_together(store: Store) -> None:
    await store.accept([accepted("g1"), accepted("g2")])
    await ingest_all(store)
    job = (await store.pending_jobs())[0]
    report = {"summary": "cpu", "similar_incidents": [{"id": "7"}]}
    actions = [action(job.incident_id, "slack", "open"), action(job.incident_id, "file", "analyze")]
    await store.complete_job(job.id, job.incident_id, report, actions)
    await store.complete_job(job.id, job.incident_id, report, actions)  # a retried job: queued once
    incident = await store.get_incident(job.incident_id)
    assert incident is not None and incident.report == report
    assert incident.similar_incidents == ({"id": "7"},)
    assert [j.id for j in await store.pending_jobs()] != [job.id] and len(await store.pending_jobs()) == 1
    rows = await store.outbox_rows(job.incident_id)
    assert [(r["sink"], r["action"], r["state"]) for r in rows] == [
        ("slack", "open", "pending"),
        ("file", "analyze", "pending"),
    ]
    await store.finish_job((await store.pending_jobs())[0].id, error="boom", give_up=False)
    assert len(await store.pending_jobs()) == 1  # kept for a retry
    await store.finish_job((await store.pending_jobs())[0].id, error="boom")
    assert await store.pending_jobs() == []


async def test_outbox_order_delivery_and_failure(store: Store) -> None:
    await store.accept([accepted("g1"), accepted("g2")])
    await ingest_all(store)
    first, second = await store.pending_jobs()
    await store.complete_job(
        first.id,
        first.incident_id,
        {},
        [action(first.incident_id, "slack", "open"), action(first.incident_id, "slack", "reply:x")],
    )
    await store.complete_job(
        second.id, second.incident_id, {}, [action(second.incident_id, "slack", "update")]
    )
    due = await store.due_actions(time.time())
    assert [(d.incident_id, d.action) for d in due] == [
        (first.incident_id, "open"),
        (second.incident_id, "update"),
    ]
    assert await store.due_actions(time.time(), exclude=[due[0].id]) == [due[1]]
    await store.action_delivered(due[0], "C1|123.4")
    assert await store.action_refs("slack", [first.incident_id, second.incident_id]) == {
        first.incident_id: "C1|123.4"
    }
    reply = (await store.due_actions(time.time()))[0]
    assert (reply.action, reply.ref) == ("reply:x", "C1|123.4")  # the reply follows its delivered parent

    await store.action_failed(reply, "503", time.time() + 3600)
    assert [d.action for d in await store.due_actions(time.time())] == ["update"]
    await store.action_failed(due[1], "gone", None)
    states = {r["action"]: (r["state"], r["attempts"], r["last_error"]) for r in await store.outbox_rows()}
    assert states == {
        "open": ("delivered", 1, None),
        "reply:x": ("pending", 1, "503"),
        "update": ("failed", 1, "gone"),
    }


async def test_queue_job_feedback_and_regroup(store: Store) -> None:
    await store.accept([accepted("g1"), accepted("g2", starts=NOW + 5)])
    await ingest_all(store)
    groups = await store.open_incidents_by_group("alertmanager")
    g1, g2 = groups["g1"], groups["g2"]
    queued = await store.queue_job(g1, "reinvestigate")
    assert queued is not None and queued[1] is False and queued[0].kind == "analyze"  # one is pending
    for job in await store.pending_jobs():
        await store.complete_job(job.id, job.incident_id, {"summary": "x"})
    queued = await store.queue_job(g1, "reinvestigate", [action(g1, "slack", "asked")])
    assert queued is not None and queued[1] is True and queued[0].kind == "reinvestigate"
    assert await store.queue_job("123456", "reinvestigate") is None
    assert await store.queue_job("not-an-id", "reinvestigate") is None

    await store.save_feedback(g1, {"verdict": "right"}, [action(g1, "file", "feedback")])
    incident = await store.get_incident(g1)
    assert incident is not None and incident.feedback == {"verdict": "right"}
    assert [r["action"] for r in await store.outbox_rows(g1)] == ["asked", "feedback"]

    await store.regroup(g2, g1, {"reason": "hand"})
    root = await store.get_incident(g1)
    assert (
        root is not None
        and [m.id for m in root.members] == [g2]
        and root.members[0].joined == {"reason": "hand"}
    )
    assert [i.id for i in await store.list_incidents()] == [g1]
    assert await store.correlation_candidates(g2, NOW - 60, NOW + 60) == [root]
    await store.regroup(g2, None, {"reason": "split"})
    assert sorted(i.id for i in await store.list_incidents()) == sorted([g1, g2])


async def test_changes_are_stored_once_and_read_by_time_and_entity(store: Store) -> None:
    changes = [
        Change("webhook", NOW - 30, "carts", "deploy", "v2", "k1"),
        Change("ksm", NOW - 20, "orders", "image", "img", "k2", namespace="shop", old="a", new="b"),
        Change("webhook", NOW - 10_000, "carts", "config", "old one", "k3"),
    ]
    assert await store.record_changes(changes) == 3
    assert await store.record_changes(changes[:2]) == 0
    found = await store.changes_between(NOW - 60, NOW)
    assert [(c.entity, c.kind, c.old, c.new, c.namespace) for c in found] == [
        ("carts", "deploy", None, None, None),
        ("orders", "image", "a", "b", "shop"),
    ]
    assert [c.dedup_key for c in await store.changes_between(NOW - 60, NOW, ["orders"])] == ["k2"]
    assert await store.changes_between(NOW - 60, NOW, []) == []


async def test_audit_and_remediation_runs(store: Store) -> None:
    await store.accept([accepted("g1")])
    await ingest_all(store)
    (incident,) = (await store.open_incidents_by_group("alertmanager")).values()
    run = [action(incident, "remediation", "run:restart:k1")]
    approved = [AuditEntry("approved", "restart", "k1", NOW, by="ana", target="carts", detail={"n": 1})]
    assert await store.queue_remediation(incident, "restart", approved, run) is True
    assert await store.queue_remediation(incident, "restart", approved, run) is False  # one pending
    await store.record_audit(
        incident,
        [
            AuditEntry("ran", "restart", "k1", NOW + 1, target="carts"),
            AuditEntry("failed", "scale", "k2", NOW + 2, target="db", detail={"attempted": True}),
            AuditEntry("failed", "scale", "k3", NOW + 3, target="db", detail={"attempted": False}),
        ],
    )
    log = await store.audit_log(incident)
    assert [(e.event, e.key, e.by) for e in log] == [
        ("approved", "k1", "ana"),
        ("ran", "k1", None),
        ("failed", "k2", None),
        ("failed", "k3", None),
    ]
    assert [e.event for e in await store.audit_log(key="k1")] == ["approved", "ran"]
    assert await store.remediation_runs(NOW) == [("restart", "carts", NOW + 1), ("scale", "db", NOW + 2)]


async def test_prune_deletes_old_resolved_incidents_but_keeps_the_newest(store: Store) -> None:
    await store.accept([accepted(g) for g in ("a", "b", "c")])
    await ingest_all(store)
    await store.accept([accepted(g, "resolved") for g in ("a", "b", "c")])
    await ingest_all(store)
    for job in await store.pending_jobs():
        await store.complete_job(job.id, job.incident_id, {}, [action(job.incident_id, "file", job.kind)])
    assert await store.prune(time.time() + 10, batch=10) == {
        "incident_alerts": 0, "jobs": 0, "action_refs": 0, "outbox": 0, "audit": 0, "incidents": 0,
        "inbox": 6, "changes": 0,
    }  # fmt: skip  # actions still pending keep every incident
    while due := await store.due_actions(time.time()):  # per incident and sink, one at a time
        for item in due:
            await store.action_delivered(item, None)
    pruned = await store.prune(time.time() + 10, batch=1)
    assert (pruned["incidents"], pruned["jobs"], pruned["outbox"], pruned["incident_alerts"]) == (1, 2, 2, 1)
    pruned = await store.prune(time.time() + 10, batch=10)
    assert pruned["incidents"] == 1  # the newest stays: ids are never reused
    assert [i.group_key for i in await store.list_incidents()] == ["c"]


# -- claims and leases -----------------------------------------------------------------------------------
async def _jobs_for(store: Store, groups: Sequence[str]) -> None:
    await store.accept([accepted(g) for g in groups])
    await ingest_all(store)


async def test_no_job_is_claimed_by_two_owners(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await _jobs_for(a, [f"g{n}" for n in range(40)])
    claims = await asyncio.gather(*(s.claim_jobs(o, 30, limit=7) for s, o in [(a, "A"), (b, "B")] * 4))
    ids = [j.id for claimed in claims for j in claimed]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert await a.claim_jobs("C", 30) == [] and await b.claim_jobs("A", 30) == []  # all held, even by A
    assert all(j.taken_from is None for claimed in claims for j in claimed)


async def test_an_expired_job_lease_is_taken_over_and_a_renewed_one_is_not(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await _jobs_for(a, ["g1", "g2"])
    first, second = await a.claim_jobs("A", 0.4)
    await asyncio.sleep(0.2)
    assert await a.renew_leases("A", 0.4) == 2
    await asyncio.sleep(0.3)  # 0.5 s after the claim, 0.3 s after the renewal
    assert await b.claim_jobs("B", 30) == []
    await asyncio.sleep(0.3)
    taken = await b.claim_jobs("B", 30)
    assert [(j.id, j.taken_from) for j in taken] == [(first.id, "A"), (second.id, "A")]
    assert await a.renew_leases("A", 30) == 0  # A lost them
    assert await b.release_leases("B") == 2
    assert [j.id for j in await a.claim_jobs("A", 30)] == [first.id, second.id]


async def test_an_incidents_jobs_are_claimed_in_order(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await _jobs_for(a, ["g1"])
    await a.accept([accepted("g1", "resolved")])
    await ingest_all(a)
    analyze, _ = await a.pending_jobs()
    assert [j.kind for j in await a.claim_jobs("A", 30)] == ["analyze"]
    assert await b.claim_jobs("B", 30) == []  # the resolve waits for the analyze
    await a.complete_job(analyze.id, analyze.incident_id, {})
    assert [j.kind for j in await b.claim_jobs("B", 30)] == ["resolve"]


async def test_ingest_claims_the_jobs_it_creates(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await a.accept([accepted("g1"), accepted("g2")])
    jobs, _ = await a.ingest_pending(owner="A", lease=30)
    assert len(jobs) == 2
    assert await b.claim_jobs("B", 30) == []
    assert await a.release_leases("A") == 2
    assert [j.id for j in await b.claim_jobs("B", 30)] == [j.id for j in jobs]


async def test_a_job_ingested_behind_another_owners_job_waits_its_turn(replicas: Replicas) -> None:
    """B's intake applies the resolve of an incident whose analyze A still runs: B must not claim the
    resolve (it would run beside, or before, the analyze); it is handed out once the analyze is done.
    Behind its own owner's job it is claimed (that owner's queue keeps them in order)."""
    a, b = await replicas(2)
    await a.accept([accepted("g1")])
    [analyze], _ = await a.ingest_pending(owner="A", lease=30)
    await b.accept([accepted("g1", "resolved")])
    jobs, _ = await b.ingest_pending(owner="B", lease=30)
    assert jobs == []  # created, not claimed
    assert await b.claim_jobs("B", 30) == []  # still behind A's analyze
    await a.complete_job(analyze.id, analyze.incident_id, {})
    assert [j.kind for j in await b.claim_jobs("B", 30)] == ["resolve"]
    await a.accept([accepted("g2")])
    [opened], _ = await a.ingest_pending(owner="A", lease=30)
    await a.accept([accepted("g2", "resolved")])
    mine, _ = await a.ingest_pending(owner="A", lease=30)
    assert [j.kind for j in mine] == ["resolve"] and opened.kind == "analyze"


async def test_outbox_rows_are_claimed_by_one_owner_until_the_lease_ends(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await _jobs_for(a, [f"g{n}" for n in range(12)])
    for job in await a.pending_jobs():
        await a.complete_job(job.id, job.incident_id, {}, [action(job.incident_id, "slack", "open")])
    later = time.time() + 1
    got = await asyncio.gather(
        a.due_actions(later, 6, owner="A", lease=0.5), b.due_actions(later, 6, owner="B", lease=0.5)
    )
    ids = [item.id for items in got for item in items]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert await a.due_actions(later, owner="C", lease=30) == []
    assert [i.id for i in await b.due_actions(later, owner="A", lease=0.5)] == [
        i.id for i in got[0]
    ]  # its own
    assert len(await a.due_actions(later)) == 12  # without an owner, leases are not looked at
    mine = {item.id for item in got[0]}  # A's
    await asyncio.sleep(0.6)
    assert {i.id for i in await b.due_actions(later, owner="B", lease=30)} == set(ids)
    for item in got[0]:
        await a.action_delivered(item, None)  # A was slow, not dead: delivered all the same
    assert (await a.counts())["outbox_pending"] == 12 - len(mine)


async def test_named_leases_go_to_one_owner_and_pass_on_when_not_renewed(replicas: Replicas) -> None:
    a, b = await replicas(2)
    names = [f"watch-{n}" for n in range(6)]
    held = await asyncio.gather(a.hold_leases("A", names, 0.5), b.hold_leases("B", names, 0.5))
    assert held[0] | held[1] == set(names) and not held[0] & held[1]
    owner = "A" if held[0] else "B"
    assert await a.hold_leases(owner, names, 0.5) == set(names)  # renewed
    assert await b.hold_leases("C", names, 30) == set()
    owners = await a.lease_owners()
    assert sorted(owners) == names and {o for o, _ in owners.values()} == {owner}
    await asyncio.sleep(0.6)
    assert await b.hold_leases("C", names[:2], 30) == set(names[:2])
    assert await a.release_leases(owner) == 4
    assert await b.hold_leases("D", names, 30) == set(names[2:])


async def test_presence_leases_of_replicas_long_gone_are_forgotten(replicas: Replicas) -> None:
    """Only names with the prefix (taken literally, not as a pattern) whose lease ran out long enough ago."""
    a, b = await replicas(2)
    await a.hold_leases("dead", ["replica:dead", "replica%x", "watch-0"], 0.2)
    await b.hold_leases("live", ["replica:live"], 30)
    await asyncio.sleep(0.6)
    assert await a.forget_leases("replica:", 3600) == 0  # ran out, but not an hour ago
    assert await a.forget_leases("replica:", 0.3) == 1  # replica:dead; not replica%x, not the live one
    assert await b.forget_leases("watch-", 0.3) == 1  # the other names were left
    assert await a.forget_leases("replica", 0.3) == 1  # replica%x
    assert set(await a.lease_owners()) == {"replica:live"}


async def test_release_named_only_keeps_the_work_in_flight(replicas: Replicas) -> None:
    """A draining replica gives up its watches at once; its jobs and outbox rows stay claimed."""
    a, b = await replicas(2)
    await _jobs_for(a, ["g1", "g2"])
    running, done = await a.claim_jobs("A", 30)
    await a.complete_job(done.id, done.incident_id, {}, [action(done.incident_id, "slack", "open")])
    assert len(await a.due_actions(time.time() + 1, owner="A", lease=30)) == 1
    names = ["watch-0", "watch-1"]
    assert await a.hold_leases("A", names, 30) == set(names)
    assert await a.release_leases("A", named_only=True) == 2
    assert await b.hold_leases("B", names, 30) == set(names)  # at once, not after the lease
    assert (
        await b.claim_jobs("B", 30) == [] and await b.due_actions(time.time() + 1, owner="B", lease=30) == []
    )
    assert await a.renew_leases("A", 30) == 2  # the job and the outbox row are still A's
    assert await a.release_leases("A") == 2
    assert [j.id for j in await b.claim_jobs("B", 30)] == [running.id]
    assert set((await a.lease_owners()).keys()) == set(names)  # B's, untouched


async def test_confirm_claim_of_a_job(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await _jobs_for(a, ["g1", "g2"])
    first, second = await a.claim_jobs("A", 0.5)
    assert await a.confirm_claim("job", first.id, "A", 30)  # its own: extended
    assert not await b.confirm_claim("job", first.id, "B", 30)  # A's, live
    await asyncio.sleep(0.7)
    assert not await b.confirm_claim("job", first.id, "B", 30)  # extended: still A's
    assert await b.confirm_claim("job", second.id, "B", 30)  # A's ran out: taken
    assert not await a.confirm_claim("job", second.id, "A", 30)  # B's now
    assert await b.claim_jobs("C", 30) == []  # both held
    await b.finish_job(second.id)
    assert not await b.confirm_claim("job", second.id, "B", 30)  # finished
    assert not await a.confirm_claim("job", 987654, "A", 30)  # gone
    await a.release_leases("A")
    assert await b.confirm_claim("job", first.id, "B", 30)  # nobody's: taken
    await a.accept([accepted("g3")])
    await ingest_all(a)
    await a.accept([accepted("g3", "resolved")])
    await ingest_all(a)
    analyze, resolve = [j for j in await a.pending_jobs() if j.id not in (first.id, second.id)]
    assert not await a.confirm_claim("job", resolve.id, "A", 30)  # behind its unclaimed analyze
    assert await a.confirm_claim("job", analyze.id, "A", 30)
    assert await a.confirm_claim("job", resolve.id, "A", 30)  # behind A's own analyze: in A's order
    assert not await b.confirm_claim("job", resolve.id, "B", 30)


async def test_a_job_behind_an_analysis_taken_over_is_let_go_to_run_in_order(replicas: Replicas) -> None:
    """A holds an incident's analyze and resolve; its heartbeat ran late and B took the analyze (the
    oldest). A must not run the resolve before B's analysis is done: its confirmation fails and lets
    the claim go, so A's renewals do not keep it, and it is handed out once the analyze is done."""
    a, b = await replicas(2)
    if not a.shared:
        return  # one process on the store: nobody else can take a job over
    await a.accept([accepted("g")])
    [analyze], _ = await a.ingest_pending(owner="A", lease=0.3)
    await a.accept([accepted("g", "resolved")])
    [resolve], _ = await a.ingest_pending(owner="A", lease=0.3)
    await asyncio.sleep(0.4)
    assert [j.id for j in await b.claim_jobs("B", 30)] == [analyze.id]  # taken over: the oldest only
    assert not await a.confirm_claim("job", resolve.id, "A", 30)  # behind B's analyze
    await a.renew_leases("A", 30)  # A's heartbeat goes on
    assert await b.claim_jobs("B", 30) == []  # the analyze is not done yet
    await b.finish_job(analyze.id)
    assert [j.id for j in await b.claim_jobs("B", 30)] == [resolve.id]


async def test_confirm_claim_of_an_outbox_row(replicas: Replicas) -> None:
    a, b = await replicas(2)
    await _jobs_for(a, ["g1", "g2"])
    for job in await a.pending_jobs():
        await a.complete_job(job.id, job.incident_id, {}, [action(job.incident_id, "slack", "open")])
    later = time.time() + 1
    first, second = await a.due_actions(later, owner="A", lease=0.5)
    assert await a.confirm_claim("action", first.id, "A", 30)  # its own: extended
    assert not await b.confirm_claim("action", first.id, "B", 30)  # A's, live
    await asyncio.sleep(0.7)
    assert not await b.confirm_claim("action", first.id, "B", 30)
    assert await b.confirm_claim("action", second.id, "B", 30)  # A's ran out: taken
    assert not await a.confirm_claim("action", second.id, "A", 30)
    assert await a.due_actions(later, owner="C", lease=30) == []  # both held
    await b.action_delivered(second, None)
    assert not await b.confirm_claim("action", second.id, "B", 30)  # delivered
    assert not await b.confirm_claim("action", 987654, "B", 30)  # gone
    await a.release_leases("A")
    assert await b.confirm_claim("action", first.id, "B", 30)  # nobody's: taken


async def test_shared_tells_whether_other_processes_compete(store: Store) -> None:
    assert store.shared is store.describe().startswith("postgres:")


async def test_mutex_excludes_across_store_objects(replicas: Replicas) -> None:
    a, b = await replicas(2)
    inside: list[str] = []
    overlaps: list[str] = []

    async def critical(store: Store, who: str) -> None:
        async with store.mutex("guardrail"):
            if inside:
                overlaps.append(who)
            inside.append(who)
            await asyncio.sleep(0.02)
            inside.remove(who)

    await asyncio.gather(*(critical(s, f"{n}") for n, s in enumerate([a, b] * 5)))
    assert overlaps == []
    async with a.mutex("one"), b.mutex("another"):  # different names do not exclude each other
        pass
    with pytest.raises(RuntimeError):
        async with a.mutex("guardrail"):
            raise RuntimeError("the block failed")
    async with b.mutex("guardrail"):  # released after the failure
        pass


async def test_a_cancelled_mutex_wait_leaves_nothing_held(replicas: Replicas) -> None:
    a, b = await replicas(2)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with a.mutex("m"):
            holding.set()
            await release.wait()

    async def wait() -> None:
        async with b.mutex("m"):
            raise AssertionError("entered while held")

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0.2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    for store in (a, b, a):
        async with asyncio.timeout(5), store.mutex("m"):
            pass
    await b.ping()


async def test_a_mutex_held_longer_than_the_statement_timeout_does_not_fail_a_waiter(
    replicas: Replicas,
) -> None:
    a, b = await replicas(2, statement_timeout=1)
    holding = asyncio.Event()

    async def hold() -> None:
        async with a.mutex("m"):
            holding.set()
            await asyncio.sleep(1.6)

    holder = asyncio.create_task(hold())
    await holding.wait()
    started = time.monotonic()
    async with asyncio.timeout(10), b.mutex("m"):
        assert time.monotonic() - started > 1.2  # it waited for the holder, past the timeout
        await b.ping()
    await holder


async def test_waiters_for_a_mutex_do_not_starve_the_pool(replicas: Replicas) -> None:
    """Five waiters in one store object with three connections: the holder's reads and writes (and
    anyone else's) still get a connection."""
    [store] = await replicas(1, pool_min=1, pool_max=3)
    holding, release = asyncio.Event(), asyncio.Event()
    entered: list[int] = []

    async def hold() -> None:
        async with store.mutex("m"):
            holding.set()
            await release.wait()
            await store.accept([accepted("g-holder")])  # the holder's own write

    async def wait(n: int) -> None:
        async with store.mutex("m"):
            entered.append(n)

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiters = [asyncio.create_task(wait(n)) for n in range(5)]
    await asyncio.sleep(0.3)
    async with asyncio.timeout(1):
        await store.counts()
        await store.accept([accepted("g-other")])
    release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(holder, *waiters)
    assert sorted(entered) == list(range(5))
    assert (await store.counts())["inbox_pending"] == 2


async def test_concurrent_ingest_on_two_replicas_opens_one_incident_per_group(replicas: Replicas) -> None:
    a, b = await replicas(2)
    groups = [f"g{n}" for n in range(30)]
    firing = [accepted(g, fp=fp) for g in groups for fp in ("a", "b")]
    results = await asyncio.gather(a.accept(firing), b.accept(firing))
    assert sum(r.accepted for r in results) == 60 and sum(r.duplicates for r in results) == 60
    made = await asyncio.gather(ingest_all(a), ingest_all(b), ingest_all(a), ingest_all(b))
    jobs = [job for found in made for job in found]
    assert sorted(k for _, k in jobs) == ["analyze"] * 30 and len(set(jobs)) == 30
    assert sorted(await a.open_incidents_by_group("alertmanager")) == sorted(groups)

    resolving = [accepted(g, "resolved", fp=fp) for g in groups for fp in ("a", "b")]
    await asyncio.gather(a.accept(resolving[0::2]), b.accept(resolving[1::2]))
    made = await asyncio.gather(ingest_all(a), ingest_all(b), ingest_all(b))
    assert sorted(k for found in made for _, k in found) == ["resolve"] * 30
    assert await a.open_incidents_by_group("alertmanager") == {}
    assert (await b.counts())["inbox_pending"] == 0


async def test_describe_names_the_database(store: Store) -> None:
    described = store.describe()
    assert described.startswith(("sqlite:/", "postgres:127.0.0.1:"))
    assert "@" not in described and "password" not in described
    await store.ping()


# -- PostgreSQL only -------------------------------------------------------------------------------------
async def test_a_wrong_password_is_a_store_error_that_does_not_show_it(
    postgres_server: pg.PostgresServer,
) -> None:
    from agentic_observability.store.postgres.store import PostgresStore

    config = PostgresConfig(url=postgres_server.create_database())
    with pytest.raises(StoreError, match="password authentication failed") as raised:
        await PostgresStore.open(config, "not-the-password-xyz")
    assert "not-the-password-xyz" not in str(raised.value)
    store = await PostgresStore.open(config, postgres_server.password)
    try:
        assert postgres_server.password not in store.describe()
        assert store.describe() == f"postgres:127.0.0.1:{postgres_server.port}/{config.url.rsplit('/', 1)[1]}"
    finally:
        await store.close()


async def test_a_groups_rows_apply_in_order_when_another_replica_holds_an_earlier_one(
    postgres_server: pg.PostgresServer,
) -> None:
    from agentic_observability.store.postgres.store import PostgresStore

    config = PostgresConfig(url=postgres_server.create_database())
    store = await PostgresStore.open(config, postgres_server.password)
    other = await psycopg.AsyncConnection.connect(config.url or "", password=postgres_server.password)
    try:
        for alert in (accepted("g"), accepted("g", "resolved"), accepted("h")):
            await store.accept([alert])
        async with other.transaction():  # another replica's ingest holds g's firing row
            await other.execute("SELECT id FROM inbox WHERE id = 1 FOR UPDATE")
            jobs, more = await store.ingest_pending()
            assert [(j.kind, j.incident_id) for j in jobs] == [("analyze", "1")] and more  # h only
            assert (await store.counts())["inbox_pending"] == 2
        jobs, more = await store.ingest_pending()
        assert [j.kind for j in jobs] == ["analyze", "resolve"] and not more  # fired, then resolved
        assert await store.open_incidents_by_group("alertmanager") == {"h": "1"}
    finally:
        await other.close()
        await store.close()


async def test_an_ingest_finding_only_rows_behind_another_replica_pauses_before_more(
    postgres_server: pg.PostgresServer,
) -> None:
    from agentic_observability.store.postgres.store import PostgresStore

    config = PostgresConfig(url=postgres_server.create_database())
    store = await PostgresStore.open(config, postgres_server.password)
    other = await psycopg.AsyncConnection.connect(config.url or "", password=postgres_server.password)
    try:
        for alert in (accepted("g"), accepted("g", "resolved")):
            await store.accept([alert])
        async with other.transaction():  # another replica's ingest holds g's firing row
            await other.execute("SELECT id FROM inbox WHERE id = 1 FOR UPDATE")
            started = time.monotonic()
            jobs, more = await store.ingest_pending()
            assert jobs == [] and more and time.monotonic() - started >= 0.04  # no hot loop
        jobs, more = await store.ingest_pending()
        assert [j.kind for j in jobs] == ["analyze", "resolve"] and not more
    finally:
        await other.close()
        await store.close()


async def test_a_mutex_gives_its_connection_back_with_the_statement_timeout(
    postgres_server: pg.PostgresServer,
) -> None:
    from agentic_observability.store.postgres.store import PostgresStore

    config = PostgresConfig(
        url=postgres_server.create_database(), pool_min=1, pool_max=1, statement_timeout=0.3
    )
    store = await PostgresStore.open(config, postgres_server.password)
    try:
        async with store.mutex("m"):
            pass
        assert await store._fetch("SHOW statement_timeout") == [("300ms",)]  # the one connection
        with pytest.raises(StoreError, match="statement timeout"):
            await store._fetch("SELECT pg_sleep(5)")
    finally:
        await store.close()


async def test_every_statement_has_a_timeout(postgres_server: pg.PostgresServer) -> None:
    from agentic_observability.store.postgres.store import PostgresStore

    config = PostgresConfig(url=postgres_server.create_database(), statement_timeout=0.3)
    store = await PostgresStore.open(config, postgres_server.password)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="statement timeout"):
            await store._fetch("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 3
        await store.ping()  # the pool goes on
    finally:
        await store.close()


async def test_two_replicas_starting_together_migrate_once(postgres_server: pg.PostgresServer) -> None:
    from agentic_observability.store.postgres.store import PostgresStore

    config = PostgresConfig(url=postgres_server.create_database())
    stores = await asyncio.gather(*(PostgresStore.open(config, postgres_server.password) for _ in range(4)))
    try:
        assert await stores[0]._fetch("SELECT version FROM schema_version") == [(1,)]
        assert len({await s.install_id() for s in stores}) == 1
    finally:
        for store in stores:
            await store.close()


# -- SQLite only -----------------------------------------------------------------------------------------
async def test_only_the_service_opening_sqlite_frees_an_earlier_processes_claims(tmp_path: Path) -> None:
    """``take_over``: the service starting on the file frees what a crashed one held; ``agentic-obs
    replay`` (or any other opener) beside a running service leaves its claims alone."""
    service = await SqliteStore.open(tmp_path / "state", take_over=True)
    await _jobs_for(service, ["g1"])
    [job] = await service.claim_jobs("A", 30)
    assert await service.hold_leases("A", ["watch-0"], 30) == {"watch-0"}
    replay = await open_store(tmp_path / "state")
    try:
        assert await replay.claim_jobs("B", 30) == []
        assert list(await replay.lease_owners()) == ["watch-0"]
    finally:
        await replay.close()
    assert await service.renew_leases("A", 30) == 1
    await service.close()  # it dies; the next service process takes over
    restarted = await open_store(tmp_path / "state", take_over=True)
    try:
        assert await restarted.lease_owners() == {}
        assert [j.id for j in await restarted.claim_jobs("B", 30)] == [job.id]
    finally:
        await restarted.close()


# -- configuration and readiness -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://agentic:s3cret@db:5432/agentic",
        "postgres://db/agentic?password=s3cret",
        "host=db dbname=agentic password=s3cret",
    ],
)
def test_a_password_in_the_url_is_refused_naming_the_key(tmp_path: Path, url: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"storage: {{backend: postgres, postgres: {{url: '{url}'}}}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert "storage.postgres.url" in str(raised.value) and "POSTGRES_PASSWORD" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_postgres_needs_a_url_and_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage: {backend: postgres}\n")
    with pytest.raises(ConfigError, match=r"storage.postgres.url is not set"):
        load_config(path, environ={})
    path.write_text("storage: {backend: postgres, postgres: {url: 'service=agentic', pool_max: 4}}\n")
    config = load_config(path, environ={"POSTGRES_PASSWORD": "pw-from-env"})
    assert config.file.storage.postgres.url == "service=agentic"
    assert config.secrets.postgres_password is not None
    assert config.secrets.postgres_password.get_secret_value() == "pw-from-env"
    assert "pw-from-env" in config.secrets.values()  # scrubbed from every log line
    assert "pw-from-env" not in json.dumps(config.masked())
    assert load_config(None, environ={}).file.storage.backend == "sqlite"


async def test_readiness_names_the_database(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(init_app(make_config(tmp_path, memory={"enabled": False})))
    body = await (await client.get("/api/v1/health/ready")).json()
    expected = "postgres:127.0.0.1:" if pg.wanted() else f"sqlite:{tmp_path / 'state'}"
    assert body["checks"]["store"]["status"] == "ok"
    assert body["checks"]["store"]["database"].startswith(expected)
