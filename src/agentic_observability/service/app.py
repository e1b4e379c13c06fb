"""Composition root: ``init_app()`` builds the aiohttp application from a Config.

One cleanup context per long-lived resource (store, HTTP session, workers, pollers), started in
order and stopped in reverse; bad config fails here, at startup, not on the first alert.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from huggingface_hub import AsyncInferenceClient

from agentic_observability.changes import ChangePoller, ChangeReader, GrafanaDeploys, KubeStateMetrics
from agentic_observability.config import Config, require_webhook_token
from agentic_observability.errors import MemoryUnavailableError
from agentic_observability.integrations.grafana import GrafanaSink
from agentic_observability.integrations.llm import ChatClient
from agentic_observability.integrations.loki import LokiClient
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.integrations.resilience import Guard
from agentic_observability.memory import ReconnectingMemory, open_memory
from agentic_observability.models import Action, Incident
from agentic_observability.outbox.dispatcher import Dispatcher
from agentic_observability.outbox.plan import ActSettings, plan_thread_note
from agentic_observability.outbox.sinks import build_sinks, provision_dashboards
from agentic_observability.pipeline.ports import PipelineDeps

# check_config_queries is re-exported for `agentic-obs check-config` (the cli may not import the pipeline)
from agentic_observability.pipeline.promql import check_config_queries as check_config_queries
from agentic_observability.pipeline.promql import warn_config_queries
from agentic_observability.remediation.executor import Executor
from agentic_observability.remediation.sink import FollowUpSink, RemediationSink
from agentic_observability.service import mcp_http, slack_socket
from agentic_observability.service.auth import auth_middleware
from agentic_observability.service.correlation import Correlator
from agentic_observability.service.keys import (
    ANALYZE_PROMETHEUS,
    ANALYZE_SLOTS,
    CHAT,
    CONFIG,
    DISPATCHER,
    ENVIRON,
    HTTP_SESSION,
    LOGS,
    MEMORY,
    METRICS,
    POLLERS,
    PROMETHEUS,
    REMEDIATION,
    REPLICA,
    SINKS,
    STORE,
    TOKEN,
    WORKERS,
)
from agentic_observability.service.open_incidents import open_incidents_ctx
from agentic_observability.service.replica import Replica
from agentic_observability.service.responses import error_response
from agentic_observability.service.retention import Retention
from agentic_observability.service.routes import (
    analyze,
    changes,
    incidents,
    openapi,
    ops,
    regroup,
    slack,
    webhook,
)
from agentic_observability.service.workers import Workers
from agentic_observability.store import open_store
from agentic_observability.telemetry import Metrics, StageTimer, setup_tracing
from agentic_observability.watch.poller import WatchPoller, watch_lease_name

log = logging.getLogger(__name__)
CHANGES_LEASE = "changes"  # the replica that polls change sources
RETENTION_LEASE = "retention"  # the replica that prunes
INSTALL_ID = web.AppKey("install_id", str)  # the store's; in every key a receiver sees (Store.install_id)
CHANGE_POLLER = web.AppKey("change_poller", ChangePoller)  # set while changes are polled


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; an unexpected exception is logged and becomes a 500 without details."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].file.server.max_body_bytes
        return error_response(413, "body too large", f"the limit is {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        request.app[METRICS].errors.labels("http").inc()
        return error_response(500, "internal error", "see the service log")


def init_app(config: Config, environ: Mapping[str, str] | None = None) -> web.Application:
    token = require_webhook_token(config)  # fail fast: auth on without a token is a config error
    warn_config_queries(config)  # a query the parser cannot read: logged with its position
    server = config.file.server
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[json_errors, auth_middleware])
    app[CONFIG] = config
    app[METRICS] = Metrics()
    if token is not None:
        app[TOKEN] = token
    for module in (webhook, changes, incidents, regroup, analyze, ops, openapi):
        app.add_routes(module.routes)
    slack_socket.setup(app)  # Socket Mode (SLACK_APP_TOKEN); first: on shutdown it stops taking envelopes
    slack.setup(app)  # /api/v1/slack/interactions, and the work it does after answering Slack
    app.add_routes(mcp_http.routes)  # /mcp: the MCP tools over streamable HTTP
    app.cleanup_ctx.extend(
        [
            _store_ctx,
            _replica_ctx,
            _http_ctx,
            _memory_ctx,
            _model_ctx,
            _outbox_ctx,
            _workers_ctx,
            _pollers_ctx,
        ]
    )
    app.cleanup_ctx.append(_changes_ctx)
    app.cleanup_ctx.append(_retention_ctx)
    app.cleanup_ctx.append(open_incidents_ctx)  # agentic_obs_incident_open: a Grafana table
    app.cleanup_ctx.append(mcp_http.mcp_ctx)  # last: /mcp stops before what its tools read
    app.cleanup_ctx.append(_drain_ctx)  # and first of all at shutdown: the watches move on at once
    app[ENVIRON] = dict(environ or {})
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    secret = app[CONFIG].secrets.postgres_password  # storage.backend: postgres only
    password = None if secret is None else secret.get_secret_value()
    # take_over: on SQLite (one process per file) what an earlier, crashed process claimed is freed
    app[STORE] = await open_store(app[CONFIG].file.storage, password, take_over=True)
    app[INSTALL_ID] = await app[STORE].install_id()
    yield
    await app[STORE].close()


async def _replica_ctx(app: web.Application) -> AsyncIterator[None]:
    """This replica's leases: made here, started with the workers (its first beat claims their jobs),
    released last, after the workers and the outbox have stopped, so another replica takes what is
    left at once."""
    config = app[CONFIG].file
    names = [watch_lease_name(w) for w in config.watches] + [CHANGES_LEASE, RETENTION_LEASE]
    app[REPLICA] = Replica(app[STORE], app[METRICS], config.server.lease, names)
    yield
    await app[REPLICA].stop()


async def _drain_ctx(app: web.Application) -> AsyncIterator[None]:
    """At shutdown, before anything stops: this replica claims nothing new and gives up its named
    leases, so another replica polls the watches while this one finishes its work in flight."""
    yield
    await app[REPLICA].drain()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = aiohttp.ClientSession(headers={"User-Agent": "agentic-observability"})
    app[PROMETHEUS] = PrometheusClient.from_config(config, session)
    # Ad-hoc queries get a breaker of their own (a burst of bad ones must not stall incident analysis)
    # and no retries (the caller is waiting, and a retry would hold one of the few slots).
    app[ANALYZE_PROMETHEUS] = PrometheusClient.from_config(config, session, "prometheus-analyze", retries=0)
    app[ANALYZE_SLOTS] = asyncio.Semaphore(config.file.server.analyze_concurrency)
    app[HTTP_SESSION] = session
    yield
    await session.close()


async def _memory_ctx(app: web.Application) -> AsyncIterator[None]:
    """Incident memory. A wrong embedder fails startup (a config error); an unreachable Qdrant server
    does not: the service runs without recall and readiness says so."""
    config = app[CONFIG]
    app[MEMORY] = None
    if config.file.memory.enabled:
        path = str(Path(config.file.storage.path) / "memory")
        memory = ReconnectingMemory(lambda: open_memory(config, path, lambda: _hf_client(config)))
        try:
            await memory.connect()  # a wrong embedder (a config error) stops startup here
        except MemoryUnavailableError as exc:
            log.error("incident memory unavailable, running without recall until it returns: %s", exc)
        app[MEMORY] = memory
    yield
    opened = app[MEMORY]
    if opened is not None:
        await opened.close()


def _hf_client(config: Config) -> AsyncInferenceClient:
    token = config.secrets.huggingface_token
    return AsyncInferenceClient(
        token=token.get_secret_value() if token else None, timeout=config.file.memory.timeout
    )


async def _model_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    reasoning = config.file.reasoning
    app[CHAT] = None
    if reasoning.backend == "llm":
        token = config.secrets.huggingface_token
        guard = Guard(
            "model",
            retries=reasoning.retries,
            fail_max=config.tunables.circuit_breaker_threshold,
            reset_after=config.tunables.circuit_breaker_reset,
            max_backoff=2.0,
        )
        app[CHAT] = ChatClient.create(
            reasoning.model,
            reasoning.base_url,
            token.get_secret_value() if token else None,
            reasoning.timeout,
            guard,
            reasoning.requests_per_minute,
        )
    yield
    chat = app[CHAT]
    if chat is not None:
        await chat.close()


async def _outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    sinks = build_sinks(config, app[HTTP_SESSION], app[MEMORY], app[INSTALL_ID])
    executor = _remediation(app, sinks)
    app[SINKS] = sinks
    actions = config.file.actions
    replica = app[REPLICA]
    dispatcher = Dispatcher(
        app[STORE],
        sinks,
        app[METRICS],
        actions.timeout,
        actions.first_retry,
        owner=replica.id,
        lease=replica.lease,
    )
    dispatcher.confirm = functools.partial(replica.confirm, "action")
    app[DISPATCHER] = dispatcher
    await dispatcher.start()
    grafana = sinks.get("grafana")
    provisioning = None
    if isinstance(grafana, GrafanaSink) and config.file.actions.grafana.provision_dashboards:
        provisioning = asyncio.create_task(provision_dashboards(grafana, config.file.actions.grafana.folder))
    yield
    if provisioning is not None:
        provisioning.cancel()
    await dispatcher.stop(deadline=min(actions.timeout, config.file.server.shutdown_timeout))
    if executor is not None:
        await executor.close()


def _remediation(app: web.Application, sinks: dict[str, Any]) -> Executor | None:
    """With ``remediation.enabled``: the executor (dry runs on a press) and the two outbox sinks that
    run approved actions and follow them up. Their thread replies are planned as the workers plan."""
    config = app[CONFIG]
    settings = config.file.remediation
    if not settings.enabled:
        return None
    executor = Executor(settings, config.secrets, app[HTTP_SESSION])
    app[REMEDIATION] = executor

    def notes(incident: Incident, key: str, text: str) -> list[Action]:
        return plan_thread_note(incident, key, text, app[WORKERS].act_settings)

    store, metrics = app[STORE], app[METRICS]
    sinks["remediation"] = RemediationSink(executor, store, settings, notes, metrics)
    sinks["followup"] = FollowUpSink(app[PROMETHEUS].query, store, notes, metrics)
    return executor


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    environ: dict[str, str] = app[ENVIRON]
    metrics = app[METRICS]
    sinks: dict[str, Any] = app[SINKS]
    app[LOGS] = LokiClient.from_config(config, app[HTTP_SESSION])  # None while logs.url is unset
    deps = PipelineDeps(
        metrics=app[PROMETHEUS],
        investigation=config.file.investigation,
        grafana_url=config.file.actions.grafana.url,
        stage_timer=StageTimer(metrics, setup_tracing(environ)),
        memory=app[MEMORY],
        recall_limit=config.file.memory.recall_limit,
        chat=app[CHAT],
        reasoning_timeout=config.file.reasoning.timeout,
        observe_model=metrics.observe_model,
        remediation=config.file.remediation,
        changes=app[STORE] if config.file.changes.enabled else None,
        logs=app[LOGS],
        logs_settings=config.file.logs,
        act=ActSettings(
            enabled=frozenset(sinks),
            actions=config.file.actions,
            public_url=config.file.server.public_url,
            entity_label=config.file.investigation.entity_label,
            install_id=app[INSTALL_ID],
            link_key=app.get(TOKEN) or "",
        ),
    )
    replica = app[REPLICA]
    workers = Workers(app[STORE], deps, metrics, config.file.server.workers, replica)
    workers.on_actions = app[DISPATCHER].wake
    correlation = config.file.correlation
    if correlation.enabled:
        workers.correlator = Correlator(app[STORE], deps, correlation, config.file.investigation.calls)
    app[DISPATCHER].under_pressure = lambda: workers.under_pressure
    app[WORKERS] = workers
    replica.on_jobs = workers.enqueue_all
    await replica.start()
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
            owns=functools.partial(app[REPLICA].holds, watch_lease_name(watch)),
        )
        for watch in app[CONFIG].file.watches
    ]
    tasks = [asyncio.create_task(p.run_forever(), name=f"watch-{p.watch.name}") for p in pollers]
    for poller, task in zip(pollers, tasks, strict=True):
        poller.task = task  # readiness and liveness check that every watch still polls
    app[POLLERS] = pollers

    def leases_changed(held: set[str]) -> None:
        for poller in pollers:
            poller.lease_changed(poller.lease_name in held)

    app[REPLICA].on_held = leases_changed
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _changes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Change events polled from kube-state-metrics (through Prometheus) and from Grafana annotations
    tagged as deploys (when Grafana is configured); a failing source is logged and counted, never fatal."""
    settings = app[CONFIG].file.changes
    sources: list[ChangeReader] = []
    if settings.enabled and settings.kube_state_metrics:
        step = min(max(settings.poll_interval / 2, 1.0), 30.0)
        sources.append(KubeStateMetrics(app[PROMETHEUS], settings.entity_from, step))
    grafana = app[SINKS].get("grafana")
    if settings.enabled and isinstance(grafana, GrafanaSink):
        entity_label = app[CONFIG].file.investigation.entity_label
        sources.append(GrafanaDeploys(grafana.api, settings.grafana_tag, entity_label))
    task = None
    if sources:
        lookback = app[CONFIG].file.investigation.change_window
        poller = ChangePoller(sources, app[STORE], app[METRICS], settings.poll_interval, lookback)
        poller.active = functools.partial(app[REPLICA].holds, CHANGES_LEASE)
        task = poller.task = asyncio.create_task(poller.run_forever(), name="changes")
        app[CHANGE_POLLER] = poller
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """Prunes state past storage.retention in the background; waits while intake is under pressure."""
    workers = app[WORKERS]
    retention = Retention(app[STORE], app[CONFIG].file.storage, app[METRICS], lambda: workers.under_pressure)
    retention.active = functools.partial(app[REPLICA].holds, RETENTION_LEASE)
    retention.start()
    yield
    await retention.stop()
