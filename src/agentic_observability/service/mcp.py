"""The MCP server: the service's evidence for any agent, with the official ``mcp`` SDK.

Tools and the ``incident://{id}`` resource work on the running app's own parts (store, Prometheus
clients, memory, config), so they answer what the HTTP API answers and write feedback through the one
feedback path. Ad-hoc queries (``query_evidence``, ``rank_root_cause``) take the same guard as
``POST /api/v1/analyze``: its request limits, its concurrency slots, its own client and breaker.
Every answer is compact JSON bounded to ``mcp_output.OUTPUT_CAP`` characters. Served over
streamable HTTP at ``/mcp`` (``mcp_http.py``) and, through a bridge, over stdio (``mcp_bridge.py``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from aiohttp import web
from mcp import types
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from pydantic import Field, ValidationError

from agentic_observability import __version__
from agentic_observability.errors import UpstreamError
from agentic_observability.memory.records import past_incident
from agentic_observability.models import Incident, iso_time
from agentic_observability.pipeline.investigate import root_cause_hypotheses, with_explore_links
from agentic_observability.readable import unix_time
from agentic_observability.service import mcp_output as out
from agentic_observability.service.feedback import submit_feedback
from agentic_observability.service.keys import ANALYZE_PROMETHEUS, CONFIG, MEMORY, STORE
from agentic_observability.service.routes.analyze import (
    LATEST_TIME,
    AnalyzeRequest,
    analyze_query,
    analyze_slot,
    busy_detail,
    change_source,
)
from agentic_observability.service.routes.incidents import FeedbackRequest

MAX_LIST = 50
LISTED_RESOURCES = 20
REPORT_URI = "incident://{incident_id}"
INSTRUCTIONS = (
    "Incidents from Alertmanager and PromQL watches, each analysed into ranked root-cause hypotheses "
    "with the PromQL behind every figure. Start with list_incidents, then get_incident; "
    f"every answer is compact JSON of at most {out.OUTPUT_CAP} characters."
)
_READ_ONLY = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITES = types.ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)

IncidentId = Annotated[
    str, Field(min_length=1, max_length=64, description="an incident id, as list_incidents shows")
]
Moment = Annotated[
    float | str | None,
    Field(description="unix seconds, or RFC 3339 such as 2026-05-01T12:00:00Z"),
]


class Tools:
    """The tools, bound to one running app. Each docstring is what the agent reads."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def entity_label(self) -> str:
        return self.app[CONFIG].file.investigation.entity_label

    async def list_incidents(
        self,
        status: Literal["firing", "resolved"] | None = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIST)] = 20,
    ) -> str:
        """Incidents, newest first: id, status, title, service, start and the top suspected (or confirmed)
        cause. Filter by status. At most 4000 characters: fewer rows when they would not fit."""
        store = self.app[STORE]
        found = await store.list_incidents(status=status, limit=limit)
        rows = []
        for incident in found:  # a listed incident has no alerts; its service may be only on them
            if not incident.labels.get(self.entity_label):
                incident = await store.get_incident(incident.id) or incident
            rows.append(out.incident_row(incident, self.entity_label))
        return out.bounded({"incidents": rows, "count": len(rows)})

    async def get_incident(self, incident_id: IncidentId) -> str:
        """One incident's report: summary, ranked root-cause hypotheses (each evidence with its signal,
        baseline, incident value, unit and PromQL), the alert expressions' evidence, similar past
        incidents, next steps and feedback. At most 4000 characters."""
        incident = await self._incident(incident_id)
        return out.bounded(out.incident_view(incident, self.entity_label))

    async def rank_root_cause(self, at: Moment = None) -> str:
        """Rank the entities (investigation.entity_label, e.g. services) most likely to have caused a
        problem that began at ``at`` (default: now), from the configured investigation.signals over the
        baseline before it. Each entity comes with its score and strongest evidence, with PromQL. Uses
        the ad-hoc query slots (server.analyze_concurrency). At most 4000 characters."""
        given = _moment(at, "at")
        moment = time.time() if given is None else given
        if moment > time.time() + 60:
            raise ToolError(f"at: {iso_time(moment)} is in the future")
        settings = self.app[CONFIG].file.investigation
        if not settings.signals:
            raise ToolError("nothing to rank: investigation.signals is empty in the service's config")
        probe = Incident("mcp", "", "mcp", "firing", "", {}, moment, None)
        source = with_explore_links(self.app[ANALYZE_PROMETHEUS], self.app[CONFIG].file.actions.grafana.url)
        slot = analyze_slot(self.app)
        if slot is None:
            raise ToolError(f"busy: {busy_detail(self.app)}; retry in a second")
        async with slot:
            hypotheses, problems = await root_cause_hypotheses(
                probe, source, settings, time.time(), changes=change_source(self.app)
            )
        answer = {
            "at": iso_time(moment),
            "window": [
                iso_time(moment - settings.baseline),
                iso_time(min(moment + settings.after, time.time())),
            ],
            "entity_label": settings.entity_label,
            "ranking": [out.hypothesis_view(h) for h in hypotheses],
            "problems": problems,
        }
        return out.bounded(answer)

    async def query_evidence(
        self,
        query: Annotated[str, Field(min_length=1, max_length=10_000, description="a PromQL expression")],
        start: Moment = None,
        end: Moment = None,
    ) -> str:
        """Run a PromQL range query (default window: the hour before ``end``, itself default now; at most
        31 days) and summarise each series that moved most: min, max, last and when it peaked. A
        threshold rule (``x > 0.5``) is queried on its value side. Same limits as /api/v1/analyze.
        At most 4000 characters."""
        try:
            body = AnalyzeRequest(query=query, start=_moment(start, "start"), end=_moment(end, "end"))
        except ValidationError as exc:
            raise ToolError(_problems(exc)) from exc
        evidence = await analyze_query(self.app, body)
        if evidence is None:
            raise ToolError(f"busy: {busy_detail(self.app)}; retry in a second")
        if evidence.error_kind == "query":
            raise ToolError(f"invalid PromQL: {evidence.error}")
        if evidence.error_kind:
            raise ToolError(f"Prometheus unavailable: {evidence.error}")
        view = out.alert_evidence_view(evidence.to_dict())
        return out.bounded({**view, "step_seconds": out.number(evidence.step)})

    async def similar_incidents(
        self, incident_id: IncidentId, limit: Annotated[int, Field(ge=1, le=10)] = 3
    ) -> str:
        """Past incidents most like this one, from incident memory: score, root cause (confirmed by
        feedback or suspected), the fix when someone gave it. Says so when memory is off. At most 4000
        characters."""
        incident = await self._incident(incident_id)
        memory = self.app[MEMORY]
        if memory is None:
            note = "incident memory is off in this service (memory.enabled: false): nothing can be recalled"
            return out.bounded({"incident_id": incident.id, "memory": "off", "similar": [], "note": note})
        hypotheses = (incident.report or {}).get("hypotheses") or []
        query = past_incident(incident, hypotheses, self.entity_label, feedback=incident.feedback)
        try:
            found = await memory.recall(query, limit)
        except UpstreamError as exc:
            raise ToolError(f"incident memory could not be searched: {exc}") from exc
        similar = [out.similar_view(s.to_dict()) for s in found]
        return out.bounded({"incident_id": incident.id, "memory": "on", "similar": similar})

    async def submit_feedback(
        self,
        incident_id: IncidentId,
        root_cause: Annotated[str | None, Field(description="what really caused it, e.g. a service")] = None,
        resolution: Annotated[str | None, Field(description="what fixed it")] = None,
        correct: Annotated[bool | None, Field(description="whether the top hypothesis was right")] = None,
    ) -> str:
        """Record what really caused an incident and what fixed it (give at least one of root_cause,
        resolution, correct). Kept with the incident and re-remembered in incident memory, so later
        recalls show the confirmed cause and the fix."""
        try:
            body = FeedbackRequest(root_cause=root_cause, resolution=resolution, correct=correct)
        except ValidationError as exc:
            raise ToolError(_problems(exc)) from exc
        done = await submit_feedback(
            self.app, incident_id, {**body.model_dump(exclude_none=True), "by": "mcp"}
        )
        if done is None:
            raise ToolError(f"no incident with id {incident_id!r}")
        incident, merged, remembered = done
        return out.bounded(
            {"id": incident.id, "feedback": out.feedback_view(merged), "remembered": remembered}
        )

    async def incident_report(self, incident_id: str) -> str:
        """An incident's report as Markdown, every figure with its PromQL (at most 4000 characters)."""
        incident = await self.app[STORE].get_incident(incident_id)
        if incident is None:
            raise ResourceNotFoundError(f"no incident with id {incident_id!r}")
        text = out.report_text(incident, self.entity_label)
        return out.bounded_text(text, where=f"GET /api/v1/incidents/{incident.id}")

    async def _incident(self, incident_id: str) -> Incident:
        incident = await self.app[STORE].get_incident(incident_id)
        if incident is None:
            raise ToolError(f"no incident with id {incident_id!r}")
        return incident


class IncidentServer(MCPServer[Any]):
    """The MCP server over one app: six tools, and the incident reports as resources, the newest
    listed (clients that show only listed resources find them) and any one by its URI."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(
            "agentic-observability", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
        )
        self.tools = tools = Tools(app)
        for tool in (
            tools.list_incidents,
            tools.get_incident,
            tools.rank_root_cause,
            tools.query_evidence,
            tools.similar_incidents,
        ):
            self.add_tool(tool, annotations=_READ_ONLY, structured_output=False)
        self.add_tool(tools.submit_feedback, annotations=_WRITES, structured_output=False)
        self.resource(REPORT_URI, name="incident report", mime_type="text/markdown")(tools.incident_report)

    async def list_resources(self) -> list[types.Resource]:
        newest = await self.tools.app[STORE].list_incidents(limit=LISTED_RESOURCES)
        listed = [
            types.Resource(
                uri=REPORT_URI.format(incident_id=i.id),
                name=f"incident {i.id}",
                title=i.title[:120],
                description=f"{i.status}, started {iso_time(i.started_at)}",
                mime_type="text/markdown",
            )
            for i in newest
        ]
        return [*await super().list_resources(), *listed]


def _moment(value: float | str | None, name: str) -> float | None:
    """Unix seconds from unix seconds (a number or its text) or RFC 3339; a clear error otherwise."""
    if value is None or value == "":
        return None
    moment = unix_time(_number_or_text(value))
    if moment is None:
        raise ToolError(f"{name}: {value!r} is neither unix seconds nor an RFC 3339 time")
    if not 0 <= moment <= LATEST_TIME:
        raise ToolError(f"{name}: {value!r} is out of range (1970 to 2100)")
    return moment


def _number_or_text(value: float | str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
