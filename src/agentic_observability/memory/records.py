"""What memory keeps of an incident: the record (also the recall query) and its evidence signature."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agentic_observability.memory.embed import NOISY_LABELS
from agentic_observability.models import Incident, PastIncident

# Labels that name a replica or a scrape target (or the metric itself), not what changed.
_SIGNATURE_NOISE = NOISY_LABELS | {"__name__"}


def evidence_signature(
    entity: str, evidence: Sequence[Mapping[str, Any]], entity_label: str
) -> tuple[str, ...]:
    """What changed, as tokens memory can compare: ``entity:signal{other labels}~magnitude`` for the
    strongest signals. The other labels tell a service from its database (``component="carts-db"``);
    the order of magnitude of the deviation tells a leak from a hog when both move the same signals."""
    tokens = []
    for item in evidence[:3]:
        labels = {k: v for k, v in dict(item.get("labels") or {}).items() if k not in _SIGNATURE_NOISE}
        labels.pop(entity_label, None)
        where = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        magnitude = round(math.log10(max(float(item.get("deviation") or 0.0), 1.0)))
        tokens.append(f"{entity}:{item['signal']}{{{where}}}~{magnitude}")
    return tuple(tokens)


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
    signals = evidence_signature(str(top["entity"]), top["evidence"], entity_label) if top else ()
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
        alertnames=tuple(dict.fromkeys(a.name for a in sorted(incident.alerts, key=lambda a: a.starts_at))),
    )
