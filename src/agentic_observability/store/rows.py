"""What every backend shares: rows read back as records, and how a batch of accepted alerts is counted.

Pure functions over plain row tuples (no SQL dialect here), so the SQLite and PostgreSQL backends
return identical records for identical rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from agentic_observability.models import AcceptedAlert, Alert, Change, Incident, IncidentStatus, Member
from agentic_observability.store.base import AcceptResult

MAX_CHANGES_READ = 500  # a report shows a handful; a window with more is a busy cluster, newest first
CHANGE_COLUMNS = (
    "id, source, at, entity, namespace, workload, kind, summary, old, new, link, dedup_key, received_at"
)
INCIDENT_ID = re.compile(r"[0-9]{1,18}")  # ids are 64-bit integers: at most 18 ASCII digits
INCIDENT_SELECT = (
    'SELECT id, group_key, source, status, title, labels, started_at, resolved_at, report, "similar", '
    "feedback, parent_id, correlation"
)  # "similar" quoted: a reserved word in PostgreSQL (SQLite reads it as the column too)
FIRING_MEMBER = "SELECT 1 FROM incidents c WHERE c.parent_id = i.id AND c.status = 'firing'"
MEMBER_COLUMNS = "parent_id, id, title, source, group_key, status, started_at, resolved_at, correlation"


def change_from_row(row: Sequence[Any]) -> Change:
    id_, source, at, entity, namespace, workload, kind, summary, old, new, link, key, received = row
    return Change(
        source=source,
        at=float(at),
        entity=entity,
        kind=kind,
        summary=summary,
        dedup_key=key,
        namespace=namespace,
        workload=workload,
        old=old,
        new=new,
        link=link,
        received_at=float(received),
        id=int(id_),
    )


def change_values(change: Change, now: float) -> tuple[Any, ...]:
    """A change event as the insert's values, in the column order of ``CHANGE_COLUMNS`` after ``id``."""
    c = change
    received = now if c.received_at is None else c.received_at
    return (
        *(c.source, c.at, c.entity, c.namespace, c.workload, c.kind, c.summary),
        *(c.old, c.new, c.link, c.dedup_key, received),
    )


def alerts_from_json(text: str) -> tuple[Alert, ...]:
    return tuple(Alert.from_dict(a) for a in json.loads(text))


def with_members(root: Incident, members: dict[str, list[Member]]) -> Incident:
    """A root read as the whole fault: firing while any member fires, resolved when the last one is."""
    mine = tuple(members.get(root.id, ()))
    if not mine:
        return root
    firing = "firing" in (root.status, *(m.status for m in mine))
    status: IncidentStatus = "firing" if firing else "resolved"
    ends = [t for t in (root.resolved_at, *(m.resolved_at for m in mine)) if t is not None]
    resolved_at = max(ends) if not firing and ends else None
    return replace(root, members=mine, status=status, resolved_at=resolved_at)


def members_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, list[Member]]:
    """Rows of ``MEMBER_COLUMNS`` plus the alerts' JSON array, by root id."""
    found: dict[str, list[Member]] = {}
    for parent, id_, title, source, group, status, started, resolved, why, alerts in rows:
        member = Member(
            str(id_),
            title,
            source,
            group,
            status,
            started,
            resolved,
            json.loads(why or "{}"),
            alerts_from_json(alerts),
        )
        found.setdefault(str(parent), []).append(member)
    return found


def incident_from_row(row: Sequence[Any], alerts: tuple[Alert, ...]) -> Incident:
    (
        id_,
        group_key,
        source,
        status,
        title,
        labels,
        started,
        resolved,
        report,
        similar,
        feedback,
        parent,
        why,
    ) = row
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
        feedback=None if feedback is None else json.loads(feedback),
        parent_id=None if parent is None else str(parent),
        correlation=None if why is None else json.loads(why),
    )


def attribute(alerts: Sequence[AcceptedAlert], inserted: set[str]) -> AcceptResult:
    """Count a request's new alerts; an alert sent twice in one batch counts as new only once."""
    new = 0
    for accepted in alerts:
        if accepted.dedup_key in inserted:
            inserted.discard(accepted.dedup_key)
            new += 1
    return AcceptResult(new, len(alerts) - new)


def inbox_rows(alerts: Sequence[AcceptedAlert], now: float) -> Iterable[tuple[str, str, str, float]]:
    for accepted in alerts:
        yield accepted.dedup_key, accepted.group_key, json.dumps(accepted.to_dict()), now
