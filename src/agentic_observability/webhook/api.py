"""The incident API and ad-hoc analysis."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentic_observability.pipeline.investigate import query_evidence
from agentic_observability.webhook.keys import PROMETHEUS, STORE
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


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=10_000)
    start: float | None = None
    end: float | None = None

    @model_validator(mode="after")
    def _window(self) -> AnalyzeRequest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@routes.post("/api/v1/analyze")
async def analyze(request: web.Request) -> web.Response:
    """Query a PromQL expression over a window (default: the last hour) and summarise each series."""
    try:
        body = AnalyzeRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]) or "(body)", e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{field}: {msg}" for field, msg in problems)
        return error_response(400, "invalid analyze request", detail, problems[0][0])
    end = body.end if body.end is not None else time.time()
    start = body.start if body.start is not None else end - 3600
    evidence = await query_evidence(request.app[PROMETHEUS], body.query, start, end)
    status = {"": 200, "query": 400}.get(evidence.error_kind, 502)
    return web.json_response({"evidence": evidence.to_dict()}, status=status)
