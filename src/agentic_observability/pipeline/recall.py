"""Recall stage: the similar past incidents for a new one (what memory keeps is ``memory/records.py``).

Remembering itself is an outbox action (``outbox/plan.py``): it is retried until memory takes it,
so an incident that resolves while memory is down is remembered when memory returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentic_observability.errors import UpstreamError
from agentic_observability.memory.records import past_incident
from agentic_observability.models import Incident
from agentic_observability.pipeline.ports import PipelineDeps


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
