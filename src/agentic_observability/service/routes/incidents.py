"""The incident API: list, get, its chart as a PNG, and feedback on what really caused an incident."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentic_observability.errors import ChartUnavailableError
from agentic_observability.outbox.chart import render_png_async
from agentic_observability.service.feedback import submit_feedback
from agentic_observability.service.keys import STORE
from agentic_observability.service.responses import error_response, invalid_body
from agentic_observability.service.routes.webhook import read_body

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
    return web.json_response({"incidents": [_listed(i.to_dict()) for i in incidents]})


def _listed(incident: dict[str, Any]) -> dict[str, Any]:
    """An incident as the list shows it: its report without the chart's points (15-30 KB each; 500
    incidents would make a 10 MB answer). ``GET /api/v1/incidents/{id}`` and ``…/chart.png`` have them."""
    report = incident.get("report")
    if isinstance(report, dict) and report.get("chart"):
        incident["report"] = {**report, "chart": {"url": f"/api/v1/incidents/{incident['id']}/chart.png"}}
    return incident


@routes.get("/api/v1/incidents/{incident_id}")
async def get_incident(request: web.Request) -> web.Response:
    incident_id = request.match_info["incident_id"]
    incident = await request.app[STORE].get_incident(incident_id)
    if incident is None:
        return error_response(404, "not found", f"no incident with id {incident_id!r}", "incident_id")
    body = incident.to_dict()
    audit = await request.app[STORE].audit_log(incident.id)
    if audit:  # remediation: who approved what, its dry run, its result, the recovery (oldest first)
        body["remediation"] = [entry.to_dict() for entry in audit]
    return web.json_response(body)


@routes.get("/api/v1/incidents/{incident_id}/chart.png")
async def incident_chart(request: web.Request) -> web.StreamResponse:
    """The report's chart, drawn on request (a fraction of a second, off the event loop): reports keep
    the data, not the picture. 404 without one (an old report, or nothing could be charted)."""
    incident_id = request.match_info["incident_id"]
    incident = await request.app[STORE].get_incident(incident_id)
    if incident is None:
        return error_response(404, "not found", f"no incident with id {incident_id!r}", "incident_id")
    chart = (incident.report or {}).get("chart")
    if not chart:
        return error_response(404, "not found", f"incident {incident_id!r} has no chart", "incident_id")
    try:
        png = await render_png_async(chart)
    except ChartUnavailableError as exc:
        return error_response(503, "chart unavailable", str(exc))
    # The report (and so its chart) changes when the incident resolves: a short private cache only.
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "private, max-age=60"})


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root_cause: str | None = Field(None, min_length=1, max_length=200)
    resolution: str | None = Field(None, min_length=1, max_length=2000)
    correct: bool | None = None
    by: str | None = Field(None, min_length=1, max_length=200)  # who says so: shown in Slack

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.by is not None and self.by.lower().startswith("slack:"):
            # Slack's own presses record "slack:<user id>", which Slack shows as a mention
            raise ValueError("by: 'slack:' is reserved for feedback given in Slack")
        if self.root_cause is None and self.resolution is None and self.correct is None:
            raise ValueError("give at least one of root_cause, resolution, correct")
        return self


@routes.post("/api/v1/incidents/{incident_id}/feedback")
async def feedback(request: web.Request) -> web.Response:
    """What really caused an incident and what fixed it: kept with the incident and in memory, so
    later recall shows the confirmed cause and the fix."""
    incident_id = request.match_info["incident_id"]
    try:
        body = FeedbackRequest.model_validate_json(await read_body(request))  # 408 if it stalls
    except ValidationError as exc:
        return invalid_body(exc, "feedback")
    done = await submit_feedback(request.app, incident_id, body.model_dump(exclude_none=True))
    if done is None:
        return error_response(404, "not found", f"no incident with id {incident_id!r}", "incident_id")
    incident, merged, remembered = done
    return web.json_response({"id": incident.id, "feedback": merged, "remembered": remembered})
