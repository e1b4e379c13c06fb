"""How incidents read in Slack, Grafana and PagerDuty: escaping, the 3,000-character limit, severities."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentic_observability.outbox import messages

REPORT = {
    "facts": {"alertname": "Hi <!channel>", "severity": "page", "runbook_url": "https://rb.example/x"},
    "hypotheses": [
        {
            "entity": "carts<script>",
            "score": 0.9,
            "evidence": [
                {
                    "signal": "cpu",
                    "baseline": 0.1,
                    "incident": 0.9,
                    "deviation": 12.0,
                    "promql": "cpu",
                    "explore_url": "http://p/graph",
                }
            ],
        }
    ],
}
INCIDENT = {
    "id": "4",
    "title": "Hi <!channel>",
    "status": "firing",
    "service": "carts & co",
    "started_at": "t",
}


def test_untrusted_text_is_escaped_in_every_block() -> None:
    body = messages.slack_parent(INCIDENT, REPORT, "https://svc/api/v1/incidents/4")
    text = str(body)
    assert "<!channel>" not in text.replace("[FIRING] Hi <!channel>", "")  # header is plain_text, not mrkdwn
    assert "carts&lt;script&gt;" in text and "carts &amp; co" in text
    assert "<https://svc/api/v1/incidents/4|Incident report>" in text


def _report_with(runbook: str, explore: str = "http://p/graph") -> dict[str, Any]:
    report: dict[str, Any] = copy.deepcopy(REPORT)
    report["facts"]["runbook_url"] = runbook
    report["hypotheses"][0]["evidence"][0]["explore_url"] = explore
    return report


def _slack_links(body: dict[str, Any]) -> str:
    [context] = [b for b in body["blocks"] if b["type"] == "context"]
    return str(context["elements"][0]["text"])


def test_a_runbook_link_cannot_ping_or_relabel() -> None:
    report = _report_with("https://r/x|Runbook> <!channel>")
    links = _slack_links(messages.slack_parent(INCIDENT, report, None))
    assert "<https://r/x%7CRunbook%3E%20%3C!channel%3E|Runbook>" in links
    assert links.count("<") == links.count(">") == links.count("|") == 2  # two links, nothing else
    event = messages.pagerduty_event(INCIDENT, report, "trigger", None)
    assert {"href": "https://r/x%7CRunbook%3E%20%3C!channel%3E", "text": "Runbook"} in event["links"]


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "slack://channel?id=C1",
        "data:text/html,x",
        "//r/x",
        "https:///x",
        "http://[::1",
    ],
)
def test_a_link_that_is_not_http_is_dropped(url: str) -> None:
    report = _report_with(url, explore=url)
    assert "context" not in [b["type"] for b in messages.slack_parent(INCIDENT, report, None)["blocks"]]
    assert messages.pagerduty_event(INCIDENT, report, "trigger", None)["links"] == []
    assert "href" not in messages.grafana_text(INCIDENT, report, url)


def test_the_explore_and_incident_links_are_encoded_too() -> None:
    report = _report_with("https://rb.example/x", explore="https://g/explore?q=a>b|c")
    links = _slack_links(messages.slack_parent(INCIDENT, report, "https://svc/api/v1/incidents/4?<x>"))
    assert "<https://g/explore?q=a%3Eb%7Cc|Explore the evidence>" in links
    assert "<https://svc/api/v1/incidents/4?%3Cx%3E|Incident report>" in links
    text = messages.grafana_text(INCIDENT, report, 'https://svc/i/4"><script>')
    assert text.endswith('<a href="https://svc/i/4%22%3E%3Cscript%3E">incident report</a>')


@given(st.text(alphabet=st.sampled_from("ab <>&\n"), min_size=0, max_size=9000))
def test_split_never_exceeds_the_limit_or_loses_words(text: str) -> None:
    chunks = messages.split_text(text, 3000)
    assert all(len(c) <= 3000 for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())


def test_split_cuts_at_whitespace() -> None:
    words = ("word" * 2 + " ") * 1000  # 9000 characters of 8-letter words
    chunks = messages.split_text(words, 3000)
    assert len(chunks) == 4 and all(set(c.split()) == {"wordword"} for c in chunks)


def test_reply_blocks_stay_under_the_limit() -> None:
    (body,) = messages.slack_replies("Resolved", "x " * 4000)  # 3 sections and the heading: one message
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"]) and len(body["text"]) <= 3000
    assert len(body["blocks"]) == 4


def test_pagerduty_severity_mapping_and_limits() -> None:
    assert [messages.pagerduty_severity(s) for s in ("page", "Critical", "high", "warn", "info", "?")] == [
        "critical",
        "critical",
        "error",
        "warning",
        "info",
        "warning",
    ]
    event = messages.pagerduty_event({**INCIDENT, "title": "x" * 5000}, REPORT, "trigger", None)
    assert len(event["payload"]["summary"]) == 1024 and event["payload"]["severity"] == "critical"
    assert event["payload"]["custom_details"]["hypotheses"][0]["service"] == "carts<script>"
    resolve = messages.pagerduty_event(INCIDENT, REPORT, "resolve", None)
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == "agentic-obs-4"


def test_grafana_text_escapes_alert_html_and_keeps_the_link() -> None:
    report = {**REPORT, "summary": "Hi <img src=x onerror=alert(1)> firing\n" + "line\n" * 1000}
    text = messages.grafana_text(INCIDENT, report, "https://svc/api/v1/incidents/4")
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert text.endswith('<a href="https://svc/api/v1/incidents/4">incident report</a>')
    assert len(text) < messages.GRAFANA_TEXT_LIMIT + 100


async def test_an_urgent_caller_overtakes_queued_ordinary_ones() -> None:
    import asyncio
    import time

    from agentic_observability.integrations.delivery import PriorityRateLimiter

    limiter = PriorityRateLimiter(rate=20.0, burst=2)
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        await limiter.acquire(urgent)
        order.append(name)

    await limiter.acquire(True)
    await limiter.acquire(True)  # the bucket is now empty
    started = time.monotonic()
    waiting = [asyncio.create_task(take(f"reply-{i}", False)) for i in range(3)]
    await asyncio.sleep(0.005)
    waiting.append(asyncio.create_task(take("parent", True)))
    await asyncio.gather(*waiting)
    assert order[0] == "parent" and sorted(order[1:]) == ["reply-0", "reply-1", "reply-2"]
    assert time.monotonic() - started >= 3 / 20.0 * 0.9  # still at most 20 a second


async def test_waiters_cancelled_at_shutdown_leave_the_limiter_usable() -> None:
    """Shutdown cancels deliveries waiting for Slack's rate: each must end cancelled, promptly (a
    Condition waited with wait_for, cancelled as its timeout fired, hung here and raised "Lock is not
    acquired" in the service, which then did not stop)."""
    from agentic_observability.integrations.delivery import PriorityRateLimiter

    async def rounds() -> None:
        rng = random.Random(1)
        for _ in range(40):
            limiter = PriorityRateLimiter(rate=50.0, burst=1)
            waiting = [asyncio.create_task(limiter.acquire(urgent=n % 3 == 0)) for n in range(40)]
            await asyncio.sleep(rng.uniform(0.005, 0.05))
            for task in waiting:
                task.cancel()
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            assert all(isinstance(o, asyncio.CancelledError | type(None)) for o in outcomes), outcomes
            await limiter.acquire(urgent=True)  # and the next caller is served

    await asyncio.wait_for(rounds(), 20.0)


# -- plain units and times, and the chart (issue 21) --------------------------------------------------

READABLE = {
    "facts": {"alertname": "ShopFrontEndSlow", "severity": "critical", "started_at": "2026-11-30T09:43:12Z"},
    "hypotheses": [
        {
            "entity": "carts",
            "score": 0.94,
            "onset": "2026-11-30T09:42:57.803000Z",
            "onset_unix": 1796031777.803,
            "evidence": [
                {
                    "signal": "latency_p90",
                    "baseline": 0.05161,
                    "incident": 1.151,
                    "unit": "seconds",
                    "deviation": 435.17,
                    "promql": 'max by (service) (shop_request_latency_seconds{service="carts"})',
                    "explore_url": "https://g/explore",
                }
            ],
        }
    ],
    "chart": {"series": []},
}
CAUSE = (
    "carts: latency_p90 51.6 ms → 1.15 s (435× its usual spread), from 09:42:57 UTC, 14 s before the alert"
)
SHOP = {
    "id": "2",
    "title": "ShopFrontEndSlow",
    "status": "firing",
    "service": "front-end",
    "started_at": "2026-11-30T09:43:12Z",
}
URL = "https://obs.example/api/v1/incidents/2"
CHART = URL + "/chart.png"


def test_the_cause_reads_in_units_and_against_the_alert() -> None:
    assert messages._cause_line(READABLE) == CAUSE
    parent = messages.slack_parent(SHOP, READABLE, URL)
    assert parent["blocks"][2]["text"]["text"] == f"*Most likely cause*\n{CAUSE}"
    assert parent["text"].endswith(CAUSE)
    assert {"type": "mrkdwn", "text": "*Started*\n2026-11-30 09:43:12 UTC"} in parent["blocks"][1]["fields"]
    assert messages.pagerduty_event(SHOP, READABLE, "trigger", URL)["payload"]["summary"] == (
        f"ShopFrontEndSlow: {CAUSE}"
    )


def test_a_cause_stored_before_units_and_onsets_still_reads() -> None:
    """Reports already in the store have no ``unit`` or ``onset_unix``: the PromQL and the ISO onset say."""
    old = copy.deepcopy(READABLE)
    del old["hypotheses"][0]["onset_unix"], old["hypotheses"][0]["evidence"][0]["unit"]
    assert messages._cause_line(old) == CAUSE
    old["hypotheses"][0]["onset"] = None
    old["facts"] = {}
    assert messages._cause_line(old) == CAUSE.split(", from")[0]


def test_the_chart_is_linked_everywhere_and_shown_in_pagerduty() -> None:
    parent = messages.slack_parent(SHOP, READABLE, URL)
    assert _slack_links(parent).endswith(f"<{URL}|Incident report> · <{CHART}|Chart>")
    assert messages.grafana_text(SHOP, READABLE, URL).endswith(
        f'<a href="{URL}">incident report</a> · <a href="{CHART}">chart</a>'
    )
    event = messages.pagerduty_event(SHOP, READABLE, "trigger", URL)
    assert event["images"] == [
        {"src": CHART, "href": CHART, "alt": "ShopFrontEndSlow: the signals around the incident's start"}
    ]
    assert {"href": CHART, "text": "Chart"} in event["links"]


@pytest.mark.parametrize(
    ("chart", "url"), [(None, URL), ({}, URL), ({"series": []}, None)], ids=["no-key", "empty", "no-url"]
)
def test_no_chart_no_chart_link(chart: Any, url: str | None) -> None:
    report = {k: v for k, v in READABLE.items() if k != "chart"} | (
        {"chart": chart} if chart is not None else {}
    )
    texts = [
        str(messages.slack_parent(SHOP, report, url)),
        messages.grafana_text(SHOP, report, url),
        str(messages.pagerduty_event(SHOP, report, "trigger", url)),
    ]
    assert not any("chart.png" in t for t in texts)
    assert "images" not in messages.pagerduty_event(SHOP, report, "trigger", url)


def test_a_chart_over_plain_http_is_a_link_not_a_pagerduty_image() -> None:
    """PagerDuty refuses an event whose image is not served over HTTPS: the chart stays a link."""
    event = messages.pagerduty_event(SHOP, READABLE, "trigger", "http://obs.internal/api/v1/incidents/2")
    assert "images" not in event
    assert {"href": "http://obs.internal/api/v1/incidents/2/chart.png", "text": "Chart"} in event["links"]


def test_seen_before_dates_read_plainly() -> None:
    similar = [{"id": "1", "started_at": "2026-11-30T09:41:14Z", "root_cause": "carts"}, {"id": "3"}]
    assert messages.recurrence_text(similar) == (
        "Incident 1 (2026-11-30 09:41:14 UTC): root cause carts\n"
        "Incident 3 (an unknown date): root cause unknown"
    )


# -- what the logs say, on the Slack parent and the Grafana annotation (issue 18) ---------------------

LOGQL_LINK = "https://g/explore?schemaVersion=1&panes=%7B%22a%22%7D"


def _log_signal(entity: str = "carts", deviation: float = 8.4, **extra: Any) -> dict[str, Any]:
    return {
        "entity": entity,
        "signal": "log_errors",
        "logql": f'sum(count_over_time({{app="{entity}"}} |~ "error" [60s]))',
        "labels": {},
        "baseline": 0.0,
        "incident": 42.0,
        "unit": "lines/min",
        "deviation": deviation,
        "score": 6.0,
        "onset": "2026-11-30T09:42:00Z",
        "lines_before": 0,
        "lines_after": 120,
        "explore_url": LOGQL_LINK,
        **extra,
    }


def _with_logs(signals: list[dict[str, Any]], template: str = "connection refused to db:5432 <*>") -> Any:
    templates = [
        {"entity": "orders", "template": "not this entity's", "count": 99, "before": 0},
        {"entity": "carts", "template": template, "count": 80, "before": 0, "example": "x", "logql": "q"},
    ]
    logs = {
        "signals": signals,
        "templates": templates,
        "template_entity": "carts",
        "sample": {},
        "problems": [],
    }
    return {**READABLE, "logs": logs}


def _logs_line(parent: dict[str, Any]) -> str | None:
    lines = [b["elements"][0]["text"] for b in parent["blocks"] if b["type"] == "context"]
    found = [line for line in lines if line.startswith("*Logs*")]
    assert len(found) <= 1
    return found[0] if found else None


def test_the_parent_and_the_annotation_say_what_the_logs_say() -> None:
    report = _with_logs([_log_signal(), _log_signal("orders", 20.0)])
    parent = messages.slack_parent(SHOP, report, URL)
    assert _logs_line(parent) == (
        f"*Logs* carts: error-like lines 0 → 42 a minute · <{LOGQL_LINK}|LogQL>"
        ' · new: "connection refused to db:5432 &lt;*&gt;"'
    )
    assert parent["blocks"][3] == messages._context(str(_logs_line(parent)))  # right under the cause
    text = messages.grafana_text(SHOP, report, URL)
    assert text.endswith(
        f'<a href="{URL}">incident report</a> · <a href="{CHART}">chart</a>'
        ' · <a href="https://g/explore?schemaVersion=1&amp;panes=%7B%22a%22%7D">logs</a>'
    )


def test_the_numbers_read_as_people_read_them_and_the_threshold_is_the_pipelines() -> None:
    from agentic_observability.pipeline.logs import LOG_SIGNAL_MIN

    assert messages.LOG_SIGNAL_MIN == LOG_SIGNAL_MIN  # the outbox may not import the pipeline
    signal = _log_signal(deviation=LOG_SIGNAL_MIN, baseline=0.333333, incident=1234.5, explore_url=None)
    line = _logs_line(messages.slack_parent(SHOP, _with_logs([signal], template=""), URL))
    assert line == "*Logs* carts: error-like lines 0.333 → 1.23k a minute"  # no link, no template


@pytest.mark.parametrize(
    "logs",
    [
        None,
        {"signals": [], "templates": []},
        {"signals": [_log_signal(deviation=2.99)]},
        {"signals": [_log_signal(deviation=1.0), _log_signal("orders", 40.0)]},  # only the first counts
        {"signals": [_log_signal(deviation=float("nan"))]},
        {"signals": [_log_signal(deviation="?")]},
        {"signals": "carts"},
        "logs",
    ],
    ids=["none", "no-signals", "weak", "weak-first", "nan", "not-a-number", "not-a-list", "not-a-dict"],
)
def test_no_strong_log_signal_no_logs_line_or_link(logs: Any) -> None:
    for report in ({**READABLE, "logs": logs}, READABLE):  # and a report without the key
        assert _logs_line(messages.slack_parent(SHOP, report, URL)) is None
        assert "logs</a>" not in messages.grafana_text(SHOP, report, URL)
        assert "LogQL" not in str(messages.slack_parent(SHOP, report, URL))


def test_hostile_log_text_is_escaped_and_clipped_and_the_parent_stays_within_budget() -> None:
    from tests.fakes import _block_texts, slack_refusal

    hostile = "<!channel> <http://evil.example|click> & " + "y" * 5000
    signal = _log_signal("<!here>", explore_url="https://g/explore?q=a>b|c")
    report = _with_logs([signal], template=hostile)
    report["logs"]["templates"][1]["entity"] = "<!here>"
    line = _logs_line(messages.slack_parent(SHOP, report, URL))
    assert line is not None
    link = " · <https://g/explore?q=a%3Eb%7Cc|LogQL>"
    assert line.startswith("*Logs* &lt;!here&gt;: error-like lines 0 → 42 a minute" + link)
    assert '· new: "&lt;!channel&gt; &lt;http://evil.example|click&gt; &amp; yyy' in line
    assert line.endswith('y…"') and len(line) - len(link) == messages.SLACK_LOGS_LIMIT
    assert line.count("<") == line.count(">") == 1  # the link's, nothing of the log's
    huge = "x" * 5000
    view = {
        "id": "7",
        "title": huge,
        "status": "firing",
        "service": huge,
        "members": [huge] * 3,
        "feedback": {"correct": False, "root_cause": huge, "resolution": huge, "by": huge},
    }
    long_link = "https://g/explore?panes=" + "p" * (messages.SLACK_LOGS_LINK_LIMIT - 40)  # fits whole
    worst = {
        "facts": {"alertname": huge, "severity": huge, "runbook_url": "https://rb/" + "r" * 1400},
        "hypotheses": [
            {"entity": huge, "evidence": [{"signal": huge, "baseline": 1, "incident": 2, "deviation": 3}]}
        ],
        "remediation": [{"action": f"{'n' * 38}{n}", "does": huge, "auto": False} for n in range(4)],
        "changes": [
            {"entity": "carts", "line": "<!channel> " + huge, "line_link": "https://ci/" + "p" * 200}
        ],
        "logs": _with_logs([_log_signal(huge, explore_url=long_link)], hostile)["logs"],
    }
    worst["logs"]["templates"][1]["entity"] = huge
    parent = messages.slack_parent(view, worst, "https://obs.example/" + "p" * 1400, "abcdef012345")
    assert slack_refusal({"channel": "C1", **parent}) is None
    assert sum(len(t) for b in parent["blocks"] for t in _block_texts(b)) <= messages.SLACK_MESSAGE_BUDGET
    line = _logs_line(parent)
    assert line is not None and long_link in line  # the line is there, its link whole
    too_long = _with_logs([_log_signal(explore_url=long_link + "p" * 40)])
    line = _logs_line(messages.slack_parent(SHOP, too_long, URL))
    assert (
        line
        == '*Logs* carts: error-like lines 0 → 42 a minute · new: "connection refused to db:5432 &lt;*&gt;"'
    )


def test_the_logs_anchor_is_html_escaped_and_only_http() -> None:
    report = _with_logs([_log_signal(explore_url='https://g/explore?a=1&b="><script>')])
    text = messages.grafana_text(SHOP, {**report, "summary": "S"}, None)
    assert text == 'S\n<a href="https://g/explore?a=1&amp;b=%22%3E%3Cscript%3E">logs</a>'
    report = _with_logs([_log_signal(explore_url="javascript:alert(1)")])
    assert "href" not in messages.grafana_text(SHOP, {**report, "summary": "S"}, None)
    assert "javascript" not in str(messages.slack_parent(SHOP, report, URL))


def test_the_parents_parts_at_their_longest_add_up_within_the_budget() -> None:
    """The budget the parent's limits are set by (the comment above ``_PARENT_FIELD_LIMIT``): every
    part at its cap, the logs line and its link included, stays within ``SLACK_MESSAGE_BUDGET``."""
    parts = [
        messages.SLACK_HEADER_LIMIT,
        4 * messages._PARENT_FIELD_LIMIT,
        messages.SLACK_TEXT_LIMIT,  # the cause (it gives the proposals their _REMEDIATION_ROOM)
        messages.SLACK_MEMBERS_LIMIT,
        messages._PARENT_LINKS_LIMIT,
        messages.SLACK_FEEDBACK_LIMIT,
        messages._ACTIONS_TEXT,
        messages.SLACK_CHANGE_LIMIT,
        messages.SLACK_LOGS_LIMIT,
        messages.SLACK_LOGS_LINK_LIMIT,
    ]
    assert sum(parts) <= messages.SLACK_MESSAGE_BUDGET
