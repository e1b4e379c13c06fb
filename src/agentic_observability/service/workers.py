"""Background work, off the request path.

* the ingest loop turns committed inbox rows into incident changes and pipeline jobs;
* N pipeline workers run ``pipeline.run()`` per job. Jobs are sharded by incident id, so the jobs of
  one incident run in order (analyze before resolve) while different incidents run in parallel.

During an alert storm, intake comes first: while webhook deliveries keep arriving, the ingest loop
coalesces them into larger transactions and the pipeline is held to ``storm_jobs_per_second``, so
acknowledging alerts stays fast; analysis catches up as soon as the storm eases.

On start, everything the store still has pending (inbox rows, unfinished jobs) is resumed: an alert
acknowledged before a crash is processed after the restart. With several replicas on one store, each
job is claimed with a lease (``service/replica.py``): jobs this replica's intake creates are its own,
the rest (queued outside intake, or left by a replica that died) come from the replica's heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from aiolimiter import AsyncLimiter

from agentic_observability import pipeline
from agentic_observability.errors import StoreError
from agentic_observability.models import Action, Incident
from agentic_observability.outbox.plan import ActSettings, plan_reinvestigated
from agentic_observability.pipeline.ports import PipelineDeps
from agentic_observability.pipeline.reason import bare_report
from agentic_observability.service.correlation import (
    RECHECK_SECONDS,
    Correlator,
    Joined,
    TakenOver,
    with_timeline,
)
from agentic_observability.service.replica import Replica
from agentic_observability.store import Job, Store
from agentic_observability.telemetry import Metrics, correlation, log_fields

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
INGEST_POLL_SECONDS = 1.0  # safety net: the webhook wakes the loop at once; this catches anything missed
STORM_WINDOW_SECONDS = 0.05  # a delivery within this window means intake is busy
STORM_COALESCE_SECONDS = 0.05  # during a storm, ingest this often, in bigger transactions
REINVESTIGATE = "reinvestigate"  # a job someone asked for (Slack's Re-investigate): see Store.queue_job
# how a job's run ended: its report committed; finished with nothing to write; to run again later;
# left to the replica that took it over meanwhile
Outcome = Literal["written", "finished", "wait", "left"]


@dataclass
class Parked:
    """An incident's job that runs again later (it looks again for an earlier group's analysis, or
    backs off after a failure), and the incident's later jobs held until it is done."""

    job_id: int
    held: list[Job] = field(default_factory=list)
    again: bool = False  # its latest run parked it once more


class Workers:
    def __init__(
        self,
        store: Store,
        deps: PipelineDeps,
        metrics: Metrics,
        count: int,
        replica: Replica,
        storm_jobs_per_second: float = 10.0,
    ) -> None:
        self._store = store
        self._replica = replica  # its heartbeat claims the jobs intake did not create here
        self._deps = deps
        self._metrics = metrics
        self._queues: list[asyncio.Queue[Job]] = [asyncio.Queue() for _ in range(count)]
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._last_intake = -1.0
        self._storm_limiter = AsyncLimiter(storm_jobs_per_second, 1.0)
        self.on_actions: Callable[[], None] | None = None  # wakes the outbox dispatcher
        self.correlator: Correlator | None = None  # one incident per fault; None: every group alone
        self._parked: dict[str, Parked] = {}  # by incident: jobs run in order, a resolve after its analyze

    @property
    def act_settings(self) -> ActSettings:
        """How actions are planned (the API's split and merge plan theirs the same way)."""
        return self._deps.act

    def wake(self) -> None:
        """Called on every committed delivery: new work, and a sign of intake pressure."""
        self._last_intake = asyncio.get_running_loop().time()
        self._wake.set()

    @property
    def under_pressure(self) -> bool:
        return asyncio.get_running_loop().time() - self._last_intake < STORM_WINDOW_SECONDS

    async def start(self) -> None:
        """Resume what is pending: the replica's heartbeat claims the jobs (hand it ``enqueue_all``
        before it starts); this drains the inbox."""
        self._wake.set()  # drain inbox rows left from before a restart
        self._tasks.append(asyncio.create_task(self._ingest_loop(), name="ingest"))
        for index, queue in enumerate(self._queues):
            self._tasks.append(asyncio.create_task(self._worker(queue), name=f"pipeline-{index}"))

    async def stop(self, deadline: float) -> None:
        """Let queued work finish until ``deadline`` seconds pass; what is left stays pending in the store."""
        ingest = self._tasks[0] if self._tasks else None
        if ingest is not None:
            ingest.cancel()
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        # A bounded drain; polling keeps the workers simple.
        while loop.time() < until and not self.idle:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    @property
    def idle(self) -> bool:
        return not self._busy and all(q.empty() for q in self._queues)

    def _enqueue(self, job: Job) -> None:
        self._queues[int(job.incident_id) % len(self._queues)].put_nowait(job)

    def enqueue_all(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._enqueue(job)

    def run_soon(self, job: Job) -> None:
        """A job queued in the store outside intake (a re-investigation): run it on its incident's
        shard, after that incident's earlier jobs. It is in the store already, so a restart resumes it;
        whichever replica claims it first runs it (this one's heartbeat is woken)."""
        self._replica.wake()

    async def _ingest_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INGEST_POLL_SECONDS)
            self._wake.clear()
            if self.under_pressure:
                await asyncio.sleep(STORM_COALESCE_SECONDS)  # let a storm's deliveries pile into one batch
            try:
                await self._ingest_all()
            except StoreError as exc:
                self._metrics.errors.labels("ingest").inc()
                log.error("ingest failed, will retry: %s", exc)
            except Exception:
                self._metrics.errors.labels("ingest").inc()
                log.exception("ingest failed unexpectedly, will retry")
                await asyncio.sleep(INGEST_POLL_SECONDS)

    async def _ingest_all(self) -> None:
        more = True
        while more:
            # the jobs it creates are this replica's
            jobs, more = await self._store.ingest_pending(owner=self._replica.id, lease=self._replica.lease)
            for job in jobs:
                if job.kind == "analyze":
                    self._metrics.incidents_opened.labels(job.source).inc()
                self._enqueue(job)

    @property
    def alive(self) -> bool:
        """Every loop still runs (readiness turns 503 otherwise)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def _worker(self, queue: asyncio.Queue[Job]) -> None:
        while True:
            job = await queue.get()
            parked = self._parked.get(job.incident_id)
            if parked is not None and parked.job_id != job.id:
                parked.held.append(job)  # behind its incident's earlier job, which runs again soon
                continue
            if self.under_pressure:
                await self._storm_limiter.acquire()
            self._busy += 1
            try:
                if parked is not None:
                    parked.again = False
                await self._run_until_recorded(job)
            finally:
                self._busy -= 1
            if parked is not None and not parked.again:  # done: the held jobs go, in their order
                del self._parked[job.incident_id]
                self.enqueue_all(parked.held)

    def _run_again(self, job: Job, delay: float, retry: Job) -> None:
        """Run ``retry`` (``job`` once more) after ``delay``; the incident's jobs that come meanwhile
        wait behind it (``_worker``), so a resolve never overtakes the analysis it follows."""
        parked = self._parked.get(job.incident_id)
        if parked is not None and parked.job_id == job.id:
            parked.again = True
        else:
            self._parked[job.incident_id] = Parked(job.id)
        asyncio.get_running_loop().call_later(delay, self._enqueue, retry)

    async def _run_until_recorded(self, job: Job) -> None:
        """Run a job; while the store cannot read or record it (a full disk, a locked file), wait and
        run it again here. Retrying in place keeps this shard's order: an incident's resolve never
        overtakes its analyze. The job stays pending in the store all along."""
        delay = 0.5
        while True:
            try:
                await self._run_job(job)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.errors.labels("worker").inc()
                delay = min(2 * delay, 60.0)
                log.exception("job %d could not be recorded, retrying in %.0f s", job.id, delay)
                await asyncio.sleep(delay)

    async def _still_mine(self, job: Job) -> bool:
        """With replicas: the job is still this one's claim (renewed), not taken over meanwhile."""
        mine = await self._replica.confirm("job", job.id)
        if not mine and self.correlator is not None:
            self.correlator.forget(job)  # were it waiting to look again, the new owner decides now
        return mine

    async def _run_job(self, job: Job) -> None:
        if not await self._still_mine(job):
            return
        with correlation(job.incident_id):
            incident = await self._store.get_incident(job.incident_id)
            if incident is None:
                await self._store.finish_job(job.id, error="incident vanished")
                return
            started = time.perf_counter()
            try:
                outcome = await self._complete(job, incident)
            except (asyncio.CancelledError, StoreError):
                raise  # shutdown, or the store is failing: the job stays pending (see _worker)
            except Exception as exc:
                await self._failed(job, exc)
                return
            if outcome == "written":  # not when it waits to run again, or was left to another replica
                seconds = round(time.perf_counter() - started, 3)
                log.info("report written", extra=log_fields(job=job.kind, seconds=seconds))

    async def _complete(self, job: Job, incident: Incident) -> Outcome:
        """Analyse, correlate and commit one job."""
        fault = self.correlator
        subject = fault.subject(incident) if fault else incident
        if job.kind == REINVESTIGATE:
            return await self._reinvestigate(job, incident, subject)
        # a group waiting for an earlier one's analysis keeps its own report: no re-analysis per look
        held = fault.held_report(job) if fault else None
        stored = held or (await pipeline.run(subject, self._deps)).to_dict()
        if not await self._still_mine(job):  # taken over during the analysis (a model call can be long):
            return "left"  # the new owner reports it; a join or a resolve below would commit it twice
        if fault:
            try:
                correlated = await self._correlate(fault, job, incident, stored)
            except TakenOver:  # during the correlator's own analysis: the new owner commits it
                return "left"
            if correlated is not None:
                return correlated
        if job.kind == "analyze" and incident.parent_id is not None:
            actions: list[Action] = []  # merged by hand before its analysis: the root spoke for it
        else:
            actions = pipeline.actions_for(subject, stored, job.kind, self._deps)
        if not await self._still_mine(job):  # taken over while it ran: the other replica's report stands
            return "left"
        await self._store.complete_job(job.id, incident.id, stored, actions)
        self._actions_queued(actions)
        return "written"

    async def _correlate(
        self, fault: Correlator, job: Job, incident: Incident, stored: dict[str, Any]
    ) -> Outcome | None:
        """A group's join to its fault, or a fault member's resolve, committed by the correlator, or a
        look again later ("wait"); None: neither, the job completes on its own."""
        mine = partial(self._still_mine, job)
        if job.kind == "analyze" and incident.parent_id is None and not incident.members:
            with self._deps.stage_timer("correlate"):
                outcome = await fault.try_join(job, incident, stored, mine)
            if isinstance(outcome, Joined):
                self._actions_queued(outcome.actions)
                return "written"
            if outcome.wait_for is not None:
                self._run_again(job, RECHECK_SECONDS, job)
                return "wait"
        if job.kind == "resolve" and (incident.parent_id or incident.members):
            self._actions_queued(await fault.resolved(job, incident, stored, mine))
            return "written"
        return None

    async def _reinvestigate(self, job: Job, incident: Incident, subject: Incident) -> Outcome:
        """Analyse again, as someone asked: the report is replaced, and where the incident still fires
        its parent message and annotation show the new one and its thread gets the investigation."""
        if incident.status != "firing":  # resolved meanwhile: its final report (and memory's) stands
            await self._store.finish_job(job.id)
            return "finished"
        stored = (await pipeline.run(subject, self._deps)).to_dict()
        if incident.members:
            stored = with_timeline(subject, stored)
        actions = plan_reinvestigated(incident, stored, f"{REINVESTIGATE}:{job.id}", self._deps.act)
        if not await self._still_mine(job):  # taken over while it ran: theirs now
            return "left"
        await self._store.complete_job(job.id, incident.id, stored, actions)
        self._actions_queued(actions)
        return "written"

    def _actions_queued(self, actions: list[Action]) -> None:
        if actions and self.on_actions is not None:
            self.on_actions()

    async def _failed(self, job: Job, exc: Exception) -> None:
        self._metrics.errors.labels("pipeline").inc()
        last = job.attempts + 1 >= MAX_ATTEMPTS
        log.exception("pipeline failed (attempt %d of %d)", job.attempts + 1, MAX_ATTEMPTS)
        # a re-investigation that keeps failing keeps the report it would have replaced
        if last and job.kind != REINVESTIGATE and await self._complete_bare(job, exc):
            return
        await self._store.finish_job(job.id, error=f"{type(exc).__name__}: {exc}", give_up=last)
        if not last:
            retry = Job(job.id, job.incident_id, job.kind, job.attempts + 1)
            self._run_again(job, min(2.0**job.attempts, 60.0), retry)

    async def _complete_bare(self, job: Job, exc: Exception) -> bool:
        """The last attempt failed: send the incident's bare facts and why, so the on-call still
        hears of it. False when even that cannot be planned (then the job is given up, logged)."""
        incident = await self._store.get_incident(job.incident_id)
        if incident is None:
            return False
        why = f"Analysis failed {MAX_ATTEMPTS} times ({type(exc).__name__}: {exc})"[:300]
        stored = bare_report(incident, time.time(), why).to_dict()
        try:
            actions = pipeline.actions_for(incident, stored, job.kind, self._deps)
        except Exception:
            log.exception("even the bare report could not be planned; job %d is given up", job.id)
            return False
        if not await self._still_mine(job):  # taken over while it ran: theirs now
            return True
        await self._store.complete_job(job.id, incident.id, stored, actions)
        if actions and self.on_actions is not None:
            self.on_actions()
        return True
