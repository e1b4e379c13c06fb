"""Reasoning stage.

The rules reasoner is deterministic, needs no model, and writes a complete readable report: the alert
facts, the most likely cause with its evidence, what else was checked, incidents seen before and
next steps (runbook, past resolutions). It is the default, and the fallback for every model failure.

With a language model configured, the model ranks and explains the same evidence; its answer is
schema-checked and grounded (prompting.py), bounded by ``reasoning.timeout``, and any failure falls
back to the rules report, which then says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from agentic_observability.errors import ModelAnswerError, UpstreamError
from agentic_observability.models import (
    Evidence,
    Incident,
    IncidentStatus,
    ModelReply,
    Report,
    SeriesSummary,
    iso_time,
)
from agentic_observability.pipeline import prompting
from agentic_observability.pipeline.ports import PipelineDeps
from agentic_observability.pipeline.promql import incident_expressions, split_threshold
from agentic_observability.readable import (
    describe_change,
    format_date,
    format_duration,
    format_onset,
    format_stored_time,
    format_time,
    format_value,
    hypothesis_onset,
    unit_for,
)


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


def _when(incident: Incident) -> str:
    """When it started and resolved: "Started 09:42:40 UTC (2026-11-30), resolved 09:58:02 UTC,
    after 15 min 22 s"; a resolution on another day names its date too."""
    started = incident.started_at
    text = f"Started {format_time(started)} ({format_date(started)})"
    if incident.resolved_at:
        resolved = incident.resolved_at
        day = f" ({format_date(resolved)})" if format_date(resolved) != format_date(started) else ""
        text += f", resolved {format_time(resolved)}{day}, after {format_duration(resolved - started)}"
    return text


def _describe_series(summary: SeriesSummary, unit: str | None) -> str:
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(summary.labels.items()) if k != "__name__")
    who = f"{{{labels}}}" if labels else "the series"
    return (
        f"{who}: now {format_value(summary.last, unit)}, peak {format_value(summary.maximum, unit)} "
        f"at {format_time(summary.peak_at)}, low {format_value(summary.minimum, unit)}, "
        f"mean {format_value(summary.mean, unit)} over {summary.points} points"
    )


def _describe_evidence(evidence: Evidence, threshold: tuple[str, float] | None) -> list[str]:
    if evidence.error:
        return [f"`{evidence.query}` could not be checked: {evidence.error}"]
    unit = unit_for(evidence.query, None)  # an alert's own query has no configured unit
    rule = f" (rule threshold {threshold[0]} {format_value(threshold[1], unit)})" if threshold else ""
    if not evidence.series:
        return [f"`{evidence.query}` returned no data in the window{rule}"]
    head = f"`{evidence.query}`{rule}, {len(evidence.series)} series:"
    return [head, *("  " + _describe_series(s, unit) for s in evidence.series[:5])]


def _thresholds(expressions: list[str]) -> dict[str, tuple[str, float]]:
    found = {}
    for expr in expressions:
        parts = split_threshold(expr)
        if parts:
            found[parts[0]] = (parts[1], parts[2])
    return found


def _describe_cause(hypothesis: Mapping[str, Any], alert_at: float) -> str:
    """The top hypothesis in a line: "Most likely cause: service carts: latency_p90 51.6 ms → 1.15 s
    (435× its usual spread), from 09:42:57 UTC, 14 s before the alert. Check: <PromQL>"."""
    strongest = hypothesis["evidence"][0]
    onset = hypothesis_onset(hypothesis)
    since = f", from {format_onset(onset, alert_at)}" if onset is not None else ""
    return (
        f"Most likely cause: {hypothesis['entity_label']} {hypothesis['entity']}: "
        f"{describe_change(strongest)}{since}. Check: {strongest['promql']}"
    )


def _describe_hypotheses(
    hypotheses: tuple[Mapping[str, Any], ...], problems: list[str], alert_at: float
) -> list[str]:
    lines = [_describe_cause(hypotheses[0], alert_at)] if hypotheses else []
    others = [f"{h['entity']} ({h['score']:.2f})" for h in hypotheses[1:]]
    if others:
        lines.append("Also checked, less likely: " + ", ".join(others))
    lines.extend(f"Could not check signal {p}" for p in problems)
    return lines


# The change the summary names per entity: of one entity's changes close together (a rollout shows as
# a new generation, a ReplicaSet and an image at once), the one that says most.
_CHANGE_PRIORITY = ("image", "config", "deploy", "rollout", "replicaset", "other")
_SAME_CHANGE = 300.0  # seconds: one entity's changes this close to its latest are one change
MAX_CHANGE_LINES = 3


def change_lines(changes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary's lines on what changed before the onset: "What changed: " and each named change's
    ``line`` (see ``named_changes``)."""
    return [f"What changed: {c['line']}" for c in changes if c.get("line")]


def named_changes(changes: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """``changes`` (the report's), each the summary names given its ``line``: per entity, the cause or
    its callees, newest first, the one that says most of its latest changes: "carts: image v1.4.2 →
    v1.4.3 at 09:41:00 UTC, 2 min before the onset", and its ``line_link`` (its link, else one of the
    same change's other events'). The Slack parent and Grafana quote the same lines and links."""
    by_entity: dict[str, list[int]] = {}
    for index, change in enumerate(changes):
        if change.get("relation") in ("cause", "callee"):
            by_entity.setdefault(str(change["entity"]), []).append(index)
    named: dict[int, dict[str, Any]] = {}
    newest_first = sorted(by_entity.items(), key=lambda item: -max(changes[i]["at_unix"] for i in item[1]))
    for entity, mine in newest_first[:MAX_CHANGE_LINES]:
        latest = max(changes[i]["at_unix"] for i in mine)
        close = [i for i in mine if changes[i]["at_unix"] >= latest - _SAME_CHANGE]
        shown = min(close, key=lambda i: _change_rank(changes[i]))
        # the link people follow: its own, else one of the same change's other events (a CI run's)
        link = next((changes[i]["link"] for i in [shown, *close] if changes[i].get("link")), None)
        named[shown] = {"line": _change_line(entity, changes[shown], len(mine) - 1), "line_link": link}
    return tuple({**c, **named[i]} if i in named else dict(c) for i, c in enumerate(changes))


def _change_rank(change: Mapping[str, Any]) -> tuple[int, float]:
    kind = str(change.get("kind"))
    order = _CHANGE_PRIORITY.index(kind) if kind in _CHANGE_PRIORITY else len(_CHANGE_PRIORITY)
    return order, -float(change["at_unix"])


def _change_line(entity: str, change: Mapping[str, Any], others: int) -> str:
    who = f"{entity} (called by {change['of']})" if change.get("relation") == "callee" else entity
    before = float(change.get("before_onset") or 0.0)
    if abs(before) < 0.5:
        when = "at the onset"
    else:
        when = f"{format_duration(abs(before))} {'before' if before > 0 else 'after'} the onset"
    more = f" (and {others} more change{'s' if others > 1 else ''})" if others else ""
    return f"{who}: {change['summary']} at {format_time(change['at_unix'])}, {when}{more}"


def _describe_similar(similar: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for past in similar:
        cause = past["root_cause"] or "unknown"
        cause += " (confirmed)" if past.get("confirmed") else " (suspected)"
        fixed = f"; what fixed it: {past['resolution']}" if past.get("resolution") else ""
        lines.append(
            f"Seen before: incident {past['id']} on {format_stored_time(past.get('started_at'))}, "
            f"root cause {cause}{fixed} (similarity {past['score']:.2f})"
        )
    return lines


def next_steps(
    facts: Mapping[str, Any], hypotheses: Sequence[Mapping[str, Any]], similar: Sequence[Mapping[str, Any]]
) -> list[str]:
    steps = []
    if facts.get("runbook_url"):
        steps.append(f"Follow the runbook: {facts['runbook_url']}")
    if hypotheses and hypotheses[0].get("evidence"):
        top = hypotheses[0]
        steps.append(f"Confirm {top['entity']}: {top['evidence'][0]['promql']}")
    for past in similar:
        if past.get("resolution"):
            steps.append(f"Incident {past['id']} was fixed by: {past['resolution']}")
    return steps


def rules_report(
    incident: Incident,
    evidence: tuple[Evidence, ...],
    hypotheses: tuple[Mapping[str, Any], ...],
    problems: list[str],
    now: float,
    similar: tuple[Mapping[str, Any], ...] = (),
    note: str = "rules reasoner (default; no language model configured)",
    unavailable: Sequence[str] = (),
    changes: Sequence[Mapping[str, Any]] = (),
) -> Report:
    facts = alert_facts(incident)
    changes = named_changes(changes)
    thresholds = _thresholds(facts["expressions"])  # the URLs were parsed once, for the facts
    state: IncidentStatus = "resolved" if incident.status == "resolved" else "firing"
    headline = f"{facts['alertname']} {state}"
    if facts["summary"]:
        headline += f": {facts['summary']}"
    lines = [headline, _when(incident), *change_lines(changes)]
    lines.extend(_describe_hypotheses(hypotheses, problems, incident.started_at))
    lines.extend(_describe_similar(similar))
    lines.extend(unavailable)
    for item in evidence:
        lines.extend(_describe_evidence(item, thresholds.get(item.query)))
    if not evidence:
        lines.append("No PromQL expression could be recovered from the alerts' generatorURL.")
    steps = next_steps(facts, hypotheses, similar)
    lines.extend(f"Next: {step}" for step in steps)
    return Report(
        summary="\n".join(lines),
        status=state,
        facts=facts,
        evidence=evidence,
        hypotheses=hypotheses,
        reasoner="rules",
        reasoner_note=note,
        generated_at=now,
        similar_incidents=similar,
        next_steps=tuple(steps),
        changes=changes,
    )


def bare_report(incident: Incident, now: float, why: str) -> Report:
    """The last resort when the rules report itself failed: the incident's own facts and why, so
    its actions (the page, the Slack thread) still go out."""
    state: IncidentStatus = "resolved" if incident.status == "resolved" else "firing"
    first = incident.alerts[0] if incident.alerts else None
    facts = {
        "alertname": incident.labels.get("alertname") or (first.name if first else ""),
        "labels": dict(incident.labels),
        "severity": (first.labels.get("severity", "") if first else "")
        or incident.labels.get("severity", ""),
        "started_at": iso_time(incident.started_at),
        "resolved_at": iso_time(incident.resolved_at),
    }
    return Report(
        summary=f"{incident.title} ({state})\n{why}",
        status=state,
        facts=facts,
        evidence=(),
        hypotheses=(),
        reasoner="rules",
        reasoner_note=f"rules reasoner (fallback: {why})",
        generated_at=now,
    )


async def reason(rules: Report, incident: Incident, deps: PipelineDeps) -> Report:
    """The model's report when one is configured and answers well in time; else ``rules``, saying why."""
    if deps.chat is None:
        return rules
    packet = prompting.build_packet(
        {**rules.facts, "status": rules.status},
        rules.hypotheses,
        rules.similar_incidents,
        [line for line in rules.summary.splitlines() if line.startswith("`")],
        prompting.prompt_budget_chars(),
        rules.changes,
        rules.logs,
    )
    timeout = deps.reasoning_timeout
    try:
        async with asyncio.timeout(timeout):
            reply = await deps.chat.chat(prompting.messages_for(packet), prompting.ANSWER_TOKENS)
        grounded = prompting.ground(prompting.parse_answer(reply.text), packet)
    except TimeoutError:
        return _fallback(rules, deps, f"the model did not answer within {timeout:g}s")
    except ModelAnswerError as exc:
        return _fallback(rules, deps, str(exc))
    except UpstreamError as exc:
        return _fallback(rules, deps, f"the model is unavailable: {exc}")
    deps.observe_model("answered", reply, len(grounded.dropped))
    return _model_report(rules, grounded, reply)


def _fallback(rules: Report, deps: PipelineDeps, why: str) -> Report:
    deps.observe_model("fallback", None, 0)
    return replace(rules, reasoner_note=f"rules reasoner (fallback: {why})")


def _model_report(rules: Report, grounded: prompting.GroundedAnswer, reply: ModelReply) -> Report:
    answer = grounded.answer
    chosen = answer.root_cause.service if answer.root_cause else None
    hypotheses = sorted(rules.hypotheses, key=lambda h: h["entity"] != chosen)  # stable: rest keep order
    lines = [answer.summary, *change_lines(rules.changes)]  # a fact the model need not repeat
    if answer.root_cause is not None:
        lines.append(f"Most likely cause: {answer.root_cause.service}. {answer.root_cause.why}")
    steps = [*answer.next_steps, *(s for s in rules.next_steps if s not in answer.next_steps)]
    lines.extend(f"Next: {step}" for step in steps)
    dropped = f"; {len(grounded.dropped)} ungrounded claims dropped" if grounded.dropped else ""
    return replace(
        rules,
        summary="\n".join(lines),
        hypotheses=tuple(hypotheses),
        next_steps=tuple(steps),
        reasoner="llm",
        reasoner_note=f"llm {reply.model} (answered in {reply.seconds:.1f}s{dropped})",
        model={
            "name": reply.model,
            "seconds": round(reply.seconds, 3),
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "dropped_claims": list(grounded.dropped),
            "similar_incident": answer.similar_incident,
        },
    )
