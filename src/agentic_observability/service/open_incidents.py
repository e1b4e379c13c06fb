"""Open incidents as Prometheus series, so a Grafana table lists them with no plugin (issue 19).

``agentic_obs_incident_open{id, title, service, severity, url, slack_channel, slack_ts} 1`` for each
open incident: a fault's root (firing while anything of the fault fires), never its members on their
own. A background task reads the open roots from the store every ``REFRESH_SECONDS``, and soon after
the workers queue an incident's actions (it was analysed, or it resolved); an incident that resolves
or is pruned leaves the table at the next read, and a restart shows the right rows at once.

Bounded: the newest ``OPEN_INCIDENT_ROWS`` only (how many more: ``agentic_obs_incident_open_omitted``,
counted up to as many again), title, service and severity cut to ``OPEN_INCIDENT_LABEL_CHARS``.

``url`` is the incident in the API when ``server.public_url`` is set (as in Slack and PagerDuty
links). ``slack_channel`` and ``slack_ts`` (the parent message's ts without its dot, as a Slack archive
link wants it) come from ``slack_refs`` when one is given: the Slack sink's reference per incident,
``<channel id>|<ts>`` (see integrations/slack.py), read from the store's action refs when Slack is
configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from aiohttp import web

from agentic_observability.config import redact_url
from agentic_observability.errors import StoreError
from agentic_observability.models import Incident
from agentic_observability.service.keys import CONFIG, METRICS, SINKS, STORE, WORKERS
from agentic_observability.store import Store
from agentic_observability.telemetry import OPEN_INCIDENT_LABEL_CHARS, OPEN_INCIDENT_ROWS, Metrics

log = logging.getLogger(__name__)

REFRESH_SECONDS = 15.0
# Reads start at least this far apart, however many completions poke: a read of the most open
# incidents it takes (1,000, reports included) costs a few hundred ms, and a storm pokes many times.
MIN_GAP_SECONDS = 5.0
# incident ids -> the Slack sink's reference, "<channel id>|<parent ts>", for those that have one
SlackRefs = Callable[[Sequence[str]], Awaitable[Mapping[str, str]]]
_SLACK_REF = re.compile(r"([A-Z0-9]{1,32})\|([0-9]{1,20})\.([0-9]{1,12})")


class OpenIncidents:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        public_url: str | None = None,
        entity_label: str = "service",
        slack_refs: SlackRefs | None = None,
        interval: float = REFRESH_SECONDS,
        min_gap: float = MIN_GAP_SECONDS,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._api = f"{redact_url(public_url).rstrip('/')}/api/v1/incidents/" if public_url else None
        self._entity_label = entity_label
        self._slack_refs = slack_refs
        self._interval = interval
        self._min_gap = min_gap
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """Something changed (an incident was analysed or resolved): read again soon."""
        self._poked.set()

    async def refresh(self) -> None:
        """Read the open roots, newest first, and make them the gauge's series."""
        found = await self._store.list_incidents("firing", limit=2 * OPEN_INCIDENT_ROWS)
        shown = found[:OPEN_INCIDENT_ROWS]
        refs = await self._slack_refs([i.id for i in shown]) if self._slack_refs and shown else {}
        rows = [self.row(incident, refs.get(incident.id)) for incident in shown]
        self._metrics.set_open_incidents(rows, len(found) - len(shown))

    def row(self, incident: Incident, slack_ref: str | None = None) -> dict[str, str]:
        """The labels of one incident's series."""
        labels = incident.labels
        row = {
            "id": incident.id,
            "title": incident.title,
            "service": labels.get(self._entity_label, ""),
            # group labels rarely carry it; the report has the first alert's once analysed
            "severity": labels.get("severity") or _reported_severity(incident.report),
        }
        row = {name: value[:OPEN_INCIDENT_LABEL_CHARS] for name, value in row.items()}
        if self._api:
            row["url"] = self._api + incident.id
        thread = _SLACK_REF.fullmatch(slack_ref or "")
        if thread:
            row["slack_channel"], row["slack_ts"] = thread[1], thread[2] + thread[3]
        return row

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="open-incidents")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.refresh()
            except StoreError as exc:  # the last rows stay: stale for an interval beats empty
                self._metrics.errors.labels("open_incidents").inc()
                log.warning("could not read open incidents, retrying: %s", exc)
            except Exception:
                self._metrics.errors.labels("open_incidents").inc()
                log.exception("reading open incidents failed unexpectedly, retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self._interval)
            self._poked.clear()
            await asyncio.sleep(max(0.0, started + self._min_gap - loop.time()))


def _reported_severity(report: Mapping[str, Any] | None) -> str:
    facts = (report or {}).get("facts")
    return str(facts.get("severity") or "") if isinstance(facts, Mapping) else ""


async def open_incidents_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keeps ``agentic_obs_incident_open`` current; read again whenever the workers queue actions."""
    config = app[CONFIG].file
    workers = app[WORKERS]
    table = OpenIncidents(
        app[STORE],
        app[METRICS],
        config.server.public_url,
        config.investigation.entity_label,
        slack_refs=partial(app[STORE].action_refs, "slack") if "slack" in app[SINKS] else None,
        interval=REFRESH_SECONDS,
        min_gap=MIN_GAP_SECONDS,
    )
    wake_dispatcher = workers.on_actions

    def actions_queued() -> None:
        if wake_dispatcher is not None:
            wake_dispatcher()
        table.poke()

    workers.on_actions = actions_queued
    table.start()
    yield
    workers.on_actions = wake_dispatcher
    await table.stop()
