"""Typed application keys: the one registry of long-lived objects the handlers may reach."""

from __future__ import annotations

from aiohttp import web

from agentic_observability.config import Config
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics
from agentic_observability.webhook.workers import Workers

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
PROMETHEUS = web.AppKey("prometheus", PrometheusClient)
WORKERS = web.AppKey("workers", Workers)
TOKEN = web.AppKey("token", str)
ENVIRON: web.AppKey[dict[str, str]] = web.AppKey("environ", dict)
