"""Every write transaction of the PostgreSQL store, as async functions over one connection.

Each runs inside a transaction the store opened (store.py ``_write``), which retries the whole
function after a deadlock or a serialization failure: nothing here keeps state outside the database.
Rows are locked in ascending id order wherever two transactions may meet (the webhook's touch of open
incidents, ingest), so they queue instead of deadlocking.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from agentic_observability.models import AcceptedAlert, Action, AuditEntry, Change
from agentic_observability.store.intake import IngestPlan, IngestPlanner, PlannedJob
from agentic_observability.store.rows import change_values

Conn = AsyncConnection[Any]
CLOCK = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"  # the server's clock: leases use it
GROUP_LOCKS = 17  # the first key of pg_advisory_xact_lock(int, int) for alert groups (hashtext the second)
# Ids the planner hands out before the real ones are drawn from the sequences: negative, so they can
# never be mistaken for an existing incident's id (at most ``limit`` are handed out per batch).
PLANNED_BASE = -(2**40)


def _json(mapping: Any) -> str:
    return json.dumps(dict(mapping))


async def clock(conn: Conn) -> float:
    row = await (await conn.execute(CLOCK)).fetchone()
    assert row is not None
    return float(row[0])


async def insert_inbox(conn: Conn, rows: Sequence[tuple[str, str, str, float]]) -> set[str]:
    """Insert inbox rows, ignoring ones already stored (by any replica); the dedup keys that were new."""
    if not rows:
        return set()
    keys, groups, bodies, times = (list(column) for column in zip(*rows, strict=True))
    cursor = await conn.execute(
        "INSERT INTO inbox (dedup_key, group_key, body, received_at) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[]) "
        "ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
        (keys, groups, bodies, times),
    )
    inserted = {str(r[0]) for r in await cursor.fetchall()}
    # Every delivery, a repeat included, is a sign of life for its group's open incident (see prune).
    await conn.execute(
        "UPDATE incidents SET updated_at = GREATEST(updated_at, %s) WHERE id IN (SELECT id FROM incidents "
        "WHERE status = 'firing' AND group_key = ANY(%s::text[]) ORDER BY id FOR NO KEY UPDATE)",
        (max(times), sorted(set(groups))),
    )
    return inserted


async def record_changes(conn: Conn, changes: Sequence[Change], now: float) -> int:
    """Store change events, ignoring ones already stored (by dedup key); how many were new."""
    new = 0
    async with conn.cursor() as cursor:
        for change in changes:
            await cursor.execute(
                'INSERT INTO changes (source, "at", entity, namespace, workload, kind, summary, old, new, '
                "link, dedup_key, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (dedup_key) DO NOTHING",
                change_values(change, now),
            )
            new += max(cursor.rowcount, 0)
    return new


async def install_id(conn: Conn, candidate: str) -> str:
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES ('install_id', %s) ON CONFLICT (key) DO NOTHING", (candidate,)
    )
    row = await (await conn.execute("SELECT value FROM meta WHERE key = 'install_id'")).fetchone()
    assert row is not None
    return str(row[0])


# -- ingest ------------------------------------------------------------------------------------------


async def ingest(
    conn: Conn, limit: int, now: float, claim: tuple[str, float] | None
) -> tuple[list[PlannedJob], int, int]:
    """Apply up to ``limit`` unprocessed inbox rows (rules in ../intake.py); the jobs created (with
    their real ids), the rows claimed and the rows left for later.

    Rows are claimed with SKIP LOCKED, so replicas ingest disjoint rows; each group in the batch is
    then locked (an advisory lock per group, in hash order), so no two replicas plan the same group
    at once. A group's rows apply in arrival order: when another replica holds an earlier row of it,
    only this batch's rows before that one apply now and the rest wait for the next round."""
    cursor = await conn.execute(
        "SELECT id, group_key, body FROM inbox WHERE processed_at IS NULL ORDER BY id LIMIT %s "
        "FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    rows = await cursor.fetchall()
    if not rows:
        return [], 0, 0
    groups = sorted({str(g) for _, g, _ in rows})
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, h) FROM "
        "(SELECT DISTINCT hashtext(g) AS h FROM unnest(%s::text[]) AS g ORDER BY 1) AS locks",
        (GROUP_LOCKS, groups),
    )
    held = await _held_elsewhere(conn, groups, [int(r[0]) for r in rows])
    ready = [(int(i), str(g), b) for i, g, b in rows if int(i) < held.get(str(g), int(i) + 1)]
    pending = [(i, AcceptedAlert.from_dict(json.loads(b))) for i, _, b in ready]
    planner = await _planner(conn, {g for _, g, _ in ready})
    for inbox_id, accepted in pending:
        planner.add(inbox_id, accepted, now)
    jobs = await _apply(conn, planner.plan, now, claim)
    if claim is not None:
        waiting = await _behind_another_owner(conn, [j.id for j in jobs], claim[0])
        jobs = [j for j in jobs if j.id not in waiting]
    return jobs, len(rows), len(rows) - len(ready)


# A new job waits (unclaimed) behind an unfinished earlier job of its incident that another owner
# holds, or nobody does: an incident's jobs run in order, and ``claim_jobs`` hands it out in turn.
BEHIND_ANOTHER_OWNER = """
UPDATE jobs j SET claimed_by = NULL, lease_until = NULL
WHERE j.id = ANY(%(new)s::bigint[]) AND EXISTS (
  SELECT 1 FROM jobs o WHERE o.incident_id = j.incident_id AND o.done_at IS NULL AND o.id < j.id
    AND o.id <> ALL(%(new)s::bigint[]) AND (o.claimed_by IS NULL OR o.claimed_by <> %(owner)s))
RETURNING j.id
"""


async def _behind_another_owner(conn: Conn, new: list[int], owner: str) -> set[int]:
    """Of the ``new`` jobs ``owner`` claimed, those that must wait their turn: their claim is undone."""
    cursor = await conn.execute(BEHIND_ANOTHER_OWNER, {"new": new, "owner": owner})
    return {int(r[0]) for r in await cursor.fetchall()}


async def _held_elsewhere(conn: Conn, groups: list[str], mine: list[int]) -> dict[str, int]:
    """Per group, the first unprocessed row this batch did not claim (another replica holds it, or it
    committed after the claim): the batch's rows of the group from there on must wait."""
    cursor = await conn.execute(
        "SELECT group_key, MIN(id) FROM inbox WHERE processed_at IS NULL AND group_key = ANY(%s::text[]) "
        "AND NOT (id = ANY(%s::bigint[])) GROUP BY group_key",
        (groups, mine),
    )
    return {str(g): int(first) for g, first in await cursor.fetchall()}


async def _planner(conn: Conn, group_keys: set[str]) -> IngestPlanner:
    # FOR NO KEY UPDATE: pruning (which skips locked rows) cannot delete an open incident meanwhile.
    cursor = await conn.execute(
        "SELECT id, group_key FROM incidents WHERE status = 'firing' AND group_key = ANY(%s::text[]) "
        "ORDER BY id FOR NO KEY UPDATE",
        (sorted(group_keys),),
    )
    incidents = await cursor.fetchall()
    cursor = await conn.execute(
        "SELECT incident_id, fingerprint, status, ends_at FROM incident_alerts "
        "WHERE incident_id = ANY(%s::bigint[])",
        ([int(i) for i, _ in incidents],),
    )
    by_incident: dict[int, list[tuple[str, str, float | None]]] = {}
    for incident_id, fingerprint, status, ends in await cursor.fetchall():
        by_incident.setdefault(int(incident_id), []).append((fingerprint, status, ends))
    open_state = {g: IngestPlanner.open_state(int(i), by_incident.get(int(i), [])) for i, g in incidents}
    return IngestPlanner(open_state, PLANNED_BASE, PLANNED_BASE)


async def _draw_ids(conn: Conn, table: str, count: int) -> list[int]:
    if count == 0:
        return []
    cursor = await conn.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (table, count)
    )
    return sorted(int(r[0]) for r in await cursor.fetchall())


async def _apply(
    conn: Conn, plan: IngestPlan, now: float, claim: tuple[str, float] | None
) -> list[PlannedJob]:
    drawn = await _draw_ids(conn, "incidents", len(plan.new_incidents))
    ids = {n.id: real for n, real in zip(plan.new_incidents, drawn, strict=True)}
    job_ids = await _draw_ids(conn, "jobs", len(plan.jobs))
    jobs = [
        PlannedJob(real, ids.get(j.incident_id, j.incident_id), j.kind, j.source)
        for j, real in zip(plan.jobs, job_ids, strict=True)
    ]
    owner, until = claim if claim is not None else (None, None)
    # A group's open incident that resolves in this batch closes before the group's next one opens
    # (one open incident per group); a new incident is written with the state the batch leaves it in.
    resolved = dict(plan.resolved)
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "UPDATE incidents SET status = 'resolved', resolved_at = %s, updated_at = %s WHERE id = %s",
            [(at, now, i) for i, at in sorted(resolved.items()) if i not in ids],
        )
        await cursor.executemany(
            "INSERT INTO incidents (id, group_key, source, status, resolved_at, title, labels, started_at, "
            "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    ids[n.id],
                    n.group_key,
                    n.source,
                    "resolved" if n.id in resolved else "firing",
                    resolved.get(n.id),
                    n.title,
                    json.dumps(dict(n.labels)),
                    n.started_at,
                    now,
                    now,
                )
                for n in plan.new_incidents
            ],
        )
        await cursor.executemany(
            "INSERT INTO incident_alerts (incident_id, fingerprint, status, ends_at, body) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (incident_id, fingerprint) DO UPDATE SET "
            "status = EXCLUDED.status, ends_at = EXCLUDED.ends_at, body = EXCLUDED.body",
            [(ids.get(i, i), fp, status, ends, body) for i, fp, status, ends, body in plan.alert_rows],
        )
        await cursor.executemany(
            "INSERT INTO jobs (id, incident_id, kind, created_at, claimed_by, lease_until) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [(j.id, j.incident_id, j.kind, now, owner, until) for j in jobs],
        )
    await conn.execute(
        "UPDATE inbox SET processed_at = %s WHERE id = ANY(%s::bigint[])", (now, plan.processed)
    )
    return jobs


# -- jobs, reports and regrouping ------------------------------------------------------------------------


async def complete_job(
    conn: Conn,
    job_id: int,
    incident_id: int,
    report: str,
    similar: str,
    actions: Sequence[Action],
    now: float,
    reports: Sequence[tuple[int, str]] = (),
    parent: tuple[int | None, str] | None = None,
) -> None:
    """Save the report, queue its actions and mark its job done together (see sqlite/writes.py)."""
    await conn.execute(
        'UPDATE incidents SET report = %s, "similar" = %s, updated_at = %s WHERE id = %s',
        (report, similar, now, incident_id),
    )
    for other, other_report in reports:
        await conn.execute(
            "UPDATE incidents SET report = %s, updated_at = %s WHERE id = %s", (other_report, now, other)
        )
    if parent is not None:
        await set_parent(conn, incident_id, parent[0], parent[1], now)
    await insert_actions(conn, actions, now)
    await conn.execute(
        "UPDATE jobs SET done_at = %s, attempts = attempts + 1, last_error = NULL WHERE id = %s",
        (now, job_id),
    )


async def set_parent(conn: Conn, incident_id: int, parent_id: int | None, why: str, now: float) -> None:
    if parent_id is not None:
        await conn.execute(
            "UPDATE incidents SET parent_id = %s, updated_at = %s WHERE parent_id = %s",
            (parent_id, now, incident_id),
        )
    await conn.execute(
        "UPDATE incidents SET parent_id = %s, correlation = %s, updated_at = %s WHERE id = %s",
        (parent_id, why, now, incident_id),
    )


async def regroup(
    conn: Conn, incident_id: int, parent_id: int | None, why: str, actions: Sequence[Action], now: float
) -> None:
    await set_parent(conn, incident_id, parent_id, why, now)
    await insert_actions(conn, actions, now)


async def finish_job(conn: Conn, job_id: int, done_at: float | None, error: str | None) -> None:
    await conn.execute(
        "UPDATE jobs SET done_at = %s, attempts = attempts + 1, last_error = %s WHERE id = %s",
        (done_at, error, job_id),
    )


async def insert_actions(conn: Conn, actions: Sequence[Action], now: float) -> None:
    """Queue actions; one already queued under the same dedup key (a retried job) is not queued again."""
    if not actions:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO outbox (incident_id, sink, action, dedup_key, payload, created_at, next_attempt_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING",
            [
                (int(a.incident_id), a.sink, a.action, a.dedup_key, _json(a.payload), now, a.not_before)
                for a in actions
            ],
        )


async def save_feedback(
    conn: Conn, incident_id: int, feedback: str, actions: Sequence[Action], now: float
) -> None:
    await conn.execute(
        "UPDATE incidents SET feedback = %s, updated_at = %s WHERE id = %s", (feedback, now, incident_id)
    )
    await insert_actions(conn, actions, now)


async def queue_job(
    conn: Conn, incident_id: int, kind: str, actions: Sequence[Action], now: float
) -> tuple[int, str, bool] | None:
    """As sqlite/writes.py's; the incident row is locked first, so two replicas pressing at once
    queue one job."""
    cursor = await conn.execute("SELECT status FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
    row = await cursor.fetchone()
    if row is None or row[0] != "firing":
        return None
    cursor = await conn.execute(
        "SELECT id, kind FROM jobs WHERE incident_id = %s AND done_at IS NULL ORDER BY id LIMIT 1",
        (incident_id,),
    )
    pending = await cursor.fetchone()
    if pending is not None:
        return int(pending[0]), str(pending[1]), False
    cursor = await conn.execute(
        "INSERT INTO jobs (incident_id, kind, created_at) VALUES (%s, %s, %s) RETURNING id",
        (incident_id, kind, now),
    )
    created = await cursor.fetchone()
    assert created is not None
    await insert_actions(conn, actions, now)
    return int(created[0]), kind, True


# -- remediation's audit log -----------------------------------------------------------------------------


async def record_audit(
    conn: Conn, incident_id: int, entries: Sequence[AuditEntry], actions: Sequence[Action], now: float
) -> None:
    await _insert_audit(conn, incident_id, entries)
    await insert_actions(conn, actions, now)


async def queue_remediation(
    conn: Conn,
    incident_id: int,
    action: str,
    entries: Sequence[AuditEntry],
    actions: Sequence[Action],
    now: float,
) -> bool:
    """As sqlite/writes.py's; the incident row is locked first, so two replicas approving at once
    queue one run."""
    await conn.execute("SELECT 1 FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
    cursor = await conn.execute(
        "SELECT 1 FROM outbox WHERE incident_id = %s AND sink = 'remediation' AND state = 'pending' "
        "AND action LIKE %s UNION ALL "
        "SELECT 1 FROM audit WHERE incident_id = %s AND action = %s AND event = 'ran' LIMIT 1",
        (incident_id, f"run:{action}:%", incident_id, action),
    )
    if await cursor.fetchone() is not None:
        return False
    await _insert_audit(conn, incident_id, entries)
    await insert_actions(conn, actions, now)
    return True


async def _insert_audit(conn: Conn, incident_id: int, entries: Sequence[AuditEntry]) -> None:
    if not entries:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            'INSERT INTO audit (incident_id, "at", event, action, key, "by", target, detail) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (incident_id, e.at, e.event, e.action, e.key, e.by, e.target, json.dumps(dict(e.detail)))
                for e in entries
            ],
        )


# -- outbox ----------------------------------------------------------------------------------------------


async def action_delivered(
    conn: Conn, item_id: int, incident_id: int, sink: str, ref: str | None, now: float
) -> None:
    await conn.execute(
        "UPDATE outbox SET state = 'delivered', delivered_at = %s, attempts = attempts + 1, "
        "last_error = NULL, claimed_by = NULL, lease_until = NULL WHERE id = %s",
        (now, item_id),
    )
    if ref is not None:
        await conn.execute(
            "INSERT INTO action_refs (incident_id, sink, external_id) VALUES (%s, %s, %s) "
            "ON CONFLICT (incident_id, sink) DO UPDATE SET external_id = EXCLUDED.external_id",
            (incident_id, sink, ref),
        )


async def action_failed(conn: Conn, item_id: int, error: str, next_attempt_at: float | None) -> None:
    state = "pending" if next_attempt_at is not None else "failed"
    await conn.execute(
        "UPDATE outbox SET state = %s, attempts = attempts + 1, last_error = %s, "
        "next_attempt_at = COALESCE(%s::float8, next_attempt_at), claimed_by = NULL, lease_until = NULL "
        "WHERE id = %s",
        (state, error[:1000], next_attempt_at, item_id),
    )


# -- retention -------------------------------------------------------------------------------------------

# The same rules as sqlite/writes.py's _PRUNABLE_INCIDENTS (read the reasons there); rows another
# transaction holds (an ingest applying alerts to an open incident) are skipped this round.
_PRUNABLE_INCIDENTS = """
SELECT id FROM incidents i
WHERE ((status = 'resolved' AND updated_at < %(cutoff)s)
       OR (status = 'firing' AND source = 'alertmanager' AND updated_at < %(silent)s))
  AND id < (SELECT MAX(id) FROM incidents)
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE incident_id = i.id AND done_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM outbox WHERE incident_id = i.id AND state = 'pending')
  AND NOT EXISTS (SELECT 1 FROM incidents c WHERE c.parent_id = i.id)
  AND NOT EXISTS (SELECT 1 FROM incidents s WHERE s.id = i.parent_id AND s.status = 'firing'
                  AND (s.source != 'alertmanager' OR s.updated_at >= %(silent)s))
  AND NOT EXISTS (SELECT 1 FROM incidents s WHERE s.parent_id = i.parent_id AND s.status = 'firing'
                  AND (s.source != 'alertmanager' OR s.updated_at >= %(silent)s))
ORDER BY updated_at LIMIT %(batch)s
FOR UPDATE OF i SKIP LOCKED
"""
_INCIDENT_CHILDREN = ("incident_alerts", "jobs", "action_refs", "outbox", "audit")  # before the parent


async def prune(conn: Conn, cutoff: float, batch: int, silent_before: float | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    silent = float("-inf") if silent_before is None else silent_before
    cursor = await conn.execute(_PRUNABLE_INCIDENTS, {"cutoff": cutoff, "silent": silent, "batch": batch})
    ids = [int(row[0]) for row in await cursor.fetchall()]
    for table in (*_INCIDENT_CHILDREN, "incidents"):
        column = "id" if table == "incidents" else "incident_id"
        cursor = await conn.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s::bigint[])", (ids,))
        counts[table] = cursor.rowcount
    cursor = await conn.execute(
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE processed_at < %s "
        "ORDER BY processed_at LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, batch),
    )
    counts["inbox"] = cursor.rowcount
    cursor = await conn.execute(
        'DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE "at" < %s ORDER BY "at" LIMIT %s '
        "FOR UPDATE SKIP LOCKED)",
        (cutoff, batch),
    )
    counts["changes"] = cursor.rowcount
    return counts
