"""How accepted alerts become incidents: pure rules, no I/O (the store applies the plan in one transaction).

* An alert group (Alertmanager's ``groupKey``, or one watch series) is one incident while it fires.
* A firing alert for a group with no open incident opens one (and an ``analyze`` job).
* An incident resolves when every alert it has seen is resolved (and gets a ``resolve`` job);
  ``resolved_at`` is the latest ``endsAt`` among them.
* A resolved alert for a group with no open incident changes nothing: it is a late or duplicate
  resolve for an episode that already ended (or that we never saw firing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentic_observability.models import AcceptedAlert, Alert


def incident_title(alert: Alert) -> str:
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    return f"{alert.name}: {summary}" if summary else alert.name


@dataclass(frozen=True)
class NewIncident:
    id: int
    group_key: str
    source: str
    title: str
    labels: Mapping[str, str]
    started_at: float


@dataclass(frozen=True)
class PlannedJob:
    id: int
    incident_id: int
    kind: str
    source: str


@dataclass
class IngestPlan:
    new_incidents: list[NewIncident] = field(default_factory=list)
    resolved: list[tuple[int, float]] = field(default_factory=list)  # (incident id, resolved_at)
    alert_rows: list[tuple[int, str, str, float | None, str]] = field(default_factory=list)
    jobs: list[PlannedJob] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)  # inbox ids consumed


@dataclass
class _Open:
    """What the planner knows about an open incident: each alert's latest status and end."""

    id: int
    alerts: dict[str, tuple[str, float | None]]


class IngestPlanner:
    """Walks inbox rows in arrival order, tracking open incidents, and records what to write."""

    def __init__(self, open_incidents: Mapping[str, _Open], next_incident_id: int, next_job_id: int) -> None:
        self._open = dict(open_incidents)
        self._next_incident = next_incident_id
        self._next_job = next_job_id
        self.plan = IngestPlan()

    @staticmethod
    def open_state(incident_id: int, alerts: Iterable[tuple[str, str, float | None]]) -> _Open:
        return _Open(incident_id, {fp: (status, ends) for fp, status, ends in alerts})

    def add(self, inbox_id: int, accepted: AcceptedAlert, now: float) -> None:
        self.plan.processed.append(inbox_id)
        alert = accepted.alert
        current = self._open.get(accepted.group_key)
        if current is None:
            if alert.status == "firing":
                self._open_incident(accepted)
            return
        self._record_alert(current.id, alert)
        current.alerts[alert.fingerprint] = (alert.status, alert.ends_at)
        if alert.status == "resolved" and all(s == "resolved" for s, _ in current.alerts.values()):
            resolved_at = max((e for _, e in current.alerts.values() if e is not None), default=now)
            self.plan.resolved.append((current.id, resolved_at))
            self._job(current.id, "resolve", accepted.source)
            del self._open[accepted.group_key]

    def _open_incident(self, accepted: AcceptedAlert) -> None:
        alert = accepted.alert
        incident_id, self._next_incident = self._next_incident, self._next_incident + 1
        self.plan.new_incidents.append(
            NewIncident(
                id=incident_id,
                group_key=accepted.group_key,
                source=accepted.source,
                title=incident_title(alert),
                labels=dict(accepted.group_labels) or dict(alert.labels),
                started_at=alert.starts_at,
            )
        )
        self._open[accepted.group_key] = _Open(
            incident_id, {alert.fingerprint: (alert.status, alert.ends_at)}
        )
        self._record_alert(incident_id, alert)
        self._job(incident_id, "analyze", accepted.source)

    def _record_alert(self, incident_id: int, alert: Alert) -> None:
        body = json.dumps(alert.to_dict())
        self.plan.alert_rows.append((incident_id, alert.fingerprint, alert.status, alert.ends_at, body))

    def _job(self, incident_id: int, kind: str, source: str) -> None:
        job_id, self._next_job = self._next_job, self._next_job + 1
        self.plan.jobs.append(PlannedJob(job_id, incident_id, kind, source))
