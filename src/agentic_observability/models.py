"""Domain objects shared by every layer. Frozen dataclasses; JSON conversion lives beside them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

AlertStatus = Literal["firing", "resolved"]
IncidentStatus = Literal["firing", "resolved"]


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable fingerprint of a label set, for alerts that arrive without Alertmanager's own."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def iso_time(ts: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC string (what people and Grafana read)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager (or a watch) reported it. Times are unix seconds."""

    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str
    fingerprint: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "unnamed")

    def to_dict(self) -> dict[str, Any]:
        # Written out rather than dataclasses.asdict: this runs for every accepted alert.
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "generator_url": self.generator_url,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            status=data["status"],
            labels=dict(data["labels"]),
            annotations=dict(data["annotations"]),
            starts_at=float(data["starts_at"]),
            ends_at=None if data.get("ends_at") is None else float(data["ends_at"]),
            generator_url=data.get("generator_url", ""),
            fingerprint=data["fingerprint"],
        )


@dataclass(frozen=True)
class AcceptedAlert:
    """An alert with the group it arrived in: the unit the inbox stores durably."""

    group_key: str
    source: Literal["alertmanager", "watch"]
    alert: Alert
    group_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""

    @cached_property
    def dedup_key(self) -> str:
        """Same key for a retried or repeated delivery of the same alert state, so it is stored once."""
        a = self.alert
        ends = a.ends_at if a.status == "resolved" else None
        raw = json.dumps([self.group_key, a.fingerprint, a.status, a.starts_at, ends])
        return hashlib.sha256(raw.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_key": self.group_key,
            "source": self.source,
            "alert": self.alert.to_dict(),
            "group_labels": dict(self.group_labels),
            "external_url": self.external_url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcceptedAlert:
        return cls(
            group_key=data["group_key"],
            source=data["source"],
            alert=Alert.from_dict(data["alert"]),
            group_labels=dict(data.get("group_labels", {})),
            external_url=data.get("external_url", ""),
        )


@dataclass(frozen=True)
class SeriesSummary:
    """What one returned series looked like over the evidence window."""

    labels: Mapping[str, str]
    points: int
    first: float
    last: float
    minimum: float
    maximum: float
    mean: float
    peak_at: float


@dataclass(frozen=True)
class Evidence:
    """The result of one PromQL query run to support (or refute) a claim."""

    query: str
    start: float
    end: float
    step: float
    series: tuple[SeriesSummary, ...] = ()
    explore_url: str = ""
    error: str = ""
    error_kind: str = ""  # "" | "query" (the PromQL is invalid) | "unavailable" (try again later)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["series"] = [dict(asdict(s), labels=dict(s.labels)) for s in self.series]
        return data


@dataclass(frozen=True)
class Report:
    """What the pipeline concluded about an incident."""

    summary: str
    status: IncidentStatus
    facts: Mapping[str, Any]
    evidence: tuple[Evidence, ...]
    hypotheses: tuple[Mapping[str, Any], ...]
    reasoner: str
    reasoner_note: str
    generated_at: float
    similar_incidents: tuple[Mapping[str, Any], ...] = ()
    next_steps: tuple[str, ...] = ()
    model: Mapping[str, Any] | None = None  # the model's name, latency, tokens and dropped claims
    # The series to draw (pipeline/chart.py): kept in the report so the PNG can be drawn any time
    # later without Prometheus. Reports written before charts existed have none.
    chart: Mapping[str, Any] | None = None
    # Remediation the catalogue proposes for it (remediation/catalogue.py): what a person may approve.
    remediation: tuple[Mapping[str, Any], ...] = ()
    # What changed around the onset on the ranked entities and their callees (``Change.to_dict``,
    # with ``before_onset`` seconds and how the entity relates to the cause).
    changes: tuple[Mapping[str, Any], ...] = ()
    # What Loki's logs say (pipeline/logs.py ``LogEvidence.as_dict``): error lines per entity before
    # and after the onset, and the new log templates after it; None when log evidence is off.
    logs: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "status": self.status,
            "facts": dict(self.facts),
            "evidence": [e.to_dict() for e in self.evidence],
            "hypotheses": [dict(h) for h in self.hypotheses],
            "similar_incidents": [dict(s) for s in self.similar_incidents],
            "next_steps": list(self.next_steps),
            "reasoner": self.reasoner,
            "reasoner_note": self.reasoner_note,
            "model": None if self.model is None else dict(self.model),
            "generated_at": self.generated_at,
            "chart": None if self.chart is None else dict(self.chart),
            "remediation": [dict(r) for r in self.remediation],
            "changes": [dict(c) for c in self.changes],
            "logs": None if self.logs is None else dict(self.logs),
        }


ChangeSourceName = Literal["ksm", "webhook", "pagerduty", "grafana"]
ChangeKind = Literal["rollout", "image", "config", "replicaset", "deploy", "other"]
CHANGE_KINDS: tuple[str, ...] = ("rollout", "image", "config", "replicaset", "deploy", "other")


@dataclass(frozen=True)
class Change:
    """Something that changed in the system (issue 18): a rollout, a new image, a config edit, a deploy
    a CI system announced. ``entity`` is the investigation entity it belongs to (a service name);
    ``dedup_key`` is the same for a re-poll or a retried delivery of the same change, so it is stored
    once. Times are unix seconds."""

    source: ChangeSourceName
    at: float
    entity: str
    kind: ChangeKind
    summary: str  # one line: "image v1.4.2 → v1.4.3"
    dedup_key: str
    namespace: str | None = None
    workload: str | None = None
    old: str | None = None
    new: str | None = None
    link: str | None = None
    received_at: float | None = None
    id: int | None = None  # the store's, once stored

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "at": iso_time(self.at),
            "at_unix": self.at,
            "entity": self.entity,
            "namespace": self.namespace,
            "workload": self.workload,
            "kind": self.kind,
            "summary": self.summary,
            "old": self.old,
            "new": self.new,
            "link": self.link,
        }


@dataclass(frozen=True)
class Member:
    """An alert group or watch episode that joined another incident as the same fault (issue 16):
    its own status and timing, and why it joined (``joined``: reason, by ``correlation`` or ``hand``)."""

    id: str
    title: str
    source: str
    group_key: str
    status: IncidentStatus
    started_at: float
    resolved_at: float | None
    joined: Mapping[str, Any]
    alerts: tuple[Alert, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "group_key": self.group_key,
            "status": self.status,
            "started_at": iso_time(self.started_at),
            "resolved_at": iso_time(self.resolved_at),
            "alertnames": sorted({a.name for a in self.alerts}),
            "joined": dict(self.joined),
        }


@dataclass(frozen=True)
class Incident:
    """An alert group (or a watch episode) while it fires, and after it resolves.

    A fault that fires several groups is one incident: the first group is its root, the others its
    ``members`` (each also an incident row, with ``parent_id`` set). Read as a root, ``status`` and
    ``resolved_at`` are the whole fault's: firing while any member fires."""

    id: str
    group_key: str
    source: str
    status: IncidentStatus
    title: str
    labels: Mapping[str, str]
    started_at: float
    resolved_at: float | None
    alerts: tuple[Alert, ...] = ()
    report: Mapping[str, Any] | None = None
    similar_incidents: tuple[Mapping[str, Any], ...] = ()
    feedback: Mapping[str, Any] | None = None
    parent_id: str | None = None
    correlation: Mapping[str, Any] | None = None  # why it joined (or left) another incident
    members: tuple[Member, ...] = ()

    def as_member(self, joined: Mapping[str, Any]) -> Member:
        """This incident as a member of another (``joined``: why it joined)."""
        return Member(
            self.id,
            self.title,
            self.source,
            self.group_key,
            self.status,
            self.started_at,
            self.resolved_at,
            joined,
            self.alerts,
        )

    @property
    def every_alert(self) -> tuple[Alert, ...]:
        """Its own alerts and every member's: what the fault fired."""
        return self.alerts + tuple(a for m in self.members for a in m.alerts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "title": self.title,
            "labels": dict(self.labels),
            "source": self.source,
            "group_key": self.group_key,
            "started_at": iso_time(self.started_at),
            "resolved_at": iso_time(self.resolved_at),
            "alerts": [a.to_dict() for a in self.alerts],
            "report": None if self.report is None else dict(self.report),
            "similar_incidents": [dict(s) for s in self.similar_incidents],
            "feedback": None if self.feedback is None else dict(self.feedback),
            "parent_id": self.parent_id,
            "correlation": None if self.correlation is None else dict(self.correlation),
            "members": [m.to_dict() for m in self.members],
        }


@dataclass(frozen=True)
class Series:
    """One time series returned by a range query: labels plus aligned timestamps and values."""

    labels: Mapping[str, str]
    timestamps: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Sample:
    """One instant-vector element."""

    labels: Mapping[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True)
class PastIncident:
    """What incident memory keeps of one incident, and what a recall query describes.

    ``cause`` is the confirmed root cause when feedback gave one, else the top hypothesis; ``signals``
    are the strongest signals behind it (``service:signal``), the evidence signature.
    """

    incident_id: str
    title: str
    alertname: str
    service: str
    labels: Mapping[str, str]
    started_at: float
    resolved_at: float | None = None
    cause: str = ""
    signals: tuple[str, ...] = ()
    summary: str = ""
    resolution: str = ""
    confirmed: bool = False  # feedback confirmed (or corrected) the cause
    alertnames: tuple[str, ...] = ()  # every alert a fault fired, in the order they started

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = dict(self.labels)
        data["signals"] = list(self.signals)
        data["alertnames"] = list(self.alertnames)
        return data

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> PastIncident:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["labels"] = dict(values.get("labels", {}))
        values["signals"] = tuple(values.get("signals", ()))
        values["alertnames"] = tuple(values.get("alertnames", ()))
        return cls(**values)


@dataclass(frozen=True)
class SimilarIncident:
    """One recalled past incident, as reports and the API show it."""

    id: str
    score: float
    root_cause: str
    resolution: str
    confirmed: bool
    title: str
    started_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(self.score, 4),
            "root_cause": self.root_cause,
            "resolution": self.resolution,
            "confirmed": self.confirmed,
            "title": self.title,
            "started_at": iso_time(self.started_at),
        }


@dataclass(frozen=True)
class ModelReply:
    """One chat completion: the text and what it cost."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass(frozen=True)
class Action:
    """One thing to tell one sink, planned by the act stage and kept in the outbox until delivered.

    ``dedup_key`` is the same for a replanned action (a retried job), so it is stored once.
    """

    incident_id: str
    sink: str
    action: str
    payload: Mapping[str, Any]
    not_before: float = 0.0  # unix time before which it is not delivered (a follow-up check's due time)

    @property
    def dedup_key(self) -> str:
        return f"{self.incident_id}:{self.sink}:{self.action}"


@dataclass(frozen=True)
class AuditEntry:
    """One step of a remediation, kept with its incident (``GET /api/v1/incidents/{id}``): proposed
    actions live in the report; this is what people and the service did about them. ``event``:
    approved, refused, dry-run, ran, failed, recovered, not-recovered. ``key``: one approved run's
    idempotency key, which every step of that run shares."""

    event: str
    action: str
    key: str
    at: float
    by: str | None = None
    target: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "action": self.action,
            "key": self.key,
            "at": iso_time(self.at),
            "by": self.by,
            "target": self.target,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class OutboxItem:
    """An action as the outbox holds it, with what the sink already gave this incident (``ref``)."""

    id: int
    incident_id: str
    sink: str
    action: str
    payload: Mapping[str, Any]
    attempts: int
    created_at: float
    ref: str | None = None
