"""Durable state in one SQLite file (WAL): the inbox of accepted alerts, incidents, jobs and the outbox.

Flow: the webhook commits alerts to ``inbox`` (that commit is what a 202 promises); the ingest loop
turns unprocessed inbox rows into incident changes and ``jobs`` in one transaction; workers run the
pipeline for each job and complete it together with its report. Every step is resumable after a
crash: nothing is marked done before the step that consumes it has committed.

Writes run on one dedicated thread that owns the write connection, one whole transaction per
hand-off (writes.py); concurrent webhook commits are batched into one transaction ("group
commit"). Reads use aiosqlite on a second connection (WAL readers never block the writer).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from agentic_observability.errors import StoreError, StoreUnavailableError
from agentic_observability.models import (
    AcceptedAlert,
    Action,
    AuditEntry,
    Change,
    Incident,
    Member,
    OutboxItem,
)
from agentic_observability.store.base import AcceptResult, Job
from agentic_observability.store.rows import (
    CHANGE_COLUMNS,
    FIRING_MEMBER,
    INCIDENT_ID,
    INCIDENT_SELECT,
    MAX_CHANGES_READ,
    MEMBER_COLUMNS,
    alerts_from_json,
    attribute,
    change_from_row,
    inbox_rows,
    incident_from_row,
    members_from_rows,
    with_members,
)
from agentic_observability.store.sqlite import leases, writes
from agentic_observability.store.sqlite.schema import DB_FILENAME, PRAGMAS, connect, migrate

T = TypeVar("T")
INSTALL_ID_LENGTH = 12  # 48 random bits: no two installations meet by chance


class _Writer:
    """The one thread that owns the write connection; ``run(fn)`` executes ``fn(conn)`` there."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn, *args)
        except sqlite3.Error as exc:  # a full disk, a locked or corrupt file: callers retry on StoreError
            raise StoreError(f"{fn.__name__} failed: {exc}") from exc

    def close(self) -> None:
        self._executor.submit(self._conn.close).result()
        self._executor.shutdown(wait=True)


class SqliteStore:
    """The store on one SQLite file. Create with ``await SqliteStore.open(directory)``."""

    def __init__(self, writer: _Writer, reader: aiosqlite.Connection, path: Path) -> None:
        self._writer = writer
        self._reader = reader
        self.path = path
        self._pending: list[tuple[list[AcceptedAlert], asyncio.Future[AcceptResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._mutexes: dict[str, asyncio.Lock] = {}

    @property
    def shared(self) -> bool:
        """One process per file: nobody else competes for its claims."""
        return False

    @classmethod
    async def open(cls, directory: str | Path, *, take_over: bool = False) -> SqliteStore:
        """Open (creating and migrating) the store under ``directory``. ``take_over``: the service
        starting on the file frees every claim and named lease an earlier process left
        (``leases.release_all``); other openers (``agentic-obs replay``) leave a running service's
        claims alone."""
        folder = Path(directory)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            path = folder / DB_FILENAME
            conn = await loop.run_in_executor(executor, connect, path)
            await loop.run_in_executor(executor, migrate, conn)
            if take_over:
                await loop.run_in_executor(executor, leases.release_all, conn)
            reader = await aiosqlite.connect(path, timeout=5.0)
            for pragma in PRAGMAS:
                await reader.execute(pragma)
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open the store at {folder}: {exc}") from exc
        return cls(_Writer(conn, executor), reader, path)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._reader.close()
        await asyncio.to_thread(self._writer.close)

    async def ping(self) -> None:
        try:
            await self._reader.execute_fetchall("SELECT 1")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store not readable: {exc}") from exc

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def install_id(self) -> str:
        """Made on first use and committed before it is returned; the same for the life of the file."""
        return await self._writer.run(writes.install_id, uuid.uuid4().hex[:INSTALL_ID_LENGTH])

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
            requests = [alerts for alerts, _ in batch]
            now = time.time()
            rows = [row for alerts in requests for row in inbox_rows(alerts, now)]
            try:
                inserted = await self._writer.run(writes.insert_inbox, rows)
            except (StoreError, OSError) as exc:
                error = StoreUnavailableError(f"could not commit alerts: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for alerts, future in batch:
                if not future.done():
                    future.set_result(attribute(alerts, inserted))

    # -- ingest and jobs -------------------------------------------------------------------------

    async def ingest_pending(
        self, limit: int = 1000, *, owner: str | None = None, lease: float | None = None
    ) -> tuple[list[Job], bool]:
        """Apply unprocessed inbox rows to incidents in one transaction; returns the jobs it created
        (claimed by ``owner`` for ``lease`` seconds when given) and whether more rows may be waiting
        (the batch was full)."""
        now = time.time()
        claim = None if owner is None else (owner, now + (lease or 0.0))
        try:
            planned, consumed = await self._writer.run(writes.ingest, limit, now, claim)
        except sqlite3.Error as exc:
            raise StoreError(f"ingest failed: {exc}") from exc
        return [Job(j.id, str(j.incident_id), j.kind, 0, j.source) for j in planned], consumed >= limit

    async def pending_jobs(self) -> list[Job]:
        rows = await self._reader.execute_fetchall(
            "SELECT j.id, j.incident_id, j.kind, j.attempts, i.source FROM jobs j "
            "JOIN incidents i ON i.id = j.incident_id WHERE j.done_at IS NULL ORDER BY j.id"
        )
        return [Job(int(i), str(inc), kind, int(a), src) for i, inc, kind, a, src in rows]

    async def finish_job(self, job_id: int, error: str | None = None, give_up: bool = True) -> None:
        """Mark a job done; with an error and ``give_up=False`` it stays pending for a retry."""
        done_at = time.time() if (error is None or give_up) else None
        await self._writer.run(writes.finish_job, job_id, done_at, error)

    async def complete_job(
        self,
        job_id: int,
        incident_id: str,
        report: dict[str, Any],
        actions: Sequence[Action] = (),
        joins: str | None = None,
        joined: dict[str, Any] | None = None,
        other_reports: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Save the report, queue its actions and mark its job done, in one transaction. With
        ``joins``: the incident joins that root as the same fault (``joined``: why);
        ``other_reports``: new reports of other incidents (a fault's root re-analysed)."""
        similar = json.dumps(report.get("similar_incidents", []))
        parent = None if joins is None else (int(joins), json.dumps(joined or {}))
        reports = [(int(i), json.dumps(r)) for i, r in (other_reports or {}).items()]
        await self._writer.run(
            writes.complete_job,
            job_id,
            int(incident_id),
            json.dumps(report),
            similar,
            list(actions),
            time.time(),
            reports,
            parent,
        )

    async def regroup(
        self, incident_id: str, parent_id: str | None, why: dict[str, Any], actions: Sequence[Action] = ()
    ) -> None:
        """Join an incident to a root by hand (a merge), or make a member a root again (a split)."""
        parent = None if parent_id is None else int(parent_id)
        await self._writer.run(
            writes.regroup, int(incident_id), parent, json.dumps(why), list(actions), time.time()
        )

    async def queue_job(
        self, incident_id: str, kind: str, actions: Sequence[Action] = ()
    ) -> tuple[Job, bool] | None:
        """Queue ``kind`` for an open incident, and ``actions`` with it; an unfinished job of it is
        returned instead of a second one (and the actions dropped). The job, and whether it is new;
        None when there is no such open incident."""
        if not str(incident_id).isdigit():
            return None
        queued = await self._writer.run(writes.queue_job, int(incident_id), kind, list(actions), time.time())
        if queued is None:
            return None
        job_id, job_kind, new = queued
        incident = await self.get_incident(str(incident_id))
        source = incident.source if incident is not None else ""
        return Job(job_id, str(incident_id), job_kind, 0, source), new

    async def save_feedback(
        self, incident_id: str, feedback: dict[str, Any], actions: Sequence[Action] = ()
    ) -> None:
        await self._writer.run(
            writes.save_feedback, int(incident_id), json.dumps(feedback), list(actions), time.time()
        )

    # -- claims and leases (base.Store: one process per file, so no one else ever competes) ---------

    async def claim_jobs(self, owner: str, lease: float, limit: int = 100) -> list[Job]:
        clock = time.time()
        rows = await self._writer.run(leases.claim_jobs, owner, clock + lease, limit, clock)
        return [
            Job(int(i), str(inc), kind, int(att), src, None if prev in (None, owner) else str(prev))
            for i, inc, kind, att, src, prev in rows
        ]

    async def renew_leases(self, owner: str, lease: float) -> int:
        return await self._writer.run(leases.renew_leases, owner, time.time() + lease)

    async def confirm_claim(
        self, kind: Literal["job", "action"], row_id: int, owner: str, lease: float
    ) -> bool:
        clock = time.time()
        return await self._writer.run(leases.confirm_claim, kind, row_id, owner, clock + lease, clock)

    async def release_leases(self, owner: str, *, named_only: bool = False) -> int:
        return await self._writer.run(leases.release_leases, owner, named_only)

    async def hold_leases(self, owner: str, names: Sequence[str], lease: float) -> set[str]:
        clock = time.time()
        return await self._writer.run(leases.hold_leases, owner, list(names), clock + lease, clock)

    async def forget_leases(self, prefix: str, ended: float) -> int:
        return await self._writer.run(leases.forget_leases, prefix, time.time() - ended)

    async def lease_owners(self) -> dict[str, tuple[str, float]]:
        rows = await self._reader.execute_fetchall(
            "SELECT name, owner, until FROM leases WHERE until >= ? ORDER BY name", (time.time(),)
        )
        return {str(name): (str(owner), float(until)) for name, owner, until in rows}

    @asynccontextmanager
    async def mutex(self, name: str) -> AsyncIterator[None]:
        """One process per file: an asyncio lock per name is the whole critical section."""
        async with self._mutexes.setdefault(name, asyncio.Lock()):
            yield

    # -- outbox ----------------------------------------------------------------------------------

    async def action_refs(self, sink: str, incident_ids: Sequence[str]) -> dict[str, str]:
        """What ``sink`` gave each of these incidents (the Slack parent's ``<channel>|<ts>``, the
        Grafana annotation id, ...), by incident id; incidents it gave nothing yet are absent."""
        rows = await self._reader.execute_fetchall(
            "SELECT incident_id, external_id FROM action_refs "
            "WHERE sink = ? AND incident_id IN (SELECT value FROM json_each(?))",
            (sink, json.dumps([int(i) for i in incident_ids if str(i).isdigit()])),
        )
        return {str(incident): str(ref) for incident, ref in rows}

    async def due_actions(
        self,
        now: float,
        limit: int = 200,
        exclude: Sequence[int] = (),
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> list[OutboxItem]:
        """Pending actions that may go now: per incident and sink only the oldest one, so a Slack reply
        never overtakes the parent message it threads under. A new incident's first actions (the page,
        the parent message, the annotation) go before follow-ups of older ones: under a rate limit,
        the on-call hears of the new incident first. ``exclude``: ids already being delivered. With
        ``owner``: only rows nobody else holds, claimed for ``lease`` seconds."""
        if owner is not None:
            clock = time.time()
            claim = (owner, clock + (lease or 0.0))
            found = await self._writer.run(leases.claim_actions, now, limit, list(exclude), claim, clock)
            return [_outbox_item(row) for row in found]
        rows = await self._reader.execute_fetchall(
            "SELECT o.id, o.incident_id, o.sink, o.action, o.payload, o.attempts, o.created_at, "
            "r.external_id FROM outbox o LEFT JOIN action_refs r "
            "ON r.incident_id = o.incident_id AND r.sink = o.sink "
            "WHERE o.id IN (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY incident_id, sink) "
            "AND o.next_attempt_at <= ? AND o.id NOT IN (SELECT value FROM json_each(?)) "
            "ORDER BY o.action NOT IN ('open', 'trigger'), o.id LIMIT ?",
            (now, json.dumps(list(exclude)), limit),
        )
        return [_outbox_item(row) for row in rows]

    async def action_delivered(self, item: OutboxItem, ref: str | None) -> None:
        await self._writer.run(
            writes.action_delivered, item.id, int(item.incident_id), item.sink, ref, time.time()
        )

    async def action_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> None:
        await self._writer.run(writes.action_failed, item.id, error, retry_at)

    async def outbox_rows(self, incident_id: str | None = None) -> list[dict[str, Any]]:
        """The outbox as plain rows (for the API, tests and benchmarks)."""
        where, params = ("WHERE incident_id = ?", (int(incident_id),)) if incident_id else ("", ())
        rows = await self._reader.execute_fetchall(
            "SELECT id, incident_id, sink, action, state, attempts, last_error, delivered_at "
            f"FROM outbox {where} ORDER BY id",
            params,
        )
        keys = ("id", "incident_id", "sink", "action", "state", "attempts", "last_error", "delivered_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- remediation's audit log ------------------------------------------------------------------

    async def record_audit(
        self, incident_id: str, entries: Sequence[AuditEntry], actions: Sequence[Action] = ()
    ) -> None:
        """Keep ``entries`` and queue ``actions`` in one transaction."""
        await self._write_audit(
            writes.record_audit, int(incident_id), list(entries), list(actions), time.time()
        )

    async def queue_remediation(
        self, incident_id: str, action: str, entries: Sequence[AuditEntry], actions: Sequence[Action]
    ) -> bool:
        """Queue an approved run of catalogue entry ``action`` with its audit entries and notes, unless a
        run of it for this incident is pending or ran already. Whether it was queued."""
        return bool(
            await self._write_audit(
                writes.queue_remediation, int(incident_id), action, list(entries), list(actions), time.time()
            )
        )

    async def _write_audit(self, write: Callable[..., T], *args: Any) -> T:
        try:
            return await self._writer.run(write, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"remediation audit not recorded: {exc}") from exc

    async def audit_log(self, incident_id: str | None = None, key: str | None = None) -> list[AuditEntry]:
        """An incident's audit entries (or one run's, by ``key``), oldest first."""
        where, params = (
            ("key = ?", (key,)) if key is not None else ("incident_id = ?", (int(incident_id or 0),))
        )
        rows = await self._reader.execute_fetchall(
            f"SELECT event, action, key, at, by, target, detail FROM audit WHERE {where} ORDER BY id", params
        )
        return [AuditEntry(e, a, k, float(at), by, t, json.loads(d)) for e, a, k, at, by, t, d in rows]

    async def remediation_runs(self, since: float) -> list[tuple[str, str, float]]:
        """(action, target, when) of every remediation that ran since ``since``, or failed once its real
        call was made (a timed-out write may have happened): what guardrails count."""
        rows = await self._reader.execute_fetchall(
            "SELECT action, COALESCE(target, ''), at FROM audit WHERE event IN ('ran', 'failed') "
            "AND at >= ? AND (event = 'ran' OR json_extract(detail, '$.attempted')) ORDER BY at",
            (since,),
        )
        return [(str(a), str(t), float(at)) for a, t, at in rows]

    # -- change events -----------------------------------------------------------------------------

    async def record_changes(self, changes: Sequence[Change]) -> int:
        """Store change events in one transaction; one already stored (same dedup key: a re-poll, a
        retried delivery) is left as it is. How many were new."""
        if not changes:
            return 0
        return await self._writer.run(writes.record_changes, list(changes), time.time())

    async def changes_between(
        self, start: float, end: float, entities: Sequence[str] | None = None
    ) -> list[Change]:
        """Change events that happened in ``[start, end]``, oldest first; only those of ``entities``
        when given (an empty list: none). At most ``MAX_CHANGES_READ``, the newest kept."""
        if entities is not None and not entities:
            return []
        where = "" if entities is None else " AND entity IN (SELECT value FROM json_each(?))"
        params: tuple[Any, ...] = (
            (start, end) if entities is None else (start, end, json.dumps(list(entities)))
        )
        rows = await self._reader.execute_fetchall(
            f"SELECT * FROM (SELECT {CHANGE_COLUMNS} FROM changes WHERE at BETWEEN ? AND ?{where} "
            "ORDER BY at DESC, id DESC LIMIT ?) ORDER BY at, id",
            (*params, MAX_CHANGES_READ),
        )
        return [change_from_row(row) for row in rows]

    # -- retention -------------------------------------------------------------------------------

    async def prune(
        self, older_than: float, batch: int, silent_before: float | None = None
    ) -> dict[str, int]:
        """Forget resolved incidents untouched since ``older_than`` (and firing ones no delivery has
        touched since ``silent_before``, when given) that have no work left (with their
        alerts, jobs, action refs and outbox rows), and inbox rows processed before it: at most
        ``batch`` incidents and ``batch`` inbox rows, in one short transaction. Rows deleted per table.

        An inbox row is also the record that a delivery was seen (a retry with its dedup key is
        ignored while the row exists), so a retention shorter than Alertmanager may retry (minutes)
        could let a late retry open a pruned incident again; the service warns about such a setting."""
        try:
            return await self._writer.run(writes.prune, older_than, batch, silent_before)
        except sqlite3.Error as exc:
            raise StoreError(f"prune failed: {exc}") from exc

    # -- reads -----------------------------------------------------------------------------------

    async def get_incident(self, incident_id: str) -> Incident | None:
        """One incident with its alerts; a root also with its members (and the fault's status)."""
        if not INCIDENT_ID.fullmatch(incident_id):  # ids are SQLite integers: at most 18 ASCII digits
            return None
        rows = await self._reader.execute_fetchall(
            f"{INCIDENT_SELECT}, {_ALERTS} FROM incidents i WHERE id = ?", (int(incident_id),)
        )
        for *row, alerts in rows:
            incident = incident_from_row(row, alerts_from_json(alerts))
            return (
                incident if incident.parent_id else with_members(incident, await self._members([incident.id]))
            )
        return None

    async def list_incidents(self, status: str | None = None, limit: int = 100) -> list[Incident]:
        """The newest incidents (roots: a member is listed inside its root), with their members; the
        status filter applies to the whole fault."""
        rows = await self._reader.execute_fetchall(
            f"{INCIDENT_SELECT} FROM incidents i WHERE parent_id IS NULL AND (? IS NULL OR "
            f"(? = 'firing') = (status = 'firing' OR EXISTS ({FIRING_MEMBER}))) ORDER BY id DESC LIMIT ?",
            (status, status, limit),
        )
        roots = [incident_from_row(row, ()) for row in rows]
        members = await self._members([r.id for r in roots])
        return [with_members(r, members) for r in roots]

    async def correlation_candidates(
        self, incident_id: str, earliest: float, latest: float
    ) -> list[Incident]:
        """Open faults (roots with anything still firing) that started in ``[earliest, latest]``, other
        than ``incident_id``, oldest first, with their reports (None while still being analysed)."""
        rows = await self._reader.execute_fetchall(
            f"{INCIDENT_SELECT}, {_ALERTS} FROM incidents i WHERE parent_id IS NULL AND id != ? "
            f"AND started_at BETWEEN ? AND ? AND (status = 'firing' OR EXISTS ({FIRING_MEMBER})) "
            "ORDER BY started_at, id LIMIT 100",
            (int(incident_id), earliest, latest),
        )
        roots = [incident_from_row(row, alerts_from_json(alerts)) for *row, alerts in rows]
        members = await self._members([r.id for r in roots])
        return [with_members(r, members) for r in roots]

    async def _members(self, root_ids: Sequence[str]) -> dict[str, list[Member]]:
        rows = await self._reader.execute_fetchall(
            f"SELECT {MEMBER_COLUMNS}, {_ALERTS} FROM incidents i "
            "WHERE parent_id IN (SELECT value FROM json_each(?)) ORDER BY started_at, id",
            (json.dumps([int(i) for i in root_ids]),),
        )
        return members_from_rows(rows)

    async def open_incidents_by_group(self, source: str) -> dict[str, str]:
        rows = await self._reader.execute_fetchall(
            "SELECT group_key, id FROM incidents WHERE status = 'firing' AND source = ?", (source,)
        )
        return {str(g): str(i) for g, i in rows}

    async def oldest_pending_job_at(self) -> float | None:
        """When the oldest job still waiting was created (readiness: is analysis stuck?)."""
        rows = await self._reader.execute_fetchall("SELECT MIN(created_at) FROM jobs WHERE done_at IS NULL")
        (oldest,) = next(iter(rows))
        return None if oldest is None else float(oldest)

    async def counts(self) -> dict[str, int]:
        rows = await self._reader.execute_fetchall(
            "SELECT (SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL),"
            " (SELECT COUNT(*) FROM jobs WHERE done_at IS NULL),"
            " (SELECT COUNT(*) FROM incidents WHERE status = 'firing'),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'pending')"
        )
        inbox, jobs, open_, outbox = next(iter(rows))
        return {
            "inbox_pending": inbox,
            "jobs_pending": jobs,
            "incidents_open": open_,
            "outbox_pending": outbox,
        }


_ALERTS = (
    "(SELECT json_group_array(json(body)) FROM "
    "(SELECT body FROM incident_alerts WHERE incident_id = i.id ORDER BY fingerprint))"
)


def _outbox_item(row: Sequence[Any]) -> OutboxItem:
    id_, incident, sink, action, payload, attempts, created, ref = row
    return OutboxItem(
        int(id_), str(incident), sink, action, json.loads(payload), int(attempts), float(created), ref
    )
