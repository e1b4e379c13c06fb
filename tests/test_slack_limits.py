"""Slack as the real API treats it: the fake refuses what Slack refuses (each documented limit, auth,
form and JSON bodies), the service's messages stay within those limits for a huge report and the
whole text still arrives, a reply never becomes the incident's reference, and a long Retry-After is
a scheduled retry of the outbox row, not a sleep cut short by the dispatcher's timeout."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.integrations.delivery import sink_guard
from agentic_observability.integrations.slack import SlackSink
from agentic_observability.models import Action, Alert, Incident, OutboxItem
from agentic_observability.outbox.dispatcher import Dispatcher
from agentic_observability.outbox.plan import ActSettings, plan_actions
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics
from tests.conftest import fixture_body, make_config
from tests.fakes import SLACK_TOKEN, FakeSlack, slack_refusal
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, TestServer]]:
    fake = FakeSlack()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _fields(*texts: str) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": t} for t in texts]}


def _header(text: str, kind: str = "plain_text") -> dict[str, Any]:
    return {"type": "header", "text": {"type": kind, "text": text}}


async def _call(
    server: TestServer,
    body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=dict(headers or {})) as http,
        http.post(server.make_url("/api/chat.postMessage"), json=body, data=form) as response,
    ):
        assert response.status == 200  # Slack says no with HTTP 200 and ok: false
        return cast(dict[str, Any], await response.json())


BEARER = {"Authorization": f"Bearer {SLACK_TOKEN}"}

# -- the fake refuses what Slack refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "error"),
    [
        ({}, {"channel": "#incidents", "text": "hi"}, "not_authed"),
        (
            {},
            {"channel": "#incidents", "text": "hi", "token": SLACK_TOKEN},
            "not_authed",
        ),  # JSON: header only
        (
            {"Authorization": "Bearer xoxb-someone-else"},
            {"channel": "#incidents", "text": "hi"},
            "invalid_auth",
        ),
    ],
    ids=["no-token", "token-in-json-body", "wrong-token"],
)
async def test_fake_slack_refuses_a_call_without_the_bot_token(
    slack: tuple[FakeSlack, TestServer], headers: dict[str, str], body: dict[str, Any], error: str
) -> None:
    fake, server = slack
    assert await _call(server, body, headers=headers) == {"ok": False, "error": error}
    assert fake.messages == {} and len(fake.errors) == 1


LIMITS = {
    "header-151": ([_header("h" * 151)], "invalid_blocks"),
    "header-mrkdwn": ([_header("h", kind="mrkdwn")], "invalid_blocks"),
    "51-blocks": ([_section("s")] * 51, "invalid_blocks"),
    "section-3001": ([_section("s" * 3001)], "invalid_blocks"),
    "field-2001": ([_fields("f" * 2001)], "invalid_blocks"),
    "11-fields": ([_fields(*["f"] * 11)], "invalid_blocks"),
    "empty-text": ([_section("")], "invalid_blocks"),
    "total-12500": ([_section("s" * 2500)] * 5, "msg_blocks_too_long"),
}


@pytest.mark.parametrize(("blocks", "error"), LIMITS.values(), ids=LIMITS.keys())
async def test_fake_slack_refuses_blocks_over_a_documented_limit(
    slack: tuple[FakeSlack, TestServer], blocks: list[dict[str, Any]], error: str
) -> None:
    fake, server = slack
    answer = await _call(
        server, {"channel": "#incidents", "text": "fallback", "blocks": blocks}, headers=BEARER
    )
    assert answer == {"ok": False, "error": error}
    assert fake.messages == {} and len(fake.errors) == 1


AT_THE_LIMITS = {
    "header-150": [_header("h" * 150)],
    "50-blocks": [_section("s")] * 50,
    "section-3000": [_section("s" * 3000)],
    "10-fields-of-1000": [_fields(*["f" * 1000] * 10)],
    "field-2000": [_fields("f" * 2000)],
    "total-12000": [_section("s" * 3000)] * 4,
}


@pytest.mark.parametrize("blocks", AT_THE_LIMITS.values(), ids=AT_THE_LIMITS.keys())
async def test_fake_slack_takes_blocks_at_the_limits(
    slack: tuple[FakeSlack, TestServer], blocks: list[dict[str, Any]]
) -> None:
    """Not stricter than Slack either: a test passing only against a stricter fake proves little."""
    fake, server = slack
    answer = await _call(
        server, {"channel": "#incidents", "text": "fallback", "blocks": blocks}, headers=BEARER
    )
    assert answer["ok"] is True and fake.errors == []


async def test_fake_slack_takes_form_encoded_and_json_bodies(slack: tuple[FakeSlack, TestServer]) -> None:
    fake, server = slack
    metadata = {"event_type": "agentic_obs_action", "event_payload": {"incident": "1"}}
    form = {
        "token": SLACK_TOKEN,  # a form may carry the token as a field
        "channel": "#incidents",
        "text": "fallback",
        "blocks": json.dumps([_section("from a form")]),
        "metadata": json.dumps(metadata),
    }
    assert (await _call(server, form=form))["ok"] is True
    assert (
        await _call(server, {"channel": "#incidents", "blocks": [_section("from JSON")]}, headers=BEARER)
    )["ok"]
    first, second = fake.parents()
    assert first["blocks"] == [_section("from a form")] and first["metadata"] == metadata
    assert second["blocks"] == [_section("from JSON")]
    # a form is held to the same limits and the same token
    too_long = {**form, "blocks": json.dumps([_header("h" * 151)])}
    assert await _call(server, form=too_long) == {"ok": False, "error": "invalid_blocks"}
    assert await _call(server, form={**form, "token": "xoxb-wrong"}) == {"ok": False, "error": "invalid_auth"}
    assert len(fake.parents()) == 2 and len(fake.errors) == 2


# -- the service's messages stay within the limits ---------------------------------------------------

HUGE = "x" * 3000  # a label value as long as Alertmanager lets through


def _huge_incident(resolved: bool) -> Incident:
    labels = {"alertname": "Huge" + HUGE, "service": "svc-" + HUGE, "severity": "critical" + HUGE}
    status: Literal["firing", "resolved"] = "resolved" if resolved else "firing"
    alert = Alert(status, labels, {"runbook_url": "https://rb.example/" + HUGE}, 1.7e9, None, "", "f1")
    resolved_at = 1.7e9 + 600 if resolved else None
    return Incident("7", "g", "alertmanager", status, "Huge" + HUGE, labels, 1.7e9, resolved_at, (alert,))


def _huge_report() -> dict[str, Any]:
    """200 hypotheses naming 3,000-character entities and signals, a 50,000-character summary with
    characters that need escaping, and long links."""
    evidence = {
        "signal": "cpu_" + HUGE,
        "baseline": 0.1,
        "incident": 0.9,
        "deviation": 12.0,
        "promql": "rate(x[5m])",
        "explore_url": "https://prom.example/graph?g0.expr=" + "y" * 4000,
    }
    hypotheses = [
        {"entity": f"svc{n}-" + HUGE, "score": 1.0 - n / 400, "evidence": [evidence]} for n in range(200)
    ]
    words = " ".join(f"w{n}&<{n}>" for n in range(7000))  # about 50,000 characters, each & < > escaped
    return {
        "facts": {
            "alertname": "Huge" + HUGE,
            "severity": "critical" + HUGE,
            "runbook_url": "https://rb/" + HUGE,
        },
        "hypotheses": hypotheses,
        "summary": words[:50_000],
        "reasoner": "rules",
        "similar_incidents": [
            {"id": str(n), "started_at": "2026-01-01", "root_cause": HUGE, "resolution": HUGE}
            for n in range(20)
        ],
    }


def _slack_actions(kind: str) -> list[Action]:
    settings = ActSettings(enabled=frozenset({"slack"}), public_url="https://agentic-obs.example")
    incident = _huge_incident(resolved=kind == "resolve")
    return plan_actions(incident, _huge_report(), kind, settings)


def _unescaped_body(payloads: Sequence[Mapping[str, Any]]) -> str:
    """The reply text the messages carry together: every section but each message's heading."""
    chunks = [b["text"]["text"] for p in payloads for b in p["blocks"][1:] if b["type"] == "section"]
    return html.unescape(" ".join(chunks))


def _words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("kind", ["analyze", "resolve"])
def test_every_message_of_a_huge_report_is_one_slack_takes(kind: str) -> None:
    actions = _slack_actions(kind)
    assert len(actions) > 3  # the parent (or its update) and replies split over several messages
    for action in actions:
        assert slack_refusal({"channel": "C1", **action.payload}) is None, action.action
        assert len(action.payload["text"]) <= 3000


def test_a_long_reply_goes_whole_over_several_messages_in_order() -> None:
    actions = _slack_actions("analyze")
    investigation = [a for a in actions if a.action.startswith("reply:investigation")]
    names = [a.action for a in investigation]
    assert names == ["reply:investigation"] + [f"reply:investigation:{n}" for n in range(2, len(names) + 1)]
    assert len(investigation) >= 6  # 50,000 characters (more once escaped) at under 10,000 a message
    assert _words(_unescaped_body([a.payload for a in investigation])) == _words(_huge_report()["summary"])
    headings = [a.payload["blocks"][0]["text"]["text"] for a in investigation]
    assert headings[0] == f"*Investigation (rules reasoner)* (1/{len(headings)})"
    assert headings[-1].endswith(f"({len(headings)}/{len(headings)})")


def test_a_runaway_reply_stops_after_the_message_cap_and_says_so() -> None:
    from agentic_observability.outbox import messages

    parts = messages.slack_replies("Investigation", "word " * 100_000)  # 500,000 characters
    assert len(parts) == messages.SLACK_MAX_REPLY_MESSAGES
    assert "more characters" in parts[-1]["blocks"][-1]["text"]["text"]
    assert all(slack_refusal({"channel": "C1", **p}) is None for p in parts)


def test_parent_caps_fields_and_the_cause_line() -> None:
    (parent,) = [a.payload for a in _slack_actions("analyze") if a.action == "open"]
    header, fields, cause, *_ = parent["blocks"]
    assert len(header["text"]["text"]) == 150 and header["text"]["text"].endswith("…")
    assert all(len(f["text"]) <= 2000 for f in fields["fields"]) and len(fields["fields"]) == 4
    assert fields["fields"][1]["text"].startswith("*Service*\nsvc-xxx") and fields["fields"][1][
        "text"
    ].endswith("…")
    assert len(cause["text"]["text"]) <= 3000 and cause["text"]["text"].startswith(
        "*Most likely cause*\nsvc0-"
    )


def test_a_link_too_long_for_the_parent_is_left_out_whole() -> None:
    """A cut ``<url|text>`` would show as text; a link that does not fit goes, the others stay."""
    from agentic_observability.outbox import messages

    report = _huge_report()  # its explore and runbook links take thousands of characters each
    parent = messages.slack_parent({"id": "7", "title": "t", "status": "firing"}, report, "https://svc/i/7")
    (context,) = [b for b in parent["blocks"] if b["type"] == "context"]
    assert context["elements"][0]["text"] == "<https://svc/i/7|Incident report>"
    report["chart"] = {"series": [{"name": HUGE}]}  # the chart's link is short: it fits
    parent = messages.slack_parent({"id": "7", "title": "t", "status": "firing"}, report, "https://svc/i/7")
    (context,) = [b for b in parent["blocks"] if b["type"] == "context"]
    assert context["elements"][0]["text"] == (
        "<https://svc/i/7|Incident report> · <https://svc/i/7/chart.png|Chart>"
    )


def test_the_parent_of_a_huge_report_with_a_chart_and_an_onset_stays_within_the_limits() -> None:
    """The cause line now says when the change began, and the links include the chart: with every
    text at its longest the parent is still one message Slack takes."""
    from agentic_observability.outbox import messages

    report = {**_huge_report(), "chart": {"series": [{"name": HUGE}]}}
    report["facts"]["started_at"] = "2026-11-30T09:43:12Z"
    for hypothesis in report["hypotheses"]:
        hypothesis["onset"] = "2026-11-30T09:42:57Z"
    long_url = "https://agentic-obs.example/" + "p" * 1400 + "/api/v1/incidents/7"
    for url in ("https://agentic-obs.example/api/v1/incidents/7", long_url):
        parent = messages.slack_parent({"id": "7", "title": HUGE, "status": "firing"}, report, url)
        assert slack_refusal({"channel": "C1", **parent}) is None
        assert len(parent["blocks"]) <= 50 and len(parent["text"]) <= 3000
        (context,) = [b for b in parent["blocks"] if b["type"] == "context"]
        links = context["elements"][0]["text"]
        assert len(links) <= 1500 and links.count("<") == links.count(">")  # whole links only


def test_a_cut_never_splits_an_escape() -> None:
    """Only a word longer than a section is ever cut; its cut never leaves half an ``&amp;``."""
    from agentic_observability.outbox import messages

    (reply,) = messages.slack_replies("Word", "x" + "&" * 1000)  # one 5,001-character escaped word
    chunks = [b["text"]["text"] for b in reply["blocks"][1:]]
    assert len(chunks) == 2 and "".join(chunks) == "x" + "&amp;" * 1000
    assert all(re.fullmatch(r"x?(&amp;)+", chunk) for chunk in chunks)


async def _deliver_in_order(sink: SlackSink, actions: Sequence[Action], ref: str | None = None) -> str | None:
    """What the dispatcher does for one incident's Slack lane: in order, each with the reference the
    earlier deliveries left (a delivery returning None keeps it)."""
    for number, action in enumerate(actions):
        item = OutboxItem(
            number, action.incident_id, action.sink, action.action, action.payload, 0, time.time(), ref
        )
        ref = await sink.deliver(item) or ref
    return ref


def _sink(server: TestServer, timeout: float = 10.0) -> SlackSink:
    api = str(server.make_url("/api"))
    return SlackSink.create(sink_guard("slack", 5, 30.0), api, SLACK_TOKEN, "#incidents", None, timeout)


async def test_a_huge_report_reaches_slack_whole_and_within_its_limits(
    slack: tuple[FakeSlack, TestServer],
) -> None:
    fake, server = slack
    opened, resolved = _slack_actions("analyze"), _slack_actions("resolve")
    ref = await _deliver_in_order(_sink(server), opened)
    await _deliver_in_order(_sink(server), resolved, ref)
    assert fake.errors == []
    (parent,) = fake.parents()
    assert parent["blocks"][0]["text"]["text"].startswith("[RESOLVED] Huge")  # updated in place
    replies = fake.replies(parent["ts"])
    assert len(replies) == len(opened) + len(resolved) - 2
    investigation = [r for r in replies if r["metadata"]["event_payload"]["action"].startswith("reply:inv")]
    assert _words(_unescaped_body(investigation)) == _words(_huge_report()["summary"])


# -- a reply is never the incident's reference -------------------------------------------------------


async def test_a_reply_whose_parent_was_given_up_never_becomes_the_reference(
    aiohttp_client: Client, tmp_path: Path, slack: tuple[FakeSlack, TestServer]
) -> None:
    """The parent is refused for good; the investigation reply then posts top-level, saying whose it
    is. On resolve, the parent is posted anew and the resolution threads under it: the reply is
    never overwritten by a chat.update meant for the parent."""
    fake, server = slack
    fake.script = [(200, {}, {"ok": False, "error": "channel_not_found"})]  # the parent: permanent
    config = make_config(
        tmp_path,
        secrets={"slack_bot_token": SLACK_TOKEN},
        actions={
            "slack": {"api_url": str(server.make_url("/api")), "channel": "#incidents"},
            "first_retry": "0.2s",
        },
    )
    client = await aiohttp_client(init_app(config))

    async def slack_settled(count: int) -> bool:
        rows = [r for r in await client.app[STORE].outbox_rows() if r["sink"] == "slack"]
        return len(rows) >= count and all(r["state"] != "pending" for r in rows)

    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202
    await wait_for(lambda: slack_settled(2))
    assert (await post(client, fixture_body("am-0.25-resolved.json"))).status == 202
    await wait_for(lambda: slack_settled(4))
    states = [
        (r["action"], r["state"]) for r in await client.app[STORE].outbox_rows() if r["sink"] == "slack"
    ]
    assert states == [
        ("open", "failed"),
        ("reply:investigation", "delivered"),
        ("update:resolve", "delivered"),
        ("reply:resolve", "delivered"),
    ]
    assert [method for method, _ in fake.requests] == ["chat.postMessage"] * 3  # no chat.update
    orphan, parent = sorted(fake.parents(), key=lambda m: float(m["ts"]))
    assert orphan["blocks"][0]["elements"][0]["text"] == "Incident 1: its parent message could not be posted."
    assert orphan["blocks"][1]["text"]["text"] == "*Investigation (rules reasoner)*"  # still the reply
    assert parent["blocks"][0]["text"]["text"].startswith("[RESOLVED]")
    (resolution,) = fake.replies(parent["ts"])
    assert resolution["blocks"][0]["text"]["text"].startswith("*Resolved at")
    assert fake.errors == []


# -- Retry-After ------------------------------------------------------------------------------------


class _OneItemStore:
    """Just what the dispatcher asks of a store for one outbox row."""

    def __init__(self, item: OutboxItem) -> None:
        self.pending: list[OutboxItem] = [item]
        self.failed: list[tuple[str, float | None]] = []
        self.delivered: list[str | None] = []
        self.settled = asyncio.Event()

    async def due_actions(
        self, now: float, limit: int = 200, exclude: Sequence[int] = ()
    ) -> list[OutboxItem]:
        taken, self.pending = self.pending, []
        return taken

    async def action_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> None:
        self.failed.append((error, retry_at))
        self.settled.set()

    async def action_delivered(self, item: OutboxItem, ref: str | None) -> None:
        self.delivered.append(ref)
        self.settled.set()


async def _dispatch_once(server: TestServer, actions_timeout: float) -> _OneItemStore:
    sink = _sink(server, actions_timeout)
    # queued after the sink started: a first try, which posts without looking for an earlier post
    store = _OneItemStore(OutboxItem(1, "1", "slack", "open", {"text": "hi"}, 0, time.time()))
    dispatcher = Dispatcher(cast(Store, store), {"slack": sink}, Metrics(), actions_timeout, 0.2)
    await dispatcher.start_due()
    await asyncio.wait_for(store.settled.wait(), 30)
    return store


async def test_a_long_retry_after_schedules_the_row_instead_of_sleeping(
    slack: tuple[FakeSlack, TestServer],
) -> None:
    """Slack says come back in 120 s. Slept inside the delivery, the dispatcher's outer timeout
    (6 × actions.timeout = 6 s here) would cut it short and retry after the first backoff (0.2 s)."""
    fake, server = slack
    fake.script = [(429, {"Retry-After": "120"}, {"ok": False, "error": "ratelimited"})]
    started = time.time()
    store = await _dispatch_once(server, actions_timeout=1.0)
    assert time.time() - started < 3.0  # answered at once, not after a sleep
    ((error, retry_at),) = store.failed
    assert retry_at is not None and retry_at - started >= 119 and "429" in error
    assert store.delivered == [] and fake.messages == {}


async def test_a_short_retry_after_is_waited_within_the_delivery(slack: tuple[FakeSlack, TestServer]) -> None:
    fake, server = slack
    fake.script = [(429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"})]
    store = await _dispatch_once(server, actions_timeout=10.0)
    assert store.failed == [] and len(store.delivered) == 1 and len(fake.parents()) == 1
    assert fake.arrived == 2  # the 429, then the post, one attempt of the outbox row
