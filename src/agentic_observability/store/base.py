"""What the rest of the service may ask of durable state: the ``Store`` protocol and its records.

A backend (``sqlite/``, ``postgres/``) satisfies the protocol structurally. The flow it carries: the
webhook commits alerts to the inbox (that commit is what a 202 promises); ``ingest_pending`` turns them
into incident changes and jobs in one transaction (the rules are in ``intake.py``); workers complete
each job together with its report and the actions it plans; the dispatcher delivers the outbox.

Several replicas may share one store (PostgreSQL). Work is then claimed with a lease: a job or outbox
row names its owner (a replica's id) and until when (seconds); the owner renews its leases while it
lives, and once a lease has run out another owner may claim the work. Named leases give a watch shard
or a singleton loop to one owner at a time; ``mutex`` guards a critical section across replicas.
Lease ends are on the store's clock (the database server's for PostgreSQL), so replicas with skewed
clocks still agree on which lease has run out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agentic_observability.models import AcceptedAlert, Action, AuditEntry, Change, Incident, OutboxItem


@dataclass(frozen=True)
class Job:
    """A unit of pipeline work for one incident: ``analyze`` when it opens, ``resolve`` when it ends,
    ``reinvestigate`` when someone asks (``Store.queue_job``)."""

    id: int
    incident_id: str
    kind: str
    attempts: int
    source: str = "alertmanager"
    taken_from: str | None = None  # claim_jobs: the owner whose lease ran out (a replica that died)


@dataclass(frozen=True)
class AcceptResult:
    accepted: int
    duplicates: int


class Store(Protocol):
    @property
    def shared(self) -> bool:
        """Whether other processes may share this store (PostgreSQL: several replicas) and so compete for
        its claims; False for SQLite (one process per file)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers a trivial query now."""
        ...

    def describe(self) -> str:
        """Which database this is, for readiness and logs, never with a password:
        ``sqlite:/var/lib/agentic-obs/agentic-obs.sqlite3``, ``postgres:db:5432/agentic``."""
        ...

    async def install_id(self) -> str:
        """This installation's id: made once per store (12 hex digits of a uuid4), then always the
        same. Incident ids restart at 1 in every store, so whatever a receiver outside it keys by
        (PagerDuty dedup key, Grafana tag, Slack metadata) carries this id too."""
        ...

    # inbox, incidents and jobs
    async def accept(self, alerts: Sequence[AcceptedAlert]) -> AcceptResult: ...

    async def ingest_pending(
        self, limit: int = 1000, *, owner: str | None = None, lease: float | None = None
    ) -> tuple[list[Job], bool]:
        """Apply up to ``limit`` unprocessed inbox rows to incidents, in arrival order per group, in one
        transaction: the jobs created and whether more rows may be waiting. Safe to call from several
        replicas at once (each row is applied once; a group never has two open incidents). With
        ``owner`` and ``lease``, the new jobs are claimed by ``owner`` for ``lease`` seconds.

        ``more`` may be True with no jobs created: the batch was full, or (PostgreSQL) rows wait behind
        an earlier row of their group that another replica is applying. When only such waiting rows
        were found the call pauses briefly (~50 ms) before returning, so a caller looping while
        ``more`` does not spin; it should still bound its loop."""
        ...

    async def pending_jobs(self) -> list[Job]: ...

    async def finish_job(self, job_id: int, error: str | None = None, give_up: bool = True) -> None: ...

    async def complete_job(
        self,
        job_id: int,
        incident_id: str,
        report: dict[str, Any],
        actions: Sequence[Action] = (),
        joins: str | None = None,
        joined: dict[str, Any] | None = None,
        other_reports: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Save the report, queue the actions, mark the job done; with ``joins``, the incident also
        joins that root as one fault (``joined``: why); ``other_reports``: other incidents' new
        reports (the fault's root, re-analysed), all in one transaction."""
        ...

    async def regroup(
        self, incident_id: str, parent_id: str | None, why: dict[str, Any], actions: Sequence[Action] = ()
    ) -> None:
        """A merge (join ``parent_id``) or split (``None``: a root again) by hand, with its actions."""
        ...

    async def correlation_candidates(
        self, incident_id: str, earliest: float, latest: float
    ) -> list[Incident]:
        """Open faults (roots) that started within ``[earliest, latest]``, with reports and members."""
        ...

    async def queue_job(
        self, incident_id: str, kind: str, actions: Sequence[Action] = ()
    ) -> tuple[Job, bool] | None:
        """Queue ``kind`` (``reinvestigate``) for an open incident, with ``actions`` in the same commit;
        an unfinished job of it is returned instead of a second one (the actions dropped). The job and
        whether it is new; None when the incident is not open."""
        ...

    async def save_feedback(
        self, incident_id: str, feedback: dict[str, Any], actions: Sequence[Action] = ()
    ) -> None: ...

    # claims and leases (several replicas on one store)
    async def claim_jobs(self, owner: str, lease: float, limit: int = 100) -> list[Job]:
        """Claim up to ``limit`` unfinished jobs nobody holds (never claimed, or the lease ran out; per
        incident only its oldest unfinished job, so an incident's jobs run in order), ordered by id,
        each now leased to ``owner`` for ``lease`` seconds. Rows locked by a concurrent claim are
        skipped (no job is claimed by two owners). A job taken over from another owner whose lease
        ran out carries that owner in ``taken_from``."""
        ...

    async def renew_leases(self, owner: str, lease: float) -> int:
        """Extend every claim ``owner`` holds on unfinished jobs and pending outbox rows to ``lease``
        seconds from now; how many were renewed. (Named leases are renewed by ``hold_leases``.)"""
        ...

    async def confirm_claim(
        self, kind: Literal["job", "action"], row_id: int, owner: str, lease: float
    ) -> bool:
        """Just before acting on a claimed job (``kind="job"``) or outbox row (``"action"``): atomically,
        if the row is unfinished (a job not done, an action pending) and it is ``owner``'s claim, or
        nobody's, or its lease ran out (store clock), it is now ``owner``'s for ``lease`` seconds from
        now: True. False when another owner holds it with a lease that has not run out, or it is
        finished or gone. A job is only confirmed while no earlier unfinished job of its incident is
        unclaimed or another owner's (its jobs run in order), even one ``owner`` holds: its incident's
        analysis may have been taken over meanwhile. ``owner``'s claim on such a job is let go, so the
        job is handed out again once the earlier one is done."""
        ...

    async def release_leases(self, owner: str, *, named_only: bool = False) -> int:
        """Give up every claim and named lease of ``owner`` (a graceful stop), so another owner takes
        the work at once instead of after the lease; how many were released. With ``named_only``
        only its named leases (a replica draining: its watches move at once while its jobs and
        outbox rows in flight stay claimed until they finish)."""
        ...

    async def hold_leases(self, owner: str, names: Sequence[str], lease: float) -> set[str]:
        """Take each named lease that is free, expired or already ``owner``'s (renewing those) for
        ``lease`` seconds; the names ``owner`` now holds among ``names``."""
        ...

    async def forget_leases(self, prefix: str, ended: float) -> int:
        """Delete the named leases whose names start with ``prefix`` and that ran out more than
        ``ended`` seconds ago (store clock); how many. A replica killed without a stop leaves its
        presence lease behind, one row per crash."""
        ...

    async def lease_owners(self) -> dict[str, tuple[str, float]]:
        """Every named lease that has not run out (on the store's clock): name -> (owner, until). The
        replicas' presence leases among them tell how many replicas share the work."""
        ...

    def mutex(self, name: str) -> AbstractAsyncContextManager[None]:
        """``async with store.mutex(name):`` one holder at a time across every replica of the store
        (the remediation guardrails' check-and-queue, the correlator's decide-and-commit)."""
        ...

    # outbox
    async def due_actions(
        self,
        now: float,
        limit: int = 200,
        exclude: Sequence[int] = (),
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> list[OutboxItem]:
        """Pending actions that may go at ``now``: per incident and sink only the oldest (a reply never
        overtakes its parent), a new incident's first actions first; ``exclude``: ids in flight. With
        ``owner`` and ``lease``: only rows no other owner holds (or whose lease ran out), claimed for
        ``owner`` for ``lease`` seconds (rows a concurrent claim locked are skipped)."""
        ...

    async def action_delivered(self, item: OutboxItem, ref: str | None) -> None: ...

    async def action_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> None: ...

    async def action_refs(self, sink: str, incident_ids: Sequence[str]) -> dict[str, str]:
        """What ``sink`` gave each of these incidents (its reference, e.g. the Slack parent's
        ``<channel>|<ts>``), by incident id."""
        ...

    async def outbox_rows(self, incident_id: str | None = None) -> list[dict[str, Any]]: ...

    # change events (issue 18)
    async def record_changes(self, changes: Sequence[Change]) -> int:
        """Store change events; one already stored under the same dedup key is ignored. How many were new."""
        ...

    async def changes_between(
        self, start: float, end: float, entities: Sequence[str] | None = None
    ) -> list[Change]:
        """Change events in ``[start, end]`` (of ``entities`` when given), oldest first."""
        ...

    # retention
    async def record_audit(
        self, incident_id: str, entries: Sequence[AuditEntry], actions: Sequence[Action] = ()
    ) -> None:
        """Remediation's audit entries with the outbox actions they call for, in one transaction."""
        ...

    async def queue_remediation(
        self, incident_id: str, action: str, entries: Sequence[AuditEntry], actions: Sequence[Action]
    ) -> bool:
        """An approved run of catalogue entry ``action`` (its audit entries and notes with it), unless one
        is pending or ran already for this incident: whether it was queued."""
        ...

    async def audit_log(self, incident_id: str | None = None, key: str | None = None) -> list[AuditEntry]: ...

    async def remediation_runs(self, since: float) -> list[tuple[str, str, float]]:
        """(action, target, when) of the remediations that ran (or failed after their real call) since
        ``since``: guardrails count them."""
        ...

    async def prune(
        self, older_than: float, batch: int, silent_before: float | None = None
    ) -> dict[str, int]:
        """Delete at most ``batch`` resolved incidents untouched since ``older_than`` (and firing ones
        no delivery touched since ``silent_before``, when given) with no pending
        job or action (and all that refers to them), at most ``batch`` old processed inbox rows and at
        most ``batch`` change events that happened before ``older_than``, in one short transaction;
        returns rows deleted per table."""
        ...

    # reads
    async def get_incident(self, incident_id: str) -> Incident | None: ...

    async def list_incidents(self, status: str | None = None, limit: int = 100) -> list[Incident]: ...

    async def open_incidents_by_group(self, source: str) -> dict[str, str]: ...

    async def oldest_pending_job_at(self) -> float | None: ...

    async def counts(self) -> dict[str, int]: ...
