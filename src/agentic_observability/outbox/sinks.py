"""The sink interface, and the sinks the config enables: Grafana, Slack, PagerDuty, the file sink,
and incident memory (remembering is an outbox action too, so it catches up after a memory outage)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from agentic_observability.config import Config
from agentic_observability.errors import ChartUnavailableError, DeliveryError
from agentic_observability.integrations.delivery import sink_guard
from agentic_observability.integrations.filesink import FileSink
from agentic_observability.integrations.grafana import GrafanaSink
from agentic_observability.integrations.pagerduty import PagerDutySink
from agentic_observability.integrations.slack import SlackSink
from agentic_observability.memory import ReconnectingMemory
from agentic_observability.models import OutboxItem, PastIncident
from agentic_observability.outbox.chart import render_png_async

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Delivers one outbox action; returns the id the receiver gave the incident (kept for updates).
    A sink with a rate limit also has ``async wait_turn(item)``, awaited before the delivery."""

    name: str

    async def deliver(self, item: OutboxItem) -> str | None: ...


class MemorySink:
    name = "memory"

    def __init__(self, memory: ReconnectingMemory) -> None:
        self._memory = memory

    async def deliver(self, item: OutboxItem) -> str | None:
        await self._memory.remember(PastIncident.from_payload(item.payload))
        return None


async def render_chart(chart: Mapping[str, Any]) -> bytes:
    """An incident's chart for a sink to upload. A chart that cannot be drawn (no matplotlib, bad
    data) will not be drawn on a retry either: the upload is given up, saying why. One that took too
    long (a busy host, a cold font cache) is retried like any delivery."""
    try:
        return await render_png_async(chart)
    except ChartUnavailableError as exc:
        raise DeliveryError(f"chart not drawn: {exc}", permanent=not exc.retryable) from exc


def _secret(config: Config, name: str) -> str | None:
    value = getattr(config.secrets, name)
    return value.get_secret_value() if value is not None and value.get_secret_value() else None


def build_sinks(
    config: Config,
    session: aiohttp.ClientSession,
    memory: ReconnectingMemory | None,
    install: str = "default",
) -> dict[str, Sink]:
    """``install``: the store's install id, which Slack message metadata carries (the other sinks get
    it in the planned actions)."""
    actions = config.file.actions
    tunables = config.tunables

    def guard(name: str) -> Any:
        return sink_guard(name, tunables.circuit_breaker_threshold, tunables.circuit_breaker_reset)

    sinks: dict[str, Sink] = {}
    if actions.grafana.url:
        sinks["grafana"] = GrafanaSink.create(
            actions.grafana.url, _secret(config, "grafana_token"), actions.timeout, guard("grafana")
        )
    slack_token = _secret(config, "slack_bot_token")
    webhook_url = _secret(config, "slack_webhook_url")  # a secret: whoever holds it can post
    if (slack_token and actions.slack.channel) or webhook_url:
        sinks["slack"] = SlackSink.create(
            guard("slack"),
            actions.slack.api_url,
            slack_token,
            actions.slack.channel,
            webhook_url,
            actions.timeout,
            install=install,
            render=render_chart,
        )
    routing_key = _secret(config, "pagerduty_routing_key")
    if routing_key:
        sinks["pagerduty"] = PagerDutySink(
            session, actions.pagerduty.events_url, routing_key, actions.timeout, guard("pagerduty")
        )
    if actions.file.enabled:
        path = Path(config.file.storage.path) / "actions.jsonl"
        sinks["file"] = FileSink(path, actions.file.max_bytes, actions.file.backups)
    if memory is not None:
        sinks["memory"] = MemorySink(memory)
    return sinks


def bundled_dashboards() -> list[dict[str, Any]]:
    """The dashboards shipped in the package (the same files as the repository's dashboards/)."""
    folder = files("agentic_observability").joinpath("dashboards")
    return [json.loads(p.read_text()) for p in sorted(folder.iterdir(), key=str) if p.name.endswith(".json")]


async def provision_dashboards(sink: GrafanaSink, folder: str) -> None:
    """At startup (unless ``actions.grafana.provision_dashboards`` is off); a Grafana outage must not
    stop the service, so failure is logged, not raised. Dashboards Grafana already provisions from
    files are left alone (the sink logs them once)."""
    try:
        saved = await sink.provision(folder, bundled_dashboards())
    except Exception as exc:
        log.error("could not provision Grafana dashboards: %s", exc)
        return
    if saved:
        log.info("provisioned Grafana dashboards: %s", ", ".join(saved))
