"""``POST /api/v1/analyze``: ad-hoc analysis of a PromQL expression over a time range."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentic_observability.pipeline.investigate import query_evidence
from agentic_observability.service.keys import ANALYZE_PROMETHEUS, ANALYZE_SLOTS, CONFIG
from agentic_observability.service.responses import error_response, invalid_body
from agentic_observability.service.routes.webhook import read_body

routes = web.RouteTableDef()

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
        body = AnalyzeRequest.model_validate_json(await read_body(request))  # 408 if it stalls
    except ValidationError as exc:
        return invalid_body(exc, "analyze request")
    end = body.end if body.end is not None else time.time()
    start = body.start if body.start is not None else end - 3600
    slots = request.app[ANALYZE_SLOTS]
    if slots.locked():  # refused at once, not queued: a waiting request would hold its connection
        return _busy(request)
    async with slots:  # its own client and breaker: ad-hoc queries never trip the incident path's
        evidence = await query_evidence(request.app[ANALYZE_PROMETHEUS], body.query, max(start, 0.0), end)
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
    limit = request.app[CONFIG].file.server.analyze_concurrency
    response = error_response(
        429,
        "too many analyze requests",
        f"{limit} ad-hoc queries are already running (server.analyze_concurrency)",
    )
    response.headers["Retry-After"] = "1"
    return response
