"""Reasoning stage. The rules reasoner: deterministic, no model, a complete readable report.

It states only what the evidence shows: the alert facts as Alertmanager sent them, and for each
queried expression, how the value moved over the window (and where the rule's threshold sits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentic_observability.models import Evidence, Incident, IncidentStatus, Report, SeriesSummary, iso_time
from agentic_observability.pipeline.investigate import incident_expressions, split_threshold


def alert_facts(incident: Incident) -> dict[str, Any]:
    firing = [a for a in incident.alerts if a.status == "firing"]
    first = incident.alerts[0] if incident.alerts else None
    annotations: Mapping[str, str] = first.annotations if first else {}
    return {
        "alertname": incident.labels.get("alertname") or (first.name if first else ""),
        "labels": dict(incident.labels),
        "severity": (first.labels.get("severity", "") if first else "")
        or incident.labels.get("severity", ""),
        "summary": annotations.get("summary", ""),
        "description": annotations.get("description", ""),
        "runbook_url": annotations.get("runbook_url", ""),
        "alerts_total": len(incident.alerts),
        "alerts_firing": len(firing),
        "started_at": iso_time(incident.started_at),
        "resolved_at": iso_time(incident.resolved_at),
        "expressions": incident_expressions(incident),
    }


def _describe_series(summary: SeriesSummary) -> str:
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(summary.labels.items()) if k != "__name__")
    who = f"{{{labels}}}" if labels else "the series"
    return (
        f"{who}: now {summary.last:.4g}, peak {summary.maximum:.4g} at {iso_time(summary.peak_at)}, "
        f"low {summary.minimum:.4g}, mean {summary.mean:.4g} over {summary.points} points"
    )


def _describe_evidence(evidence: Evidence, threshold: tuple[str, float] | None) -> list[str]:
    if evidence.error:
        return [f"`{evidence.query}` could not be checked: {evidence.error}"]
    rule = f" (rule threshold {threshold[0]} {threshold[1]:g})" if threshold else ""
    if not evidence.series:
        return [f"`{evidence.query}` returned no data in the window{rule}"]
    head = f"`{evidence.query}`{rule}, {len(evidence.series)} series:"
    return [head, *("  " + _describe_series(s) for s in evidence.series[:5])]


def _thresholds(expressions: list[str]) -> dict[str, tuple[str, float]]:
    found = {}
    for expr in expressions:
        parts = split_threshold(expr)
        if parts:
            found[parts[0]] = (parts[1], parts[2])
    return found


def _describe_cause(hypothesis: Mapping[str, Any]) -> str:
    strongest = hypothesis["evidence"][0]
    since = hypothesis["onset"] or "the incident start"
    return (
        f"Most likely cause: {hypothesis['entity_label']} {hypothesis['entity']}: {strongest['signal']} "
        f"{strongest['baseline']:.4g} -> {strongest['incident']:.4g} "
        f"({strongest['deviation']:.0f}x its usual spread), changing from {since}. "
        f"Check: {strongest['promql']}"
    )


def _describe_hypotheses(hypotheses: tuple[Mapping[str, Any], ...], problems: list[str]) -> list[str]:
    lines = [_describe_cause(hypotheses[0])] if hypotheses else []
    others = [f"{h['entity']} ({h['score']:.2f})" for h in hypotheses[1:]]
    if others:
        lines.append("Also checked, less likely: " + ", ".join(others))
    lines.extend(f"Could not check signal {p}" for p in problems)
    return lines


def rules_report(
    incident: Incident,
    evidence: tuple[Evidence, ...],
    hypotheses: tuple[Mapping[str, Any], ...],
    problems: list[str],
    now: float,
) -> Report:
    facts = alert_facts(incident)
    thresholds = _thresholds(facts["expressions"])  # the URLs were parsed once, for the facts
    state: IncidentStatus = "resolved" if incident.status == "resolved" else "firing"
    headline = f"{facts['alertname']} {state}"
    if facts["summary"]:
        headline += f": {facts['summary']}"
    lines = [
        headline,
        f"Started {facts['started_at']}"
        + (f", resolved {facts['resolved_at']}" if incident.resolved_at else ""),
    ]
    lines.extend(_describe_hypotheses(hypotheses, problems))
    for item in evidence:
        lines.extend(_describe_evidence(item, thresholds.get(item.query)))
    if not evidence:
        lines.append("No PromQL expression could be recovered from the alerts' generatorURL.")
    if facts["runbook_url"]:
        lines.append(f"Runbook: {facts['runbook_url']}")
    return Report(
        summary="\n".join(lines),
        status=state,
        facts=facts,
        evidence=evidence,
        hypotheses=hypotheses,
        reasoner="rules",
        reasoner_note="rules reasoner (default; no language model configured)",
        generated_at=now,
    )
