"""Polls the change sources every ``changes.poll_interval`` and stores what they found.

Each source reads a window: from where its last successful poll ended (less an overlap, so a sample
that reached Prometheus late is still seen), or, on the first poll after a start, ``lookback`` back
(``investigation.change_window``: a restart does not lose the changes a report may still show). The
dedup keys make the overlap free: what is already stored is not stored again. A failing source is
logged and counted (``agentic_obs_errors_total{component="changes"}``), polls again next time over
the window it missed, and never stops the others or the service.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from agentic_observability.models import Change
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics

log = logging.getLogger(__name__)
JITTER = 0.1


class ChangeReader(Protocol):
    name: str

    async def changes(self, start: float, end: float) -> list[Change]: ...


class ChangePoller:
    def __init__(
        self,
        sources: Sequence[ChangeReader],
        store: Store,
        metrics: Metrics,
        interval: float,
        lookback: float,
    ) -> None:
        self.sources = list(sources)
        self.interval = interval
        self.active: Callable[[], bool] = lambda: True  # replicas: only the lease holder polls
        self._store = store
        self._metrics = metrics
        self._lookback = max(lookback, interval)
        self._overlap = max(2 * interval, 120.0)  # ksm's scrape and the rule of late samples
        self._since: dict[str, float] = {}  # per source: where its last successful poll ended
        self.task: asyncio.Task[None] | None = None

    async def run_forever(self) -> None:
        await asyncio.sleep(random.uniform(0, self.interval * JITTER))
        while True:
            try:
                if self.active():
                    await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failing store or a bug must not end the polling
                self._metrics.errors.labels("changes").inc()
                log.exception("change poll failed")
            await asyncio.sleep(self.interval * random.uniform(1 - JITTER, 1 + JITTER))

    async def poll_once(self, now: float | None = None) -> int:
        """One poll of every source; returns how many new change events were stored."""
        moment = time.time() if now is None else now
        found: list[Change] = []
        done: list[str] = []
        for source in self.sources:
            start = max(self._since.get(source.name, moment - self._lookback) - self._overlap, 0.0)
            start = max(start, moment - self._lookback)  # after a long outage: the lookback, no more
            try:
                found += await source.changes(start, moment)
            except Exception as exc:
                self._metrics.errors.labels("changes").inc()
                log.warning("change source %s failed, will retry its window: %s", source.name, exc)
                continue
            done.append(source.name)
        new = await self._store.record_changes(found) if found else 0
        for name in done:  # only once stored: a failed commit polls the same window again
            self._since[name] = moment
        if new:
            log.info("%d new change events (%d seen)", new, len(found))
        return new
