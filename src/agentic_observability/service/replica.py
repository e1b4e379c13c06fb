"""This replica among the others on one store: its id, the leases it holds, the loop that keeps them.

Every replica runs the same loops; the store decides who does what. A job or an outbox row is claimed
with a lease when it is taken (``Store.claim_jobs``, ``ingest_pending``, ``due_actions``); a watch
or a singleton loop (change polling, retention) is a named lease (``Store.hold_leases``). The
heartbeat here renews all of this replica's leases every third of ``server.lease``, takes the named
leases that are free or whose holder stopped renewing, up to its fair share (the names over the live
replicas, counted by their presence leases, so watches spread over the replicas), and claims the jobs
nobody holds: new ones queued outside intake and those of a replica that died. So a replica that is
SIGKILLed loses its work to the others within two lease periods; one that stops gracefully releases
it at once.

With one replica (SQLite) the same loop runs and holds everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Literal

from agentic_observability.store import Job, Store
from agentic_observability.telemetry import Metrics

log = logging.getLogger(__name__)

BEATS_PER_LEASE = 3
PRESENCE = "replica:"
FORGET_EVERY, FORGOTTEN_AFTER = 100, 3600.0  # beats between sweeps; seconds a dead presence lease stays


def replica_id() -> str:
    """Unique among replicas and restarts: the pod's hostname, the process and a random part."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Replica:
    def __init__(self, store: Store, metrics: Metrics, lease: float, names: Sequence[str] = ()) -> None:
        self.id = replica_id()
        self.lease = lease
        self._store = store
        self._metrics = metrics
        self._names = list(dict.fromkeys(names))
        self._presence = PRESENCE + self.id  # a named lease of its own: how replicas count each other
        self._held: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._beats = 0
        self._last_ok: float | None = None  # monotonic time the last beat finished renewing
        self._draining = False
        self._beating = asyncio.Lock()  # a beat and a drain, one at a time
        self._free_before: set[str] = set()  # the names nobody held at the last beat
        self._extra: set[str] = set()  # names held beyond the share: no other replica wanted them
        self.on_jobs: Callable[[list[Job]], None] | None = None  # the workers' queue
        self.on_held: Callable[[set[str]], None] | None = None  # told whenever the held set changes
        metrics.replica.labels(self.id).set(1)

    def holds(self, name: str) -> bool:
        return name in self._held

    @property
    def held(self) -> set[str]:
        return set(self._held)

    @property
    def alive(self) -> bool:
        return self._task is None or not self._task.done()

    @property
    def lapsed(self) -> bool:
        """Whether this replica's leases may have run out: its last good beat is a lease ago or more.
        Another replica may be doing its work then; it confirms each claim before acting on it."""
        return self._last_ok is None or time.monotonic() - self._last_ok >= self.lease

    def health(self) -> dict[str, object]:
        """Readiness: ok while beats renew; degraded after a failed one; down once a lease has passed
        without a good one (its claims may be another replica's by now)."""
        # alone on the store (SQLite) nobody can have taken its work: a slow store is degraded only
        lapsed = self.lapsed and (self._store.shared or self._last_ok is None)
        status = "down" if lapsed else "degraded" if self._failures or self.lapsed else "ok"
        ago = None if self._last_ok is None else round(time.monotonic() - self._last_ok, 1)
        return {
            "status": status,
            "id": self.id,
            "leases": sorted(self._held),
            "last_renewed_seconds_ago": ago,
        }

    async def confirm(self, kind: Literal["job", "action"], row_id: int) -> bool:
        """Just before acting on a claimed job or outbox row: is it still this replica's (renewed for
        a lease)? False when another replica took it over (this one's heartbeat ran late)."""
        if not self._store.shared:
            return True  # one process on the store: nobody else can have taken it
        confirmed = await self._store.confirm_claim(kind, row_id, self.id, self.lease)
        if not confirmed:
            self._metrics.lease_conflicts.inc()
            log.warning("replica %s: %s %d is another replica's now; leaving it", self.id, kind, row_id)
        return confirmed

    def wake(self) -> None:
        """Claim at once (a job was queued outside intake), not at the next beat."""
        self._wake.set()

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="replica")

    async def drain(self) -> None:
        """Shutting down: claim no new job, give up the named leases now (the watches, change polling
        and retention move to another replica at once) and keep renewing only the work in flight (the
        outbox goes on delivering until it stops)."""
        async with self._beating:  # not between a beat's reading of the leases and its taking them
            self._draining = True
            self._set_held(set())
            try:
                await self._store.release_leases(self.id, named_only=True)
            except Exception as exc:  # they run out on their own within one lease
                log.warning("replica %s could not release its named leases: %s", self.id, exc)

    async def stop(self) -> None:
        """Stop renewing, and give everything up so another replica takes it at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._set_held(set())
        try:
            released = await self._store.release_leases(self.id)
            log.info("replica %s released %d leases", self.id, released)
        except Exception as exc:  # they run out on their own within one lease
            log.warning("replica %s could not release its leases: %s", self.id, exc)

    async def beat(self) -> None:
        """Renew what this replica holds, take the named leases it can, claim the jobs nobody holds.
        Renewing is bounded by a beat's interval (a hung one counts as failed); claiming is not: a
        claim cut off after its commit would be renewed for ever and never handed to the workers."""
        async with self._beating:
            self._beats += 1
            started = time.monotonic()
            async with asyncio.timeout(self.lease / BEATS_PER_LEASE):
                renewing = await self._renew()
            self._last_ok = started  # what it held is renewed from here, a lease on
            if renewing:
                await self._claim()
            if self._beats % FORGET_EVERY == 1:  # the first beat, and now and then
                await self._forget_the_dead()

    async def _renew(self) -> bool:
        """Renew the claims and the named leases; whether to claim more (not while draining)."""
        await self._store.renew_leases(self.id, self.lease)
        if self._draining:
            return False
        live = await self._store.lease_owners()
        wanted = self._fair_share(live)
        held = await self._store.hold_leases(self.id, [self._presence, *wanted], self.lease)
        held.discard(self._presence)
        self._extra &= held
        self._free_before = {n for n in self._names if n not in live}
        # held at the last beat and another's now (not names let go past the share: still this one's)
        lost = {n for n in self._held if live.get(n, (self.id, 0.0))[0] != self.id} - held
        if lost:  # this replica renewed too late
            self._metrics.lease_conflicts.inc(len(lost))
            log.warning("replica %s lost %s to another replica", self.id, ", ".join(sorted(lost)))
        self._set_held(held)
        return True

    async def _forget_the_dead(self) -> None:
        """Delete the presence leases of replicas gone for an hour (killed, never stopped): they
        count for nothing once run out, but would stay in the table for ever."""
        forgotten = await self._store.forget_leases(PRESENCE, FORGOTTEN_AFTER)
        if forgotten:
            log.info("replica %s forgot %d replicas gone for an hour or more", self.id, forgotten)

    async def _claim(self) -> None:
        jobs = await self._store.claim_jobs(self.id, self.lease)
        taken = [j for j in jobs if j.taken_from is not None]
        if taken:
            self._metrics.takeovers.labels("job").inc(len(taken))
            owners = ", ".join(sorted({str(j.taken_from) for j in taken}))
            log.warning("replica %s took over %d jobs from %s", self.id, len(taken), owners)
        if jobs and self.on_jobs is not None:
            self.on_jobs(jobs)

    def _fair_share(self, live: dict[str, tuple[str, float]]) -> list[str]:
        """The named leases to hold: what this replica holds, up to its share (the names over the live
        replicas, each present through its ``replica:<id>`` lease), and free ones up to it. Past its
        share (a replica joined), the rest is left to run out for the others to take."""
        replicas = {n for n in live if n.startswith(PRESENCE)} | {self._presence}
        share = math.ceil(len(self._names) / len(replicas))
        held = [n for n in self._names if live.get(n, ("", 0.0))[0] == self.id]
        extra = [n for n in held if n in self._extra]
        mine = [n for n in held if n not in self._extra][:share]
        free = [n for n in self._names if n not in live]
        chosen = mine + free[: max(share - len(mine), 0)]
        # a name free at two beats in a row is one no other replica wants (it does not know it: a
        # rolling deploy that added a watch): taken beyond the share, and kept, rather than left unpolled
        spare = [n for n in free if n in self._free_before and n not in chosen]
        self._extra = {*extra, *spare}
        return chosen + extra + spare

    def _set_held(self, held: set[str]) -> None:
        gained = held - self._held
        if gained and self._beats > 1:  # at the first beat what is free is simply taken, not taken over
            self._metrics.takeovers.labels("lease").inc(len(gained))
        for name in gained:
            log.info("replica %s holds %s", self.id, name)
        changed = held != self._held
        self._held = held
        for name in self._names:
            self._metrics.leases_held.labels(name).set(1 if name in held else 0)
        if changed and self.on_held is not None:
            self.on_held(set(held))

    async def _run(self) -> None:
        interval = self.lease / BEATS_PER_LEASE
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.beat()
                self._failures = 0
            except Exception as exc:
                self._failures += 1
                self._metrics.errors.labels("replica").inc()
                reason = str(exc) or f"{type(exc).__name__} (took longer than {interval:g}s)"
                log.error(
                    "replica %s could not renew its leases (%d in a row): %s", self.id, self._failures, reason
                )
                # its named leases have run out: others may hold them (alone on the store, nobody can)
                if self._store.shared and self.lapsed:
                    self._set_held(set())
