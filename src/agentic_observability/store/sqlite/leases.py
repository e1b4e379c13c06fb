"""Claims and leases on the SQLite file: the same semantics as the PostgreSQL backend's, though one
file has one process, so no other owner ever competes here (a restarted process takes over its own
expired claims). Plain synchronous functions run on the store's writer thread, like writes.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from agentic_observability.store.sqlite.writes import transaction

# Per incident only its oldest unfinished job (an incident's jobs run in order), and only when nobody
# holds it: never claimed, or the lease ran out.
CLAIMABLE_JOBS = """
SELECT j.id, j.incident_id, j.kind, j.attempts, i.source, j.claimed_by FROM jobs j
JOIN incidents i ON i.id = j.incident_id
WHERE j.done_at IS NULL AND (j.lease_until IS NULL OR j.lease_until < :clock)
  AND j.id IN (SELECT MIN(id) FROM jobs WHERE done_at IS NULL GROUP BY incident_id)
ORDER BY j.id LIMIT :limit
"""

# The oldest pending action per incident and sink (as the store's due_actions), unless another owner
# holds it and its lease has not run out.
CLAIMABLE_ACTIONS = """
SELECT o.id, o.incident_id, o.sink, o.action, o.payload, o.attempts, o.created_at, r.external_id
FROM outbox o LEFT JOIN action_refs r ON r.incident_id = o.incident_id AND r.sink = o.sink
WHERE o.id IN (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY incident_id, sink)
  AND o.next_attempt_at <= :now AND o.id NOT IN (SELECT value FROM json_each(:exclude))
  AND (o.claimed_by IS NULL OR o.claimed_by = :owner OR o.lease_until < :clock)
ORDER BY o.action NOT IN ('open', 'trigger'), o.id LIMIT :limit
"""


def _claim(conn: sqlite3.Connection, table: str, ids: Sequence[int], owner: str, until: float) -> None:
    conn.execute(
        f"UPDATE {table} SET claimed_by = ?, lease_until = ? WHERE id IN (SELECT value FROM json_each(?))",
        (owner, until, json.dumps(list(ids))),
    )


def claim_jobs(
    conn: sqlite3.Connection, owner: str, until: float, limit: int, clock: float
) -> list[tuple[Any, ...]]:
    """Rows (id, incident id, kind, attempts, source, previous owner) now leased to ``owner``."""
    with transaction(conn):
        rows = conn.execute(CLAIMABLE_JOBS, {"clock": clock, "limit": limit}).fetchall()
        _claim(conn, "jobs", [int(r[0]) for r in rows], owner, until)
    return rows


def claim_actions(
    conn: sqlite3.Connection,
    now: float,
    limit: int,
    exclude: Sequence[int],
    claim: tuple[str, float],
    clock: float,
) -> list[tuple[Any, ...]]:
    owner, until = claim
    params = {"now": now, "exclude": json.dumps(list(exclude)), "owner": owner, "clock": clock}
    with transaction(conn):
        rows = conn.execute(CLAIMABLE_ACTIONS, {**params, "limit": limit}).fetchall()
        _claim(conn, "outbox", [int(r[0]) for r in rows], owner, until)
    return rows


def renew_leases(conn: sqlite3.Connection, owner: str, until: float) -> int:
    with transaction(conn):
        jobs = conn.execute(
            "UPDATE jobs SET lease_until = ? WHERE claimed_by = ? AND done_at IS NULL", (until, owner)
        ).rowcount
        actions = conn.execute(
            "UPDATE outbox SET lease_until = ? WHERE claimed_by = ? AND state = 'pending'", (until, owner)
        ).rowcount
    return int(jobs + actions)


# An unfinished row that is ``owner``'s, nobody's or whose lease ran out becomes ``owner``'s (renewed).
# A job waits while an earlier unfinished job of its incident is unclaimed or another owner's (as
# claim_jobs and ingest: an incident's jobs run in order), even a job ``owner`` holds already: its
# incident's analysis may have been taken over meanwhile. Such a claim is let go (LET_GO_JOB), so the
# job is handed out again after the earlier one is done.
CONFIRM_JOB = """
UPDATE jobs SET claimed_by = :owner, lease_until = :until
WHERE id = :id AND done_at IS NULL
  AND (claimed_by = :owner OR claimed_by IS NULL OR lease_until IS NULL OR lease_until < :clock)
  AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.incident_id = jobs.incident_id AND o.done_at IS NULL
    AND o.id < jobs.id AND (o.claimed_by IS NULL OR o.claimed_by <> :owner))
RETURNING id
"""
LET_GO_JOB = """
UPDATE jobs SET claimed_by = NULL, lease_until = NULL
WHERE id = :id AND claimed_by = :owner AND done_at IS NULL
"""
CONFIRM_ACTION = """
UPDATE outbox SET claimed_by = :owner, lease_until = :until
WHERE id = :id AND state = 'pending'
  AND (claimed_by IS NULL OR claimed_by = :owner OR lease_until IS NULL OR lease_until < :clock)
RETURNING id
"""


def confirm_claim(
    conn: sqlite3.Connection, kind: str, row_id: int, owner: str, until: float, clock: float
) -> bool:
    sql = CONFIRM_JOB if kind == "job" else CONFIRM_ACTION
    params = {"id": row_id, "owner": owner, "until": until, "clock": clock}
    with transaction(conn):
        confirmed = bool(conn.execute(sql, params).fetchall())
        if not confirmed and kind == "job":
            conn.execute(LET_GO_JOB, {"id": row_id, "owner": owner})
        return confirmed


def release_leases(conn: sqlite3.Connection, owner: str, named_only: bool = False) -> int:
    released = 0
    with transaction(conn):
        if not named_only:
            released += conn.execute(
                "UPDATE jobs SET claimed_by = NULL, lease_until = NULL "
                "WHERE claimed_by = ? AND done_at IS NULL",
                (owner,),
            ).rowcount
            released += conn.execute(
                "UPDATE outbox SET claimed_by = NULL, lease_until = NULL "
                "WHERE claimed_by = ? AND state = 'pending'",
                (owner,),
            ).rowcount
        released += conn.execute("DELETE FROM leases WHERE owner = ?", (owner,)).rowcount
    return int(released)


def release_all(conn: sqlite3.Connection) -> int:
    """Every claim and named lease, when the service opens the file (``SqliteStore.open(take_over=True)``):
    the file serves one service process at a time, so what an earlier one held (it crashed, or was
    SIGKILLed) is free now, without waiting for its leases to run out. Other openers (``agentic-obs
    replay``, tools) must not call it: they would free a running service's claims."""
    with transaction(conn):
        released = conn.execute(
            "UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL"
        ).rowcount
        released += conn.execute(
            "UPDATE outbox SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL"
        ).rowcount
        released += conn.execute("DELETE FROM leases").rowcount
    return int(released)


HOLD_LEASE = """
INSERT INTO leases (name, owner, until, taken_at) VALUES (:name, :owner, :until, :clock)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until,
    taken_at = CASE WHEN leases.owner = excluded.owner THEN leases.taken_at ELSE excluded.taken_at END
WHERE leases.owner = excluded.owner OR leases.until < :clock
RETURNING name
"""


def hold_leases(
    conn: sqlite3.Connection, owner: str, names: Sequence[str], until: float, clock: float
) -> set[str]:
    held: set[str] = set()
    with transaction(conn):
        for name in sorted(set(names)):
            params = {"name": name, "owner": owner, "until": until, "clock": clock}
            held.update(str(row[0]) for row in conn.execute(HOLD_LEASE, params).fetchall())
    return held


def forget_leases(conn: sqlite3.Connection, prefix: str, before: float) -> int:
    with transaction(conn):
        query = "DELETE FROM leases WHERE substr(name, 1, ?) = ? AND until < ?"
        return conn.execute(query, (len(prefix), prefix, before)).rowcount
