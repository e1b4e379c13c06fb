"""Durable state in one SQLite file (WAL): the inbox of accepted alerts, incidents, jobs and the outbox.

Flow: the webhook commits alerts to ``inbox`` (that commit is what a 202 promises); the ingest loop
turns unprocessed inbox rows into incident changes and ``jobs`` in one transaction; workers run the
pipeline for each job and mark it done. Every step is resumable after a crash: nothing is deleted
before the step that consumes it has committed.

Writes go through one connection guarded by a lock (SQLite has one writer anyway); concurrent
webhook commits are batched into one transaction ("group commit"), which is what makes thousands
of durable accepts per second possible on a small machine. Reads use a second connection (WAL
readers never block the writer).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from agentic_observability.errors import StoreError, StoreUnavailableError
from agentic_observability.models import AcceptedAlert, Alert, Incident

SCHEMA_VERSION = 1
DB_FILENAME = "agentic-obs.sqlite3"

_MIGRATIONS: dict[int, str] = {
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
}


@dataclass(frozen=True)
class Job:
    """A unit of pipeline work for one incident: ``analyze`` when it opens, ``resolve`` when it ends."""

    id: int
    incident_id: str
    kind: str
    attempts: int
    source: str = "alertmanager"


@dataclass(frozen=True)
class AcceptResult:
    accepted: int
    duplicates: int


class Store:
    """Async facade over the SQLite file. Create with ``await Store.open(directory)``."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path) -> None:
        self._writer = writer
        self._reader = reader
        self.path = path
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[list[AcceptedAlert], asyncio.Future[AcceptResult]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, directory: str | Path) -> Store:
        folder = Path(directory)
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            path = folder / DB_FILENAME
            writer = await _connect(path)
            await _migrate(writer)
            reader = await _connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store at {folder}: {exc}") from exc
        return cls(writer, reader, path)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._reader.close()
        await self._writer.close()

    async def ping(self) -> None:
        try:
            await (await self._reader.execute("SELECT 1")).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store not readable: {exc}") from exc

    # -- inbox ---------------------------------------------------------------------------------

    async def accept(self, alerts: Sequence[AcceptedAlert]) -> AcceptResult:
        """Durably store alerts; returns once committed. Concurrent calls share one transaction."""
        future: asyncio.Future[AcceptResult] = asyncio.get_running_loop().create_future()
        self._pending.append((list(alerts), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        return await future

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._commit_batch([alerts for alerts, _ in batch])
            except (sqlite3.Error, OSError) as exc:
                error = StoreUnavailableError(f"could not commit alerts: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _commit_batch(self, requests: list[list[AcceptedAlert]]) -> list[AcceptResult]:
        now = time.time()
        results = []
        async with self._write_lock:
            try:
                for alerts in requests:
                    inserted = 0
                    for row in _inbox_rows(alerts, now):
                        cursor = await self._writer.execute(
                            "INSERT OR IGNORE INTO inbox (dedup_key, group_key, body, received_at) "
                            "VALUES (?, ?, ?, ?)",
                            row,
                        )
                        inserted += cursor.rowcount
                    results.append(AcceptResult(inserted, len(alerts) - inserted))
                await self._writer.commit()
            except BaseException:
                await self._writer.rollback()
                raise
        return results

    # -- ingest: inbox -> incidents + jobs ------------------------------------------------------

    async def ingest_pending(self, limit: int = 500) -> list[Job]:
        """Apply unprocessed inbox rows to incidents; returns the jobs this created."""
        async with self._write_lock:
            try:
                cursor = await self._writer.execute(
                    "SELECT id, body FROM inbox WHERE processed_at IS NULL ORDER BY id LIMIT ?", (limit,)
                )
                rows = list(await cursor.fetchall())
                jobs: list[Job] = []
                now = time.time()
                for inbox_id, body in rows:
                    accepted = AcceptedAlert.from_dict(json.loads(body))
                    jobs.extend(await self._apply(accepted, now))
                    await self._writer.execute(
                        "UPDATE inbox SET processed_at = ? WHERE id = ?", (now, inbox_id)
                    )
                await self._writer.commit()
            except BaseException:
                await self._writer.rollback()
                raise
        return jobs

    async def _apply(self, accepted: AcceptedAlert, now: float) -> list[Job]:
        alert = accepted.alert
        incident_id = await self._open_incident_id(accepted.group_key)
        if incident_id is None:
            if alert.status == "resolved":
                return []  # a resolve for an episode we never saw firing: nothing to open or close
            incident_id = await self._create_incident(accepted, now)
            await self._upsert_alert(incident_id, alert)
            return [await self._add_job(incident_id, "analyze", now, accepted.source)]
        await self._upsert_alert(incident_id, alert)
        if alert.status == "resolved" and await self._all_resolved(incident_id):
            await self._resolve_incident(incident_id, now)
            return [await self._add_job(incident_id, "resolve", now, accepted.source)]
        return []

    async def _open_incident_id(self, group_key: str) -> int | None:
        cursor = await self._writer.execute(
            "SELECT id FROM incidents WHERE group_key = ? AND status = 'firing'", (group_key,)
        )
        row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def _create_incident(self, accepted: AcceptedAlert, now: float) -> int:
        alert = accepted.alert
        labels = dict(accepted.group_labels) or dict(alert.labels)
        cursor = await self._writer.execute(
            "INSERT INTO incidents (group_key, source, status, title, labels, started_at, "
            "created_at, updated_at) VALUES (?, ?, 'firing', ?, ?, ?, ?, ?)",
            (
                accepted.group_key,
                accepted.source,
                incident_title(alert),
                json.dumps(labels),
                alert.starts_at,
                now,
                now,
            ),
        )
        return int(cursor.lastrowid or 0)

    async def _upsert_alert(self, incident_id: int, alert: Alert) -> None:
        await self._writer.execute(
            "INSERT INTO incident_alerts (incident_id, fingerprint, status, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (incident_id, fingerprint) "
            "DO UPDATE SET status = excluded.status, body = excluded.body",
            (incident_id, alert.fingerprint, alert.status, json.dumps(alert.to_dict())),
        )

    async def _all_resolved(self, incident_id: int) -> bool:
        cursor = await self._writer.execute(
            "SELECT COUNT(*) FROM incident_alerts WHERE incident_id = ? AND status = 'firing'", (incident_id,)
        )
        row = await cursor.fetchone()
        return row is not None and int(row[0]) == 0

    async def _resolve_incident(self, incident_id: int, now: float) -> None:
        cursor = await self._writer.execute(
            "SELECT body FROM incident_alerts WHERE incident_id = ?", (incident_id,)
        )
        ends = [Alert.from_dict(json.loads(b)).ends_at for (b,) in await cursor.fetchall()]
        resolved_at = max((e for e in ends if e is not None), default=now)
        await self._writer.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
            (resolved_at, now, incident_id),
        )

    async def _add_job(self, incident_id: int, kind: str, now: float, source: str) -> Job:
        cursor = await self._writer.execute(
            "INSERT INTO jobs (incident_id, kind, created_at) VALUES (?, ?, ?)", (incident_id, kind, now)
        )
        return Job(int(cursor.lastrowid or 0), str(incident_id), kind, 0, source)

    # -- jobs ------------------------------------------------------------------------------------

    async def pending_jobs(self) -> list[Job]:
        cursor = await self._reader.execute(
            "SELECT id, incident_id, kind, attempts FROM jobs WHERE done_at IS NULL ORDER BY id"
        )
        return [Job(int(i), str(inc), kind, int(a)) for i, inc, kind, a in await cursor.fetchall()]

    async def finish_job(self, job_id: int, error: str | None = None, give_up: bool = True) -> None:
        """Mark a job done; with an error and ``give_up=False`` it stays pending for a retry."""
        done_at = time.time() if (error is None or give_up) else None
        await self._write(
            "UPDATE jobs SET done_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
            (done_at, error, job_id),
        )

    async def save_report(self, incident_id: str, report: dict[str, Any]) -> None:
        await self._write(
            "UPDATE incidents SET report = ?, updated_at = ? WHERE id = ?",
            (json.dumps(report), time.time(), int(incident_id)),
        )

    async def _write(self, sql: str, params: Iterable[Any]) -> None:
        async with self._write_lock:
            try:
                await self._writer.execute(sql, tuple(params))
                await self._writer.commit()
            except BaseException:
                await self._writer.rollback()
                raise

    # -- reads -----------------------------------------------------------------------------------

    async def get_incident(self, incident_id: str) -> Incident | None:
        if not incident_id.isdigit():
            return None
        cursor = await self._reader.execute(f"{_INCIDENT_SELECT} WHERE id = ?", (int(incident_id),))
        row = await cursor.fetchone()
        if row is None:
            return None
        return _incident_from_row(row, await self._alerts_of(int(incident_id)))

    async def list_incidents(self, status: str | None = None, limit: int = 100) -> list[Incident]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        cursor = await self._reader.execute(
            f"{_INCIDENT_SELECT} {where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [_incident_from_row(row, ()) for row in await cursor.fetchall()]

    async def open_incidents_by_group(self, source: str) -> dict[str, str]:
        cursor = await self._reader.execute(
            "SELECT group_key, id FROM incidents WHERE status = 'firing' AND source = ?", (source,)
        )
        return {str(g): str(i) for g, i in await cursor.fetchall()}

    async def _alerts_of(self, incident_id: int) -> tuple[Alert, ...]:
        cursor = await self._reader.execute(
            "SELECT body FROM incident_alerts WHERE incident_id = ? ORDER BY fingerprint", (incident_id,)
        )
        return tuple(Alert.from_dict(json.loads(b)) for (b,) in await cursor.fetchall())

    async def counts(self) -> dict[str, int]:
        cursor = await self._reader.execute(
            "SELECT (SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL),"
            " (SELECT COUNT(*) FROM jobs WHERE done_at IS NULL),"
            " (SELECT COUNT(*) FROM incidents WHERE status = 'firing'),"
            " (SELECT COUNT(*) FROM incidents),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'pending')"
        )
        row = await cursor.fetchone()
        inbox, jobs, open_, total, outbox = row if row is not None else (0, 0, 0, 0, 0)
        return {
            "inbox_pending": inbox,
            "jobs_pending": jobs,
            "incidents_open": open_,
            "incidents_total": total,
            "outbox_pending": outbox,
        }


_INCIDENT_SELECT = (
    "SELECT id, group_key, source, status, title, labels, started_at, resolved_at, report, similar "
    "FROM incidents"
)


def incident_title(alert: Alert) -> str:
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    return f"{alert.name}: {summary}" if summary else alert.name


def _incident_from_row(row: Sequence[Any], alerts: tuple[Alert, ...]) -> Incident:
    id_, group_key, source, status, title, labels, started, resolved, report, similar = row
    return Incident(
        id=str(id_),
        group_key=group_key,
        source=source,
        status=status,
        title=title,
        labels=json.loads(labels),
        started_at=started,
        resolved_at=resolved,
        alerts=alerts,
        report=None if report is None else json.loads(report),
        similar_incidents=tuple(json.loads(similar)),
    )


def _inbox_rows(alerts: Sequence[AcceptedAlert], now: float) -> Iterable[tuple[str, str, str, float]]:
    for accepted in alerts:
        yield accepted.dedup_key, accepted.group_key, json.dumps(accepted.to_dict()), now


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, timeout=5.0)
    # WAL + synchronous=NORMAL: a commit survives a process crash (SIGKILL, OOM); only an OS
    # crash/power loss can drop the last transactions, which Alertmanager would then resend.
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = await (await conn.execute("SELECT MAX(version) FROM schema_version")).fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the store was written by a newer version (schema {current} > {SCHEMA_VERSION}); "
            "upgrade agentic-obs or point storage.path elsewhere"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        # One script, one transaction: a crash mid-migration leaves the previous version intact.
        record = f"INSERT INTO schema_version (version) VALUES ({version});"
        await conn.executescript(f"BEGIN;\n{_MIGRATIONS[version]}\n{record}\nCOMMIT;")
