"""Retention: a background loop that forgets durable state older than ``storage.retention``.

Every ``storage.prune_interval`` it asks the store to prune, one batch (one short transaction) at a
time, until a batch comes back less than full. Webhook commits share the store's one writer with
pruning, so between batches the loop pauses, and while intake is under pressure (an alert storm) it
waits: a commit never queues behind more than one batch.

Inbox rows go with the retention too. An inbox row is what makes a retried delivery a duplicate, so
the retention must outlast Alertmanager's retries (minutes, at most until its next group flush): the
default 30 days does by far; a retention under ``SAFE_RETENTION`` draws a warning at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from agentic_observability.config import StorageConfig
from agentic_observability.errors import StoreError
from agentic_observability.service.heap import release_free_memory
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics, log_fields

log = logging.getLogger(__name__)

PAUSE_SECONDS = 0.05  # between batches: commits queued meanwhile go first
FULL_BATCH_KEYS = ("incidents", "inbox", "changes")  # the tables a batch is bounded by (Store.prune)
SAFE_RETENTION = 3600.0
# A firing incident no delivery has touched for this long (or the retention, if longer) is pruned as
# well: Alertmanager re-sends a firing group every repeat_interval (4h by default), so a week of
# silence means the group stopped firing and its receiver has send_resolved: false.
SILENT_FIRING = 7 * 86400.0


class Retention:
    def __init__(
        self,
        store: Store,
        settings: StorageConfig,
        metrics: Metrics,
        busy: Callable[[], bool] = lambda: False,
        pause: float = PAUSE_SECONDS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._busy = busy  # True while intake is under pressure: pruning waits
        self._pause = pause
        self._task: asyncio.Task[None] | None = None
        self.active: Callable[[], bool] = lambda: True  # replicas: only the lease holder prunes

    def start(self) -> None:
        if self._settings.retention < SAFE_RETENTION:
            log.warning(
                "storage.retention is %gs: an Alertmanager retry arriving after its incident was pruned "
                "would open it again; keep it above an hour outside tests",
                self._settings.retention,
            )
        self._task = asyncio.create_task(self._run_forever(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run_forever(self) -> None:
        while True:
            try:
                if self.active():
                    await self.run_once()
            except Exception:  # a bug must not end retention for good: state would grow unbounded
                self._metrics.errors.labels("retention").inc()
                log.exception("pruning failed unexpectedly, retrying next interval")
            await asyncio.sleep(self._settings.prune_interval)

    async def run_once(self, now: float | None = None) -> dict[str, int]:
        """One pass: prune everything older than the retention; returns rows deleted per table.
        A store failure is logged and counted; the next pass tries again."""
        now = time.time() if now is None else now
        older_than = now - self._settings.retention
        silent_before = now - max(self._settings.retention, SILENT_FIRING)
        try:
            pruned = await self.prune_all(older_than, silent_before)
        except StoreError as exc:
            self._metrics.errors.labels("retention").inc()
            log.warning("pruning failed, retrying next interval: %s", exc)
            return {}
        if pruned:
            log.info("pruned state past retention", extra=log_fields(older_than=older_than, **pruned))
        await asyncio.to_thread(release_free_memory)  # what was freed since, back to the system
        return pruned

    async def prune_all(self, older_than: float, silent_before: float | None = None) -> dict[str, int]:
        """Batch after batch until one is less than full, yielding to intake between them."""
        batch = self._settings.prune_batch
        total: Counter[str] = Counter()
        while True:
            if self._busy():  # an alert storm: intake first, pruning can wait
                await asyncio.sleep(self._pause)
                continue
            counts = await self._store.prune(older_than, batch, silent_before)
            for table, rows in counts.items():
                if rows:
                    self._metrics.pruned_rows.labels(table).inc(rows)
                    total[table] += rows
            if all(counts.get(key, 0) < batch for key in FULL_BATCH_KEYS):
                return dict(total)
            await asyncio.sleep(self._pause)
