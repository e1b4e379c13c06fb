"""Liveness, readiness and the service's own metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentic_observability.errors import AgenticObsError
from agentic_observability.service.keys import CHAT, MEMORY, METRICS, PROMETHEUS, SINKS, STORE

routes = web.RouteTableDef()


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: the event loop answers. Never depends on a downstream system."""
    return web.json_response({"status": "ok"})


@routes.get("/api/v1/health/ready")
async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 only when alerts cannot be stored; a Prometheus outage is reported as degraded,
    because the service still accepts (and later analyses) alerts while it lasts."""
    checks: dict[str, dict[str, Any]] = {}
    checks["store"] = await _check(request.app[STORE].ping())
    checks["prometheus"] = await _check(request.app[PROMETHEUS].ping())
    checks["prometheus"]["breaker"] = request.app[PROMETHEUS].guard.state
    checks["memory"] = await _memory_check(request.app)
    checks.update(_breaker_checks(request.app))
    if checks["store"]["status"] != "ok":
        return web.json_response({"status": "unavailable", "checks": checks}, status=503)
    degraded = any(c["status"] not in ("ok", "disabled") for c in checks.values())
    return web.json_response({"status": "degraded" if degraded else "ok", "checks": checks})


async def _memory_check(app: web.Application) -> dict[str, Any]:
    memory = app[MEMORY]
    if memory is None:
        return {"status": "disabled", "detail": "memory.enabled is false"}
    return await _check(memory.ping())


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
        return {"status": "down", "detail": str(exc)}
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
    metrics.breaker_open.labels("prometheus").set(1 if app[PROMETHEUS].guard.state == "open" else 0)
    for name, guard in _guards(app).items():
        metrics.breaker_open.labels(name).set(1 if guard.state == "open" else 0)
