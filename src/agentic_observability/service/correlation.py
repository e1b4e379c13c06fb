"""The correlation stage in the workers: one incident per fault (issue 16).

After an ``analyze`` job's report, the group either joins an open incident that shares its fault
(rules in ``pipeline/correlate.py``) or stays its own. Joining commits, in one transaction with the
job: the group's link to its root and why, the root's report re-analysed over every member's alerts,
and the root's actions (a reply in its thread, its parent message updated), never a new page. On
``resolve``, a member or a root speaks for the whole fault: the fault's resolve actions go out once,
when its last member resolves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentic_observability import pipeline
from agentic_observability.config import CallEdge, CorrelationConfig
from agentic_observability.models import Action, Incident
from agentic_observability.outbox.plan import plan_actions, plan_member_change
from agentic_observability.pipeline.correlate import Decision, clock, decide, timeline
from agentic_observability.pipeline.ports import PipelineDeps
from agentic_observability.store import Job, Store

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0  # how often a group waiting for an earlier one's analysis looks again
StillMine = Callable[[], Awaitable[bool]]  # is the job still this replica's claim (service/replica.py)


class TakenOver(Exception):
    """Another replica took the job over while it was analysed (a model call can be long): the join
    or resolve is theirs to commit, not this replica's as well."""


async def _always_mine() -> bool:
    return True


@dataclass(frozen=True)
class Joined:
    root: str
    record: dict[str, Any]
    root_report: dict[str, Any]
    actions: list[Action]


class Correlator:
    def __init__(
        self, store: Store, deps: PipelineDeps, settings: CorrelationConfig, calls: Sequence[CallEdge]
    ) -> None:
        self._store = store
        self._deps = deps
        self._settings = settings
        self._calls = tuple(calls)
        self._entity = deps.investigation.entity_label
        # jobs waiting for an earlier group's analysis: since when, and their own report (kept, so
        # each look again costs no re-analysis)
        self._waiting: dict[int, tuple[float, dict[str, Any]]] = {}
        # Deciding and committing a join happen under one lock, across replicas (``Store.mutex``): two
        # groups of one fault analysed at once must not both see the other as "not yet an incident"
        # and both stay alone.

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    def subject(self, incident: Incident) -> Incident:
        """What the pipeline analyses: a root with members is the whole fault, every alert of it."""
        return replace(incident, alerts=incident.every_alert) if incident.members else incident

    async def try_join(
        self, job: Job, incident: Incident, report: dict[str, Any], still_mine: StillMine = _always_mine
    ) -> Joined | Decision:
        """Commit the join and return it; or the decision not to (``wait_for`` set: look again later).
        ``TakenOver`` when the job is no longer this replica's by the time of the commit."""
        async with self._store.mutex("correlation"):
            decision = await self._decide(job, incident, report)
            if decision.wait_for is None:
                self._waiting.pop(job.id, None)
            if decision.root is None:
                return decision
            root = await self._store.get_incident(decision.root)
            if root is None:
                return Decision(None, f"incident {decision.root} vanished")
            joined = await self._joined(incident, report, root, decision)  # the root analysed again
            await self._commit(
                still_mine,
                job.id,
                incident.id,
                report,
                joined.actions,
                joined.root,
                joined.record,
                {joined.root: joined.root_report},
            )
        log.info("incident %s joined incident %s: %s", incident.id, root.id, decision.reason)
        return joined

    async def _decide(self, job: Job, incident: Incident, report: dict[str, Any]) -> Decision:
        if not report.get("hypotheses"):  # nothing to match on: no need to look at open incidents
            return decide(incident, report, (), self._settings, self._calls, self._entity)
        window = self._settings.window
        candidates = await self._store.correlation_candidates(
            incident.id, incident.started_at - window, incident.started_at + window
        )
        decision = decide(incident, report, candidates, self._settings, self._calls, self._entity)
        if decision.wait_for is None:
            return decision
        since, _ = self._waiting.setdefault(job.id, (time.monotonic(), report))
        if time.monotonic() - since < self._settings.wait:
            return decision
        log.warning("gave up waiting for incident %s's analysis; deciding without it", decision.wait_for)
        ready = [c for c in candidates if c.report is not None]
        return decide(incident, report, ready, self._settings, self._calls, self._entity)

    async def _joined(
        self, incident: Incident, report: dict[str, Any], root: Incident, decision: Decision
    ) -> Joined:
        record = decision.record("correlation", time.time())
        member = incident.as_member(record)
        family = replace(root, members=(*root.members, member))
        root_report = await self._reanalyse(family)
        family = replace(family, report=root_report)
        note = f"{incident.source} group since {clock(incident.started_at)}: {decision.reason}"
        actions = plan_member_change(family, incident, "member", note, self._deps.act)
        return Joined(root.id, record, root_report, actions)

    async def _reanalyse(self, family: Incident) -> dict[str, Any]:
        """The root's report over every member's alerts, with the order they fired in."""
        return with_timeline(family, (await pipeline.run(self.subject(family), self._deps)).to_dict())

    async def resolved(
        self, job: Job, incident: Incident, report: dict[str, Any], still_mine: StillMine = _always_mine
    ) -> list[Action]:
        """Complete a resolve job of a group that is part of a fault with several groups: the fault's
        resolve actions (and its root's final report) once its last group resolved, else a note in
        its thread. Returns the actions queued; ``TakenOver`` as ``try_join``."""
        root = await self._store.get_incident(incident.parent_id) if incident.parent_id else incident
        if root is None:  # the root was pruned: nothing left to speak for
            await self._commit(still_mine, job.id, incident.id, report)
            return []
        if root is incident:  # a root's report covers the whole fault, in the order it fired
            report = with_timeline(root, report)
        if root.status == "firing":
            own = [root.title] if any(a.status == "firing" for a in root.alerts) else []
            firing = own + [m.title for m in root.members if m.status == "firing"]
            note = "Still firing: " + ", ".join(firing)
            actions = plan_member_change(root, incident, "member-resolved", note, self._deps.act)
            await self._commit(still_mine, job.id, incident.id, report, actions)
            return actions
        final = report if root is incident else await self._reanalyse(root)
        whole = replace(self.subject(root), report=final)
        actions = plan_actions(whole, final, "resolve", self._deps.act)
        others = {} if root is incident else {root.id: final}
        await self._commit(still_mine, job.id, incident.id, report, actions, other_reports=others)
        return actions

    async def _commit(self, still_mine: StillMine, *args: Any, **kwargs: Any) -> None:
        """``Store.complete_job``, if the job is still this replica's: checked right before, after
        whatever analysis (a model call, maybe long) came first; ``TakenOver`` if not."""
        if not await still_mine():
            raise TakenOver
        await self._store.complete_job(*args, **kwargs)

    def forget(self, job: Job) -> None:
        """The job is no longer this replica's: its wait (since when, its report) goes with it."""
        self._waiting.pop(job.id, None)

    def waiting(self, job: Job) -> bool:
        return job.id in self._waiting

    def held_report(self, job: Job) -> dict[str, Any] | None:
        """The report of a job that is waiting for an earlier group's analysis."""
        held = self._waiting.get(job.id)
        return None if held is None else held[1]


def with_timeline(family: Incident, report: dict[str, Any]) -> dict[str, Any]:
    """The report, its summary opened by the order the fault's alerts fired in."""
    order = timeline(family)
    return {**report, "summary": f"{order}\n{report.get('summary', '')}"} if order else report
