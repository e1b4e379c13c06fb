"""The incident pipeline: one module per stage and a straight-line ``run()``.

investigate (evidence from the alert's own PromQL, root-cause ranking over the configured signals,
the change events before the onset) -> chart (the series behind the alert and the top hypotheses,
kept in the report for its picture) -> recall (similar past incidents from memory) -> reason (rules,
or a language model with the rules report as fallback). The act stage (act.py) turns the report into
outbox actions, planned per sink in ``outbox/plan.py``; the caller commits them together with the
report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

from agentic_observability.models import Incident, Report
from agentic_observability.pipeline import investigate, reason, recall
from agentic_observability.pipeline.act import actions_for
from agentic_observability.pipeline.chart import chart_data
from agentic_observability.pipeline.logs import LogEvidence, LogProbe, grafana_log_links
from agentic_observability.pipeline.ports import MetricsSource, PipelineDeps
from agentic_observability.remediation.catalogue import propose

__all__ = ["MetricsSource", "PipelineDeps", "actions_for", "run"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def run(incident: Incident, deps: PipelineDeps, now: float | None = None) -> Report:
    """Analyse one incident end to end and return its report. Never raises: a dependency outage or a
    failure inside a stage becomes a named problem in the report, and the report still goes out."""
    moment = time.time() if now is None else now
    source = investigate.with_explore_links(deps.metrics, deps.grafana_url)
    failed: list[str] = []
    with deps.stage_timer("investigate"):
        evidence = await _degrade(
            "Alert evidence",
            investigate.alert_evidence(incident, source, moment, deps.investigation.evidence_window),
            (),
            failed,
        )
        probe = _log_probe(incident, deps, moment)
        hypotheses, problems = await _degrade(
            "Root-cause ranking",
            investigate.root_cause_hypotheses(
                incident, source, deps.investigation, moment, deps.changes, probe
            ),
            ((), []),
            failed,
        )
        changes = await _changes(incident, hypotheses, deps, failed)
    # Its own stage: the investigate figures stay comparable, and what the chart costs shows apart.
    with deps.stage_timer("chart"):
        chart = await _degrade(
            "Chart data",
            chart_data(incident, evidence, hypotheses, source, deps.investigation, moment),
            None,
            failed,
        )
    with deps.stage_timer("recall"):
        similar, memory_note = await _degrade(
            "Recall", recall.similar_incidents(incident, hypotheses, deps), ((), None), failed
        )
    unavailable = [*failed, *([memory_note] if memory_note else [])]
    try:
        rules = reason.rules_report(
            incident,
            evidence,
            hypotheses,
            problems,
            moment,
            similar,
            unavailable=unavailable,
            changes=changes,
        )
    except Exception as exc:
        log.exception("the rules report failed; sending the bare facts")
        bare = reason.bare_report(incident, moment, f"The report could not be written ({_name(exc)})")
        return replace(bare, chart=chart)
    logged = probe.result if probe is not None else None
    if logged is not None:  # the model sees the new log templates too
        rules = replace(rules, logs=logged.as_dict())
    with deps.stage_timer("reason"):
        reasoned = replace(await _reasoned(rules, incident, deps), chart=chart)
    reasoned = _with_logs(reasoned, logged)
    return _with_remediation(reasoned, rules, incident, deps)


def _log_probe(incident: Incident, deps: PipelineDeps, now: float) -> LogProbe | None:
    """Loki's evidence for the ranking to ask once the metrics have ranked (None: logs are off)."""
    if deps.logs is None:
        return None
    settings, investigation = deps.logs_settings, deps.investigation
    links = grafana_log_links(deps.grafana_url, settings.grafana_datasource)
    namespace = incident.labels.get("namespace") or next(
        (a.labels["namespace"] for a in incident.alerts if "namespace" in a.labels), None
    )
    return LogProbe(
        deps.logs,
        settings,
        namespace,
        incident.started_at,
        investigation.baseline,
        investigation.after,
        now,
        links,
    )


def _with_logs(report: Report, evidence: LogEvidence | None) -> Report:
    """The report with what the logs say: kept whole in ``report.logs``, and in a few summary lines
    (the error lines of the entities that moved, the new templates, each with its LogQL)."""
    if evidence is None:
        return report
    lines = [_log_line(s) for s in evidence.signals if float(s.get("deviation") or 0) > 0][:3]
    lines += [
        f"- new after the onset in {t['entity']}: {t['template']} "
        f"({t['count']} lines, {t['before']} before). LogQL: {t['logql']}"
        for t in evidence.templates[:3]
    ]
    lines += [f"- not read: {p}" for p in evidence.problems]
    summary = (
        f"{report.summary}\n\nWhat the logs say (Loki):\n" + "\n".join(lines) if lines else report.summary
    )
    return replace(report, summary=summary, logs=evidence.as_dict())


def _log_line(signal: dict[str, Any]) -> str:
    return (
        f"- {signal['entity']}: error-like lines {signal['baseline']:g} → {signal['incident']:g} a minute "
        f"(deviation {float(signal['deviation']):.1f}). LogQL: {signal['logql']}"
    )


async def _changes(
    incident: Incident, hypotheses: tuple[dict[str, Any], ...], deps: PipelineDeps, failed: list[str]
) -> tuple[dict[str, Any], ...]:
    """What changed before the onset (none when no change source is configured)."""
    if deps.changes is None:
        return ()
    found = investigate.changes_for_report(incident, hypotheses, deps.investigation, deps.changes)
    return await _degrade("Change events", found, (), failed)


def _with_remediation(report: Report, rules: Report, incident: Incident, deps: PipelineDeps) -> Report:
    """The catalogue's actions that match the incident and the rules' ranked cause, listed in the
    report for a person to approve. When a model put another cause first, what the catalogue has for
    that cause is listed too, as the model's suggestion, never to run on its own (auto is off for it):
    the model can point at a catalogue entry, not name an action, and never trigger one."""
    if not deps.remediation.enabled or incident.status == "resolved":  # nothing left to fix
        return report
    try:
        entity_label = deps.investigation.entity_label
        matched = [p.to_dict() for p in propose(incident, rules.to_dict(), deps.remediation, entity_label)]
        if report.reasoner == "llm":
            named = {p["action"] for p in matched}
            suggested = propose(incident, report.to_dict(), deps.remediation, entity_label)
            matched += [
                {**p.to_dict(), "auto": False, "suggested_by": "model"}
                for p in suggested
                if p.action not in named
            ]
    except Exception:
        log.exception("matching the remediation catalogue failed; the report goes out without proposals")
        return report
    if not matched:
        return report
    lines = "\n".join(f"- {p['does']}" + _proposal_note(p) for p in matched)
    summary = f"{report.summary}\n\nProposed remediation (approve in Slack):\n{lines}"
    return replace(report, summary=summary, remediation=tuple(matched))


def _proposal_note(proposal: dict[str, object]) -> str:
    if proposal.get("suggested_by") == "model":
        return " (the model's suggestion: it named this cause)"
    return " (runs automatically)" if proposal.get("auto") else ""


async def _reasoned(rules: Report, incident: Incident, deps: PipelineDeps) -> Report:
    try:
        return await reason.reason(rules, incident, deps)
    except Exception as exc:
        log.exception("reasoning failed; the rules report goes out")
        return replace(rules, reasoner_note=f"rules reasoner (fallback: reasoning failed: {_name(exc)})")


async def _degrade(stage: str, work: Awaitable[T], instead: T, failed: list[str]) -> T:
    """Run one stage; an unexpected failure is logged and named in the report instead of raised."""
    try:
        return await work
    except Exception as exc:
        log.exception("%s failed; the report goes out without it", stage)
        failed.append(f"{stage} failed ({_name(exc)}); the report goes out without it.")
        return instead


def _name(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
