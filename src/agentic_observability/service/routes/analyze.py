"""``POST /api/v1/analyze``: ad-hoc analysis of a PromQL expression over a time range.

The guard around an ad-hoc query (the request limits, the concurrency slots, the own client and
breaker) lives here once: the MCP tools (``service/mcp.py``) go through the same functions."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentic_observability.models import Evidence
from agentic_observability.pipeline.investigate import query_evidence
from agentic_observability.pipeline.ports import ChangeSource
from agentic_observability.service.keys import ANALYZE_PROMETHEUS, ANALYZE_SLOTS, CONFIG, STORE
from agentic_observability.service.responses import error_response, invalid_body
from agentic_observability.service.routes.webhook import read_body

routes = web.RouteTableDef()

MAX_ANALYZE_WINDOW = 31 * 86400.0
LATEST_TIME = 4_102_444_800.0  # 2100-01-01: beyond it, dates stop being representable downstream
DEFAULT_WINDOW = 3600.0


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

    def window(self) -> tuple[float, float]:
        """Start and end in unix seconds: the end defaults to now, the start to an hour before it."""
        end = self.end if self.end is not None else time.time()
        start = self.start if self.start is not None else end - DEFAULT_WINDOW
        return max(start, 0.0), end


def analyze_slot(app: web.Application) -> asyncio.Semaphore | None:
    """The slot an ad-hoc query holds while it runs, or None when all are taken: refused at once, not
    queued (a waiting request would hold its connection). Take it with ``async with`` and no await in
    between, so nobody takes it first."""
    slots = app[ANALYZE_SLOTS]
    return None if slots.locked() else slots


def change_source(app: web.Application) -> ChangeSource | None:
    """The change events an ad-hoc ranking weighs, as an incident's does (None: change events off)."""
    return app[STORE] if app[CONFIG].file.changes.enabled else None


def busy_detail(app: web.Application) -> str:
    limit = app[CONFIG].file.server.analyze_concurrency
    return f"{limit} ad-hoc queries are already running (server.analyze_concurrency)"


async def analyze_query(app: web.Application, body: AnalyzeRequest) -> Evidence | None:
    """Query and summarise ``body`` in a slot, with the ad-hoc client (its own breaker, so ad-hoc
    queries never trip the incident path's). None when every slot is taken."""
    start, end = body.window()
    slot = analyze_slot(app)
    if slot is None:
        return None
    async with slot:
        return await query_evidence(app[ANALYZE_PROMETHEUS], body.query, start, end)


@routes.post("/api/v1/analyze")
async def analyze(request: web.Request) -> web.Response:
    """Query a PromQL expression over a window (default: the last hour) and summarise each series."""
    try:
        body = AnalyzeRequest.model_validate_json(await read_body(request))  # 408 if it stalls
    except ValidationError as exc:
        return invalid_body(exc, "analyze request")
    evidence = await analyze_query(request.app, body)
    if evidence is None:
        return _busy(request)
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


def _busy(request: web.Request) -> web.Response:
    response = error_response(429, "too many analyze requests", busy_detail(request.app))
    response.headers["Retry-After"] = "1"
    return response
