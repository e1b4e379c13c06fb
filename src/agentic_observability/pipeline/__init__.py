"""The incident pipeline: one module per stage and a straight-line ``run()``.

investigate (evidence from the alert's own PromQL, root-cause ranking over the configured signals)
-> recall (similar past incidents from memory) -> reason (rules, or a language model with the rules
report as fallback). The act stage (act.py) turns the report into outbox actions; the caller commits
them together with the report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agentic_observability.models import Action, Incident, Report
from agentic_observability.pipeline import act, investigate, reason, recall
from agentic_observability.pipeline.ports import MetricsSource, PipelineDeps

__all__ = ["MetricsSource", "PipelineDeps", "actions_for", "run"]


def actions_for(incident: Incident, report: Mapping[str, Any], kind: str, deps: PipelineDeps) -> list[Action]:
    """The outbox actions a finished job's report (as stored) calls for; committed together with it."""
    with deps.stage_timer("act"):
        return act.plan_actions(incident, report, kind, deps.act)


async def run(incident: Incident, deps: PipelineDeps, now: float | None = None) -> Report:
    """Analyse one incident end to end and return its report. Never raises for a dependency outage:
    the report says what could not be checked instead."""
    moment = time.time() if now is None else now
    source = investigate.with_explore_links(deps.metrics, deps.grafana_url)
    with deps.stage_timer("investigate"):
        evidence = await investigate.alert_evidence(
            incident, source, moment, deps.investigation.evidence_window
        )
        hypotheses, problems = await investigate.root_cause_hypotheses(
            incident, source, deps.investigation, moment
        )
    with deps.stage_timer("recall"):
        similar, memory_note = await recall.similar_incidents(incident, hypotheses, deps)
    rules = reason.rules_report(
        incident,
        evidence,
        hypotheses,
        problems,
        moment,
        similar,
        unavailable=[memory_note] if memory_note else [],
    )
    with deps.stage_timer("reason"):
        return await reason.reason(rules, incident, deps)
