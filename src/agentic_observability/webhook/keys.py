"""Typed application keys: the one registry of long-lived objects the handlers may reach."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from agentic_observability.config import Config
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics

if TYPE_CHECKING:
    from agentic_observability.webhook.workers import Workers

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
HTTP = web.AppKey("http", aiohttp.ClientSession)
PROMETHEUS = web.AppKey("prometheus", PrometheusClient)
WORKERS = web.AppKey("workers", "Workers")
TOKEN = web.AppKey("token", str)
ENVIRON = web.AppKey("environ", dict)
