"""Liveness, readiness and the service's own metrics."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentic_observability.config import redact_urls
from agentic_observability.errors import AgenticObsError
from agentic_observability.service.keys import (
    ANALYZE_PROMETHEUS,
    CHAT,
    CONFIG,
    LOGS,
    MEMORY,
    METRICS,
    POLLERS,
    PROMETHEUS,
    REPLICA,
    SINKS,
    STORE,
    WORKERS,
)

routes = web.RouteTableDef()


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: the event loop answers and every background loop still runs (a dead loop only a
    restart revives). Never depends on a downstream system."""
    stopped = _stopped_loops(request.app)
    if stopped:
        return web.json_response({"status": "down", "detail": f"stopped: {', '.join(stopped)}"}, status=503)
    return web.json_response({"status": "ok"})


def _stopped_loops(app: web.Application) -> list[str]:
    stopped = [] if WORKERS not in app or app[WORKERS].alive else ["a pipeline worker"]
    stopped += [] if REPLICA not in app or app[REPLICA].alive else ["the lease heartbeat"]
    pollers = app.get(POLLERS, [])
    return stopped + [f"watch {p.watch.name}" for p in pollers if not p.alive]


@routes.get("/api/v1/health/ready")
async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 when alerts cannot be stored or analysed (the store is down, a worker loop
    died, the oldest pending job waited too long, or the lease heartbeat has not renewed for a lease,
    so its work may be another replica's); a Prometheus outage or an open breaker is
    reported as degraded, because the service still accepts (and later analyses) alerts meanwhile."""
    checks: dict[str, dict[str, Any]] = {}
    checks["store"] = await _check(request.app[STORE].ping())
    checks["store"]["database"] = request.app[STORE].describe()  # which one (never its password)
    checks["workers"] = await _workers_check(request.app)
    checks["prometheus"] = await _check(request.app[PROMETHEUS].ping())
    breaker = request.app[PROMETHEUS].guard.state
    checks["prometheus"]["breaker"] = breaker
    checks["prometheus"].update(_prometheus_details(request.app))
    if breaker != "closed" and checks["prometheus"]["status"] == "ok":
        checks["prometheus"]["status"] = "degraded"
    checks["memory"] = await _memory_check(request.app)
    checks["loki"] = await _loki_check(request.app)
    if REPLICA in request.app:  # its heartbeat: a lease without a good beat and its claims may be gone
        checks["replica"] = request.app[REPLICA].health()
    checks.update(_breaker_checks(request.app))
    down = checks.get("replica", {}).get("status") == "down"
    if checks["store"]["status"] != "ok" or checks["workers"]["status"] != "ok" or down:
        return web.json_response({"status": "unavailable", "checks": checks}, status=503)
    degraded = any(c["status"] not in ("ok", "disabled") for c in checks.values())
    return web.json_response({"status": "degraded" if degraded else "ok", "checks": checks})


async def _workers_check(app: web.Application) -> dict[str, Any]:
    stopped = _stopped_loops(app)
    if stopped:
        return {"status": "down", "detail": f"stopped: {', '.join(stopped)}; restart the service"}
    try:
        oldest = await app[STORE].oldest_pending_job_at()
    except Exception as exc:  # whatever the backend raises, readiness answers
        return {"status": "down", "detail": f"pending jobs not readable: {exc}"}
    limit = app[CONFIG].file.server.ready_max_job_age
    age = 0.0 if oldest is None else max(time.time() - oldest, 0.0)
    if age > limit:
        detail = f"the oldest pending job has waited {age:.0f} s (server.ready_max_job_age: {limit:g} s)"
        return {"status": "stuck", "detail": detail, "oldest_job_age_seconds": round(age, 1)}
    return {"status": "ok", "oldest_job_age_seconds": round(age, 1)}


def _prometheus_details(app: web.Application) -> dict[str, Any]:
    """Where the service queries (no userinfo: the client keeps credentials in its auth header) and the
    ad-hoc analyze breaker, which is shown but never degrades readiness."""
    return {"url": app[PROMETHEUS].base_url, "analyze_breaker": app[ANALYZE_PROMETHEUS].guard.state}


async def _memory_check(app: web.Application) -> dict[str, Any]:
    memory = app[MEMORY]
    if memory is None:
        return {"status": "disabled", "detail": "memory.enabled is false"}
    return await _check(memory.ping())


async def _loki_check(app: web.Application) -> dict[str, Any]:
    """Loki (logs.url): a report without it says so, so down is degraded, never unavailable."""
    loki = app.get(LOGS)
    if loki is None:
        return {"status": "disabled", "detail": "logs.url is unset"}
    found = await _check(loki.ping())
    found.update(url=loki.base_url, breaker=loki.guard.state)
    if loki.guard.state != "closed" and found["status"] == "ok":
        found["status"] = "degraded"
    return found


def _guards(app: web.Application) -> dict[str, Any]:
    """Every dependency with a circuit breaker: the model and each sink that has one."""
    found = {name: getattr(sink, "guard", None) for name, sink in app[SINKS].items()}
    chat = app[CHAT]
    if chat is not None:
        found["model"] = chat.guard
    return {name: guard for name, guard in found.items() if guard is not None}


def _breaker_checks(app: web.Application) -> dict[str, dict[str, Any]]:
    """A sink or model whose breaker is open is degraded: its actions wait in the outbox."""
    return {
        name: {"status": "ok" if guard.state == "closed" else "degraded", "breaker": guard.state}
        for name, guard in _guards(app).items()
    }


async def _check(probe: Any) -> dict[str, Any]:
    try:
        await probe
    except AgenticObsError as exc:
        return {"status": "down", "detail": redact_urls(str(exc))}  # an adapter's error may quote its URL
    return {"status": "ok"}


@routes.get("/metrics")
async def prometheus_metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/v1/metrics")
async def json_metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    return web.json_response({"metrics": request.app[METRICS].snapshot()})


async def refresh_gauges(app: web.Application) -> None:
    """Queue depths and open incidents come from the store, so they are right after a restart too."""
    metrics = app[METRICS]
    counts = await app[STORE].counts()
    metrics.incidents_open.set(counts["incidents_open"])
    metrics.queue_depth.labels("inbox").set(counts["inbox_pending"])
    metrics.queue_depth.labels("jobs").set(counts["jobs_pending"])
    metrics.queue_depth.labels("outbox").set(counts["outbox_pending"])
    for client in (app[PROMETHEUS], app[ANALYZE_PROMETHEUS]):
        metrics.breaker_open.labels(client.guard.name).set(1 if client.guard.state == "open" else 0)
    for name, guard in _guards(app).items():
        metrics.breaker_open.labels(name).set(1 if guard.state == "open" else 0)
