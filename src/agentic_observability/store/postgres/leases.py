"""Claims and leases across replicas: jobs and outbox rows claimed with ``FOR UPDATE SKIP LOCKED``
(two replicas never claim one row: each skips what the other has locked) and held until a lease end
on the database server's clock; named leases for watch shards and singletons. Each function runs
inside the store's transaction (store.py ``_write``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentic_observability.store.postgres.writes import Conn, clock

# Per incident only its oldest unfinished job (an incident's jobs run in order), and only when nobody
# holds it: never claimed, or the lease ran out.
CLAIMABLE_JOBS = """
SELECT j.id, j.incident_id, j.kind, j.attempts, i.source, j.claimed_by FROM jobs j
JOIN incidents i ON i.id = j.incident_id
WHERE j.done_at IS NULL AND (j.lease_until IS NULL OR j.lease_until < %(clock)s)
  AND j.id IN (SELECT MIN(id) FROM jobs WHERE done_at IS NULL GROUP BY incident_id)
ORDER BY j.id LIMIT %(limit)s
FOR UPDATE OF j SKIP LOCKED
"""

# The oldest pending action per incident and sink (as due_actions), unless another owner holds it and
# its lease has not run out. ``state`` and the lease are tested on the row itself, so a row another
# replica delivered or claimed meanwhile is re-checked once its lock is free.
CLAIMABLE_ACTIONS = """
SELECT o.id, o.incident_id, o.sink, o.action, o.payload, o.attempts, o.created_at, r.external_id
FROM outbox o LEFT JOIN action_refs r ON r.incident_id = o.incident_id AND r.sink = o.sink
WHERE o.state = 'pending'
  AND o.id IN (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY incident_id, sink)
  AND o.next_attempt_at <= %(now)s AND NOT (o.id = ANY(%(exclude)s::bigint[]))
  AND (o.claimed_by IS NULL OR o.claimed_by = %(owner)s OR o.lease_until < %(clock)s)
ORDER BY o.action NOT IN ('open', 'trigger'), o.id LIMIT %(limit)s
FOR UPDATE OF o SKIP LOCKED
"""


async def _claim(conn: Conn, table: str, ids: Sequence[int], owner: str, until: float) -> None:
    await conn.execute(
        f"UPDATE {table} SET claimed_by = %s, lease_until = %s WHERE id = ANY(%s::bigint[])",
        (owner, until, list(ids)),
    )


async def claim_jobs(conn: Conn, owner: str, lease: float, limit: int) -> list[tuple[Any, ...]]:
    """Rows (id, incident id, kind, attempts, source, previous owner) now leased to ``owner``."""
    now = await clock(conn)
    rows = await (await conn.execute(CLAIMABLE_JOBS, {"clock": now, "limit": limit})).fetchall()
    await _claim(conn, "jobs", [int(r[0]) for r in rows], owner, now + lease)
    return rows


async def claim_actions(
    conn: Conn, now: float, limit: int, exclude: Sequence[int], owner: str, lease: float
) -> list[tuple[Any, ...]]:
    server = await clock(conn)
    params = {"now": now, "exclude": list(exclude), "owner": owner, "clock": server, "limit": limit}
    rows = await (await conn.execute(CLAIMABLE_ACTIONS, params)).fetchall()
    await _claim(conn, "outbox", [int(r[0]) for r in rows], owner, server + lease)
    return rows


async def renew_leases(conn: Conn, owner: str, lease: float) -> int:
    until = await clock(conn) + lease
    jobs = await conn.execute(
        "UPDATE jobs SET lease_until = %s WHERE claimed_by = %s AND done_at IS NULL", (until, owner)
    )
    actions = await conn.execute(
        "UPDATE outbox SET lease_until = %s WHERE claimed_by = %s AND state = 'pending'", (until, owner)
    )
    return jobs.rowcount + actions.rowcount


# An unfinished row that is ``owner``'s, nobody's or whose lease ran out becomes ``owner``'s (renewed);
# the row lock makes it atomic (a concurrent claim skips the row, a concurrent confirmation waits and
# then re-checks it). A job waits while an earlier unfinished job of its incident is unclaimed or
# another owner's (as claim_jobs and ingest: an incident's jobs run in order), even one ``owner``
# holds already; such a claim is let go (LET_GO_JOB), to be handed out after the earlier job.
CONFIRM_JOB = """
UPDATE jobs j SET claimed_by = %(owner)s, lease_until = %(until)s
WHERE j.id = %(id)s AND j.done_at IS NULL
  AND (j.claimed_by = %(owner)s OR j.claimed_by IS NULL OR j.lease_until IS NULL OR j.lease_until < %(clock)s)
  AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.incident_id = j.incident_id AND o.done_at IS NULL
    AND o.id < j.id AND (o.claimed_by IS NULL OR o.claimed_by <> %(owner)s))
RETURNING j.id
"""
LET_GO_JOB = """
UPDATE jobs SET claimed_by = NULL, lease_until = NULL
WHERE id = %(id)s AND claimed_by = %(owner)s AND done_at IS NULL
"""
CONFIRM_ACTION = """
UPDATE outbox SET claimed_by = %(owner)s, lease_until = %(until)s
WHERE id = %(id)s AND state = 'pending'
  AND (claimed_by IS NULL OR claimed_by = %(owner)s OR lease_until IS NULL OR lease_until < %(clock)s)
RETURNING id
"""


async def confirm_claim(conn: Conn, kind: str, row_id: int, owner: str, lease: float) -> bool:
    now = await clock(conn)
    params = {"id": row_id, "owner": owner, "until": now + lease, "clock": now}
    cursor = await conn.execute(CONFIRM_JOB if kind == "job" else CONFIRM_ACTION, params)
    confirmed = bool(await cursor.fetchall())
    if not confirmed and kind == "job":  # as on SQLite (sqlite/leases.py, CONFIRM_JOB): let it go
        await conn.execute(LET_GO_JOB, params)
    return confirmed


async def release_leases(conn: Conn, owner: str, named_only: bool = False) -> int:
    released = 0
    if not named_only:
        jobs = await conn.execute(
            "UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %s AND done_at IS NULL",
            (owner,),
        )
        actions = await conn.execute(
            "UPDATE outbox SET claimed_by = NULL, lease_until = NULL "
            "WHERE claimed_by = %s AND state = 'pending'",
            (owner,),
        )
        released = jobs.rowcount + actions.rowcount
    named = await conn.execute("DELETE FROM leases WHERE owner = %s", (owner,))
    return released + named.rowcount


# A concurrent holder's upsert of the same name waits for this one's commit and then sees its row:
# the lease goes to one owner. Names in sorted order, so two owners never lock them crosswise.
HOLD_LEASES = """
INSERT INTO leases (name, owner, until, taken_at)
SELECT name, %(owner)s, %(until)s, %(clock)s FROM unnest(%(names)s::text[]) AS name
ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until,
    taken_at = CASE WHEN leases.owner = EXCLUDED.owner THEN leases.taken_at ELSE EXCLUDED.taken_at END
WHERE leases.owner = EXCLUDED.owner OR leases.until < %(clock)s
RETURNING name
"""


async def hold_leases(conn: Conn, owner: str, names: Sequence[str], lease: float) -> set[str]:
    if not names:
        return set()
    now = await clock(conn)
    params = {"owner": owner, "until": now + lease, "clock": now, "names": sorted(set(names))}
    return {str(r[0]) for r in await (await conn.execute(HOLD_LEASES, params)).fetchall()}


async def forget_leases(conn: Conn, prefix: str, ended: float) -> int:
    before = await clock(conn) - ended
    query = "DELETE FROM leases WHERE left(name, %s) = %s AND until < %s"
    return (await conn.execute(query, (len(prefix), prefix, before))).rowcount
