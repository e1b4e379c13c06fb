"""What each sink is told about an incident: one planning entry per sink in ``PLANNERS``. Pure; the
dispatcher delivers (exactly once per dedup key) and records what each sink gave back.

analyze -> Grafana annotation, Slack parent (+ thread replies: the full investigation, "seen before"
when memory recalled something, and the chart when the report has one), PagerDuty trigger, a line in
the file sink;
resolve -> annotation end, Slack parent updated + a resolution reply, PagerDuty resolve, and the
incident remembered. Nothing here reads the model's answer to decide *whether* to act: routing is
config over the alert's own labels, so prompt-injected text cannot trigger an action.

A new sink is an adapter in ``integrations/``, one entry in ``PLANNERS`` and one in ``sinks.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from agentic_observability.config import ActionsConfig, RouteConfig, parse_matcher, redact_url
from agentic_observability.memory.records import past_incident
from agentic_observability.models import Action, Incident, iso_time
from agentic_observability.outbox import messages
from agentic_observability.readable import format_time


@dataclass(frozen=True)
class ActSettings:
    enabled: frozenset[str] = frozenset()  # sinks that are configured (and "memory" when memory is on)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    public_url: str | None = None
    entity_label: str = "service"
    # The store's install id (``Store.install_id``): incident ids restart at 1 in every store, so the
    # PagerDuty dedup key and the Grafana tag say ``<install>-<id>``. Empty (planning without a
    # store) keeps the bare id.
    install_id: str = ""
    # The API token, when the API needs one: chart links carry a signature made with it (see
    # messages.chart_signature), so PagerDuty and a browser can open the chart without the token.
    link_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class Planned:
    """What a planner sees: the incident, its report and the job kind (``analyze`` or ``resolve``)."""

    incident: Incident
    view: dict[str, Any]  # id, title, status, service, started_at: what every message shows
    report: Mapping[str, Any]
    kind: str
    settings: ActSettings
    url: str | None  # the incident in the API, when server.public_url is set


def _grafana(p: Planned) -> list[Action]:
    grafana = p.settings.actions.grafana
    body = {
        "dashboardUID": grafana.dashboard_uid,
        "panelId": grafana.panel_id,
        "time": int(_onset(p.report, p.incident.started_at) * 1000),
        "tags": messages.grafana_tags(p.view, p.report, p.settings.install_id),
        "text": messages.grafana_text(p.view, p.report, p.url),
    }
    if p.kind == "resolve":
        body["timeEnd"] = int((p.incident.resolved_at or p.incident.started_at) * 1000)
    return [Action(p.incident.id, "grafana", "open" if p.kind == "analyze" else "resolve", body)]


def _parent(p: Planned) -> dict[str, Any]:
    """The incident's one Slack parent message, as ``p`` shows it."""
    return messages.slack_parent(p.view, p.report, p.url, p.settings.install_id)


def _slack(p: Planned) -> list[Action]:
    i, report = p.incident.id, p.report
    parent = _parent(p)
    summary = str(report.get("summary") or "")
    if p.kind == "analyze":
        heading = f"Investigation ({report.get('reasoner', 'rules')} reasoner)"
        planned = [Action(i, "slack", "open", parent), *_slack_replies(i, "investigation", heading, summary)]
        similar = report.get("similar_incidents") or []
        if similar:
            planned += _slack_replies(i, "recurrence", "Seen before", messages.recurrence_text(similar))
        return planned + _chart_upload(p)
    resolved = p.incident.resolved_at
    heading = (
        f"Resolved at {format_time(resolved, with_date=True) if resolved is not None else 'an unknown time'}"
    )
    return [Action(i, "slack", "update:resolve", parent), *_slack_replies(i, "resolve", heading, summary)]


def _slack_replies(incident_id: str, what: str, heading: str, body: str) -> list[Action]:
    """One outbox action per message of a long reply (``reply:<what>``, then ``reply:<what>:2`` …),
    queued in order and so delivered in order: each message is recorded, retried and looked for after
    a crash on its own, so a failure part-way never posts the parts that went a second time, and each
    waits its turn at the channel's rate inside its own delivery timeout."""
    parts = messages.slack_replies(heading, body)
    return [
        Action(incident_id, "slack", f"reply:{what}" + (f":{n}" if n > 1 else ""), part)
        for n, part in enumerate(parts, 1)
    ]


def _chart_upload(p: Planned) -> list[Action]:
    """The chart into the thread, last: the lane delivers in order, so an upload waiting on a retry
    never holds up the words. Drawn at delivery from the data carried here (planning stays pure)."""
    chart = p.report.get("chart")
    if not chart:
        return []
    about = _charted(chart)
    payload = {
        "chart": chart,
        "title": f"Incident {p.incident.id}: {p.incident.title}"[:250],
        # mrkdwn, and label values are anyone's text: escaped, so none can mention @channel
        "comment": messages.slack_escape(
            f"Chart: {about}. The incident is shaded, the onset dashed, the alert a solid line."
        ),
        "alt_text": f"Time series of {about} around incident {p.incident.id}: baseline, then incident.",
    }
    return [Action(p.incident.id, "slack", "upload:chart", payload)]


def _charted(chart: Mapping[str, Any]) -> str:
    """What the chart shows, in words: "the alert's value, carts cpu, orders latency"."""
    shown: dict[str, None] = {}
    for series in chart.get("series") or []:
        if series.get("role") == "hypothesis":
            shown[f"{series.get('entity')} {series.get('signal')}"] = None
        else:
            shown["the alert's value"] = None
    return ", ".join(shown) or "the incident"


def _pagerduty(p: Planned) -> list[Action]:
    action = "trigger" if p.kind == "analyze" else "resolve"
    return [
        Action(
            p.incident.id,
            "pagerduty",
            action,
            messages.pagerduty_event(p.view, p.report, action, p.url, install_id=p.settings.install_id),
        )
    ]


def _file(p: Planned) -> list[Action]:
    summary = {
        "incident": p.view,
        "kind": p.kind,
        "summary": p.report.get("summary", ""),
        "reasoner": p.report.get("reasoner"),
    }
    proposed = [str(r.get("does")) for r in p.report.get("remediation") or [] if p.kind == "analyze"]
    if proposed:
        summary["proposed"] = proposed
    return [Action(p.incident.id, "file", p.kind, summary)]


def _remediation(p: Planned) -> list[Action]:
    """Proposed actions the catalogue lets run without approval for this incident (``auto``, a listed
    severity): queued with the analysis. The proposals were matched by config over the alert's labels
    and the ranked cause (remediation/catalogue.py), never by the model. Guardrails apply at the run."""
    if p.kind != "analyze":
        return []
    at = float(p.report.get("generated_at") or p.incident.started_at)  # fixed: a replan is the same run
    return [
        remediation_run(p.incident.id, proposal, f"auto-{p.incident.id}-{proposal['action']}", at, "auto")
        for proposal in p.report.get("remediation") or []
        if proposal.get("auto")
    ]


def remediation_run(incident_id: str, proposal: Mapping[str, Any], key: str, at: float, by: str) -> Action:
    """The outbox action that runs a proposal (its dict) under ``key``, its idempotency key (one per
    approval; Store.queue_remediation lets only one run of an entry be pending or done per incident).
    ``at`` fixes what it stamps (restartedAt)."""
    payload = {"proposal": dict(proposal), "key": key, "at": at, "by": by}
    return Action(incident_id, "remediation", f"run:{proposal['action']}:{key}", payload)


def _memory(p: Planned) -> list[Action]:
    if p.kind != "resolve":
        return []
    return [remember_action(p.incident, p.report, p.settings.entity_label, "remember")]


# One entry per sink, in the order their actions are planned. Memory is not routed by labels:
# every resolved incident is remembered when memory is on; nor is remediation, whose catalogue
# entries carry their own matchers.
PLANNERS: dict[str, Callable[[Planned], list[Action]]] = {
    "grafana": _grafana,
    "slack": _slack,
    "pagerduty": _pagerduty,
    "file": _file,
    "memory": _memory,
    "remediation": _remediation,
}
UNROUTED = frozenset({"memory", "remediation"})


def plan_actions(
    incident: Incident, report: Mapping[str, Any], kind: str, settings: ActSettings
) -> list[Action]:
    planned = _planned(incident, report, kind, settings)
    actions: list[Action] = []
    for sink in routed_sinks(incident_labels(incident), settings):
        actions.extend(PLANNERS[sink](planned))
    return actions


def _planned(incident: Incident, report: Mapping[str, Any], kind: str, settings: ActSettings) -> Planned:
    view = _view(incident, incident_labels(incident), settings.entity_label)
    base = redact_url(settings.public_url).rstrip("/") if settings.public_url else None  # shown: no userinfo
    url = f"{base}/api/v1/incidents/{incident.id}" if base else None
    if url and settings.link_key and report.get("chart"):
        signature = messages.chart_signature(settings.link_key, incident.id)
        report = {**report, messages.CHART_LINK: f"{url}/chart.png?sig={signature}"}
    return Planned(incident, view, report, kind, settings, url)


def slack_view(
    incident: Incident, settings: ActSettings
) -> tuple[dict[str, Any], Mapping[str, Any], str | None]:
    """What Slack messages planned outside the act stage show of ``incident`` (its parent updated after
    a button, a slash command's answer): its view, its report (with the signed chart link) and URL."""
    planned = _planned(incident, incident.report or {}, "analyze", settings)
    return planned.view, planned.report, planned.url


# -- one incident per fault: a member joins, resolves or leaves (issue 16) ---------------------------
# These follow the root, not the group: a reply in the root's Slack thread and its parent message
# updated with the member list; never a second page or a second Grafana region. Keys carry the
# member's id, so each happens once however often its job is retried.


def plan_member_change(
    root: Incident, member: Incident, what: str, note: str, settings: ActSettings
) -> list[Action]:
    """``what`` happened to ``member`` of ``root`` (the whole fault, as the store reads it):
    ``member`` (it joined), ``member-resolved`` or ``split``; ``note`` says why or what now."""
    planned = _planned(root, root.report or {}, "analyze", settings)
    key = f"{what}:{member.id}"
    heading = {
        "member": f"Also firing: {member.title}",
        "member-resolved": f"Resolved: {member.title}",
        "split": f"Split off: {member.title}",
    }.get(what, member.title)
    actions: list[Action] = []
    for sink in routed_sinks(incident_labels(root), settings):
        if sink == "slack":
            parent = _parent(planned)
            actions += [
                *_slack_replies(root.id, key, heading, note),
                Action(root.id, "slack", f"update:{key}", parent),
            ]
        elif sink == "file":
            actions.append(
                Action(root.id, "file", key, {"incident": planned.view, "kind": what, "summary": note})
            )
    return actions


def plan_feedback(
    incident: Incident, said: Mapping[str, Any], key: str, settings: ActSettings, root: Incident | None = None
) -> list[Action]:
    """Feedback was given on ``incident`` (which carries it now): its Slack parent is re-rendered to
    show it and the thread hears who said what. Queued in the commit that stores the feedback, so both
    go exactly once whatever fails after it. ``key`` is unique per feedback. Nothing before the
    incident's first analysis: its parent, when posted, already shows the feedback. A member of a fault
    (``root``: the fault's root) has no Slack message of its own: the root's thread hears it."""
    line = messages.feedback_line(said, room=messages.SLACK_TEXT_LIMIT - 200) or ""
    if root is not None:
        about = messages.slack_escape(f"{incident.title} (incident {incident.id})")
        return plan_thread_note(root, f"feedback:{key}", f":memo: On {about}: {line}", settings)
    if incident.report is None or not _to_slack(incident, settings):
        return []
    planned = _planned(incident, incident.report, "analyze", settings)
    parent = _parent(planned)
    return [
        Action(incident.id, "slack", f"update:feedback:{key}", parent),
        Action(incident.id, "slack", f"reply:feedback:{key}", messages.slack_note(f":memo: {line}")),
    ]


def plan_thread_note(incident: Incident, key: str, text: str, settings: ActSettings) -> list[Action]:
    """One line in the incident's Slack thread (mrkdwn, made safe by the caller), when it goes to Slack."""
    if not _to_slack(incident, settings):
        return []
    return [Action(incident.id, "slack", f"reply:{key}", messages.slack_note(text))]


def _to_slack(incident: Incident, settings: ActSettings) -> bool:
    return "slack" in routed_sinks(incident_labels(incident), settings)


def plan_reinvestigated(
    incident: Incident, report: Mapping[str, Any], key: str, settings: ActSettings
) -> list[Action]:
    """A re-investigation someone asked for finished: the parent and the Grafana annotation show the new
    report, the thread gets the new investigation. No second page (PagerDuty's incident stands) and
    nothing remembered (that happens when it resolves)."""
    planned = _planned(incident, report, "analyze", settings)
    heading = f"Re-investigation ({report.get('reasoner', 'rules')} reasoner)"
    actions: list[Action] = []
    for sink in routed_sinks(incident_labels(incident), settings):
        if sink == "slack":
            parent = _parent(planned)
            actions += [
                Action(incident.id, "slack", f"update:{key}", parent),
                *_slack_replies(incident.id, key, heading, str(report.get("summary") or "")),
            ]
        elif sink == "grafana":
            actions += [replace(a, action=f"update:{key}") for a in _grafana(planned)]
        elif sink == "file":
            actions += [replace(a, action=key) for a in _file(replace(planned, kind="reinvestigate"))]
    return actions


def plan_merged_away(other: Incident, root: Incident, settings: ActSettings) -> list[Action]:
    """``other`` was merged into ``root`` by hand after it had paged on its own: say so in its
    thread and resolve its page (the fault's one page is ``root``'s)."""
    planned = _planned(other, other.report or {}, "resolve", settings)
    note = f"Merged by hand into incident {root.id} ({root.title}); follow it there."
    actions: list[Action] = []
    for sink in routed_sinks(incident_labels(other), settings):
        if sink == "slack":
            actions += _slack_replies(other.id, f"merged:{root.id}", "Merged", note)
        elif sink == "pagerduty":
            actions += _pagerduty(planned)
    return actions


def remember_action(incident: Incident, report: Mapping[str, Any], entity_label: str, key: str) -> Action:
    """The memory record of an incident as an outbox action (feedback re-remembers under a new key)."""
    past = past_incident(
        replace(incident, alerts=incident.every_alert),  # a fault is remembered with all it fired
        report.get("hypotheses") or [],
        entity_label,
        report.get("summary", ""),
        incident.feedback,
    )
    return Action(incident.id, "memory", key, past.to_payload())


def routed_sinks(labels: Mapping[str, str], settings: ActSettings) -> list[str]:
    chosen = []
    for sink in PLANNERS:
        if sink not in settings.enabled:
            continue
        routes = [r for r in settings.actions.routes if r.sink == sink]
        if sink in UNROUTED or not routes or any(_route_matches(r, labels) for r in routes):
            chosen.append(sink)
    return chosen


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


def incident_labels(incident: Incident) -> dict[str, str]:
    """Its first alert's labels under its own (group) labels: what routing and correlation match on."""
    merged: dict[str, str] = {}
    for alert in incident.alerts[:1]:
        merged.update(alert.labels)
    merged.update(incident.labels)
    return merged


def _view(incident: Incident, labels: Mapping[str, str], entity_label: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "service": labels.get(entity_label, ""),
        "started_at": iso_time(incident.started_at),
    }
    if incident.members:
        view["members"] = [
            f"{m.title} ({m.status}, since {format_time(m.started_at)})" for m in incident.members
        ]
    if incident.feedback:  # the parent shows it, so every later update keeps it
        view["feedback"] = dict(incident.feedback)
    return view


def _onset(report: Mapping[str, Any], default: float) -> float:
    """The annotation starts where the change started (the top hypothesis' onset), else at the alert."""
    hypotheses = report.get("hypotheses") or []
    onset = hypotheses[0].get("onset") if hypotheses else None
    if not onset:
        return default
    return min(datetime.fromisoformat(str(onset).replace("Z", "+00:00")).timestamp(), default)
