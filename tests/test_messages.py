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
