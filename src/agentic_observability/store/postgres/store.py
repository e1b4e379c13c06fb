"""Durable state in PostgreSQL, shared by every replica: the same protocol and semantics as the SQLite
store (see base.Store and sqlite/store.py), over a psycopg connection pool.

Every write is one transaction (writes.py, leases.py), retried whole after a deadlock or a
serialization failure; every statement runs under ``statement_timeout``; every database error leaves
as a StoreError (StoreUnavailableError for the webhook's commit, so it answers 503). The password is
handed to libpq as a parameter, never put in a string this module shows, and scrubbed from errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from agentic_observability.config import PostgresConfig
from agentic_observability.errors import StoreError, StoreUnavailableError
from agentic_observability.models import AcceptedAlert, Action, AuditEntry, Change, OutboxItem
from agentic_observability.store.base import AcceptResult, Job
from agentic_observability.store.postgres import leases, writes
from agentic_observability.store.postgres.reads import DUE_ACTIONS, Reads, outbox_item
from agentic_observability.store.postgres.schema import migrate
from agentic_observability.store.rows import INCIDENT_ID, attribute, inbox_rows

T = TypeVar("T")
log = logging.getLogger(__name__)
INSTALL_ID_LENGTH = 12
RETRIES = 3  # a deadlock or serialization failure rolls the transaction back: run it again
DEFERRED_PAUSE = 0.05  # ingest found only rows waiting behind another replica's: pause before "more"
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)


def connect_kwargs(config: PostgresConfig, password: str | None) -> dict[str, Any]:
    """libpq parameters beside ``url``: the password (never in the URL), timeouts, autocommit."""
    kwargs: dict[str, Any] = {
        "autocommit": True,  # a transaction is always explicit (conn.transaction())
        "connect_timeout": max(2, round(config.connect_timeout)),  # libpq's minimum is 2 s
        "application_name": "agentic-obs",
    }
    if password:
        kwargs["password"] = password
    return kwargs


class PostgresStore(Reads):
    """The store on a PostgreSQL database. Create with ``await PostgresStore.open(config, password)``."""

    def __init__(
        self, pool: AsyncConnectionPool, where: str, password: str | None, timeout_ms: int = 10_000
    ) -> None:
        self._pool = pool
        self._where = where
        self._password = password
        self._timeout_ms = timeout_ms  # statement_timeout, as every pooled connection has it
        self._mutexes: dict[str, asyncio.Lock] = {}

    @property
    def shared(self) -> bool:
        """Several replicas may share the database: claims are contended."""
        return True

    @classmethod
    async def open(cls, config: PostgresConfig, password: str | None = None) -> PostgresStore:
        """Connect, migrate the schema (one replica at a time) and open the pool."""
        conninfo, kwargs = config.url or "", connect_kwargs(config, password)
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, **kwargs) as conn:
                await migrate(conn)
                info = conn.info
                where = f"postgres:{info.host}:{info.port}/{info.dbname}"
        except psycopg.Error as exc:
            shown = _scrub(str(exc), password)
            raise StoreError(f"cannot open the store at storage.postgres.url {conninfo!r}: {shown}") from None
        timeout_ms = max(1, round(config.statement_timeout * 1000))

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(f"SET statement_timeout = {timeout_ms}")
            await conn.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms * 3}")

        pool = AsyncConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=config.pool_min,
            max_size=config.pool_max,
            open=False,
            configure=configure,
            check=AsyncConnectionPool.check_connection,
            timeout=config.connect_timeout + config.statement_timeout,
            name="agentic-obs-store",
        )
        try:
            await pool.open(wait=True, timeout=config.connect_timeout + 1)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(
                f"cannot open a connection pool to {where}: {_scrub(str(exc), password)}"
            ) from None
        return cls(pool, where, password, timeout_ms)

    async def close(self) -> None:
        await self._pool.close()

    def describe(self) -> str:
        return self._where

    async def ping(self) -> None:
        try:
            await self._fetch("SELECT 1")
        except StoreError as exc:
            raise StoreUnavailableError(f"store not readable: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------------------------

    def _failed(self, what: str, exc: BaseException) -> str:
        return f"{what} failed ({self._where}): {_scrub(str(exc), self._password)}"

    async def _fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise StoreError(self._failed("read", exc)) from None

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(conn, *args)`` in one transaction; after a deadlock or serialization failure (rolled
        back whole) it runs again, up to RETRIES times."""
        for attempt in range(1, RETRIES + 1):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await fn(conn, *args)
            except _RETRYABLE as exc:
                if attempt == RETRIES:
                    raise StoreError(self._failed(fn.__name__, exc)) from None
                await asyncio.sleep(0.01 * attempt)
            except psycopg.Error as exc:
                raise StoreError(self._failed(fn.__name__, exc)) from None
        raise AssertionError("unreachable")

    async def install_id(self) -> str:
        return await self._write(writes.install_id, uuid.uuid4().hex[:INSTALL_ID_LENGTH])

    # -- inbox, ingest and jobs ----------------------------------------------------------------------

    async def accept(self, alerts: Sequence[AcceptedAlert]) -> AcceptResult:
        """Durably store alerts; returns once committed. A retry on any replica stores nothing new."""
        rows = list(inbox_rows(alerts, time.time()))
        try:
            inserted = await self._write(writes.insert_inbox, rows)
        except StoreError as exc:
            raise StoreUnavailableError(f"could not commit alerts: {exc}") from exc
        return attribute(alerts, inserted)

    async def ingest_pending(
        self, limit: int = 1000, *, owner: str | None = None, lease: float | None = None
    ) -> tuple[list[Job], bool]:
        """Apply unprocessed inbox rows to incidents in one transaction (safe on several replicas at
        once); the jobs created (claimed by ``owner`` for ``lease`` seconds when given) and whether
        more rows may be waiting (a full batch, or rows left for another replica to finish first).
        When every row found had to wait, it pauses DEFERRED_PAUSE first: a caller looping while
        ``more`` then retries a few times a second instead of spinning on the group locks."""
        claim = None if owner is None else (owner, await self._server_clock() + (lease or 0.0))
        planned, claimed, deferred = await self._write(writes.ingest, limit, time.time(), claim)
        jobs = [Job(j.id, str(j.incident_id), j.kind, 0, j.source) for j in planned]
        if deferred and deferred == claimed:
            await asyncio.sleep(DEFERRED_PAUSE)
        return jobs, claimed >= limit or deferred > 0

    async def _server_clock(self) -> float:
        ((now,),) = await self._fetch(writes.CLOCK)
        return float(now)

    async def pending_jobs(self) -> list[Job]:
        rows = await self.pending_jobs_rows()
        return [Job(int(i), str(inc), kind, int(a), src) for i, inc, kind, a, src in rows]

    async def finish_job(self, job_id: int, error: str | None = None, give_up: bool = True) -> None:
        """Mark a job done; with an error and ``give_up=False`` it stays pending for a retry."""
        done_at = time.time() if (error is None or give_up) else None
        await self._write(writes.finish_job, job_id, done_at, error)

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
        """Save the report, queue its actions and mark its job done, in one transaction."""
        similar = json.dumps(report.get("similar_incidents", []))
        parent = None if joins is None else (int(joins), json.dumps(joined or {}))
        reports = [(int(i), json.dumps(r)) for i, r in (other_reports or {}).items()]
        await self._write(
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
        parent = None if parent_id is None else int(parent_id)
        await self._write(
            writes.regroup, int(incident_id), parent, json.dumps(why), list(actions), time.time()
        )

    async def queue_job(
        self, incident_id: str, kind: str, actions: Sequence[Action] = ()
    ) -> tuple[Job, bool] | None:
        if not INCIDENT_ID.fullmatch(str(incident_id)):
            return None
        queued = await self._write(writes.queue_job, int(incident_id), kind, list(actions), time.time())
        if queued is None:
            return None
        job_id, job_kind, new = queued
        incident = await self.get_incident(str(incident_id))
        source = incident.source if incident is not None else ""
        return Job(job_id, str(incident_id), job_kind, 0, source), new

    async def save_feedback(
        self, incident_id: str, feedback: dict[str, Any], actions: Sequence[Action] = ()
    ) -> None:
        await self._write(
            writes.save_feedback, int(incident_id), json.dumps(feedback), list(actions), time.time()
        )

    # -- claims and leases ----------------------------------------------------------------------------

    async def claim_jobs(self, owner: str, lease: float, limit: int = 100) -> list[Job]:
        rows = await self._write(leases.claim_jobs, owner, lease, limit)
        return [
            Job(int(i), str(inc), kind, int(att), src, None if prev in (None, owner) else str(prev))
            for i, inc, kind, att, src, prev in rows
        ]

    async def renew_leases(self, owner: str, lease: float) -> int:
        return await self._write(leases.renew_leases, owner, lease)

    async def confirm_claim(
        self, kind: Literal["job", "action"], row_id: int, owner: str, lease: float
    ) -> bool:
        return await self._write(leases.confirm_claim, kind, row_id, owner, lease)

    async def release_leases(self, owner: str, *, named_only: bool = False) -> int:
        return await self._write(leases.release_leases, owner, named_only)

    async def hold_leases(self, owner: str, names: Sequence[str], lease: float) -> set[str]:
        return await self._write(leases.hold_leases, owner, list(names), lease)

    async def forget_leases(self, prefix: str, ended: float) -> int:
        return await self._write(leases.forget_leases, prefix, ended)

    @asynccontextmanager
    async def mutex(self, name: str) -> AsyncIterator[None]:
        """A session advisory lock on a connection of its own, held for the block.

        This replica's tasks queue for the name on an asyncio lock first, so each replica waits with
        at most one connection (waiters never drain the pool the holder needs for its own writes).
        The wait for the advisory lock runs with no statement timeout (a holder may keep it longer);
        the timeout is set back before the block runs. If any of it fails or is cancelled midway,
        the connection is closed (which releases the lock on the server) rather than returned to
        the pool still holding it, or without its timeout."""
        key = "hashtextextended(%s, 0)"
        async with self._mutexes.setdefault(name, asyncio.Lock()):
            try:
                conn = await self._pool.getconn()
            except psycopg.Error as exc:
                raise StoreError(self._failed(f"mutex {name!r}", exc)) from None
            try:
                await _on_or_close(conn, "SET statement_timeout = 0", (), name, self._failed)
                await _on_or_close(conn, f"SELECT pg_advisory_lock({key})", (name,), name, self._failed)
                restore = f"SET statement_timeout = {self._timeout_ms}"
                await _on_or_close(conn, restore, (), name, self._failed)
                try:
                    yield
                finally:
                    await _on_or_close(conn, f"SELECT pg_advisory_unlock({key})", (name,), name, self._failed)
            finally:
                await self._pool.putconn(conn)

    # -- outbox ------------------------------------------------------------------------------------

    async def due_actions(
        self,
        now: float,
        limit: int = 200,
        exclude: Sequence[int] = (),
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> list[OutboxItem]:
        """Pending actions that may go now (see base.Store); with ``owner``, claimed for ``lease``
        seconds, skipping rows another replica holds."""
        if owner is not None:
            rows = await self._write(leases.claim_actions, now, limit, list(exclude), owner, lease or 0.0)
        else:
            rows = await self._fetch(DUE_ACTIONS, (now, list(exclude), limit))
        return [outbox_item(row) for row in rows]

    async def action_delivered(self, item: OutboxItem, ref: str | None) -> None:
        await self._write(
            writes.action_delivered, item.id, int(item.incident_id), item.sink, ref, time.time()
        )

    async def action_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> None:
        await self._write(writes.action_failed, item.id, error, retry_at)

    # -- remediation's audit log, change events, retention -------------------------------------------

    async def record_audit(
        self, incident_id: str, entries: Sequence[AuditEntry], actions: Sequence[Action] = ()
    ) -> None:
        await self._write(writes.record_audit, int(incident_id), list(entries), list(actions), time.time())

    async def queue_remediation(
        self, incident_id: str, action: str, entries: Sequence[AuditEntry], actions: Sequence[Action]
    ) -> bool:
        return bool(
            await self._write(
                writes.queue_remediation, int(incident_id), action, list(entries), list(actions), time.time()
            )
        )

    async def record_changes(self, changes: Sequence[Change]) -> int:
        if not changes:
            return 0
        return await self._write(writes.record_changes, list(changes), time.time())

    async def prune(
        self, older_than: float, batch: int, silent_before: float | None = None
    ) -> dict[str, int]:
        """As the SQLite store's prune; rows another replica is working on are left for a later round."""
        return await self._write(writes.prune, older_than, batch, silent_before)


async def _on_or_close(
    conn: psycopg.AsyncConnection[Any],
    sql: str,
    params: Sequence[Any],
    name: str,
    failed: Callable[[str, BaseException], str],
) -> None:
    try:
        await conn.execute(sql, params)
    except BaseException as exc:
        await conn.close()
        if isinstance(exc, psycopg.Error):
            raise StoreError(failed(f"mutex {name!r}", exc)) from None
        raise


def _scrub(text: str, password: str | None) -> str:
    """Error text as it may be shown: never with the password (libpq does not echo it, but be sure)."""
    return text.replace(password, "***") if password else text
