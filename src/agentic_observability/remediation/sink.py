"""Running an approved (or ``auto``) remediation, and checking afterwards whether it helped: two outbox
sinks, so a run is queued in the commit that approves it, survives a restart and goes exactly once.

``remediation`` delivers ``run:<action>``. The outbox delivers at least once (a crash after the action
but before its record sends it again), so a run first reads its own audit entries by key and skips
what it already did; the dry run's planned change (a scale target, the restartedAt stamp) is
recorded before the real call and reused, so a repeat asks for the same end state, which the adapters
then find already done. Guardrails (``min_interval`` per target, ``max_per_hour`` per action) are
checked against the audit log, under a lock, so two incidents' runs cannot both slip under a cap.

``followup`` delivers ``check:<action>``, queued ``follow_up`` after the run (``Action.not_before``): it
reads the top hypothesis' first signal again and says in the thread whether it came back to its
baseline. Its own lane: a pending check never holds up another approved run of the incident.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentic_observability.config import RemediationAction, RemediationConfig
from agentic_observability.errors import DeliveryError, StoreError, UpstreamError
from agentic_observability.models import Action, AuditEntry, Incident, OutboxItem
from agentic_observability.outbox.messages import slack_escape, slack_person
from agentic_observability.outbox.plan import incident_labels
from agentic_observability.readable import format_duration, format_value
from agentic_observability.remediation.catalogue import Proposal
from agentic_observability.remediation.executor import Executor, Outcome
from agentic_observability.remediation.guardrails import allowed, target_key
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics

log = logging.getLogger(__name__)

CHECK = "check"
DONE = frozenset({"ran", "failed", "refused"})  # a run that reached one of these is over
VERDICTS = frozenset({"recovered", "not-recovered"})  # what a follow-up says, once
HOUR = 3600.0
RECOVERED_FRACTION = 0.5  # back within half of the way from the incident's level to the baseline

# (incident, outbox key, mrkdwn text) -> the Slack reply actions for it (outbox.plan.plan_thread_note)
NotePlanner = Callable[[Incident, str, str], list[Action]]


class RemediationSink:
    name = "remediation"

    def __init__(
        self,
        executor: Executor,
        store: Store,
        config: RemediationConfig,
        notes: NotePlanner,
        metrics: Metrics,
    ) -> None:
        self._executor, self._store, self._config = executor, store, config
        self._notes, self._metrics = notes, metrics

    async def deliver(self, item: OutboxItem) -> str | None:
        try:
            await self._run(item)
        except StoreError as exc:
            raise DeliveryError(f"remediation: the store failed: {exc}") from exc
        return None

    async def _run(self, item: OutboxItem) -> None:
        proposal = Proposal.from_dict(item.payload["proposal"])
        key, at, by = str(item.payload["key"]), float(item.payload["at"]), str(item.payload["by"])
        done = await self._store.audit_log(key=key)
        incident = await self._store.get_incident(item.incident_id)
        if incident is None or any(e.event in DONE for e in done):
            return  # pruned since, or done before a crash lost the delivery's record
        run = _Run(incident, proposal, key, by)
        # The whole run under one lock across replicas (``Store.mutex``), its record included: the next
        # run's guardrails see this one.
        async with self._store.mutex("remediation"):
            refusal = await self._refusal(run)
            if refusal is not None:
                await self._finish(run, "refused", refusal, {})
                return
            changes = await self._planned_change(run, at, done)
            if changes is None:
                return
            outcome = await self._executor.run(proposal, key, at, planned=changes)
            detail = {**_outcome_detail(outcome), "attempted": True}  # counts against the caps
            await self._finish(run, "ran" if outcome.ok else "failed", outcome.detail, detail)

    async def _planned_change(
        self, run: _Run, at: float, done: Sequence[AuditEntry]
    ) -> dict[str, Any] | None:
        """What the dry run planned (recorded before the real call, reused by a redelivery so it asks
        for the same end state); None when the dry run failed, and the run is then over."""
        planned = next((e for e in done if e.event == "dry-run"), None)
        if planned is not None and planned.detail.get("ok"):
            return dict(planned.detail.get("changes") or {})
        if planned is not None:  # failed before, and its record of failing was lost: fail now
            await self._finish(run, "failed", f"the dry run failed: {planned.detail.get('text', '')}", {})
            return None
        dry = await self._executor.dry_run(run.proposal, run.key, at)
        await self._record(run, "dry-run", dry.detail, {"changes": dry.changes, "ok": dry.ok})
        if not dry.ok:
            await self._finish(run, "failed", f"the dry run failed: {dry.detail}", {})
            return None
        return dict(dry.changes)

    async def _refusal(self, run: _Run) -> str | None:
        """Why the run may not go now: the entry is gone, ``auto`` no longer holds for this incident,
        the incident resolved meanwhile, or a guardrail (checked against the audit log)."""
        proposal, incident = run.proposal, run.incident
        entry = self._config.action(proposal.action)
        if entry is None:
            return f"{proposal.action} is no longer in the remediation catalogue"
        if run.by == "auto" and not _auto_allowed(entry, incident):
            return f"{proposal.action} may no longer run without approval for this incident"
        if incident.status == "resolved":
            return "the incident resolved before it ran; nothing was done"
        since = time.time() - max(HOUR, entry.min_interval)
        history = await self._store.remediation_runs(since)
        return allowed(proposal, history, time.time(), entry)

    async def _record(self, run: _Run, event: str, text: str, detail: Mapping[str, Any]) -> None:
        entry = _entry(run, event, {"text": text, **detail})
        await self._store.record_audit(run.incident.id, [entry])
        self._metrics.remediations.labels(run.proposal.action, event).inc()

    async def _finish(self, run: _Run, event: str, text: str, detail: Mapping[str, Any]) -> None:
        """The run's last step: audited, said in the thread, and (when it ran) its follow-up queued."""
        entry = _entry(run, event, {"text": text, **detail})
        note = _result_line(run, event, text)
        actions = self._notes(run.incident, f"remediation:{event}:{run.proposal.action}", note)
        if event == "ran":
            actions.append(_check_action(run, self._config.follow_up))
        await self._store.record_audit(run.incident.id, [entry], actions)
        self._metrics.remediations.labels(run.proposal.action, event).inc()
        log.info("remediation %s: %s %s", event, run.proposal.action, text)


def _auto_allowed(entry: RemediationAction, incident: Incident) -> bool:
    """The current catalogue still lets this entry run on its own for this incident's severity."""
    return entry.auto and incident_labels(incident).get("severity", "") in entry.auto_severities


class _Run:
    """One run's identity, shared by every step it records."""

    def __init__(self, incident: Incident, proposal: Proposal, key: str, by: str) -> None:
        self.incident, self.proposal, self.key, self.by = incident, proposal, key, by


def _entry(run: _Run, event: str, detail: Mapping[str, Any]) -> AuditEntry:
    target = target_key(run.proposal)
    return AuditEntry(event, run.proposal.action, run.key, time.time(), run.by, target, detail)


def _outcome_detail(outcome: Outcome) -> dict[str, Any]:
    return {"changes": outcome.changes, "already": outcome.already}


def _result_line(run: _Run, event: str, text: str) -> str:
    who = "automatically" if run.by == "auto" else f"approved by {slack_person(run.by)}"
    mark = {"ran": ":white_check_mark:", "failed": ":x:", "refused": ":no_entry:"}[event]
    verb = {"ran": "Done", "failed": "Failed", "refused": "Not run"}[event]
    return f"{mark} *{verb}:* {slack_escape(run.proposal.does)} ({who}): {slack_escape(text)}"


def _check_action(run: _Run, window: float) -> Action:
    hypotheses = (run.incident.report or {}).get("hypotheses") or []
    evidence = (hypotheses[0].get("evidence") or [None])[0] if hypotheses else None
    payload = {
        "proposal": run.proposal.to_dict(),
        "key": run.key,
        "by": run.by,
        "ran_at": time.time(),
        "window": window,
        "evidence": evidence,
    }
    return Action(
        run.incident.id,
        "followup",
        f"{CHECK}:{run.proposal.action}",
        payload,
        not_before=time.time() + window,
    )


# -- the follow-up ---------------------------------------------------------------------------------------


class FollowUpSink:
    """Whether the signal that made the cause recovered within ``remediation.follow_up`` of the run."""

    name = "followup"

    def __init__(
        self, query: Callable[[str, float], Any], store: Store, notes: NotePlanner, metrics: Metrics
    ) -> None:
        self._query, self._store, self._notes, self._metrics = query, store, notes, metrics

    async def deliver(self, item: OutboxItem) -> str | None:
        payload = item.payload
        incident = await self._store.get_incident(item.incident_id)
        if incident is None:
            return None
        proposal = Proposal.from_dict(payload["proposal"])
        said = await self._store.audit_log(key=str(payload["key"]))
        if any(e.event in VERDICTS for e in said):
            return None  # said before a crash lost the delivery's record
        verdict, text = await self._verdict(incident, payload)
        after = format_duration(float(payload["window"]))
        line = f":stethoscope: *Follow-up* {after} after {slack_escape(proposal.does)}: {slack_escape(text)}"
        actions = self._notes(incident, f"remediation:follow-up:{proposal.action}", line)
        entry = AuditEntry(
            verdict,
            proposal.action,
            str(payload["key"]),
            time.time(),
            str(payload["by"]),
            target_key(proposal),
            {"text": text},
        )
        try:
            await self._store.record_audit(incident.id, [entry], actions)
        except StoreError as exc:
            raise DeliveryError(f"follow-up: the store failed: {exc}") from exc
        self._metrics.remediations.labels(proposal.action, verdict).inc()
        return None

    async def _verdict(self, incident: Incident, payload: Mapping[str, Any]) -> tuple[str, str]:
        if incident.status == "resolved" and incident.resolved_at is not None:
            return "recovered", "the incident resolved (every alert of it ended)."
        evidence = payload.get("evidence")
        if not isinstance(evidence, Mapping) or not evidence.get("promql"):
            return "not-recovered", "still firing, and there is no signal to compare (no ranked evidence)."
        due = float(payload["ran_at"]) + float(payload["window"])  # read then, however late this runs
        try:
            samples = await self._query(str(evidence["promql"]), min(due, time.time()))
        except UpstreamError as exc:
            raise DeliveryError(f"follow-up: Prometheus: {exc}") from exc  # retried: say it when it can
        return recovery(evidence, [s.value for s in samples])


def recovery(evidence: Mapping[str, Any], now_values: Sequence[float]) -> tuple[str, str]:
    """Recovered when the signal is back within half the way from the incident's level to its
    baseline: the verdict and one line saying so with the figures."""
    baseline, during = float(evidence.get("baseline") or 0.0), float(evidence.get("incident") or 0.0)
    unit = evidence.get("unit")
    name = f"{evidence.get('signal', 'the signal')}"
    if not now_values:
        return "not-recovered", f"{name} returns no data now; the incident still fires."
    now = max(now_values, key=lambda v: abs(v - baseline))  # the worst series of it
    shown = (
        f"{name} is {format_value(now, unit)} (baseline {format_value(baseline, unit)}, "
        f"{format_value(during, unit)} during the incident)"
    )
    if abs(now - baseline) <= RECOVERED_FRACTION * abs(during - baseline):
        return "recovered", f"{shown}: recovered."
    return "not-recovered", f"{shown}: not recovered; the incident still fires."
