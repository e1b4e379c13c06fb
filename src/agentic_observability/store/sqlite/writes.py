"""Every write transaction of the store, as plain synchronous functions over one sqlite3 connection.

They run on the store's single writer thread, one whole transaction per hand-off: a transaction
never stays open across event-loop iterations, so a busy loop cannot stretch how long the SQLite
write lock is held (which is what made per-statement async writes slow under an alert storm).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from agentic_observability.models import AcceptedAlert, Action, AuditEntry, Change
from agentic_observability.store.intake import IngestPlan, IngestPlanner, PlannedJob
from agentic_observability.store.rows import change_values

ROWS_PER_STATEMENT = 2000  # 4 parameters a row, well under SQLite's 32,766-parameter limit


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (the connection is in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert_inbox(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, float]]) -> set[str]:
    """Insert inbox rows, ignoring ones already stored; returns the dedup keys that were new."""
    inserted: set[str] = set()
    with transaction(conn):
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            placeholders = ",".join(["(?, ?, ?, ?)"] * len(chunk))
            cursor = conn.execute(
                "INSERT OR IGNORE INTO inbox (dedup_key, group_key, body, received_at) "
                f"VALUES {placeholders} RETURNING dedup_key",
                [value for row in chunk for value in row],
            )
            inserted.update(str(r[0]) for r in cursor.fetchall())
        _touch_open_groups(conn, rows)
    return inserted


def _touch_open_groups(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, float]]) -> None:
    """Every delivery, a repeat of a stored one included (Alertmanager re-sends a firing group every
    repeat_interval), is a sign of life for its group's open incident: see _PRUNABLE_INCIDENTS."""
    if not rows:
        return
    conn.execute(
        "UPDATE incidents SET updated_at = MAX(updated_at, ?) "
        "WHERE status = 'firing' AND group_key IN (SELECT value FROM json_each(?))",
        (max(row[3] for row in rows), json.dumps(sorted({row[1] for row in rows}))),
    )


def record_changes(conn: sqlite3.Connection, changes: Sequence[Change], now: float) -> int:
    """Store change events, ignoring ones already stored (by dedup key); returns how many were new."""
    with transaction(conn):
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO changes (source, at, entity, namespace, workload, kind, summary, old, "
            "new, link, dedup_key, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [change_values(c, now) for c in changes],
        )
        return conn.total_changes - before


def install_id(conn: sqlite3.Connection, candidate: str) -> str:
    """The store's install id: ``candidate`` when none was stored yet (then kept), else the stored one."""
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('install_id', ?)", (candidate,))
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()
    return str(value)


def ingest(
    conn: sqlite3.Connection, limit: int, now: float, claim: tuple[str, float] | None = None
) -> tuple[list[PlannedJob], int]:
    """Apply up to ``limit`` unprocessed inbox rows to incidents (rules in ../intake.py);
    returns the jobs created and how many rows were consumed. ``claim``: (owner, lease end) the
    new jobs are claimed with."""
    with transaction(conn):
        rows = conn.execute(
            "SELECT id, body FROM inbox WHERE processed_at IS NULL ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        if not rows:
            return [], 0
        pending = [(int(i), AcceptedAlert.from_dict(json.loads(b))) for i, b in rows]
        planner = _planner(conn, {a.group_key for _, a in pending})
        for inbox_id, accepted in pending:
            planner.add(inbox_id, accepted, now)
        _apply(conn, planner.plan, now, claim or (None, None))
        jobs = planner.plan.jobs
        if claim is not None:
            waiting = _behind_another_owner(conn, [j.id for j in jobs], claim[0])
            jobs = [j for j in jobs if j.id not in waiting]
    return jobs, len(rows)


# A new job waits (unclaimed) behind an unfinished earlier job of its incident that another owner
# holds, or nobody does: an incident's jobs run in order, and ``claim_jobs`` hands it out in turn.
BEHIND_ANOTHER_OWNER = """
SELECT j.id FROM jobs j WHERE j.id IN (SELECT value FROM json_each(:new)) AND EXISTS (
  SELECT 1 FROM jobs o WHERE o.incident_id = j.incident_id AND o.done_at IS NULL AND o.id < j.id
    AND o.id NOT IN (SELECT value FROM json_each(:new))
    AND (o.claimed_by IS NULL OR o.claimed_by != :owner))
"""


def _behind_another_owner(conn: sqlite3.Connection, new: list[int], owner: str) -> set[int]:
    """Of the ``new`` jobs ``owner`` claimed, those that must wait their turn: their claim is undone."""
    waiting = {
        int(r[0]) for r in conn.execute(BEHIND_ANOTHER_OWNER, {"new": json.dumps(new), "owner": owner})
    }
    conn.execute(
        "UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(waiting)),),
    )
    return waiting


def _planner(conn: sqlite3.Connection, group_keys: set[str]) -> IngestPlanner:
    incidents = conn.execute(
        "SELECT id, group_key FROM incidents WHERE status = 'firing' "
        "AND group_key IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(group_keys)),),
    ).fetchall()
    alerts = conn.execute(
        "SELECT incident_id, fingerprint, status, ends_at FROM incident_alerts "
        "WHERE incident_id IN (SELECT value FROM json_each(?))",
        (json.dumps([int(i) for i, _ in incidents]),),
    ).fetchall()
    by_incident: dict[int, list[tuple[str, str, float | None]]] = {}
    for incident_id, fingerprint, status, ends in alerts:
        by_incident.setdefault(int(incident_id), []).append((fingerprint, status, ends))
    open_state = {g: IngestPlanner.open_state(int(i), by_incident.get(int(i), [])) for i, g in incidents}
    next_incident, next_job = conn.execute(
        "SELECT (SELECT COALESCE(MAX(id), 0) + 1 FROM incidents), (SELECT COALESCE(MAX(id), 0) + 1 FROM jobs)"
    ).fetchone()
    return IngestPlanner(open_state, int(next_incident), int(next_job))


def _apply(
    conn: sqlite3.Connection, plan: IngestPlan, now: float, claim: tuple[str | None, float | None]
) -> None:
    # A group's open incident that resolves in this batch closes before the group's next one opens
    # (one open incident per group); a new incident is written with the state the batch leaves it in.
    resolved = dict(plan.resolved)
    new_ids = {n.id for n in plan.new_incidents}
    conn.executemany(
        "UPDATE incidents SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
        [(at, now, incident_id) for incident_id, at in resolved.items() if incident_id not in new_ids],
    )
    conn.executemany(
        "INSERT INTO incidents (id, group_key, source, status, resolved_at, title, labels, started_at, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                n.id,
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
    conn.executemany(
        "INSERT INTO incident_alerts (incident_id, fingerprint, status, ends_at, body) "
        "VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (incident_id, fingerprint) DO UPDATE SET "
        "status = excluded.status, ends_at = excluded.ends_at, body = excluded.body",
        plan.alert_rows,
    )
    conn.executemany(
        "INSERT INTO jobs (id, incident_id, kind, created_at, claimed_by, lease_until) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(j.id, j.incident_id, j.kind, now, *claim) for j in plan.jobs],
    )
    conn.execute(
        "UPDATE inbox SET processed_at = ? WHERE id IN (SELECT value FROM json_each(?))",
        (now, json.dumps(plan.processed)),
    )


def complete_job(
    conn: sqlite3.Connection,
    job_id: int,
    incident_id: int,
    report: str,
    similar: str,
    actions: Sequence[Action],
    now: float,
    reports: Sequence[tuple[int, str]] = (),
    parent: tuple[int | None, str] | None = None,
) -> None:
    """Save the report, queue its actions and mark its job done together: never one without the others.
    ``reports``: other incidents' new reports (a root re-analysed with a new member); ``parent``: the
    incident joins that root (or, None, leaves it), with the reason as JSON."""
    with transaction(conn):
        conn.execute(
            "UPDATE incidents SET report = ?, similar = ?, updated_at = ? WHERE id = ?",
            (report, similar, now, incident_id),
        )
        for other, other_report in reports:
            conn.execute(
                "UPDATE incidents SET report = ?, updated_at = ? WHERE id = ?", (other_report, now, other)
            )
        if parent is not None:
            set_parent(conn, incident_id, parent[0], parent[1], now)
        insert_actions(conn, actions, now)
        conn.execute(
            "UPDATE jobs SET done_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
            (now, job_id),
        )


def set_parent(
    conn: sqlite3.Connection, incident_id: int, parent_id: int | None, why: str, now: float
) -> None:
    """Join ``incident_id`` to a root (its own members move along: a root has no grandchildren), or
    make it a root again (``parent_id`` None)."""
    if parent_id is not None:
        conn.execute(
            "UPDATE incidents SET parent_id = ?, updated_at = ? WHERE parent_id = ?",
            (parent_id, now, incident_id),
        )
    conn.execute(
        "UPDATE incidents SET parent_id = ?, correlation = ?, updated_at = ? WHERE id = ?",
        (parent_id, why, now, incident_id),
    )


def regroup(
    conn: sqlite3.Connection,
    incident_id: int,
    parent_id: int | None,
    why: str,
    actions: Sequence[Action],
    now: float,
) -> None:
    """A split or merge by hand, with the actions it calls for, in one transaction."""
    with transaction(conn):
        set_parent(conn, incident_id, parent_id, why, now)
        insert_actions(conn, actions, now)


def finish_job(conn: sqlite3.Connection, job_id: int, done_at: float | None, error: str | None) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE jobs SET done_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
            (done_at, error, job_id),
        )


def insert_actions(conn: sqlite3.Connection, actions: Sequence[Action], now: float) -> None:
    """Queue actions; one already queued under the same dedup key (a retried job) is not queued again."""
    conn.executemany(
        "INSERT OR IGNORE INTO outbox "
        "(incident_id, sink, action, dedup_key, payload, created_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                int(a.incident_id),
                a.sink,
                a.action,
                a.dedup_key,
                json.dumps(dict(a.payload)),
                now,
                a.not_before,
            )
            for a in actions
        ],
    )


def record_audit(
    conn: sqlite3.Connection,
    incident_id: int,
    entries: Sequence[AuditEntry],
    actions: Sequence[Action],
    now: float,
) -> None:
    """Audit entries and the outbox actions they call for, in one transaction."""
    with transaction(conn):
        _insert_audit(conn, incident_id, entries)
        insert_actions(conn, actions, now)


def queue_remediation(
    conn: sqlite3.Connection,
    incident_id: int,
    action: str,
    entries: Sequence[AuditEntry],
    actions: Sequence[Action],
    now: float,
) -> bool:
    """An approved run of catalogue entry ``action``, with its audit entries and thread reply, unless
    one of the incident is still pending or already ran (then nothing is written: False). A run that
    was refused or failed may be approved again."""
    with transaction(conn):
        # run actions are "run:<entry>:<key>"; entry names are [a-z0-9-], nothing LIKE treats specially
        live = conn.execute(
            "SELECT 1 FROM outbox WHERE incident_id = ? AND sink = 'remediation' AND state = 'pending' "
            "AND action LIKE ? UNION ALL "
            "SELECT 1 FROM audit WHERE incident_id = ? AND action = ? AND event = 'ran' LIMIT 1",
            (incident_id, f"run:{action}:%", incident_id, action),
        ).fetchone()
        if live is not None:
            return False
        _insert_audit(conn, incident_id, entries)
        insert_actions(conn, actions, now)
    return True


def _insert_audit(conn: sqlite3.Connection, incident_id: int, entries: Sequence[AuditEntry]) -> None:
    conn.executemany(
        "INSERT INTO audit (incident_id, at, event, action, key, by, target, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (incident_id, e.at, e.event, e.action, e.key, e.by, e.target, json.dumps(dict(e.detail)))
            for e in entries
        ],
    )


def save_feedback(
    conn: sqlite3.Connection, incident_id: int, feedback: str, actions: Sequence[Action], now: float
) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE incidents SET feedback = ?, updated_at = ? WHERE id = ?", (feedback, now, incident_id)
        )
        insert_actions(conn, actions, now)


def queue_job(
    conn: sqlite3.Connection, incident_id: int, kind: str, actions: Sequence[Action], now: float
) -> tuple[int, str, bool] | None:
    """Another job for an open incident (a re-investigation someone asked for), with ``actions`` (who
    asked, said in the thread) when it is new: its id and kind, and whether it is new. A job of the
    incident still pending is returned instead of a second one, so pressing twice analyses once.
    None when the incident is not open."""
    with transaction(conn):
        row = conn.execute("SELECT status FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None or row[0] != "firing":
            return None
        pending = conn.execute(
            "SELECT id, kind FROM jobs WHERE incident_id = ? AND done_at IS NULL ORDER BY id LIMIT 1",
            (incident_id,),
        ).fetchone()
        if pending is not None:
            return int(pending[0]), str(pending[1]), False
        cursor = conn.execute(
            "INSERT INTO jobs (incident_id, kind, created_at) VALUES (?, ?, ?) RETURNING id",
            (incident_id, kind, now),
        )
        job_id = int(cursor.fetchone()[0])
        insert_actions(conn, actions, now)
        return job_id, kind, True


def action_delivered(
    conn: sqlite3.Connection, item_id: int, incident_id: int, sink: str, ref: str | None, now: float
) -> None:
    """Mark delivered and remember the sink's id for the incident, in one transaction."""
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET state = 'delivered', delivered_at = ?, attempts = attempts + 1, "
            "last_error = NULL, claimed_by = NULL, lease_until = NULL WHERE id = ?",
            (now, item_id),
        )
        if ref is not None:
            conn.execute(
                "INSERT INTO action_refs (incident_id, sink, external_id) VALUES (?, ?, ?) "
                "ON CONFLICT (incident_id, sink) DO UPDATE SET external_id = excluded.external_id",
                (incident_id, sink, ref),
            )


def action_failed(conn: sqlite3.Connection, item_id: int, error: str, next_attempt_at: float | None) -> None:
    """Retry at ``next_attempt_at``, or give up (state 'failed') when it is None."""
    state = "pending" if next_attempt_at is not None else "failed"
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = COALESCE(?, next_attempt_at), claimed_by = NULL, lease_until = NULL "
            "WHERE id = ?",
            (state, error[:1000], next_attempt_at, item_id),
        )


# Resolved, untouched since the cutoff (``updated_at`` also guards a replayed incident whose alerts
# ended long ago but which was only just analysed), with no work left: no pending job, no pending
# action. The newest incident always stays: ingest numbers incidents MAX(id) + 1, and an incident id
# must never be reused (Slack threads, PagerDuty dedup keys and memory points are keyed by it).
# Retention runs on this service's clock (updated_at: when the incident last changed here), not on
# the alerts' own endsAt, which a skewed or replaying sender can put anywhere, even years ahead.
# A fault's members go first, once nothing of the fault fires; its root when no member is left.
# An incident still firing but silent since :silent goes too: a receiver with send_resolved: false
# never resolves anything, and Alertmanager re-sends a firing group every repeat_interval (each
# delivery touches updated_at), so nothing is heard from a group that stopped firing long ago.
# Only Alertmanager's: a watch reports an episode once when it opens and once when it closes, and
# keeps it open across restarts; a long episode is silent by design.
_PRUNABLE_INCIDENTS = """
SELECT id FROM incidents i
WHERE ((status = 'resolved' AND updated_at < :cutoff)
       OR (status = 'firing' AND source = 'alertmanager' AND updated_at < :silent))
  AND id < (SELECT MAX(id) FROM incidents)
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE incident_id = i.id AND done_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM outbox WHERE incident_id = i.id AND state = 'pending')
  AND NOT EXISTS (SELECT 1 FROM incidents c WHERE c.parent_id = i.id)
  AND NOT EXISTS (SELECT 1 FROM incidents s WHERE s.id = i.parent_id AND s.status = 'firing'
                  AND (s.source != 'alertmanager' OR s.updated_at >= :silent))
  AND NOT EXISTS (SELECT 1 FROM incidents s WHERE s.parent_id = i.parent_id AND s.status = 'firing'
                  AND (s.source != 'alertmanager' OR s.updated_at >= :silent))
ORDER BY updated_at LIMIT :batch
"""
_INCIDENT_CHILDREN = (
    "incident_alerts",
    "jobs",
    "action_refs",
    "outbox",
    "audit",
)  # deleted before the parent


def prune(conn: sqlite3.Connection, cutoff: float, batch: int, silent_before: float | None) -> dict[str, int]:
    """Delete up to ``batch`` prunable incidents with everything that refers to them, up to ``batch``
    inbox rows processed before ``cutoff`` and up to ``batch`` change events that happened before it,
    in one short transaction; rows per table."""
    counts: dict[str, int] = {}
    silent = float("-inf") if silent_before is None else silent_before
    with transaction(conn):
        found = conn.execute(
            _PRUNABLE_INCIDENTS, {"cutoff": cutoff, "silent": silent, "batch": batch}
        ).fetchall()
        ids = json.dumps([int(row[0]) for row in found])
        for table in (*_INCIDENT_CHILDREN, "incidents"):
            column = "id" if table == "incidents" else "incident_id"
            counts[table] = conn.execute(
                f"DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))", (ids,)
            ).rowcount
        counts["inbox"] = conn.execute(
            "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE processed_at < ? "
            "ORDER BY processed_at LIMIT ?)",
            (cutoff, batch),
        ).rowcount
        # A change event is kept for the retention after it happened (no incident owns one: a report
        # copies what it showed). Pruned by ``at``, not by receipt: a late delivery of an old change
        # goes with the next batch.
        counts["changes"] = conn.execute(
            "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE at < ? ORDER BY at LIMIT ?)",
            (cutoff, batch),
        ).rowcount
    return counts
