"""Typed application keys: the one registry of long-lived objects the handlers may reach."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from agentic_observability.config import Config
from agentic_observability.integrations.llm import ChatClient
from agentic_observability.integrations.loki import LokiClient
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.memory import ReconnectingMemory
from agentic_observability.outbox.dispatcher import Dispatcher
from agentic_observability.remediation.executor import Executor
from agentic_observability.service.replica import Replica
from agentic_observability.service.workers import Workers
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
PROMETHEUS = web.AppKey("prometheus", PrometheusClient)
# Ad-hoc /api/v1/analyze queries: their own client and breaker, so they never open PROMETHEUS's, and
# a bounded number of them at once.
ANALYZE_PROMETHEUS = web.AppKey("analyze_prometheus", PrometheusClient)
ANALYZE_SLOTS = web.AppKey("analyze_slots", asyncio.Semaphore)
WORKERS = web.AppKey("workers", Workers)
REPLICA = web.AppKey("replica", Replica)  # this replica's id and leases
LOGS: web.AppKey[LokiClient | None] = web.AppKey("logs")  # None while logs.url is unset
TOKEN = web.AppKey("token", str)
ENVIRON: web.AppKey[dict[str, str]] = web.AppKey("environ", dict)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
# Optional parts hold None when off or unavailable (readiness says which).
MEMORY: web.AppKey[ReconnectingMemory | None] = web.AppKey("memory", object)  # type: ignore[arg-type]
CHAT: web.AppKey[ChatClient | None] = web.AppKey("chat", object)  # type: ignore[arg-type]
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SINKS: web.AppKey[dict[str, Any]] = web.AppKey("sinks", dict)
POLLERS: web.AppKey[list[Any]] = web.AppKey("pollers", list)  # the WatchPollers
# Runs remediation (dry runs on a press; the outbox's remediation sink runs approved ones). Set only
# when remediation.enabled: ``app.get(REMEDIATION)``.
REMEDIATION = web.AppKey("remediation", Executor)
