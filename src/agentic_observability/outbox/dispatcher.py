"""The outbox dispatcher: delivers queued actions to their sinks, at most once each.

* Per incident and sink, actions go in order (the store hands out only the oldest pending one), so a
  Slack reply never overtakes its parent, and an annotation's end never precedes its start.
* A failure is retried with exponential backoff, or after the receiver's ``Retry-After`` when it sent
  one, across restarts (the schedule is in the store). A permanent rejection is given up at once.
* Success and the receiver's id (Slack ts, Grafana annotation id, PagerDuty dedup key) commit in one
  transaction; later actions update through that id instead of creating anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from agentic_observability.errors import DeliveryError, UpstreamUnavailableError
from agentic_observability.models import OutboxItem
from agentic_observability.outbox.sinks import Sink
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics, correlation, log_fields

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 30  # with backoff capped at 5 min: about two hours of trying
MAX_BACKOFF = 300.0
POLL_SECONDS = 1.0
MIN_QUERY_INTERVAL = 0.05
STORM_QUERY_INTERVAL = 0.5
SAFETY_MULTIPLE = 6


def backoff(attempts: int, base: float = 1.0) -> float:
    return min(base * 2.0 ** min(attempts, 16), MAX_BACKOFF)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Sink],
        metrics: Metrics,
        timeout: float,
        first_backoff: float = 1.0,
        concurrency: int = 32,
        owner: str | None = None,
        lease: float | None = None,
    ) -> None:
        self._first_backoff = first_backoff
        # With replicas on one store, each row taken is claimed for ``owner`` (this replica) with a
        # ``lease`` its heartbeat renews: no other replica delivers it unless this one dies.
        self._owner, self._lease = owner, lease
        self._store = store
        self._sinks = dict(sinks)
        self._metrics = metrics
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # One delivery at a time per (incident, sink) "lane", many lanes at once: a lane waiting on
        # a slow or rate-limited receiver never holds up the others.
        self._in_flight: dict[tuple[str, str], int] = {}
        self.under_pressure: Callable[[], bool] = lambda: False  # set to the workers' storm signal
        # With replicas: is this outbox row still this replica's claim? Asked just before delivering.
        self.confirm: Callable[[int], Awaitable[bool]] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._unrecorded: dict[int, str | None] = {}  # delivered, but the store failed to record it
        self._held: dict[tuple[str, str], float] = {}  # lanes paused after a store failure, until
        self._store_pause: dict[tuple[str, str], float] = {}

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._wake.set()  # deliver whatever was pending before a restart
        self._task = asyncio.create_task(self._loop(), name="outbox")

    async def stop(self, deadline: float) -> None:
        """Take no new actions; let deliveries in flight finish for up to ``deadline`` seconds (a
        delivery cut off mid-request might reach the receiver without being recorded, and go twice)."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.gather(self._task, return_exceptions=True)
        if not self._deliveries:
            return
        _, late = await asyncio.wait(set(self._deliveries), timeout=deadline)
        if late:
            log.warning(
                "%d outbox deliveries still in flight at shutdown; they resume after restart", len(late)
            )
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            if self._stopping:
                break
            try:
                await self.start_due()
                # Wakes come with every finished job and delivery; one outbox query per interval is
                # enough. During an alert storm intake comes first: query less often.
                await asyncio.sleep(STORM_QUERY_INTERVAL if self.under_pressure() else MIN_QUERY_INTERVAL)
            except Exception:
                self._metrics.errors.labels("outbox").inc()
                log.exception("outbox dispatch failed, will retry")
                await asyncio.sleep(POLL_SECONDS)

    async def start_due(self) -> int:
        """Start delivering every action due now whose lane is free; returns how many started."""
        busy = list(self._in_flight.values())
        if self._owner is None:
            items = await self._store.due_actions(time.time(), exclude=busy)
        else:
            items = await self._store.due_actions(
                time.time(), exclude=busy, owner=self._owner, lease=self._lease
            )
        now = time.monotonic()
        for item in items:
            lane = (item.incident_id, item.sink)
            if lane in self._in_flight or self._held.get(lane, 0.0) > now:
                continue
            self._in_flight[lane] = item.id
            task = asyncio.create_task(self._deliver_in_lane(item, lane))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return len(items)

    async def _deliver_in_lane(self, item: OutboxItem, lane: tuple[str, str]) -> None:
        try:
            await self._deliver(item)
            self._store_pause.pop(lane, None)
            self._held.pop(lane, None)
        except Exception as exc:
            # The store could not record the outcome (a full disk): hold the lane and try again
            # later; a delivery that went out is remembered, so the retry only records it.
            pause = self._store_pause[lane] = min(2 * self._store_pause.get(lane, 0.5), 60.0)
            self._held[lane] = time.monotonic() + pause
            self._metrics.errors.labels("outbox").inc()
            log.error("could not record delivery to %s (%s); retrying in %.0f s", item.sink, exc, pause)
            asyncio.get_running_loop().call_later(pause, self._wake.set)
        finally:
            self._in_flight.pop(lane, None)
            self._wake.set()  # the lane's next action may be due now

    async def _deliver(self, item: OutboxItem) -> None:
        sink = self._sinks.get(item.sink)
        if item.id in self._unrecorded:  # it went out before the store failed: only record it now
            await self._record(item, self._unrecorded[item.id])
            return
        with correlation(item.incident_id):
            if sink is None:
                await self._give_up(item, f"sink {item.sink!r} is no longer configured")
                return
            wait_turn = getattr(sink, "wait_turn", None)
            if wait_turn is not None:
                await wait_turn(item)  # a receiver's rate limit, waited outside the delivery slots
            async with self._slots:
                if self.confirm is not None and not await self.confirm(item.id):
                    return  # another replica took the row over (this one's heartbeat ran late): theirs
                try:
                    # Each adapter times its own requests out; this outer bound is a safety net that
                    # also covers waiting for a receiver's rate limit, hence the generous multiple.
                    ref = await asyncio.wait_for(sink.deliver(item), self._timeout * SAFETY_MULTIPLE)
                except DeliveryError as exc:
                    await (
                        self._give_up(item, str(exc))
                        if exc.permanent
                        else self._retry(item, str(exc), exc.retry_after)
                    )
                    return
                except (UpstreamUnavailableError, TimeoutError) as exc:
                    await self._retry(item, str(exc) or "timed out", None)
                    return
                except Exception as exc:  # an adapter bug must not stop the dispatcher
                    log.exception("delivery to %s raised unexpectedly", item.sink)
                    await self._retry(item, f"{type(exc).__name__}: {exc}", None)
                    return
            self._unrecorded[item.id] = ref
            await self._record(item, ref)

    async def _record(self, item: OutboxItem, ref: str | None) -> None:
        await self._store.action_delivered(item, ref)
        self._unrecorded.pop(item.id, None)
        self._metrics.deliveries.labels(item.sink, "delivered").inc()
        self._metrics.delivery_latency.labels(item.sink).observe(max(time.time() - item.created_at, 0.0))

    async def _retry(self, item: OutboxItem, error: str, retry_after: float | None) -> None:
        if item.attempts + 1 >= MAX_ATTEMPTS:
            await self._give_up(item, f"gave up after {MAX_ATTEMPTS} attempts: {error}")
            return
        wait = max(retry_after or 0.0, backoff(item.attempts, self._first_backoff))
        self._metrics.deliveries.labels(item.sink, "retry").inc()
        log.warning(
            "delivery failed, will retry",
            extra=log_fields(sink=item.sink, action=item.action, error=error, retry_in=round(wait, 1)),
        )
        await self._store.action_failed(item, error, time.time() + wait)
        asyncio.get_running_loop().call_later(wait, self._wake.set)

    async def _give_up(self, item: OutboxItem, error: str) -> None:
        self._metrics.deliveries.labels(item.sink, "failed").inc()
        log.error("delivery given up", extra=log_fields(sink=item.sink, action=item.action, error=error))
        await self._store.action_failed(item, error, None)
