"""One incident per fault (issue 16), as the sinks hear it: pure tests of ``plan_member_change``,
``plan_merged_away``, the members in an incident's view and in its Slack parent, and the memory
record of a whole fault. Fast, so ``make mutation`` runs them (tests/test_correlation.py covers the
same end to end, too slowly for that).

A member's join, resolution or split follows the root: a reply in the root's Slack thread, the
root's parent message updated with the member list, a line in the file sink; never a second page or
a second Grafana region. Keys carry the member's id, so each happens once however often its job runs.
"""

from __future__ import annotations

from typing import Any

from agentic_observability.config import ActionsConfig, GrafanaConfig, RouteConfig
from agentic_observability.models import Action, Alert, Incident, Member
from agentic_observability.outbox import messages
from agentic_observability.outbox.plan import (
    ActSettings,
    plan_actions,
    plan_member_change,
    plan_merged_away,
    remember_action,
)
from tests.fakes import slack_refusal

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
_EVERY_SINK = frozenset({"grafana", "slack", "pagerduty", "file", "memory"})
_NOTE = "ShopFrontEndSlow fired 10 s after CartsCpuSaturated, downstream of carts."


def _alert(name: str, service: str, team: str, starts: float) -> Alert:
    return Alert(
        status="firing",
        labels={"alertname": name, "service": service, "team": team, "severity": "critical"},
        annotations={},
        starts_at=starts,
        ends_at=None,
        generator_url="",
        fingerprint=name,
    )


_ROOT_ALERT = _alert("CartsCpuSaturated", "carts", "shop", T0)
_MEMBER_ALERT = _alert("ShopFrontEndSlow", "front-end", "web", T0 + 10)
_ROOT_REPORT: dict[str, Any] = {
    "summary": "carts is saturated",
    "reasoner": "rules",
    "facts": {"alertname": "CartsCpuSaturated", "severity": "critical"},
}


def _root(report: dict[str, Any] | None = _ROOT_REPORT) -> Incident:
    """Incident 1 (carts, team shop) with incident 2 (front-end, team web) as its member."""
    member = Member(
        "2",
        "ShopFrontEndSlow",
        "alertmanager",
        "g2",
        "firing",
        T0 + 10,
        None,
        {"by": "correlation"},
        (_MEMBER_ALERT,),
    )
    return Incident(
        id="1",
        group_key="g1",
        source="alertmanager",
        status="firing",
        title="CartsCpuSaturated: cpu high",  # not the alert name: the parent's header takes the report's
        labels={"alertname": "CartsCpuSaturated"},
        started_at=T0,
        resolved_at=None,
        alerts=(_ROOT_ALERT,),
        report=report,
        members=(member,),
    )


def _member() -> Incident:
    return Incident(
        id="2",
        group_key="g2",
        source="alertmanager",
        status="firing",
        title="ShopFrontEndSlow",
        labels={"alertname": "ShopFrontEndSlow"},
        started_at=T0 + 10,
        resolved_at=None,
        alerts=(_MEMBER_ALERT,),
        parent_id="1",
    )


def _settings(
    enabled: frozenset[str] = _EVERY_SINK, routes: tuple[RouteConfig, ...] = (), **kw: Any
) -> ActSettings:
    actions = ActionsConfig(grafana=GrafanaConfig(dashboard_uid="dash", panel_id=3), routes=routes)
    return ActSettings(enabled=enabled, actions=actions, **kw)


_ROOT_VIEW = {
    "id": "1",
    "title": "CartsCpuSaturated: cpu high",
    "status": "firing",
    "service": "carts",  # from its first alert's labels
    "started_at": "2026-01-01T00:00:00Z",
    "members": ["ShopFrontEndSlow (firing, since 00:00:10 UTC)"],
}
_ROOT_URL = "https://obs.example/api/v1/incidents/1"


def _reply(heading: str, body: str) -> dict[str, Any]:
    return {
        "text": f"{heading}: {body}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{heading}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        ],
    }


# --- plan_member_change ---------------------------------------------------------------------------


def test_a_member_joining_is_a_reply_and_an_update_in_the_roots_thread_and_a_file_line() -> None:
    actions = plan_member_change(
        _root(), _member(), "member", _NOTE, _settings(public_url="https://obs.example/")
    )
    parent = messages.slack_parent(_ROOT_VIEW, _ROOT_REPORT, _ROOT_URL)
    assert actions == [
        Action("1", "slack", "reply:member:2", _reply("Also firing: ShopFrontEndSlow", _NOTE)),
        Action("1", "slack", "update:member:2", parent),
        Action("1", "file", "member:2", {"incident": _ROOT_VIEW, "kind": "member", "summary": _NOTE}),
    ]  # no Grafana region, no page, nothing remembered: the fault already has them
    assert parent["blocks"][0]["text"]["text"] == "[FIRING] CartsCpuSaturated"  # the root's report
    assert parent["blocks"][-3] == {  # then the links, then the buttons
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*Also in this incident*\n• ShopFrontEndSlow (firing, since 00:00:10 UTC)",
        },
    }
    assert parent["blocks"][-2]["elements"][0]["text"] == f"<{_ROOT_URL}|Incident report>"


def test_each_change_has_its_heading_and_its_keys() -> None:
    settings = _settings(frozenset({"slack", "file"}))
    cases = {
        "member-resolved": "Resolved: ShopFrontEndSlow",
        "split": "Split off: ShopFrontEndSlow",
        "renamed": "ShopFrontEndSlow",  # an unknown change is headed by the member's title alone
    }
    for what, heading in cases.items():
        actions = plan_member_change(_root(), _member(), what, "why", settings)
        assert [(a.incident_id, a.sink, a.action) for a in actions] == [
            ("1", "slack", f"reply:{what}:2"),
            ("1", "slack", f"update:{what}:2"),
            ("1", "file", f"{what}:2"),
        ]
        assert actions[0].payload == _reply(heading, "why")
        assert actions[1].payload == messages.slack_parent(_ROOT_VIEW, _ROOT_REPORT, None)
        assert actions[2].payload == {"incident": _ROOT_VIEW, "kind": what, "summary": "why"}


def test_a_change_is_routed_by_the_roots_labels_not_the_members() -> None:
    shop_slack = RouteConfig(sink="slack", matchers=("team=shop",))
    web_file = RouteConfig(sink="file", matchers=("team=web",))
    actions = plan_member_change(
        _root(), _member(), "member", _NOTE, _settings(routes=(shop_slack, web_file))
    )
    assert [(a.sink, a.action) for a in actions] == [
        ("slack", "reply:member:2"),
        ("slack", "update:member:2"),
    ]
    web_slack = RouteConfig(sink="slack", matchers=("team=web",))
    shop_file = RouteConfig(sink="file", matchers=("team=shop",))
    actions = plan_member_change(
        _root(), _member(), "member", _NOTE, _settings(routes=(web_slack, shop_file))
    )
    assert [(a.sink, a.action) for a in actions] == [("file", "member:2")]
    assert plan_member_change(_root(), _member(), "member", _NOTE, _settings(frozenset({"grafana"}))) == []


def test_a_root_not_analysed_yet_still_gets_its_member_list() -> None:
    actions = plan_member_change(
        _root(report=None), _member(), "member", _NOTE, _settings(frozenset({"slack"}))
    )
    parent = actions[-1].payload
    assert actions[-1].action == "update:member:2"
    assert parent == messages.slack_parent(_ROOT_VIEW, {}, None)
    assert parent["blocks"][0]["text"]["text"] == "[FIRING] CartsCpuSaturated: cpu high"  # the title
    assert parent["blocks"][-2]["text"]["text"].startswith("*Also in this incident*\n• ShopFrontEndSlow")


def test_a_long_note_is_replied_in_order_before_the_parent_is_updated() -> None:
    note = " ".join(["word"] * 2500)  # 12,499 characters: 5 sections, so 2 messages
    actions = plan_member_change(_root(), _member(), "split", note, _settings(frozenset({"slack"})))
    assert [a.action for a in actions] == ["reply:split:2", "reply:split:2:2", "update:split:2"]


# --- plan_merged_away -----------------------------------------------------------------------------


def _other() -> Incident:
    """Incident 3, which paged on its own before it was merged into incident 1 by hand."""
    alert = _alert("CartsLatencyHigh", "carts", "payments", T0 + 30)
    return Incident(
        id="3",
        group_key="g3",
        source="alertmanager",
        status="firing",
        title="CartsLatencyHigh",
        labels={"alertname": "CartsLatencyHigh"},
        started_at=T0 + 30,
        resolved_at=None,
        alerts=(alert,),
        report={"summary": "latency", "facts": {"alertname": "CartsLatencyHigh", "severity": "warning"}},
    )


def test_a_merged_incident_says_so_in_its_own_thread_and_resolves_its_own_page() -> None:
    settings = _settings(public_url="https://obs.example", install_id="inst")
    actions = plan_merged_away(_other(), _root(), settings)
    note = "Merged by hand into incident 1 (CartsCpuSaturated: cpu high); follow it there."
    assert actions == [
        Action("3", "slack", "reply:merged:1", _reply("Merged", note)),
        Action(
            "3",
            "pagerduty",
            "resolve",
            {
                "event_action": "resolve",
                "dedup_key": "agentic-obs-inst-3",  # the key its own trigger went out with
                "payload": {
                    "summary": "CartsLatencyHigh: resolved",
                    "source": "carts",
                    "severity": "warning",
                    "component": "carts",
                    "group": "CartsLatencyHigh",
                },
            },
        ),
    ]  # no Grafana region ended, no file line, nothing remembered: the fault lives on as incident 1


def test_a_merged_incident_is_routed_by_its_own_labels() -> None:
    routes = (
        RouteConfig(sink="slack", matchers=("team=shop",)),  # the root's team: not this one's
        RouteConfig(sink="pagerduty", matchers=("team=payments",)),
    )
    actions = plan_merged_away(_other(), _root(), _settings(routes=routes))
    assert [(a.incident_id, a.sink, a.action) for a in actions] == [("3", "pagerduty", "resolve")]
    routes = (RouteConfig(sink="slack", matchers=("team=payments",)),)
    actions = plan_merged_away(_other(), _root(), _settings(frozenset({"slack"}), routes=routes))
    assert [(a.incident_id, a.sink, a.action) for a in actions] == [("3", "slack", "reply:merged:1")]


def test_a_merged_incident_without_a_report_still_resolves_its_page() -> None:
    other = Incident(**{**_other().__dict__, "report": None})
    (action,) = plan_merged_away(other, _root(), _settings(frozenset({"pagerduty"})))
    assert action.payload["dedup_key"] == "agentic-obs-3"
    assert action.payload["payload"]["severity"] == "warning"  # no facts: PagerDuty's default


# --- the fault's view, parent and memory ----------------------------------------------------------


def test_the_view_lists_each_member_with_its_status_and_start() -> None:
    (action,) = plan_actions(_root(), _ROOT_REPORT, "analyze", _settings(frozenset({"file"})))
    assert action.payload["incident"] == _ROOT_VIEW
    alone = Incident(**{**_root().__dict__, "members": ()})
    (action,) = plan_actions(alone, _ROOT_REPORT, "analyze", _settings(frozenset({"file"})))
    assert "members" not in action.payload["incident"]


def test_the_parent_lists_members_escaped_one_a_line() -> None:
    view = {**_ROOT_VIEW, "members": ["a <!channel> & b", "c"]}
    parent = messages.slack_parent(view, {}, None)
    assert (
        parent["blocks"][-2]["text"]["text"] == "*Also in this incident*\n• a &lt;!channel&gt; &amp; b\n• c"
    )
    without = messages.slack_parent({**view, "members": []}, {}, None)
    assert [b["type"] for b in without["blocks"]] == ["header", "section", "section", "actions"]


def test_the_member_list_is_capped_and_the_parent_stays_within_its_budget() -> None:
    huge = "x" * 3000
    view = {
        "id": "1",
        "title": "t" + huge,
        "status": "firing",
        "service": "s" + huge,
        "started_at": "2026-01-01T00:00:00Z",
        "members": [f"member {n} {huge}" for n in range(100)],
    }
    evidence = {
        "signal": "cpu" + huge,
        "baseline": 0.1,
        "incident": 0.9,
        "deviation": 12.0,
        "explore_url": "https://prom.example/graph?g0.expr=" + "y" * 700,
    }
    report = {
        "facts": {
            "alertname": "A" + huge,
            "severity": "critical" + huge,
            "runbook_url": "https://rb/" + "r" * 700,
        },
        "hypotheses": [{"entity": "db" + huge, "evidence": [evidence]}],
    }
    parent = messages.slack_parent(view, report, "https://obs.example/api/v1/incidents/1")
    members = parent["blocks"][3]["text"]["text"]
    assert len(members) == messages.SLACK_MEMBERS_LIMIT and members.endswith("…")
    assert members.startswith("*Also in this incident*\n• member 0 xxx")
    texts = [parent["blocks"][0]["text"]["text"], *(f["text"] for f in parent["blocks"][1]["fields"])]
    texts += [parent["blocks"][2]["text"]["text"], members, parent["blocks"][4]["elements"][0]["text"]]
    assert sum(map(len, texts)) <= messages.SLACK_MESSAGE_BUDGET
    assert slack_refusal(parent) is None
    exact = "*Also in this incident*\n• " + "m" * (messages.SLACK_MEMBERS_LIMIT - 26)
    fits = messages.slack_parent({**view, "members": ["m" * (messages.SLACK_MEMBERS_LIMIT - 26)]}, {}, None)
    assert fits["blocks"][-2]["text"]["text"] == exact  # exactly the limit: not cut (the buttons follow)


def test_a_fault_is_remembered_with_every_alert_it_fired() -> None:
    action = remember_action(_root(), _ROOT_REPORT, "service", "remember")
    assert action == Action("1", "memory", "remember", action.payload)
    assert action.payload["alertnames"] == ["CartsCpuSaturated", "ShopFrontEndSlow"]
    assert action.payload["service"] == "carts"
    (planned,) = plan_actions(
        Incident(**{**_root().__dict__, "status": "resolved", "resolved_at": T0 + 600}),
        _ROOT_REPORT,
        "resolve",
        _settings(frozenset({"memory"})),
    )
    assert planned.payload["alertnames"] == ["CartsCpuSaturated", "ShopFrontEndSlow"]
