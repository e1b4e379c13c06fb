"""The PostgreSQL store's reads: the same queries and records as the SQLite backend's, in PostgreSQL's
dialect (arrays instead of json_each, ``string_agg`` instead of json_group_array, byte order for text
sorts so both backends list alerts alike). Each runs on a pooled connection outside any transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentic_observability.models import AuditEntry, Change, Incident, Member, OutboxItem
from agentic_observability.store.rows import (
    CHANGE_COLUMNS,
    FIRING_MEMBER,
    INCIDENT_ID,
    INCIDENT_SELECT,
    MAX_CHANGES_READ,
    MEMBER_COLUMNS,
    alerts_from_json,
    change_from_row,
    incident_from_row,
    members_from_rows,
    with_members,
)

# An incident's alerts as one JSON array, by fingerprint in byte order (COLLATE "C": SQLite's order).
ALERTS = (
    """(SELECT COALESCE('[' || string_agg(body, ',' ORDER BY fingerprint COLLATE "C") || ']', '[]') """
    "FROM incident_alerts WHERE incident_id = i.id)"
)
# What SQLite's json_extract(detail, '$.attempted') counts as true: JSON true or a non-zero number.
_ATTEMPTED = (
    "CASE jsonb_typeof(detail::jsonb -> 'attempted') "
    "WHEN 'boolean' THEN (detail::jsonb -> 'attempted')::boolean "
    "WHEN 'number' THEN (detail::jsonb -> 'attempted')::numeric <> 0 ELSE false END"
)
DUE_ACTIONS = """
SELECT o.id, o.incident_id, o.sink, o.action, o.payload, o.attempts, o.created_at, r.external_id
FROM outbox o LEFT JOIN action_refs r ON r.incident_id = o.incident_id AND r.sink = o.sink
WHERE o.id IN (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY incident_id, sink)
  AND o.next_attempt_at <= %s AND NOT (o.id = ANY(%s::bigint[]))
ORDER BY o.action NOT IN ('open', 'trigger'), o.id LIMIT %s
"""


def outbox_item(row: Sequence[Any]) -> OutboxItem:
    id_, incident, sink, action, payload, attempts, created, ref = row
    return OutboxItem(
        int(id_), str(incident), sink, action, json.loads(payload), int(attempts), float(created), ref
    )


class Reads:
    """Every read of the store; ``PostgresStore`` supplies ``_fetch``."""

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def pending_jobs_rows(self) -> list[tuple[Any, ...]]:
        return await self._fetch(
            "SELECT j.id, j.incident_id, j.kind, j.attempts, i.source FROM jobs j "
            "JOIN incidents i ON i.id = j.incident_id WHERE j.done_at IS NULL ORDER BY j.id"
        )

    async def action_refs(self, sink: str, incident_ids: Sequence[str]) -> dict[str, str]:
        """What ``sink`` gave each of these incidents, by incident id (see the SQLite backend)."""
        rows = await self._fetch(
            "SELECT incident_id, external_id FROM action_refs "
            "WHERE sink = %s AND incident_id = ANY(%s::bigint[])",
            (sink, [int(i) for i in incident_ids if INCIDENT_ID.fullmatch(str(i))]),
        )
        return {str(incident): str(ref) for incident, ref in rows}

    async def outbox_rows(self, incident_id: str | None = None) -> list[dict[str, Any]]:
        """The outbox as plain rows (for the API, tests and benchmarks)."""
        where, params = ("WHERE incident_id = %s", (int(incident_id),)) if incident_id else ("", ())
        rows = await self._fetch(
            "SELECT id, incident_id, sink, action, state, attempts, last_error, delivered_at "
            f"FROM outbox {where} ORDER BY id",
            params,
        )
        keys = ("id", "incident_id", "sink", "action", "state", "attempts", "last_error", "delivered_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def audit_log(self, incident_id: str | None = None, key: str | None = None) -> list[AuditEntry]:
        """An incident's audit entries (or one run's, by ``key``), oldest first."""
        where, params = (
            ("key = %s", (key,)) if key is not None else ("incident_id = %s", (int(incident_id or 0),))
        )
        rows = await self._fetch(
            f'SELECT event, action, key, "at", "by", target, detail FROM audit WHERE {where} ORDER BY id',
            params,
        )
        return [AuditEntry(e, a, k, float(at), by, t, json.loads(d)) for e, a, k, at, by, t, d in rows]

    async def remediation_runs(self, since: float) -> list[tuple[str, str, float]]:
        """(action, target, when) of every remediation that ran since ``since``, or failed once its real
        call was made: what guardrails count."""
        rows = await self._fetch(
            """SELECT action, COALESCE(target, ''), "at" FROM audit WHERE event IN ('ran', 'failed') """
            f"""AND "at" >= %s AND (event = 'ran' OR {_ATTEMPTED}) ORDER BY "at" """,
            (since,),
        )
        return [(str(a), str(t), float(at)) for a, t, at in rows]

    async def changes_between(
        self, start: float, end: float, entities: Sequence[str] | None = None
    ) -> list[Change]:
        """Change events in ``[start, end]`` (of ``entities`` when given), oldest first; at most
        ``MAX_CHANGES_READ``, the newest kept."""
        if entities is not None and not entities:
            return []
        where = "" if entities is None else " AND entity = ANY(%s::text[])"
        params: tuple[Any, ...] = (start, end) if entities is None else (start, end, list(entities))
        rows = await self._fetch(
            f'SELECT * FROM (SELECT {CHANGE_COLUMNS} FROM changes WHERE "at" BETWEEN %s AND %s{where} '
            'ORDER BY "at" DESC, id DESC LIMIT %s) AS newest ORDER BY "at", id',
            (*params, MAX_CHANGES_READ),
        )
        return [change_from_row(row) for row in rows]

    async def get_incident(self, incident_id: str) -> Incident | None:
        """One incident with its alerts; a root also with its members (and the fault's status)."""
        if not INCIDENT_ID.fullmatch(incident_id):
            return None
        rows = await self._fetch(
            f"{INCIDENT_SELECT}, {ALERTS} FROM incidents i WHERE id = %s", (int(incident_id),)
        )
        for *row, alerts in rows:
            incident = incident_from_row(row, alerts_from_json(alerts))
            if incident.parent_id:
                return incident
            return with_members(incident, await self._members([incident.id]))
        return None

    async def list_incidents(self, status: str | None = None, limit: int = 100) -> list[Incident]:
        """The newest incidents (roots, with their members); the status filter applies to the fault."""
        rows = await self._fetch(
            f"{INCIDENT_SELECT} FROM incidents i WHERE parent_id IS NULL AND (%s::text IS NULL OR "
            f"(%s::text = 'firing') = (status = 'firing' OR EXISTS ({FIRING_MEMBER}))) "
            "ORDER BY id DESC LIMIT %s",
            (status, status, limit),
        )
        roots = [incident_from_row(row, ()) for row in rows]
        members = await self._members([r.id for r in roots])
        return [with_members(r, members) for r in roots]

    async def correlation_candidates(
        self, incident_id: str, earliest: float, latest: float
    ) -> list[Incident]:
        """Open faults (roots with anything still firing) that started in ``[earliest, latest]``, other
        than ``incident_id``, oldest first, with their reports."""
        rows = await self._fetch(
            f"{INCIDENT_SELECT}, {ALERTS} FROM incidents i WHERE parent_id IS NULL AND id != %s "
            f"AND started_at BETWEEN %s AND %s AND (status = 'firing' OR EXISTS ({FIRING_MEMBER})) "
            "ORDER BY started_at, id LIMIT 100",
            (int(incident_id), earliest, latest),
        )
        roots = [incident_from_row(row, alerts_from_json(alerts)) for *row, alerts in rows]
        members = await self._members([r.id for r in roots])
        return [with_members(r, members) for r in roots]

    async def _members(self, root_ids: Sequence[str]) -> dict[str, list[Member]]:
        rows = await self._fetch(
            f"SELECT {MEMBER_COLUMNS}, {ALERTS} FROM incidents i WHERE parent_id = ANY(%s::bigint[]) "
            "ORDER BY started_at, id",
            ([int(i) for i in root_ids],),
        )
        return members_from_rows(rows)

    async def open_incidents_by_group(self, source: str) -> dict[str, str]:
        rows = await self._fetch(
            "SELECT group_key, id FROM incidents WHERE status = 'firing' AND source = %s", (source,)
        )
        return {str(g): str(i) for g, i in rows}

    async def oldest_pending_job_at(self) -> float | None:
        """When the oldest job still waiting was created (readiness: is analysis stuck?)."""
        ((oldest,),) = await self._fetch("SELECT MIN(created_at) FROM jobs WHERE done_at IS NULL")
        return None if oldest is None else float(oldest)

    async def counts(self) -> dict[str, int]:
        ((inbox, jobs, open_, outbox),) = await self._fetch(
            "SELECT (SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL),"
            " (SELECT COUNT(*) FROM jobs WHERE done_at IS NULL),"
            " (SELECT COUNT(*) FROM incidents WHERE status = 'firing'),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'pending')"
        )
        return {
            "inbox_pending": int(inbox),
            "jobs_pending": int(jobs),
            "incidents_open": int(open_),
            "outbox_pending": int(outbox),
        }

    async def lease_owners(self) -> dict[str, tuple[str, float]]:
        rows = await self._fetch(
            "SELECT name, owner, until FROM leases WHERE until >= EXTRACT(EPOCH FROM clock_timestamp()) "
            "ORDER BY name"
        )
        return {str(name): (str(owner), float(until)) for name, owner, until in rows}
