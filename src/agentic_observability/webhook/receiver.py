"""``POST /api/v1/webhook/alertmanager``: validate, commit to the inbox, answer 202.

The 202 is sent only after the alerts are committed, so an acknowledged alert survives a crash.
If the store cannot commit we answer 503: Alertmanager retries 5xx, but drops a group on 4xx.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from agentic_observability.errors import BadInputError, StoreError
from agentic_observability.models import AcceptedAlert
from agentic_observability.telemetry import log_fields
from agentic_observability.webhook.keys import CONFIG, METRICS, STORE, WORKERS
from agentic_observability.webhook.schema import parse_webhook

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def error_response(status: int, error: str, detail: str, field: str | None = None) -> web.Response:
    body = {"error": error, "detail": detail, **({"field": field} if field is not None else {})}
    return web.json_response(body, status=status)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await request.read()


@routes.post("/api/v1/webhook/alertmanager")
async def receive_alertmanager(request: web.Request) -> web.Response:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    response = await _handle(request)
    metrics.webhook_requests.labels(str(response.status)).inc()
    metrics.webhook_latency.observe(time.perf_counter() - started)
    return response


async def _handle(request: web.Request) -> web.Response:
    limit = request.app[CONFIG].file.server.max_body_bytes
    try:
        alerts = parse_webhook(await _read_body(request, limit))
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "body too large", f"the limit is {limit} bytes (server.max_body_bytes)")
    except BadInputError as exc:
        return error_response(400, "invalid Alertmanager webhook body", str(exc), exc.field)
    try:
        result = await request.app[STORE].accept(alerts)
    except StoreError as exc:
        request.app[METRICS].errors.labels("store").inc()
        log.error("could not commit alerts: %s", exc)
        return error_response(503, "store unavailable", "alerts not stored; Alertmanager will retry")
    _count(request, alerts, result.duplicates)
    if result.accepted:
        request.app[WORKERS].wake()
    return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates}, status=202)


def _count(request: web.Request, alerts: list[AcceptedAlert], duplicates: int) -> None:
    metrics = request.app[METRICS]
    for accepted in alerts:
        metrics.alerts_received.labels(accepted.alert.status).inc()
    if duplicates:
        metrics.alerts_duplicate.inc(duplicates)
        log.info(
            "duplicate delivery ignored",
            extra=log_fields(group_key=alerts[0].group_key, duplicates=duplicates),
        )
