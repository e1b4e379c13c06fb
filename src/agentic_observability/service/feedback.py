"""Feedback on an incident, from wherever a person gives it: the HTTP API, a Slack button or modal,
an MCP client. One code path: kept with the incident and, as outbox actions in the same commit,
re-remembered in memory (later recalls show the confirmed cause and the fix), shown on the incident's
Slack parent and said in its thread. Whatever fails after the commit, each goes exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from agentic_observability.models import Incident
from agentic_observability.outbox.plan import plan_feedback, remember_action
from agentic_observability.service.keys import CONFIG, DISPATCHER, MEMORY, STORE, WORKERS


async def submit_feedback(
    app: web.Application, incident_id: str, given: Mapping[str, Any]
) -> tuple[Incident, dict[str, Any], bool] | None:
    """Merge ``given`` (any of root_cause, resolution, correct, and who gave it: ``by``) into the
    incident's feedback. None when there is no such incident; else the incident as it was, the merged
    feedback, and whether memory will re-remember it."""
    store = app[STORE]
    incident = await store.get_incident(incident_id)
    if incident is None:
        return None
    merged = {**(incident.feedback or {}), **given, "at": time.time()}
    updated = replace(incident, feedback=merged)
    # one key per feedback: a key from the clock alone let two in one millisecond collide
    key = f"{int(merged['at'] * 1000)}:{uuid.uuid4().hex[:12]}"
    root = await store.get_incident(incident.parent_id) if incident.parent_id else None
    actions = plan_feedback(updated, given, key, app[WORKERS].act_settings, root)
    remembered = app[MEMORY] is not None
    if remembered:
        entity_label = app[CONFIG].file.investigation.entity_label
        actions.append(
            remember_action(updated, incident.report or {}, entity_label, f"remember:feedback:{key}")
        )
    await store.save_feedback(incident.id, merged, actions)
    app[DISPATCHER].wake()
    return incident, merged, remembered
