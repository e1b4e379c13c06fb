"""Composition root: ``init_app()`` builds the aiohttp application from a Config.

One cleanup context per long-lived resource (store, HTTP session, workers, pollers), started in
order and stopped in reverse; bad config fails here, at startup, not on the first alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from agentic_observability.config import Config, require_webhook_token
from agentic_observability.errors import PrometheusQueryError
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.integrations.resilience import Guard
from agentic_observability.pipeline.ports import PipelineDeps
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics, StageTimer, setup_tracing
from agentic_observability.webhook import api, openapi, ops, receiver
from agentic_observability.webhook.auth import auth_middleware
from agentic_observability.webhook.keys import (
    CONFIG,
    ENVIRON,
    METRICS,
    PROMETHEUS,
    STORE,
    TOKEN,
    WORKERS,
)
from agentic_observability.webhook.poller import WatchPoller
from agentic_observability.webhook.workers import Workers

log = logging.getLogger(__name__)
POLLERS = web.AppKey("pollers", list)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; an unexpected exception is logged and becomes a 500 without details."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].file.server.max_body_bytes
        return receiver.error_response(413, "body too large", f"the limit is {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return receiver.error_response(exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        request.app[METRICS].errors.labels("http").inc()
        return receiver.error_response(500, "internal error", "see the service log")


def init_app(config: Config, environ: Mapping[str, str] | None = None) -> web.Application:
    token = require_webhook_token(config)  # fail fast: auth on without a token is a config error
    server = config.file.server
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[json_errors, auth_middleware])
    app[CONFIG] = config
    app[METRICS] = Metrics()
    if token is not None:
        app[TOKEN] = token
    for module in (receiver, api, ops, openapi):
        app.add_routes(module.routes)
    app.cleanup_ctx.extend([_store_ctx, _http_ctx, _workers_ctx, _pollers_ctx])
    app[ENVIRON] = dict(environ or {})
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = await Store.open(app[CONFIG].file.storage.path)
    yield
    await app[STORE].close()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = aiohttp.ClientSession(headers={"User-Agent": "agentic-observability"})
    guard = Guard(
        "prometheus",
        retries=config.file.prometheus.retries,
        fail_max=config.tunables.circuit_breaker_threshold,
        reset_after=config.tunables.circuit_breaker_reset,
        excluded=(PrometheusQueryError,),
    )
    app[PROMETHEUS] = PrometheusClient(
        config.file.prometheus.url, session, config.file.prometheus.timeout, guard
    )
    yield
    await session.close()


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    environ: dict[str, str] = app[ENVIRON]
    deps = PipelineDeps(
        metrics=app[PROMETHEUS],
        investigation=config.file.investigation,
        grafana_url=config.file.actions.grafana.url,
        stage_timer=StageTimer(app[METRICS], setup_tracing(environ)),
    )
    workers = Workers(app[STORE], deps, app[METRICS], config.file.server.workers)
    app[WORKERS] = workers
    await workers.start()
    yield
    await workers.stop(deadline=config.file.server.shutdown_timeout)


async def _pollers_ctx(app: web.Application) -> AsyncIterator[None]:
    pollers = [
        WatchPoller(
            watch,
            app[PROMETHEUS],
            app[STORE],
            app[METRICS],
            on_commit=app[WORKERS].wake,
            threshold=app[CONFIG].tunables.anomaly_threshold,
        )
        for watch in app[CONFIG].file.watches
    ]
    for poller in pollers:
        await poller.resume()
    tasks = [asyncio.create_task(p.run_forever(), name=f"watch-{p.watch.name}") for p in pollers]
    app[POLLERS] = pollers
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
