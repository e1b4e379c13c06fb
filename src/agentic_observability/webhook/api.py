"""The incident API and ad-hoc analysis."""

from __future__ import annotations

import time
from dataclasses import replace

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentic_observability.outbox.plan import remember_action
from agentic_observability.pipeline.investigate import query_evidence
from agentic_observability.webhook.keys import CONFIG, DISPATCHER, MEMORY, PROMETHEUS, STORE
from agentic_observability.webhook.receiver import error_response

routes = web.RouteTableDef()
MAX_LIST = 500


@routes.get("/api/v1/incidents")
async def list_incidents(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status not in (None, "firing", "resolved"):
        return error_response(400, "invalid query parameter", "status must be firing or resolved", "status")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return error_response(400, "invalid query parameter", "limit must be an integer", "limit")
    if not 1 <= limit <= MAX_LIST:
        return error_response(400, "invalid query parameter", f"limit must be 1..{MAX_LIST}", "limit")
    incidents = await request.app[STORE].list_incidents(status=status, limit=limit)
    return web.json_response({"incidents": [i.to_dict() for i in incidents]})


@routes.get("/api/v1/incidents/{incident_id}")
async def get_incident(request: web.Request) -> web.Response:
    incident_id = request.match_info["incident_id"]
    incident = await request.app[STORE].get_incident(incident_id)
    if incident is None:
        return error_response(404, "not found", f"no incident with id {incident_id!r}", "incident_id")
    return web.json_response(incident.to_dict())


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root_cause: str | None = Field(None, min_length=1, max_length=200)
    resolution: str | None = Field(None, min_length=1, max_length=2000)
    correct: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.root_cause is None and self.resolution is None and self.correct is None:
            raise ValueError("give at least one of root_cause, resolution, correct")
        return self


def _invalid(exc: ValidationError, what: str) -> web.Response:
    problems = [(".".join(str(p) for p in e["loc"]) or "(body)", e["msg"]) for e in exc.errors()]
    detail = "; ".join(f"{field}: {msg}" for field, msg in problems)
    return error_response(400, f"invalid {what}", detail, problems[0][0])


@routes.post("/api/v1/incidents/{incident_id}/feedback")
async def feedback(request: web.Request) -> web.Response:
    """What really caused an incident and what fixed it: kept with the incident and in memory, so
    later recall shows the confirmed cause and the fix."""
    incident_id = request.match_info["incident_id"]
    try:
        body = FeedbackRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return _invalid(exc, "feedback")
    store = request.app[STORE]
    incident = await store.get_incident(incident_id)
    if incident is None:
        return error_response(404, "not found", f"no incident with id {incident_id!r}", "incident_id")
    merged = {**(incident.feedback or {}), **body.model_dump(exclude_none=True), "at": time.time()}
    updated = replace(incident, feedback=merged)
    actions = []
    if request.app[MEMORY] is not None:
        entity_label = request.app[CONFIG].file.investigation.entity_label
        key = f"remember:feedback:{int(merged['at'] * 1000)}"
        actions.append(remember_action(updated, incident.report or {}, entity_label, key))
    await store.save_feedback(incident.id, merged, actions)
    request.app[DISPATCHER].wake()
    return web.json_response({"id": incident.id, "feedback": merged, "remembered": bool(actions)})


MAX_ANALYZE_WINDOW = 31 * 86400.0
LATEST_TIME = 4_102_444_800.0  # 2100-01-01: beyond it, dates stop being representable downstream


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=10_000)
    start: float | None = Field(None, ge=0, le=LATEST_TIME)
    end: float | None = Field(None, ge=0, le=LATEST_TIME)

    @model_validator(mode="after")
    def _window(self) -> AnalyzeRequest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        end = self.end if self.end is not None else time.time()
        if self.start is not None and end - self.start > MAX_ANALYZE_WINDOW:
            raise ValueError("the window from start to end is limited to 31 days")
        return self


@routes.post("/api/v1/analyze")
async def analyze(request: web.Request) -> web.Response:
    """Query a PromQL expression over a window (default: the last hour) and summarise each series."""
    try:
        body = AnalyzeRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return _invalid(exc, "analyze request")
    end = body.end if body.end is not None else time.time()
    start = body.start if body.start is not None else end - 3600
    evidence = await query_evidence(request.app[PROMETHEUS], body.query, max(start, 0.0), end)
    if not evidence.error_kind:
        return web.json_response({"evidence": evidence.to_dict()})
    # Errors keep the service's one error shape (error, detail, field), with the evidence alongside.
    invalid = evidence.error_kind == "query"
    error = {
        "error": "invalid PromQL" if invalid else "Prometheus unavailable",
        "detail": evidence.error,
        **({"field": "query"} if invalid else {}),
        "evidence": evidence.to_dict(),
    }
    return web.json_response(error, status=400 if invalid else 502)
