"""Recall stage: what memory should keep of an incident, and the similar past incidents for a new one.

Remembering itself is an outbox action (act.py): it is retried until memory takes it, so an incident
that resolves while memory is down is remembered when memory returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentic_observability.errors import UpstreamError
from agentic_observability.models import Incident, PastIncident
from agentic_observability.pipeline.ports import PipelineDeps


def _first_label(incident: Incident, name: str) -> str:
    if incident.labels.get(name):
        return incident.labels[name]
    return next((a.labels[name] for a in incident.alerts if a.labels.get(name)), "")


def past_incident(
    incident: Incident,
    hypotheses: Sequence[Mapping[str, Any]],
    entity_label: str,
    summary: str = "",
    feedback: Mapping[str, Any] | None = None,
) -> PastIncident:
    """The memory record (or recall query) for an incident; feedback overrides the suspected cause."""
    top = hypotheses[0] if hypotheses else None
    service = _first_label(incident, entity_label)
    cause = str(top["entity"]) if top else service
    signals = tuple(f"{top['entity']}:{e['signal']}" for e in top["evidence"][:3]) if top else ()
    confirmed, resolution = False, ""
    if feedback:
        resolution = str(feedback.get("resolution") or "")
        if feedback.get("root_cause"):
            cause, confirmed = str(feedback["root_cause"]), True
        elif feedback.get("correct") is True:
            confirmed = True
        elif feedback.get("correct") is False:
            cause = ""  # the suspected cause was wrong and nobody said what was right
    return PastIncident(
        incident_id=incident.id,
        title=incident.title,
        alertname=_first_label(incident, "alertname"),
        service=service,
        labels=dict(incident.labels),
        started_at=incident.started_at,
        resolved_at=incident.resolved_at,
        cause=cause,
        signals=signals,
        summary=summary[:500],
        resolution=resolution,
        confirmed=confirmed,
    )


async def similar_incidents(
    incident: Incident, hypotheses: Sequence[Mapping[str, Any]], deps: PipelineDeps
) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    """The most similar past incidents as report dicts, and a note when memory could not be asked."""
    if deps.memory is None:
        return (), None
    query = past_incident(incident, hypotheses, deps.investigation.entity_label)
    try:
        found = await deps.memory.recall(query, deps.recall_limit)
    except UpstreamError as exc:
        return (), f"Incident memory could not be searched: {exc}"
    return tuple(s.to_dict() for s in found), None
