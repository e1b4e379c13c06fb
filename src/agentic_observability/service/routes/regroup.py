"""Undo a wrong merge, make a missed one: ``POST /api/v1/incidents/{id}/split`` takes an alert group
out of incident ``id`` (it becomes its own incident, with its own Slack thread and page), and
``POST /api/v1/incidents/{id}/merge`` makes another incident (and its members) part of ``id`` (its
page is resolved; the fault's one page is ``id``'s). Both are stored with the incident, so they
survive restarts; a split group is never joined to that incident again by correlation; and a fault
that has already resolved is remembered again with its new members.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentic_observability.models import Action, Incident
from agentic_observability.outbox.plan import (
    plan_actions,
    plan_member_change,
    plan_merged_away,
    remember_action,
)
from agentic_observability.service.keys import CONFIG, DISPATCHER, MEMORY, STORE, WORKERS
from agentic_observability.service.responses import error_response, invalid_body
from agentic_observability.service.routes.webhook import read_body

routes = web.RouteTableDef()


class SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member: str | None = Field(None, min_length=1, max_length=40, description="the member's incident id")
    group_key: str | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one(self) -> SplitRequest:
        if (self.member is None) == (self.group_key is None):
            raise ValueError("give exactly one of member (its incident id) or group_key")
        return self


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident: str = Field(min_length=1, max_length=40, description="the incident to merge into this one")


@routes.post("/api/v1/incidents/{incident_id}/split")
async def split(request: web.Request) -> web.Response:
    try:
        body = SplitRequest.model_validate_json(await read_body(request))
    except ValidationError as exc:
        return invalid_body(exc, "split")
    root = await _root(request)
    if isinstance(root, web.Response):
        return root
    found = [m for m in root.members if body.member in (None, m.id) and body.group_key in (None, m.group_key)]
    if not found:
        wanted = body.member or body.group_key
        return error_response(409, "not a member", f"incident {root.id} has no member {wanted!r}", "member")
    store = request.app[STORE]
    member = await store.get_incident(found[0].id)
    if member is None:
        return error_response(404, "not found", f"no incident with id {found[0].id!r}", "member")
    why = {"by": "hand", "split_from": root.id, "at": time.time(), "reason": "split by hand"}
    alone = replace(member, parent_id=None, correlation=why)
    rest = replace(root, members=tuple(m for m in root.members if m.id != member.id))
    actions = _split_actions(request, rest, alone)
    await store.regroup(member.id, None, why, actions)
    return _done(request, {"id": root.id, "split": member.id})


@routes.post("/api/v1/incidents/{incident_id}/merge")
async def merge(request: web.Request) -> web.Response:
    try:
        body = MergeRequest.model_validate_json(await read_body(request))
    except ValidationError as exc:
        return invalid_body(exc, "merge")
    root = await _root(request)
    if isinstance(root, web.Response):
        return root
    store = request.app[STORE]
    other = await store.get_incident(body.incident)
    if other is None:
        return error_response(404, "not found", f"no incident with id {body.incident!r}", "incident")
    if other.id == root.id or other.parent_id is not None:
        why = "is this incident" if other.id == root.id else f"is already part of incident {other.parent_id}"
        return error_response(409, "cannot merge", f"incident {other.id} {why}", "incident")
    record = {"by": "hand", "root": root.id, "at": time.time(), "reason": "merged by hand"}
    actions = _merge_actions(request, root, other, record)
    await store.regroup(other.id, root.id, record, actions)
    return _done(request, {"id": root.id, "merged": other.id})


async def _root(request: web.Request) -> Incident | web.Response:
    incident_id = request.match_info["incident_id"]
    root = await request.app[STORE].get_incident(incident_id)
    if root is None:
        return error_response(404, "not found", f"no incident with id {incident_id!r}", "incident_id")
    if root.parent_id is not None:
        return error_response(
            409,
            "not a root",
            f"incident {root.id} is part of incident {root.parent_id}; use that",
            "incident_id",
        )
    return root


def _split_actions(request: web.Request, rest: Incident, alone: Incident) -> list[Action]:
    """The root's thread hears of it; the group gets what it would have had as its own incident."""
    settings = request.app[WORKERS].act_settings
    note = f"Split by hand into its own incident {alone.id}."
    actions = plan_member_change(rest, alone, "split", note, settings)
    report = alone.report or {}
    actions += plan_actions(alone, report, "analyze", settings)
    if alone.status == "resolved":
        actions += plan_actions(alone, report, "resolve", settings)
    return actions + _remember_again(request, rest, f"split:{alone.id}")


def _merge_actions(
    request: web.Request, root: Incident, other: Incident, record: dict[str, Any]
) -> list[Action]:
    settings = request.app[WORKERS].act_settings
    members = (*root.members, other.as_member(record), *other.members)
    family = replace(root, members=members)
    note = f"Merged by hand from incident {other.id}."
    actions = plan_member_change(family, other, "member", note, settings)
    actions += plan_merged_away(other, root, settings)
    return actions + _remember_again(request, family, f"merge:{other.id}")


def _remember_again(request: web.Request, root: Incident, why: str) -> list[Action]:
    """A fault already remembered is remembered again with its new members (and without a split one)."""
    if request.app[MEMORY] is None or root.status != "resolved":
        return []
    entity_label = request.app[CONFIG].file.investigation.entity_label
    key = f"remember:{why}:{uuid.uuid4().hex[:12]}"
    return [remember_action(root, root.report or {}, entity_label, key)]


def _done(request: web.Request, body: dict[str, Any]) -> web.Response:
    request.app[DISPATCHER].wake()
    return web.json_response(body)
