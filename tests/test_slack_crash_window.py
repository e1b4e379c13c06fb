"""Slack's crash window: Slack accepted a post but the service never recorded its ts (it died, or the
answer timed out). The retry finds the message by its metadata instead of posting it again; when it
cannot look (no history scope), it posts anyway: at least once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.integrations.slack import EVENT_TYPE
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from tests.conftest import fixture_body
from tests.fakes import SLACK_CHANNEL_ID, SLACK_TOKEN, FakeSlack
from tests.test_actions import Sinks, delivered, sinks  # noqa: F401  (the fixture)
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
LOOKUP_FAILED = "could not look for a message already posted"


async def _crash_after_slack_accepted(
    aiohttp_client: Client, tmp_path: Path, fakes: Sinks, answered_first: int = 0
) -> TestClient:
    """Slack records a post (the parent, or with ``answered_first=1`` the thread reply) but holds its
    answer; the service stops, its in-flight delivery cut off after 0.1 s as by a SIGKILL, before it
    can commit the ts; then it starts again."""
    fakes.slack.stall_after, fakes.slack.stall_posts = answered_first, 1
    config = fakes.config(tmp_path, server={"shutdown_timeout": 0.1})
    first = await aiohttp_client(init_app(config))
    assert (await post(first, fixture_body("am-0.25-firing.json"))).status == 202

    async def accepted() -> bool:
        return len(fakes.slack.messages) == answered_first + 1

    await wait_for(accepted)
    await first.close()
    fakes.slack.release()
    second = await aiohttp_client(init_app(config))
    await wait_for(lambda: delivered(second, 5), within=20)
    return second


async def test_a_crash_after_slack_accepted_the_parent_posts_it_once(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
) -> None:
    second = await _crash_after_slack_accepted(aiohttp_client, tmp_path, sinks)
    (parent,) = sinks.slack.parents()
    assert parent["metadata"]["event_type"] == EVENT_TYPE
    payload = parent["metadata"]["event_payload"]
    assert {k: payload[k] for k in ("incident", "action", "install")} == {
        "incident": "1",
        "action": "open",
        "install": await second.app[STORE].install_id(),  # the store's, the same after the restart
    }
    (reply,) = sinks.slack.replies(parent["ts"])  # the thread hangs under the one parent
    assert reply["metadata"]["event_payload"]["action"] == "reply:investigation"
    methods = [method for method, _ in sinks.slack.lookups]
    # "#incidents" resolved to its id once; the parent found in the history, the reply not in the thread
    assert methods == ["conversations.list", "conversations.history", "conversations.replies"]
    history = dict(sinks.slack.lookups)["conversations.history"]
    assert history["channel"] == SLACK_CHANNEL_ID and history["include_all_metadata"] == "1"
    assert float(history["oldest"]) < float(parent["ts"]) and int(history["limit"]) <= 100
    assert sinks.errors() == []


async def test_a_crash_after_slack_accepted_a_reply_posts_it_once(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
) -> None:
    await _crash_after_slack_accepted(aiohttp_client, tmp_path, sinks, answered_first=1)
    (parent,) = sinks.slack.parents()
    assert len(sinks.slack.replies(parent["ts"])) == 1
    assert [method for method, _ in sinks.slack.lookups] == ["conversations.replies"]
    assert sinks.errors() == []


async def test_a_timed_out_post_that_slack_accepted_is_not_posted_again(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
) -> None:
    sinks.slack.stall_posts = 1  # answered only after the client gave up (actions.timeout: 1s)
    client = await aiohttp_client(init_app(sinks.config(tmp_path, timeout="1s")))
    try:
        assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202
        await wait_for(lambda: delivered(client, 5), within=20)
    finally:
        sinks.slack.release()
    (parent,) = sinks.slack.parents()
    assert len(sinks.slack.replies(parent["ts"])) == 1
    (opened,) = [
        r for r in await client.app[STORE].outbox_rows() if r["action"] == "open" and r["sink"] == "slack"
    ]
    assert opened["attempts"] == 2  # the timeout, then the lookup that found it
    assert [m for m, _ in sinks.slack.lookups] == ["conversations.list", "conversations.history"]
    assert sinks.errors() == []


async def test_without_history_scope_it_posts_anyway_and_says_so_once(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    sinks.slack.missing_scopes = {"channels:history"}
    with caplog.at_level(logging.WARNING, logger="agentic_observability.integrations.slack"):
        await _crash_after_slack_accepted(aiohttp_client, tmp_path, sinks)
    assert len(sinks.slack.parents()) == 2  # at least once: the fallback when Slack cannot be read
    latest = max(sinks.slack.parents(), key=lambda m: float(m["ts"]))
    assert len(sinks.slack.replies(latest["ts"])) == 1
    warnings = [r.getMessage() for r in caplog.records if LOOKUP_FAILED in r.getMessage()]
    assert len(warnings) == 1 and "missing_scope (needs channels:history)" in warnings[0]


async def test_fake_slack_keeps_metadata_as_documented() -> None:
    """The fake answers a malformed metadata object as Slack does, and returns metadata on reads only
    when asked to with include_all_metadata."""
    slack = FakeSlack()
    server = TestServer(slack.app(), host="127.0.0.1")
    await server.start_server()
    headers = {"Authorization": f"Bearer {SLACK_TOKEN}"}
    good = {"event_type": "agentic_obs_action", "event_payload": {"incident": "7"}}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            for bad in (
                {"event_type": "not valid!", "event_payload": {}},
                {"event_type": "x", "event_payload": "y"},
            ):
                body = {"channel": "#incidents", "text": "hi", "metadata": bad}
                async with http.post(server.make_url("/api/chat.postMessage"), json=body) as response:
                    assert await response.json() == {"ok": False, "error": "invalid_metadata_format"}
            body = {"channel": "#incidents", "text": "hi", "metadata": good}
            async with http.post(server.make_url("/api/chat.postMessage"), json=body) as response:
                assert (await response.json())["ok"] is True
            for flag, expected in (("0", None), ("1", good)):
                query = {"channel": SLACK_CHANNEL_ID, "include_all_metadata": flag}
                async with http.get(server.make_url("/api/conversations.history"), params=query) as response:
                    (message,) = (await response.json())["messages"]
                assert message.get("metadata") == expected
    finally:
        await server.close()
    assert len(slack.errors) == 2 and len(slack.parents()) == 1
