"""Tests that kill what mutmut's survivors showed untested in the pure core (``make mutation``).

Each states an exact rule of ``store/intake.py``, ``outbox/plan.py`` or ``outbox/messages.py``, so
a changed operator, constant or branch there fails one of them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from agentic_observability.config import ActionsConfig, GrafanaConfig, RouteConfig
from agentic_observability.models import AcceptedAlert, Alert, Incident
from agentic_observability.outbox import messages
from agentic_observability.outbox.plan import ActSettings, plan_actions, remember_action, routed_sinks
from agentic_observability.store.intake import IngestPlanner, NewIncident, PlannedJob, incident_title


def _alert(
    status: str = "firing",
    fp: str = "a",
    ends: float | None = None,
    starts: float = 100.0,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Alert:
    return Alert(
        status=status,  # type: ignore[arg-type]
        labels=labels if labels is not None else {"alertname": "HighLatency", "service": "cart"},
        annotations=annotations or {},
        starts_at=starts,
        ends_at=ends,
        generator_url="",
        fingerprint=fp,
    )


def _accepted(alert: Alert, group: str = "g1", group_labels: dict[str, str] | None = None) -> AcceptedAlert:
    return AcceptedAlert(group_key=group, source="alertmanager", alert=alert, group_labels=group_labels or {})


# --- store/intake.py ---------------------------------------------------------------------------


def test_incident_title_prefers_summary_then_description_then_the_name() -> None:
    assert incident_title(_alert(annotations={"summary": "slow", "description": "d"})) == "HighLatency: slow"
    assert incident_title(_alert(annotations={"description": "desc"})) == "HighLatency: desc"
    assert incident_title(_alert(annotations={"summary": "", "description": ""})) == "HighLatency"
    assert incident_title(_alert()) == "HighLatency"


def test_a_firing_alert_opens_one_incident_with_an_analyze_job() -> None:
    planner = IngestPlanner({}, next_incident_id=7, next_job_id=40)
    alert = _alert(annotations={"summary": "p99 up"})
    planner.add(3, _accepted(alert, group_labels={"alertname": "HighLatency"}), now=500.0)
    plan = planner.plan
    assert plan.processed == [3]
    assert plan.new_incidents == [
        NewIncident(
            id=7,
            group_key="g1",
            source="alertmanager",
            title="HighLatency: p99 up",
            labels={"alertname": "HighLatency"},
            started_at=100.0,
        )
    ]
    assert plan.alert_rows == [(7, "a", "firing", None, json.dumps(alert.to_dict()))]
    assert plan.jobs == [PlannedJob(40, 7, "analyze", "alertmanager")]
    assert plan.resolved == []


def test_without_group_labels_the_incident_takes_the_alerts_labels() -> None:
    planner = IngestPlanner({}, 1, 1)
    planner.add(1, _accepted(_alert()), now=0.0)
    assert planner.plan.new_incidents[0].labels == {"alertname": "HighLatency", "service": "cart"}


def test_ids_count_up_across_incidents_and_jobs() -> None:
    planner = IngestPlanner({}, next_incident_id=5, next_job_id=9)
    planner.add(1, _accepted(_alert(), group="g1"), now=0.0)
    planner.add(2, _accepted(_alert(), group="g2"), now=0.0)
    planner.add(3, _accepted(_alert("resolved", ends=150.0), group="g1"), now=0.0)
    assert [i.id for i in planner.plan.new_incidents] == [5, 6]
    assert planner.plan.jobs == [
        PlannedJob(9, 5, "analyze", "alertmanager"),
        PlannedJob(10, 6, "analyze", "alertmanager"),
        PlannedJob(11, 5, "resolve", "alertmanager"),
    ]
    assert planner.plan.processed == [1, 2, 3]


def test_a_resolved_alert_for_no_open_incident_changes_nothing_but_is_consumed() -> None:
    planner = IngestPlanner({}, 1, 1)
    planner.add(4, _accepted(_alert("resolved", ends=10.0)), now=0.0)
    plan = planner.plan
    assert plan.processed == [4]
    assert (plan.new_incidents, plan.alert_rows, plan.jobs, plan.resolved) == ([], [], [], [])


def test_a_repeat_firing_alert_joins_the_open_incident() -> None:
    planner = IngestPlanner({}, 1, 1)
    planner.add(1, _accepted(_alert(fp="a")), now=0.0)
    planner.add(2, _accepted(_alert(fp="b")), now=0.0)
    plan = planner.plan
    assert len(plan.new_incidents) == 1
    assert [row[:4] for row in plan.alert_rows] == [(1, "a", "firing", None), (1, "b", "firing", None)]
    assert [j.kind for j in plan.jobs] == ["analyze"]


def test_the_incident_resolves_only_when_every_alert_has_and_at_the_latest_end() -> None:
    planner = IngestPlanner({}, 1, 1)
    planner.add(1, _accepted(_alert(fp="a")), now=0.0)
    planner.add(2, _accepted(_alert(fp="b")), now=0.0)
    planner.add(3, _accepted(_alert("resolved", fp="a", ends=300.0)), now=999.0)
    assert planner.plan.resolved == []
    planner.add(4, _accepted(_alert("resolved", fp="b", ends=200.0)), now=999.0)
    assert planner.plan.resolved == [(1, 300.0)]
    assert [j.kind for j in planner.plan.jobs] == ["analyze", "resolve"]
    # Closed: the group's next firing alert opens a new incident.
    planner.add(5, _accepted(_alert(fp="a")), now=999.0)
    assert [i.id for i in planner.plan.new_incidents] == [1, 2]


def test_a_resolve_without_end_times_resolves_now() -> None:
    planner = IngestPlanner({}, 1, 1)
    planner.add(1, _accepted(_alert()), now=0.0)
    planner.add(2, _accepted(_alert("resolved", ends=None)), now=777.0)
    assert planner.plan.resolved == [(1, 777.0)]


def test_an_open_incident_from_the_store_is_continued() -> None:
    state = IngestPlanner.open_state(12, [("a", "firing", None), ("b", "resolved", 50.0)])
    assert state.id == 12 and state.alerts == {"a": ("firing", None), "b": ("resolved", 50.0)}
    planner = IngestPlanner({"g1": state}, next_incident_id=13, next_job_id=1)
    planner.add(1, _accepted(_alert("firing", fp="c")), now=0.0)
    assert planner.plan.new_incidents == []
    assert planner.plan.alert_rows[0][:3] == (12, "c", "firing")
    planner.add(2, _accepted(_alert("resolved", fp="a", ends=40.0)), now=0.0)
    assert planner.plan.resolved == []  # c still fires
    planner.add(3, _accepted(_alert("resolved", fp="c", ends=45.0)), now=0.0)
    assert planner.plan.resolved == [(12, 50.0)]
    assert planner.plan.jobs == [PlannedJob(1, 12, "resolve", "alertmanager")]


def test_the_planner_does_not_change_the_mapping_it_was_given() -> None:
    state = IngestPlanner.open_state(1, [("a", "firing", None)])
    given = {"g1": state}
    planner = IngestPlanner(given, 2, 1)
    planner.add(1, _accepted(_alert("resolved", ends=5.0)), now=0.0)
    assert list(given) == ["g1"]


# --- outbox/plan.py ----------------------------------------------------------------------------

_ALL = frozenset({"grafana", "slack", "pagerduty", "file", "memory"})


def _incident(status: str = "firing", labels: dict[str, str] | None = None, alerts: tuple = ()) -> Incident:
    return Incident(
        id="7",
        group_key="g1",
        source="alertmanager",
        status=status,  # type: ignore[arg-type]
        title="HighLatency: p99 up",
        labels=labels if labels is not None else {"service": "cart", "severity": "critical"},
        started_at=1_000.0,
        resolved_at=1_600.0 if status == "resolved" else None,
        alerts=alerts,
    )


def _settings(enabled: frozenset[str] = _ALL, routes: tuple[RouteConfig, ...] = (), **kw: Any) -> ActSettings:
    actions = ActionsConfig(grafana=GrafanaConfig(dashboard_uid="dash", panel_id=3), routes=routes)
    return ActSettings(enabled=enabled, actions=actions, **kw)


_REPORT: dict[str, Any] = {"summary": "the summary", "reasoner": "llm", "facts": {"alertname": "HighLatency"}}


def test_analyze_plans_each_sink_in_order_with_its_action_names() -> None:
    actions = plan_actions(_incident(), _REPORT, "analyze", _settings())
    assert [(a.sink, a.action) for a in actions] == [
        ("grafana", "open"),
        ("slack", "open"),
        ("slack", "reply:investigation"),
        ("pagerduty", "trigger"),
        ("file", "analyze"),
    ]
    assert all(a.incident_id == "7" for a in actions)
    by = {(a.sink, a.action): a.payload for a in actions}
    grafana = by["grafana", "open"]
    assert (grafana["dashboardUID"], grafana["panelId"], grafana["time"]) == ("dash", 3, 1_000_000)
    assert "timeEnd" not in grafana
    assert by["slack", "reply:investigation"]["blocks"][0]["text"]["text"] == "*Investigation (llm reasoner)*"
    assert by["pagerduty", "trigger"]["event_action"] == "trigger"
    assert by["file", "analyze"] == {
        "incident": {
            "id": "7",
            "title": "HighLatency: p99 up",
            "status": "firing",
            "service": "cart",
            "started_at": "1970-01-01T00:16:40Z",
        },
        "kind": "analyze",
        "summary": "the summary",
        "reasoner": "llm",
    }


def test_the_default_reasoner_heading_and_empty_summary() -> None:
    actions = plan_actions(_incident(), {}, "analyze", _settings(frozenset({"slack", "file"})))
    by = {(a.sink, a.action): a.payload for a in actions}
    assert (
        by["slack", "reply:investigation"]["blocks"][0]["text"]["text"] == "*Investigation (rules reasoner)*"
    )
    assert by["file", "analyze"]["summary"] == "" and by["file", "analyze"]["reasoner"] is None


def test_resolve_plans_the_end_the_update_and_the_memory() -> None:
    report = {**_REPORT, "hypotheses": [{"entity": "db", "score": 1.0, "evidence": []}]}
    actions = plan_actions(_incident("resolved"), report, "resolve", _settings())
    assert [(a.sink, a.action) for a in actions] == [
        ("grafana", "resolve"),
        ("slack", "update:resolve"),
        ("slack", "reply:resolve"),
        ("pagerduty", "resolve"),
        ("file", "resolve"),
        ("memory", "remember"),
    ]
    by = {(a.sink, a.action): a.payload for a in actions}
    assert by["grafana", "resolve"]["timeEnd"] == 1_600_000
    heading = by["slack", "reply:resolve"]["blocks"][0]["text"]["text"]
    assert heading == "*Resolved at 1970-01-01 00:26:40 UTC*"
    assert by["pagerduty", "resolve"]["event_action"] == "resolve"
    assert by["memory", "remember"]["cause"] == "db"
    assert by["memory", "remember"]["summary"] == "the summary"


def test_a_resolve_without_an_end_time_ends_the_annotation_where_it_started() -> None:
    incident = replace(_incident("resolved"), resolved_at=None)
    (action,) = plan_actions(incident, _REPORT, "resolve", _settings(frozenset({"grafana"})))
    assert action.payload["timeEnd"] == 1_000_000


def test_recurrence_is_a_reply_only_when_memory_recalled_something() -> None:
    similar = [{"id": "3", "started_at": "t", "root_cause": "db"}]
    actions = plan_actions(
        _incident(), {**_REPORT, "similar_incidents": similar}, "analyze", _settings(frozenset({"slack"}))
    )
    assert [a.action for a in actions] == ["open", "reply:investigation", "reply:recurrence"]
    assert actions[2].payload["blocks"][0]["text"]["text"] == "*Seen before*"
    assert actions[2].payload["blocks"][1]["text"]["text"] == "Incident 3 (t): root cause db"


def test_long_replies_are_numbered_from_the_second_message() -> None:
    report = {"summary": " ".join(["word"] * 5_000)}  # 25,000 characters: 9 sections, 3 messages
    actions = plan_actions(_incident(), report, "analyze", _settings(frozenset({"slack"})))
    assert [a.action for a in actions] == [
        "open",
        "reply:investigation",
        "reply:investigation:2",
        "reply:investigation:3",
    ]


def test_the_incident_link_is_the_public_url_without_userinfo_or_trailing_slash() -> None:
    settings = _settings(frozenset({"file", "pagerduty"}), public_url="https://u:p@obs.example/")
    actions = plan_actions(_incident(), _REPORT, "analyze", settings)
    (pd,) = [a.payload for a in actions if a.sink == "pagerduty"]
    assert pd["links"] == [{"href": "https://obs.example/api/v1/incidents/7", "text": "Incident report"}]
    no_url = plan_actions(_incident(), _REPORT, "analyze", _settings(frozenset({"pagerduty"})))
    assert no_url[0].payload["links"] == []


def test_the_annotation_starts_at_the_top_hypothesis_onset_when_earlier() -> None:
    settings = _settings(frozenset({"grafana"}))

    def start(onset: object) -> int:
        report = {"hypotheses": [{"entity": "db", "onset": onset, "evidence": []}]}
        return plan_actions(_incident(), report, "analyze", settings)[0].payload["time"]

    assert start("1970-01-01T00:15:00Z") == 900_000
    assert start("1970-01-01T00:20:00+00:00") == 1_000_000  # later than the alert: the alert
    assert start(None) == 1_000_000
    assert start("") == 1_000_000
    empty = plan_actions(_incident(), {"hypotheses": []}, "analyze", settings)
    assert empty[0].payload["time"] == 1_000_000


def test_only_enabled_sinks_are_planned_and_memory_only_on_resolve() -> None:
    assert [a.sink for a in plan_actions(_incident(), _REPORT, "analyze", _settings(frozenset()))] == []
    analyze = plan_actions(_incident(), _REPORT, "analyze", _settings(frozenset({"memory", "file"})))
    assert [a.sink for a in analyze] == ["file"]


def _sinks(labels: dict[str, str], *routes: RouteConfig) -> list[str]:
    return routed_sinks(labels, _settings(frozenset({"slack", "pagerduty", "memory"}), routes=routes))


def test_routes_choose_sinks_by_label() -> None:
    page = RouteConfig(sink="pagerduty", severities=("critical",))
    assert _sinks({"severity": "critical"}, page) == ["slack", "pagerduty", "memory"]
    assert _sinks({"severity": "warning"}, page) == ["slack", "memory"]  # memory is never routed
    assert _sinks({}, page) == ["slack", "memory"]
    two = (
        RouteConfig(sink="pagerduty", matchers=("team=db",)),
        RouteConfig(sink="pagerduty", matchers=("x=1",)),
    )
    assert _sinks({"x": "1"}, *two) == ["slack", "pagerduty", "memory"]  # any route of the sink
    assert _sinks({"x": "2"}, *two) == ["slack", "memory"]
    both = RouteConfig(sink="pagerduty", severities=("critical",), matchers=("team=db",))
    assert _sinks({"severity": "critical", "team": "db"}, both) == ["slack", "pagerduty", "memory"]
    assert _sinks({"severity": "critical", "team": "web"}, both) == ["slack", "memory"]  # every matcher


def test_each_matcher_operator() -> None:
    def routed(matcher: str, labels: dict[str, str]) -> bool:
        return "pagerduty" in _sinks(labels, RouteConfig(sink="pagerduty", matchers=(matcher,)))

    assert routed("team=db", {"team": "db"}) and not routed("team=db", {"team": "dbx"})
    assert routed("team!=db", {"team": "web"}) and not routed("team!=db", {"team": "db"})
    assert routed("team!=db", {})  # a missing label is the empty string
    assert routed('team=""', {})
    assert routed("team=~d.*", {"team": "db"}) and not routed("team=~d", {"team": "db"})  # anchored
    assert routed("team!~d.*", {"team": "web"}) and not routed("team!~d.*", {"team": "db"})


def test_route_labels_are_the_first_alerts_overridden_by_the_incidents() -> None:
    first = _alert(labels={"team": "db", "severity": "warning", "zone": "a"})
    second = _alert(labels={"team": "other", "extra": "1"})
    incident = _incident(labels={"severity": "critical", "service": "cart"}, alerts=(first, second))
    settings = _settings(
        frozenset({"pagerduty"}),
        routes=(RouteConfig(sink="pagerduty", severities=("critical",), matchers=("team=db", "extra=")),),
    )
    (action,) = plan_actions(incident, _REPORT, "analyze", settings)
    assert action.payload["payload"]["component"] == "cart"


def test_the_entity_label_names_the_incidents_entity() -> None:
    settings = _settings(frozenset({"file"}), entity_label="app")
    incident = _incident(labels={"app": "shop", "service": "cart"})
    (action,) = plan_actions(incident, _REPORT, "analyze", settings)
    assert action.payload["incident"]["service"] == "shop"
    (bare,) = plan_actions(_incident(labels={}), _REPORT, "analyze", _settings(frozenset({"file"})))
    assert bare.payload["incident"]["service"] == ""


def test_remember_action_carries_feedback_under_its_key() -> None:
    incident = replace(_incident("resolved"), feedback={"root_cause": "dns", "resolution": "flush"})
    action = remember_action(incident, {"summary": "s"}, "service", "feedback:1")
    assert (action.incident_id, action.sink, action.action) == ("7", "memory", "feedback:1")
    assert action.payload["cause"] == "dns" and action.payload["resolution"] == "flush"


# --- outbox/messages.py ------------------------------------------------------------------------


def test_every_pagerduty_severity_alias() -> None:
    expected = {
        "critical": ("critical", "page", "p1"),
        "error": ("error", "high", "major", "p2"),
        "warning": ("warning", "warn", "medium", "minor"),
        "info": ("info", "low", "none"),
    }
    for severity, aliases in expected.items():
        for alias in aliases:
            assert messages.pagerduty_severity(f" {alias.upper()} ") == severity
    assert messages.pagerduty_severity("bogus") == "warning"


def test_slack_escape_and_safe_link_exactly() -> None:
    assert messages.slack_escape("a&b<c>d") == "a&amp;b&lt;c&gt;d"
    assert messages.safe_link(" https://h/p?q=1&r=<x>|y z ") == "https://h/p?q=1&r=%3Cx%3E%7Cy%20z"
    assert messages.safe_link("HTTP://h/%41") == "http://h/%41"
    assert messages.safe_link("https:///no-host") is None
    assert messages.safe_link("http://[::1") is None


def test_split_text_cuts_at_the_last_space_or_newline_within_the_limit() -> None:
    assert messages.split_text("  ab cd ef  ", 5) == ["ab cd", "ef"]
    assert messages.split_text("ab\ncd ef", 5) == ["ab\ncd", "ef"]
    assert messages.split_text("abcde fg", 5) == ["abcde", "fg"]  # a cut exactly at the limit
    assert messages.split_text("abcdefgh", 5) == ["abcde", "fgh"]  # one long word is cut
    assert messages.split_text(" abcdefgh", 5) == ["abcde", "fgh"]
    assert messages.split_text("abcde", 5) == ["abcde"]
    assert messages.split_text("   ", 5) == []


def test_a_cut_word_never_splits_an_escape() -> None:
    assert messages.split_text("abc&amp;def", 5) == ["abc", "&amp;", "def"]
    assert messages.split_text("&amp;&amp;", 7) == ["&amp;", "&amp;"]
    assert messages.split_text("ab&amp;cdef", 7) == ["ab&amp;", "cdef"]  # the escape is whole
    assert messages._entity_safe_end("abcd&am", 7) == 4
    assert messages._entity_safe_end("a&amp;b", 7) == 7
    assert messages._entity_safe_end("&amp", 4) == 4  # an escape at 0: no shorter cut


def test_clip_marks_a_cut_with_an_ellipsis() -> None:
    assert messages._clip("abcdef", 6) == "abcdef"
    assert messages._clip("abcdefg", 6) == "abcde…"
    assert messages._clip("abc&amp;", 7) == "abc…"


_HYPOTHESIS = {
    "entity": "db",
    "score": 0.9,
    "onset": "1970-01-01T00:15:00Z",
    "evidence": [
        {
            "signal": "latency",
            "baseline": 0.123456,
            "incident": 12.3456,
            "deviation": 7.6,
            "promql": "q1",
            "explore_url": "https://g/explore",
        },
        {"signal": "s2", "baseline": 1, "incident": 2, "deviation": 3, "promql": "q2"},
        {"signal": "s3", "baseline": 1, "incident": 2, "deviation": 3, "promql": "q3"},
    ],
}
_FULL = {
    "summary": "sum",
    "reasoner": "rules",
    "facts": {"alertname": "HighLatency", "severity": "critical", "runbook_url": "https://rb/x"},
    "hypotheses": [_HYPOTHESIS, {**_HYPOTHESIS, "entity": "b"}, {**_HYPOTHESIS, "entity": "c"}, _HYPOTHESIS],
}
_VIEW = {"id": "7", "title": "T", "status": "firing", "service": "cart", "started_at": "2026-01-01T00:00:00Z"}


def test_the_cause_line() -> None:
    assert (
        messages._cause_line(_FULL) == "db: latency 0.123 → 12.3 (7.6× its usual spread), from 00:15:00 UTC"
    )
    none = "No root-cause candidate stood out in the configured signals."
    assert messages._cause_line({}) == none
    assert messages._cause_line({"hypotheses": [{"entity": "db", "evidence": []}]}) == none


def test_the_slack_parent_exactly() -> None:
    parent = messages.slack_parent(_VIEW, _FULL, "https://obs/i/7")
    cause = "db: latency 0.123 → 12.3 (7.6× its usual spread), from 00:15:00 UTC"
    assert parent["text"] == f":red_circle: [FIRING] HighLatency: {cause}"
    assert parent["blocks"] == [
        {"type": "header", "text": {"type": "plain_text", "text": "[FIRING] HighLatency"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Status*\nfiring"},
                {"type": "mrkdwn", "text": "*Service*\ncart"},
                {"type": "mrkdwn", "text": "*Severity*\ncritical"},
                {"type": "mrkdwn", "text": "*Started*\n2026-01-01 00:00:00 UTC"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Most likely cause*\n{cause}"}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "<https://g/explore|Explore the evidence> · <https://rb/x|Runbook>"
                    " · <https://obs/i/7|Incident report>",
                }
            ],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Confirm cause"},
                    "action_id": "agentic_obs:confirm::7",
                    "value": '{"incident": "7", "install": "", "cause": "db"}',
                    "style": "primary",
                },
                {
                    "type": "static_select",
                    "action_id": "agentic_obs:wrong::7",
                    "placeholder": {"type": "plain_text", "text": "Wrong cause…"},
                    "options": [
                        {"text": {"type": "plain_text", "text": "db"}, "value": "entity:db"},
                        {"text": {"type": "plain_text", "text": "b"}, "value": "entity:b"},
                        {"text": {"type": "plain_text", "text": "c"}, "value": "entity:c"},
                        {"text": {"type": "plain_text", "text": "Other…"}, "value": "other"},
                    ],
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Resolved by…"},
                    "action_id": "agentic_obs:resolution::7",
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Re-investigate"},
                    "action_id": "agentic_obs:reinvestigate::7",
                },
            ],
        },
    ]


def test_a_bare_resolved_parent_has_defaults_and_no_links() -> None:
    view = {"id": "7", "title": "T", "status": "resolved"}
    parent = messages.slack_parent(view, {}, None)
    assert parent["text"].startswith(":large_green_circle: [RESOLVED] T: No root-cause")
    assert [f["text"] for f in parent["blocks"][1]["fields"]] == [
        "*Status*\nresolved",
        "*Service*\nunknown",
        "*Severity*\nnone",
        "*Started*\n",
    ]
    assert len(parent["blocks"]) == 4
    # nothing ranked: no cause to confirm, and a resolved incident is not re-investigated
    buttons = parent["blocks"][3]["elements"]
    assert [b["action_id"] for b in buttons] == ["agentic_obs:wrong::7", "agentic_obs:resolution::7"]
    assert buttons[0]["options"] == [{"text": {"type": "plain_text", "text": "Other…"}, "value": "other"}]


def test_links_that_just_fit_are_kept() -> None:
    url = "https://h/" + "a" * (messages._PARENT_LINKS_LIMIT - len("<https://h/|Runbook>"))
    links = messages._slack_links({"facts": {"runbook_url": url}}, None)
    assert links == f"<{url}|Runbook>" and len(links) == messages._PARENT_LINKS_LIMIT


def test_reply_messages_exactly() -> None:
    assert messages.slack_replies("H & co", "") == [
        {
            "text": "H &amp; co",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*H &amp; co*"}}],
        }
    ]
    (one,) = messages.slack_replies("H", "body <x>")
    assert one == {
        "text": "H: body &lt;x&gt;",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*H*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "body &lt;x&gt;"}},
        ],
    }
    body = " ".join(["word"] * 2_000)  # 9,999 characters: 4 sections, 2 messages
    first, second = messages.slack_replies("H", body)
    assert first["blocks"][0]["text"]["text"] == "*H* (1/2)" and len(first["blocks"]) == 4
    assert second["blocks"][0]["text"]["text"] == "*H* (2/2)" and len(second["blocks"]) == 2
    assert first["text"].startswith("H (1/2): word word") and len(first["text"]) == messages._FALLBACK_LIMIT


def test_a_runaway_reply_is_cut_at_the_cap_and_counts_what_was_left_out() -> None:
    chunk = "x" * 3000
    body = " ".join([chunk] * (3 * messages.SLACK_MAX_REPLY_MESSAGES + 2))
    replies = messages.slack_replies("H", body)
    assert len(replies) == messages.SLACK_MAX_REPLY_MESSAGES
    last = replies[-1]["blocks"]
    assert len(last) == 4 and last[0]["text"]["text"] == "*H* (20/20)"
    assert last[-1]["text"]["text"] == (
        "_… and about 9,000 more characters: the whole report is in the incident API._"
    )
    assert messages._SECTIONS_PER_MESSAGE == 3


def test_recurrence_text() -> None:
    similar = [
        {"id": "1", "started_at": "t1", "root_cause": "db", "resolution": "restart"},
        {"id": "2"},
    ]
    assert messages.recurrence_text(similar) == (
        "Incident 1 (t1): root cause db; fixed by: restart\nIncident 2 (an unknown date): root cause unknown"
    )


def test_grafana_text_exactly() -> None:
    assert messages.grafana_text(_VIEW, {}, None) == "T (firing)"
    assert messages.grafana_text(_VIEW, {"summary": "a<b"}, "https://o/i?a=1&b=2") == (
        'a&lt;b\n<a href="https://o/i?a=1&amp;b=2">incident report</a>'
    )
    assert messages.grafana_text(_VIEW, {"summary": "s"}, "javascript:x") == "s"
    exact = "x" * messages.GRAFANA_TEXT_LIMIT
    assert messages.grafana_text(_VIEW, {"summary": exact}, None) == exact
    long = "first line\n" + "y" * messages.GRAFANA_TEXT_LIMIT
    assert messages.grafana_text(_VIEW, {"summary": long}, None) == "first line\n…"


def test_grafana_tags_exactly_and_their_length() -> None:
    assert messages.grafana_tags(_VIEW, _FULL, "inst") == [
        "agentic-obs",
        "incident:inst-7",
        "HighLatency",
        "cart",
    ]
    assert messages.grafana_tags({"id": "7", "title": "T"}, {}) == ["agentic-obs", "incident:7", "T"]
    assert messages.grafana_tags_length(["a", "bc"]) == len('["a","bc"]')
    assert messages.grafana_tags_length([]) == 2
    assert messages.grafana_tags_length(["é"]) == len('[""]') + 2


def test_long_tags_share_what_is_left_evenly() -> None:
    view = {"id": "7", "title": "x" * 400 + ":" + "y" * 400, "service": "s" * 400}
    tags = messages.grafana_tags(view, {})
    assert tags[2] == "x" * 100 + ":" + "y" * 100
    assert tags[3] == "s" * 100
    assert messages._grafana_tag("k" * 300, 1000) == "k" * 100
    assert messages._grafana_tag("abc", -5) == ""
    assert messages._grafana_tag("aé", 2) == "a"  # never half a character
    wide = {"id": "7", "title": "é" * 100 + ":" + "é" * 100, "service": "ü" * 100 + ":" + "ü" * 100}
    shared = messages.grafana_tags(wide, {})
    # 472 bytes left after the fixed tags: each free tag gets 472 // 2 - 3 = 233, then 236 - 3 = 233.
    assert [len(t.encode()) for t in shared[2:]] == [233, 233]
    assert shared[2] == "é" * 100 + ":" + "é" * 16
    assert messages.grafana_tags_length(shared) == messages.GRAFANA_TAGS_LENGTH  # exactly full


def test_the_pagerduty_trigger_exactly() -> None:
    event = messages.pagerduty_event(_VIEW, _FULL, "trigger", "https://obs/i/7", install_id="inst")
    hyp = {"score": 0.9, "evidence": ["q1", "q2"]}
    assert event == {
        "event_action": "trigger",
        "dedup_key": "agentic-obs-inst-7",
        "client": "agentic-observability",
        "payload": {
            "summary": "T: db: latency 0.123 → 12.3 (7.6× its usual spread), from 00:15:00 UTC",
            "source": "cart",
            "severity": "critical",
            "timestamp": "2026-01-01T00:00:00Z",
            "component": "cart",
            "group": "HighLatency",
            "custom_details": {
                "incident_id": "7",
                "hypotheses": [{"service": "db", **hyp}, {"service": "b", **hyp}, {"service": "c", **hyp}],
                "reasoner": "rules",
            },
        },
        "links": [
            {"href": "https://g/explore", "text": "Explore the evidence"},
            {"href": "https://rb/x", "text": "Runbook"},
            {"href": "https://obs/i/7", "text": "Incident report"},
        ],
    }


def test_a_bare_pagerduty_trigger_and_resolve() -> None:
    view = {"id": "7", "title": "T" * 2000, "status": "firing"}
    event = messages.pagerduty_event(view, {}, "trigger", None)
    payload = event["payload"]
    assert event["dedup_key"] == "agentic-obs-7" and event["links"] == []
    assert len(payload["summary"]) == messages.PAGERDUTY_SUMMARY_LIMIT
    assert payload["source"] == "agentic-observability" and payload["severity"] == "warning"
    assert set(payload) == {"summary", "source", "severity", "custom_details"}
    assert payload["custom_details"] == {"incident_id": "7", "hypotheses": []}
    facts = {"alertname": "A", "started_at": "2026-01-02T00:00:00Z", "resolved_at": "2026-01-03T00:00:00Z"}
    assert (
        messages.pagerduty_event({"id": "7", "title": "T"}, {"facts": facts}, "trigger", None)["payload"][
            "timestamp"
        ]
        == "2026-01-02T00:00:00Z"
    )
    resolve = messages.pagerduty_event({"id": "7", "title": "T"}, {"facts": facts}, "resolve", "https://o/i")
    assert resolve == {
        "event_action": "resolve",
        "dedup_key": "agentic-obs-7",
        "payload": {
            "summary": "T: resolved",
            "source": "A",
            "severity": "warning",
            "timestamp": "2026-01-03T00:00:00Z",
            "group": "A",
        },
    }
    own = messages.pagerduty_event(
        {**_VIEW, "resolved_at": "2026-01-04T00:00:00Z"}, {"facts": facts}, "resolve", None
    )
    assert own["payload"]["timestamp"] == "2026-01-04T00:00:00Z"


def test_pd_time_takes_only_iso_times() -> None:
    assert messages._pd_time("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
    assert messages._pd_time("yesterday") is None
    assert messages._pd_time("") is None
    assert messages._pd_time(12.0) is None
    assert messages._present({"a": None, "b": "", "c": 0, "d": "x"}) == {"c": 0, "d": "x"}


# --- second round: the survivors of the first ----------------------------------------------------


def test_split_text_edges() -> None:
    assert messages.split_text("ab cd", 5) == ["ab cd"]  # exactly the limit: not split
    assert messages.split_text("a\nb\ncd ef", 5) == ["a\nb", "cd ef"]  # the last newline
    assert messages.split_text("ab\ncdefg", 5) == ["ab", "cdefg"]  # a newline alone
    assert messages.split_text("a bc\nefgh", 4) == ["a bc", "efgh"]  # a newline right at the limit
    assert messages.split_text("abcde\nf", 4) == ["abcd", "e\nf"]  # one past it: not a cut
    assert messages.split_text("a bcdefg", 4) == ["a", "bcde", "fg"]
    assert messages.split_text("ab  cdef", 4) == ["ab", "cdef"]


def test_entity_safe_end_edges() -> None:
    assert messages._entity_safe_end("a&bcdefgh", 8) == 8  # an & further back is no escape cut short
    assert messages._entity_safe_end("x&ampq", 6) == 6
    assert messages._entity_safe_end("x&&am", 5) == 2  # the last &
    assert messages._entity_safe_end("x&am", 4) == 1
    assert messages._entity_safe_end("ab&lt;c", 6) == 6  # a whole escape is not cut back


def test_a_reply_of_exactly_the_message_cap_is_sent_whole() -> None:
    chunks = [f"{n:04d}" + "x" * 2995 for n in range(3 * messages.SLACK_MAX_REPLY_MESSAGES)]
    replies = messages.slack_replies("H", " ".join(chunks))
    assert len(replies) == messages.SLACK_MAX_REPLY_MESSAGES
    assert replies[-1]["blocks"][-1]["text"]["text"] == chunks[-1]


def test_a_capped_reply_keeps_the_sections_of_its_last_message() -> None:
    chunks = [f"{n:04d}" + "x" * 2995 for n in range(3 * messages.SLACK_MAX_REPLY_MESSAGES + 2)]
    replies = messages.slack_replies("H", " ".join(chunks))
    last = [b["text"]["text"] for b in replies[-1]["blocks"][1:]]
    assert last[:2] == chunks[57:59]
    assert last[2].startswith("_… and about 8,997 more characters")  # 3 chunks of 2,999


def test_grafana_text_cuts_at_the_last_newline_and_keeps_quotes() -> None:
    long = "a\nb c\n" + "y " * messages.GRAFANA_TEXT_LIMIT
    assert messages.grafana_text(_VIEW, {"summary": long}, None) == "a\nb c\n…"
    assert messages.grafana_text(_VIEW, {"summary": "say \"hi\" 'x'"}, None) == "say \"hi\" 'x'"


def test_incident_key_and_tag_parts() -> None:
    assert messages.incident_key(7) == "7"
    assert messages.incident_key(7, "inst") == "inst-7"
    tag = messages._grafana_tag("k" * 150 + ":v:" + "w" * 150, 1000)
    assert tag == "k" * 100 + ":v:" + "w" * 98  # split at the first colon


def test_the_plan_passes_the_incident_link_to_every_message() -> None:
    settings = _settings(public_url="https://obs.example/X/")
    actions = plan_actions(_incident(), {"summary": "s"}, "analyze", settings)
    by = {(a.sink, a.action): a.payload for a in actions}
    url = "https://obs.example/X/api/v1/incidents/7"
    assert by["grafana", "open"]["text"] == f's\n<a href="{url}">incident report</a>'
    assert by["slack", "open"]["blocks"][-2]["elements"][0]["text"] == f"<{url}|Incident report>"


def test_slack_actions_all_name_the_incident_and_an_empty_summary_sends_only_the_heading() -> None:
    similar = [{"id": "3", "started_at": "t", "root_cause": "db"}]
    settings = _settings(frozenset({"slack"}))
    analyze = plan_actions(_incident(), {"similar_incidents": similar}, "analyze", settings)
    resolve = plan_actions(_incident("resolved"), {}, "resolve", settings)
    assert [a.incident_id for a in analyze + resolve] == ["7"] * 5
    assert [len(a.payload["blocks"]) for a in analyze[1:2] + resolve[1:]] == [1, 1]


def test_memory_gets_the_entity_and_an_empty_summary() -> None:
    settings = _settings(frozenset({"memory"}), entity_label="app")
    incident = _incident("resolved", labels={"app": "shop"})
    (action,) = plan_actions(incident, {}, "resolve", settings)
    assert action.payload["service"] == "shop" and action.payload["summary"] == ""


def test_not_equal_is_literal_and_an_empty_severity_matches_a_missing_label() -> None:
    assert "pagerduty" in _sinks({"team": "db"}, RouteConfig(sink="pagerduty", matchers=("team!=d.*",)))
    assert "pagerduty" in _sinks({}, RouteConfig(sink="pagerduty", severities=("",)))
