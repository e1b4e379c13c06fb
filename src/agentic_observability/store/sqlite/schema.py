"""The SQLite schema, its migrations and connection settings (shared by the writer and readers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentic_observability.errors import StoreError

SCHEMA_VERSION = 8
DB_FILENAME = "agentic-obs.sqlite3"

# WAL + synchronous=NORMAL: a commit survives a process crash (SIGKILL, OOM); only an OS crash or
# power loss can drop the last transactions, which Alertmanager would then resend.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE inbox (
        id           INTEGER PRIMARY KEY,
        dedup_key    TEXT NOT NULL UNIQUE,
        group_key    TEXT NOT NULL,
        body         TEXT NOT NULL,
        received_at  REAL NOT NULL,
        processed_at REAL
    );
    CREATE INDEX inbox_pending ON inbox(id) WHERE processed_at IS NULL;
    CREATE TABLE incidents (
        id           INTEGER PRIMARY KEY,
        group_key    TEXT NOT NULL,
        source       TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
        title        TEXT NOT NULL,
        labels       TEXT NOT NULL,
        started_at   REAL NOT NULL,
        resolved_at  REAL,
        report       TEXT,
        similar      TEXT NOT NULL DEFAULT '[]',
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL
    );
    CREATE UNIQUE INDEX incidents_one_open_per_group ON incidents(group_key) WHERE status = 'firing';
    CREATE INDEX incidents_by_status ON incidents(status, id);
    CREATE TABLE incident_alerts (
        incident_id  INTEGER NOT NULL REFERENCES incidents(id),
        fingerprint  TEXT NOT NULL,
        status       TEXT NOT NULL,
        ends_at      REAL,
        body         TEXT NOT NULL,
        PRIMARY KEY (incident_id, fingerprint)
    );
    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,
        incident_id  INTEGER NOT NULL REFERENCES incidents(id),
        kind         TEXT NOT NULL,
        created_at   REAL NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        done_at      REAL
    );
    CREATE INDEX jobs_pending ON jobs(id) WHERE done_at IS NULL;
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY,
        incident_id  INTEGER NOT NULL REFERENCES incidents(id),
        sink         TEXT NOT NULL,
        action       TEXT NOT NULL,
        dedup_key    TEXT NOT NULL UNIQUE,
        payload      TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending',
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        external_id  TEXT,
        created_at   REAL NOT NULL,
        delivered_at REAL
    );
    CREATE INDEX outbox_pending ON outbox(next_attempt_at) WHERE state = 'pending';
    """,
    # 2: feedback on incidents; delivery errors; the id each sink gave an incident (Slack ts,
    # Grafana annotation id, PagerDuty dedup key), so later actions update instead of re-creating.
    2: """
    ALTER TABLE incidents ADD COLUMN feedback TEXT;
    ALTER TABLE outbox ADD COLUMN last_error TEXT;
    CREATE INDEX outbox_by_incident ON outbox(incident_id, sink, id) WHERE state = 'pending';
    CREATE TABLE action_refs (
        incident_id  INTEGER NOT NULL REFERENCES incidents(id),
        sink         TEXT NOT NULL,
        external_id  TEXT NOT NULL,
        PRIMARY KEY (incident_id, sink)
    );
    """,
    # 3: retention. Pruning finds old resolved incidents and processed inbox rows by time, and deletes
    # an incident's jobs and outbox rows by incident (the older indexes only cover pending rows).
    # The inbox index is partial: the webhook's commit inserts unprocessed rows and never touches it.
    3: """
    CREATE INDEX incidents_by_age ON incidents(status, updated_at);
    CREATE INDEX inbox_processed ON inbox(processed_at) WHERE processed_at IS NOT NULL;
    CREATE INDEX jobs_by_incident ON jobs(incident_id);
    CREATE INDEX outbox_by_incident_all ON outbox(incident_id);
    """,
    # 4: facts about the store itself. ``install_id`` (written once, on first use): incident ids
    # restart at 1 in every store, so what receivers see (PagerDuty dedup keys, Grafana tags, Slack
    # metadata) carries it, and two installations, or one on a wiped volume, never share a key.
    4: """
    CREATE TABLE meta (
        key          TEXT PRIMARY KEY,
        value        TEXT NOT NULL
    );
    """,
    # 5: one incident per fault. A group that joined another incident points at its root
    # (``parent_id``; roots have none) and says why (``correlation``, JSON; also kept after a split).
    # Correlation looks for open roots by start time once per new group: indexed, or it scans.
    5: """
    ALTER TABLE incidents ADD COLUMN parent_id INTEGER REFERENCES incidents(id);
    ALTER TABLE incidents ADD COLUMN correlation TEXT;
    CREATE INDEX incidents_by_parent ON incidents(parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX incidents_roots_by_start ON incidents(started_at) WHERE parent_id IS NULL;
    """,
    # 6: remediation's audit log (issue 22): who approved what, its dry run, its result, the recovery.
    # By key, a redelivered run finds what it already did; by time, the guardrails count recent runs.
    6: """
    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY,
        incident_id  INTEGER NOT NULL REFERENCES incidents(id),
        at           REAL NOT NULL,
        event        TEXT NOT NULL,
        action       TEXT NOT NULL,
        key          TEXT NOT NULL,
        by           TEXT,
        target       TEXT,
        detail       TEXT NOT NULL
    );
    CREATE INDEX audit_by_incident ON audit(incident_id, id);
    CREATE INDEX audit_by_key ON audit(key);
    CREATE INDEX audit_runs ON audit(at) WHERE event IN ('ran', 'failed');
    """,
    # 7: change events (issue 18): rollouts, images, config edits and deploys, from kube-state-metrics,
    # the change webhook, PagerDuty change events and Grafana annotations. ``dedup_key`` makes a re-poll
    # or a retried delivery store nothing twice. A report reads them by time and entity; retention by time.
    7: """
    CREATE TABLE changes (
        id           INTEGER PRIMARY KEY,
        source       TEXT NOT NULL CHECK (source IN ('ksm', 'webhook', 'pagerduty', 'grafana')),
        at           REAL NOT NULL,
        entity       TEXT NOT NULL,
        namespace    TEXT,
        workload     TEXT,
        kind         TEXT NOT NULL
                     CHECK (kind IN ('rollout', 'image', 'config', 'replicaset', 'deploy', 'other')),
        summary      TEXT NOT NULL,
        old          TEXT,
        new          TEXT,
        link         TEXT,
        dedup_key    TEXT NOT NULL UNIQUE,
        received_at  REAL NOT NULL
    );
    CREATE INDEX changes_by_time ON changes(at);
    CREATE INDEX changes_by_entity ON changes(entity, at);
    """,
    # 8: leases (issue 17). A job or outbox row being worked on names its owner (a replica) and until
    # when; one that dies stops renewing, and another takes the work once the lease has run out.
    # ``leases``: named leases (a watch shard, a singleton loop) held by one owner at a time. One
    # SQLite file has one process, so here they only keep the protocol's semantics.
    8: """
    ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN lease_until REAL;
    CREATE INDEX jobs_by_owner ON jobs(claimed_by) WHERE done_at IS NULL AND claimed_by IS NOT NULL;
    CREATE INDEX outbox_by_owner ON outbox(claimed_by) WHERE state = 'pending' AND claimed_by IS NOT NULL;
    CREATE TABLE leases (
        name         TEXT PRIMARY KEY,
        owner        TEXT NOT NULL,
        until        REAL NOT NULL,
        taken_at     REAL NOT NULL
    );
    """,
}


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the store was written by a newer version (schema {current} > {SCHEMA_VERSION}); "
            "upgrade agentic-obs or point storage.path elsewhere"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        # One script, one transaction: a crash mid-migration leaves the previous version intact.
        record = f"INSERT INTO schema_version (version) VALUES ({version});"
        conn.executescript(f"BEGIN;\n{MIGRATIONS[version]}\n{record}\nCOMMIT;")
