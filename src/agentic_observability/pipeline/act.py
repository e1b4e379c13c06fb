"""Act stage: which sinks hear about an incident, and what each is told. Pure planning; the outbox
dispatcher delivers (exactly once per dedup key) and records what each sink gave back.

analyze -> Grafana annotation, Slack parent (+ thread replies: the full investigation, and "seen
before" when memory recalled something), PagerDuty trigger;
resolve -> annotation end, Slack parent updated + a resolution reply, PagerDuty resolve, and the
incident remembered. Nothing here reads the model's answer to decide *whether* to act: routing is
config over the alert's own labels, so prompt-injected text cannot trigger an action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agentic_observability.config import RouteConfig, parse_matcher
from agentic_observability.models import Action, Incident, iso_time
from agentic_observability.pipeline import messages
from agentic_observability.pipeline.ports import ActSettings
from agentic_observability.pipeline.recall import past_incident

SINKS = ("grafana", "slack", "pagerduty", "file")


def _matches(matcher: str, labels: Mapping[str, str]) -> bool:
    name, op, value = parse_matcher(matcher)
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None
    return found if op == "=~" else not found


def _route_matches(route: RouteConfig, labels: Mapping[str, str]) -> bool:
    if route.severities and labels.get("severity", "") not in route.severities:
        return False
    return all(_matches(m, labels) for m in route.matchers)


def routed_sinks(labels: Mapping[str, str], settings: ActSettings) -> list[str]:
    chosen = []
    for sink in SINKS:
        if sink not in settings.enabled:
            continue
        routes = [r for r in settings.actions.routes if r.sink == sink]
        if not routes or any(_route_matches(r, labels) for r in routes):
            chosen.append(sink)
    return chosen


def _labels(incident: Incident) -> dict[str, str]:
    merged: dict[str, str] = {}
    for alert in incident.alerts[:1]:
        merged.update(alert.labels)
    merged.update(incident.labels)
    return merged


def _view(incident: Incident, labels: Mapping[str, str], entity_label: str) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "service": labels.get(entity_label, ""),
        "started_at": iso_time(incident.started_at),
    }


def plan_actions(
    incident: Incident, report: Mapping[str, Any], kind: str, settings: ActSettings
) -> list[Action]:
    labels = _labels(incident)
    view = _view(incident, labels, settings.entity_label)
    url = f"{settings.public_url.rstrip('/')}/api/v1/incidents/{incident.id}" if settings.public_url else None
    planned: list[Action] = []
    for sink in routed_sinks(labels, settings):
        planned.extend(_for_sink(sink, incident, view, report, kind, settings, url))
    if kind == "resolve" and "memory" in settings.enabled:
        past = past_incident(
            incident,
            report.get("hypotheses") or [],
            settings.entity_label,
            report.get("summary", ""),
            incident.feedback,
        )
        planned.append(Action(incident.id, "memory", "remember", past.to_payload()))
    return planned


def _for_sink(
    sink: str,
    incident: Incident,
    view: dict[str, Any],
    report: Mapping[str, Any],
    kind: str,
    settings: ActSettings,
    url: str | None,
) -> list[Action]:
    i = incident.id
    if sink == "grafana":
        grafana = settings.actions.grafana
        body = {
            "dashboardUID": grafana.dashboard_uid,
            "panelId": grafana.panel_id,
            "time": int(_onset(report, incident.started_at) * 1000),
            "tags": messages.grafana_tags(view, report),
            "text": messages.grafana_text(view, report, url),
        }
        if kind == "resolve":
            body["timeEnd"] = int((incident.resolved_at or incident.started_at) * 1000)
        return [Action(i, sink, "open" if kind == "analyze" else "resolve", body)]
    if sink == "slack":
        return _slack_actions(incident, view, report, kind, url)
    if sink == "pagerduty":
        action = "trigger" if kind == "analyze" else "resolve"
        return [Action(i, sink, action, messages.pagerduty_event(view, report, action, url))]
    summary = {
        "incident": view,
        "kind": kind,
        "summary": report.get("summary", ""),
        "reasoner": report.get("reasoner"),
    }
    return [Action(i, "file", kind, summary)]


def _slack_actions(
    incident: Incident, view: dict[str, Any], report: Mapping[str, Any], kind: str, url: str | None
) -> list[Action]:
    i = incident.id
    parent = messages.slack_parent(view, report, url)
    if kind == "analyze":
        heading = f"Investigation ({report.get('reasoner', 'rules')} reasoner)"
        planned = [
            Action(i, "slack", "open", parent),
            Action(
                i, "slack", "reply:investigation", messages.slack_reply(heading, report.get("summary", ""))
            ),
        ]
        similar = report.get("similar_incidents") or []
        if similar:
            body = messages.slack_reply("Seen before", messages.recurrence_text(similar))
            planned.append(Action(i, "slack", "reply:recurrence", body))
        return planned
    resolved = messages.slack_reply(
        f"Resolved at {iso_time(incident.resolved_at)}", report.get("summary", "")
    )
    return [Action(i, "slack", "update:resolve", parent), Action(i, "slack", "reply:resolve", resolved)]


def _onset(report: Mapping[str, Any], default: float) -> float:
    """The annotation starts where the change started (the top hypothesis' onset), else at the alert."""
    hypotheses = report.get("hypotheses") or []
    onset = hypotheses[0].get("onset") if hypotheses else None
    if not onset:
        return default
    return min(datetime.fromisoformat(str(onset).replace("Z", "+00:00")).timestamp(), default)
