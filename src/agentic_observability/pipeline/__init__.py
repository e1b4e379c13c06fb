"""The incident pipeline: one module per stage and a straight-line ``run()``.

investigate (evidence from the alert's own PromQL, root-cause ranking over the configured signals)
-> recall (similar past incidents from memory) -> reason (rules, or a language model with the rules
report as fallback). The act stage (act.py) turns the report into outbox actions, planned per sink in
``outbox/plan.py``; the caller commits them together with the report.
"""

from __future__ import annotations

import time

from agentic_observability.models import Incident, Report
from agentic_observability.pipeline import investigate, reason, recall
from agentic_observability.pipeline.act import actions_for
from agentic_observability.pipeline.ports import MetricsSource, PipelineDeps

__all__ = ["MetricsSource", "PipelineDeps", "actions_for", "run"]


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
