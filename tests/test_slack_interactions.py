"""Slack interactivity end to end: the parent's buttons, the modals they open, the slash command.

Requests are signed as Slack signs them (``v0:{timestamp}:{body}``, HMAC-SHA256 under the signing
secret; the signer here reproduces Slack's documented example) and shaped as Slack documents them:
block_actions (docs.slack.dev/reference/interaction-payloads/block_actions-payload), view_submission
(.../interaction-payloads/view-interactions-payload) and a slash command's form
(docs.slack.dev/interactivity/implementing-slash-commands). The fake Slack checks each call back
(chat.update, chat.postMessage, views.open, the response_url) against Slack's documented shape.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from agentic_observability.outbox import messages
from agentic_observability.pipeline import investigate
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.service.routes import slack as slack_route
from tests.conftest import auth_headers, fixture_body, make_config
from tests.fakes import SLACK_CHANNEL_ID, SLACK_TOKEN, FakeSlack, _block_texts, slack_refusal
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the signing secret of Slack's own example
PATH = "/api/v1/slack/interactions"
USER = {"id": "U0123ABCD", "username": "jane", "name": "jane", "team_id": "T0123ABCD"}


def _evidence(service: str, baseline: float, incident: float) -> dict[str, Any]:
    return {
        "signal": "cpu",
        "promql": f'rate(cpu_seconds_total{{service="{service}"}}[1m])',
        "labels": {"service": service},
        "baseline": baseline,
        "incident": incident,
        "unit": None,
        "deviation": 9.5,
        "onset": "2026-11-27T20:37:00Z",
        "explore_url": "http://prometheus.example/graph?g0.expr=cpu",
    }


RANKED = tuple(
    {
        "rank": rank,
        "entity_label": "service",
        "entity": service,
        "score": score,
        "onset": "2026-11-27T20:37:00Z",
        "onset_unix": 1796157420.0,
        "evidence": [_evidence(service, 0.2, 0.9)],
    }
    for rank, (service, score) in enumerate([("carts", 0.91), ("checkout", 0.42)], start=1)
)


def sign(body: str, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """The headers Slack sends: the request's time and ``v0=`` HMAC-SHA256 of ``v0:{time}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


# Slack's example (docs.slack.dev/authentication/verifying-requests-from-slack): a slash command's body,
# its timestamp and the signature Slack sent with it, under the secret above.
EXAMPLE_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
    "channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
    "response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
EXAMPLE_TS = 1531420618
EXAMPLE_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


# -- Slack's payloads, in their documented shapes ------------------------------------------------------


def block_actions(parent: dict[str, Any], action: dict[str, Any], response_url: str, **user: str) -> str:
    """The form body of a press on ``parent`` (a message the fake holds)."""
    payload = {
        "type": "block_actions",
        "user": {**USER, **user},
        "api_app_id": "A0123ABCD",
        "token": "verification-token-not-used",
        "container": {
            "type": "message",
            "message_ts": parent["ts"],
            "channel_id": SLACK_CHANNEL_ID,
            "is_ephemeral": False,
        },
        "trigger_id": f"{time.time_ns()}.42.abcdef",
        "team": {"id": "T0123ABCD", "domain": "example"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": SLACK_CHANNEL_ID, "name": "incidents"},
        "message": {
            "type": "message",
            "bot_id": "B0123ABCD",
            "ts": parent["ts"],
            "text": parent["text"],
            "blocks": parent["blocks"],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    return urlencode({"payload": json.dumps(payload)})


def pressed(parent: dict[str, Any], verb: str, option: str | None = None) -> dict[str, Any]:
    """The ``actions`` entry Slack sends for the element of ``verb`` on ``parent`` (a menu: ``option``)."""
    (element,) = [
        e
        for b in parent["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if f":{verb}:" in e["action_id"]
    ]
    action = {"action_id": element["action_id"], "block_id": "Ab1x", "action_ts": f"{time.time():.6f}"}
    if element["type"] == "button":
        return {**action, "type": "button", "text": element["text"], **{"value": element.get("value")}}
    (chosen,) = [o for o in element["options"] if o["value"] == option]
    return {
        **action,
        "type": "static_select",
        "selected_option": chosen,
        "placeholder": element["placeholder"],
    }


def view_submission(opened: dict[str, Any], answer: str) -> str:
    """The form body of a Save on the modal views.open was given (``opened``)."""
    view = {
        "id": "V0123ABCD",
        "team_id": "T0123ABCD",
        "type": "modal",
        "blocks": opened["blocks"],
        "private_metadata": opened.get("private_metadata", ""),
        "callback_id": opened["callback_id"],
        "state": {"values": {"answer": {"answer": {"type": "plain_text_input", "value": answer}}}},
        "hash": "1764528000.abcdEFGH",
        "title": opened["title"],
        "clear_on_close": False,
        "notify_on_close": False,
        "close": opened.get("close"),
        "submit": opened.get("submit"),
        "previous_view_id": None,
        "root_view_id": "V0123ABCD",
        "app_id": "A0123ABCD",
        "external_id": "",
        "app_installed_team_id": "T0123ABCD",
        "bot_id": "B0123ABCD",
    }
    payload = {
        "type": "view_submission",
        "team": {"id": "T0123ABCD", "domain": "example"},
        "user": USER,
        "api_app_id": "A0123ABCD",
        "token": "verification-token-not-used",
        "trigger_id": "1764528000.42.abcdef",
        "view": view,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return urlencode({"payload": json.dumps(payload)})


def slash(text: str, response_url: str) -> str:
    return urlencode(
        {
            "token": "verification-token-not-used",
            "team_id": "T0123ABCD",
            "team_domain": "example",
            "channel_id": SLACK_CHANNEL_ID,
            "channel_name": "incidents",
            "user_id": USER["id"],
            "user_name": USER["username"],
            "command": "/agentic-obs",
            "text": text,
            "api_app_id": "A0123ABCD",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": "1764528000.42.abcdef",
        }
    )


# -- the service, with a fake Slack and a ranking that names carts -------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, TestServer]]:
    fake = FakeSlack()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


@pytest.fixture(autouse=True)
def ranked(monkeypatch: pytest.MonkeyPatch) -> None:
    async def rank(*args: Any, **kwargs: Any) -> tuple[tuple[dict[str, Any], ...], list[str]]:
        return RANKED, []

    monkeypatch.setattr(investigate, "root_cause_hypotheses", rank)


class Service:
    """The app under test, the fake Slack, and the incident opened (its Slack parent posted)."""

    def __init__(self, client: TestClient, fake: FakeSlack, server: TestServer) -> None:
        self.client, self.fake, self.server = client, fake, server
        self._urls = 0

    async def send(self, body: str, headers: dict[str, str] | None = None) -> Any:
        return await self.client.post(PATH, data=body, headers=sign(body) if headers is None else headers)

    def response_url(self) -> tuple[str, str]:
        self._urls += 1
        key = f"T0123ABCD-{self._urls}"
        return key, str(self.server.make_url(f"/response/{key}"))

    def parent(self) -> dict[str, Any]:
        (parent,) = self.fake.parents()
        return parent

    async def press(self, verb: str, option: str | None = None, parent: dict[str, Any] | None = None) -> str:
        """Press ``verb`` on the parent; returns the response_url's key. Slack got an empty 200."""
        key, url = self.response_url()
        shown = parent or self.parent()
        response = await self.send(block_actions(shown, pressed(shown, verb, option), url))
        assert response.status == 200 and await response.text() == ""
        return key

    async def feedback(self, incident_id: str = "1") -> Any:
        return (
            await (await self.client.get(f"/api/v1/incidents/{incident_id}", headers=auth_headers())).json()
        )["feedback"]

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.fake.requests if name == method]


async def start(
    aiohttp_client: Client, tmp_path: Path, slack: tuple[FakeSlack, TestServer], **sections: Any
) -> Service:
    fake, server = slack
    signals = {"signals": [{"name": "cpu", "query": "rate(cpu_seconds_total[1m])"}]}
    config = make_config(
        tmp_path,
        secrets={"slack_bot_token": SLACK_TOKEN, "slack_signing_secret": SECRET},
        actions={"slack": {"api_url": str(server.make_url("/api")), "channel": "#incidents"}},
        **{"investigation": signals, **sections},
    )
    client = await aiohttp_client(init_app(config))
    return Service(client, fake, server)


async def opened(service: Service) -> Service:
    """An incident opened by Alertmanager, its Slack messages all delivered."""
    assert (await post(service.client, fixture_body("am-0.25-firing.json"))).status == 202
    await wait_for(lambda: _settled(service))
    return service


async def _settled(service: Service) -> bool:
    rows = [r for r in await service.client.app[STORE].outbox_rows() if r["sink"] == "slack"]
    return bool(rows) and all(r["state"] == "delivered" for r in rows)


@pytest.fixture
async def service(slack: tuple[FakeSlack, TestServer], aiohttp_client: Client, tmp_path: Path) -> Service:
    """(The fake Slack first: it outlives the app, whose work after an answer may still call it.)"""
    return await opened(await start(aiohttp_client, tmp_path, slack))


def context_texts(message: dict[str, Any]) -> list[str]:
    return [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]


def reply_texts(service: Service) -> list[str]:
    return [r["blocks"][0]["text"]["text"] for r in service.fake.replies(service.parent()["ts"])]


# -- who may call ----------------------------------------------------------------------------------------


def test_the_signer_here_reproduces_slacks_documented_example() -> None:
    assert sign(EXAMPLE_BODY, EXAMPLE_TS)["X-Slack-Signature"] == EXAMPLE_SIGNATURE


def test_slacks_documented_example_is_taken_at_its_time_and_not_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slack_route, "time", SimpleNamespace(time=lambda: EXAMPLE_TS + 2.0))
    monkeypatch.setattr("slack_sdk.signature.time", lambda: EXAMPLE_TS + 2.0)  # the verifier's clock
    headers = {"X-Slack-Request-Timestamp": str(EXAMPLE_TS), "X-Slack-Signature": EXAMPLE_SIGNATURE}
    request = make_mocked_request("POST", PATH, headers=headers)
    seen = slack_route.SeenSignatures()
    assert slack_route.unsigned(request, EXAMPLE_BODY.encode(), SECRET, seen) is None
    assert "replay" in str(slack_route.unsigned(request, EXAMPLE_BODY.encode(), SECRET, seen))
    monkeypatch.setattr(slack_route, "time", SimpleNamespace(time=lambda: EXAMPLE_TS + 301.0))
    assert "5 minutes" in str(slack_route.unsigned(request, EXAMPLE_BODY.encode(), SECRET, seen))


async def test_a_bad_signature_an_old_timestamp_and_a_replay_get_401_and_change_nothing(
    service: Service,
) -> None:
    """Without the bearer token (Slack cannot send one): only Slack's signature counts."""
    _, url = service.response_url()
    body = block_actions(service.parent(), pressed(service.parent(), messages.CONFIRM), url)
    refused = {
        "wrong secret": sign(body, secret="not-the-signing-secret"),
        "6 minutes old": sign(body, int(time.time()) - 360),
        "from the future": sign(body, int(time.time()) + 360),
        "no signature": {"Content-Type": "application/x-www-form-urlencoded"},
        "signed for another body": sign(body.replace("Ab1x", "Ab2x")),
        "a timestamp that is no number": {**sign(body), "X-Slack-Request-Timestamp": "soon"},
        "not ASCII": {**sign(body), "X-Slack-Signature": "v0=é"},
    }
    for why, headers in refused.items():
        response = await service.send(body, headers)
        assert response.status == 401, why
        assert (await response.json())["error"] == "unauthorized"
    headers = sign(body)
    assert (await service.send(body, headers)).status == 200
    await wait_for(lambda: _feedback_given(service))
    replay = await service.send(body, headers)
    assert replay.status == 401 and "replay" in (await replay.json())["detail"]
    await asyncio.sleep(0.3)  # a replay's work would have started by now
    assert len(service.calls("chat.update")) == 1  # the one accepted press, once
    assert service.fake.errors == []


async def _feedback_given(service: Service) -> bool:
    return await service.feedback() is not None and len(service.calls("chat.update")) == 1


async def test_nothing_is_done_before_the_signature_is_checked(service: Service) -> None:
    await asyncio.sleep(0.1)
    response = await service.send("payload=%7Bnot-json", sign("payload=%7Bnot-json", secret="x"))
    assert response.status == 401
    bad = await service.send("payload=%7Bnot-json")  # signed: now the body is read, and refused
    assert bad.status == 400 and (await bad.json())["field"] == "payload"
    assert await service.feedback() is None


async def test_without_a_signing_secret_slack_is_refused_and_told_why(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    client = await aiohttp_client(init_app(make_config(tmp_path)))
    body = slash("help", "https://hooks.slack.com/commands/T0/1/x")
    response = await client.post(PATH, data=body, headers=sign(body))
    assert response.status == 503 and "SLACK_SIGNING_SECRET" in (await response.json())["detail"]


# -- the buttons -------------------------------------------------------------------------------------------


async def test_the_parent_carries_the_buttons_naming_the_incident_and_this_installation(
    service: Service,
) -> None:
    install = await service.client.app[STORE].install_id()
    (actions,) = [b for b in service.parent()["blocks"] if b["type"] == "actions"]
    confirm, menu, fixed, again = actions["elements"]
    assert confirm["action_id"] == f"agentic_obs:confirm:{install}:1"
    assert json.loads(confirm["value"]) == {"incident": "1", "install": install, "cause": "carts"}
    assert [o["value"] for o in menu["options"]] == ["entity:carts", "entity:checkout", "other"]
    assert fixed["action_id"] == f"agentic_obs:resolution:{install}:1"
    assert again["action_id"] == f"agentic_obs:reinvestigate:{install}:1"


async def test_confirm_cause_stores_the_feedback_updates_the_parent_and_tells_the_thread(
    service: Service,
) -> None:
    await service.press(messages.CONFIRM)
    await wait_for(lambda: _replied(service, ":memo:"))
    feedback = await service.feedback()
    assert {k: feedback[k] for k in ("correct", "root_cause", "by")} == {
        "correct": True,
        "root_cause": "carts",
        "by": "slack:U0123ABCD (jane)",
    }
    line = "Feedback from <@U0123ABCD>: Cause confirmed: *carts*"
    assert line in context_texts(service.parent())  # updated in place: still one parent
    assert f":memo: {line}" in reply_texts(service)
    (update,) = service.calls("chat.update")
    assert update["channel"] == SLACK_CHANNEL_ID and update["ts"] == service.parent()["ts"]
    assert service.fake.errors == []


async def test_feedback_through_the_api_also_shows_on_the_parent_and_in_the_thread(service: Service) -> None:
    """One feedback path: the HTTP API's feedback reaches Slack as a press does, through the outbox."""
    body = {"root_cause": "checkout", "correct": False, "by": "sam"}
    response = await service.client.post("/api/v1/incidents/1/feedback", json=body, headers=auth_headers())
    assert response.status == 200
    await wait_for(lambda: _replied(service, ":memo:"))
    await wait_for(lambda: _settled(service))
    line = "Feedback from sam: The ranked cause was wrong; it was *checkout*"
    assert any(line in text for text in context_texts(service.parent())), context_texts(service.parent())
    assert any(line in text for text in reply_texts(service))
    assert len(service.calls("chat.update")) == 1 and service.fake.errors == []


async def _replied(service: Service, start: str) -> bool:
    return any(text.startswith(start) for text in reply_texts(service))


async def test_wrong_cause_from_the_menu_records_the_chosen_service(service: Service) -> None:
    await service.press(messages.WRONG, "entity:checkout")
    await wait_for(lambda: _replied(service, ":memo:"))
    feedback = await service.feedback()
    assert (feedback["correct"], feedback["root_cause"]) == (False, "checkout")
    assert "Feedback from <@U0123ABCD>: The ranked cause was wrong; it was *checkout*" in context_texts(
        service.parent()
    )
    assert service.fake.errors == []


async def test_other_opens_a_modal_whose_answer_is_the_cause(service: Service) -> None:
    key = await service.press(messages.WRONG, "other")
    await wait_for(lambda: _opened(service))
    (opened,) = service.calls("views.open")
    assert opened["view"]["callback_id"].startswith("agentic_obs:other_cause:")
    response = await service.send(view_submission(opened["view"], "  a bad deploy of <payments>  "))
    assert response.status == 200 and await response.text() == ""  # the modal closes
    await wait_for(lambda: _replied(service, ":memo:"))
    feedback = await service.feedback()
    assert (feedback["correct"], feedback["root_cause"]) == (False, "a bad deploy of <payments>")
    assert "it was *a bad deploy of &lt;payments&gt;*" in context_texts(service.parent())[-1]
    assert service.fake.answers(key) == []  # the thread was told: nothing to say to the person alone
    assert service.fake.errors == []


async def _opened(service: Service) -> bool:
    return bool(service.calls("views.open"))


async def test_resolved_by_opens_a_modal_and_keeps_the_fix(service: Service) -> None:
    await service.press(messages.RESOLUTION)
    await wait_for(lambda: _opened(service))
    (opened,) = service.calls("views.open")
    view = opened["view"]
    assert view["title"]["text"] == "Resolved by…" and view["blocks"][1]["element"]["max_length"] == 2000
    await service.send(view_submission(view, "rolled back carts to 1.4.2"))
    await wait_for(lambda: _replied(service, ":memo:"))
    assert (await service.feedback())["resolution"] == "rolled back carts to 1.4.2"
    assert "Feedback from <@U0123ABCD>: Fix: rolled back carts to 1.4.2" in context_texts(service.parent())
    assert service.fake.errors == []


async def test_a_modal_for_an_incident_gone_meanwhile_says_so_in_the_modal(service: Service) -> None:
    await service.press(messages.RESOLUTION)
    await wait_for(lambda: _opened(service))
    view = service.calls("views.open")[0]["view"]
    gone = {**view, "callback_id": view["callback_id"].rsplit(":", 1)[0] + ":99"}
    response = await service.send(view_submission(gone, "restarted it"))
    assert response.status == 200
    answer = await response.json()
    assert answer["response_action"] == "errors" and "no longer exists" in answer["errors"]["answer"]
    empty = await service.send(view_submission(view, "   "))
    assert (await empty.json())["response_action"] == "errors"
    assert await service.feedback() is None


async def test_re_investigate_analyses_again_and_the_parent_and_thread_show_the_new_cause(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault moved on: checkout now ranks first. The press queues a real analysis, whose report
    replaces the old one, re-renders the parent in place and goes to the thread with who asked."""
    checkout_first = ({**RANKED[1], "rank": 1, "score": 0.95}, {**RANKED[0], "rank": 2, "score": 0.3})

    async def rank(*args: Any) -> tuple[tuple[dict[str, Any], ...], list[str]]:
        return checkout_first, []

    monkeypatch.setattr(investigate, "root_cause_hypotheses", rank)
    assert _cause_shown(service.parent()).strip() == "carts"
    await service.press(messages.REINVESTIGATE)
    await wait_for(lambda: _replied(service, "*Re-investigation"))
    await wait_for(lambda: _settled(service))
    replies = reply_texts(service)
    asked = [t for t in replies if t.startswith(":mag:")]
    assert asked == [":mag: <@U0123ABCD> asked to re-investigate: the new report follows here."]
    new_report = next(i for i, t in enumerate(replies) if t.startswith("*Re-investigation"))
    assert replies.index(asked[0]) < new_report
    assert _cause_shown(service.parent()).strip() == "checkout"  # the one parent, updated in place
    (update,) = service.calls("chat.update")
    assert update["ts"] == service.parent()["ts"]
    stored = await service.client.app[STORE].get_incident("1")
    assert stored is not None and stored.report["hypotheses"][0]["entity"] == "checkout"
    assert service.fake.errors == []


def _cause_shown(parent: dict[str, Any]) -> str:
    """The cause as the parent names it (its text, which notifications show, opens with it)."""
    return str(parent["text"]).split(": ")[2]


async def test_re_investigate_pressed_again_while_one_is_queued_analyses_once(service: Service) -> None:
    store = service.client.app[STORE]
    first = await store.queue_job("1", "reinvestigate")
    again = await store.queue_job("1", "reinvestigate")
    assert first is not None and again is not None
    assert first[1] is True and again == (first[0], False)  # the same job, not a second one
    key = await service.press(messages.REINVESTIGATE)  # still queued: the store has it pending
    await wait_for(lambda: _answered(service, key))
    (answer,) = service.fake.answers(key)
    assert "being analysed already" in answer["text"] and answer["response_type"] == "ephemeral"
    assert not any(t.startswith(":mag:") for t in reply_texts(service))  # no thread noise for a repeat
    assert await store.queue_job("42", "reinvestigate") is None  # no such incident


async def test_a_press_on_an_incident_resolved_meanwhile_is_answered_politely(service: Service) -> None:
    firing = copy.deepcopy(service.parent())  # the fake updates its message in place
    assert (await post(service.client, fixture_body("am-0.25-resolved.json"))).status == 202
    await wait_for(lambda: _resolved(service))
    key = await service.press(messages.REINVESTIGATE, parent=firing)  # the message as it still showed
    await wait_for(lambda: _answered(service, key))
    (answer,) = service.fake.answers(key)
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
    assert "resolved at" in answer["text"] and "nothing to re-investigate" in answer["text"]
    assert [e["action_id"].split(":")[1] for e in _buttons(service.parent())] == [
        "confirm",
        "wrong",
        "resolution",
    ]  # the resolved parent offers no Re-investigate
    assert service.fake.errors == []


def _buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def _resolved(service: Service) -> bool:
    return service.parent()["blocks"][0]["text"]["text"].startswith("[RESOLVED]") and await _settled(service)


async def _answered(service: Service, key: str) -> bool:
    return bool(service.fake.answers(key))


async def test_a_press_for_an_incident_that_is_gone_or_another_installations_changes_nothing(
    service: Service,
) -> None:
    install = await service.client.app[STORE].install_id()
    for action_id, said in [
        (f"agentic_obs:confirm:{install}:42", "no longer exists"),
        ("agentic_obs:confirm:0123456789ab:1", "another agentic-obs installation"),
    ]:
        key, url = service.response_url()
        action = {**pressed(service.parent(), messages.CONFIRM), "action_id": action_id}
        response = await service.send(block_actions(service.parent(), action, url))
        assert response.status == 200
        await wait_for(lambda key=key: _answered(service, key))
        assert said in service.fake.answers(key)[0]["text"]
    assert await service.feedback() is None and service.calls("chat.update") == []
    assert service.fake.errors == []


# -- the slash command ----------------------------------------------------------------------------------


async def test_incident_answers_in_the_channel_at_once(service: Service) -> None:
    _, url = service.response_url()
    response = await service.send(slash("incident 1", url))
    assert response.status == 200
    answer = await response.json()
    assert answer["response_type"] == "in_channel"
    text = answer["blocks"][0]["text"]["text"]
    assert "*Incident 1* (firing): HighCheckoutLatency" in text and "*Most likely cause* carts: cpu" in text
    assert "<https://runbooks.example.com/checkout-latency|Runbook>" in context_texts(answer)[-1]
    assert slack_refusal(answer) is None
    missing = await (await service.send(slash("incident 77", url))).json()
    assert missing["response_type"] == "ephemeral" and "no incident 77" in missing["text"]


@pytest.mark.parametrize("text", ["help", "", "frobnicate 3"])
async def test_help_and_anything_unknown_get_the_help(service: Service, text: str) -> None:
    _, url = service.response_url()
    answer = await (await service.send(slash(text, url))).json()
    assert answer["response_type"] == "ephemeral"
    assert "`/agentic-obs investigate <service>`" in answer["text"]


async def test_investigate_acknowledges_then_answers_in_the_channel(service: Service) -> None:
    key, url = service.response_url()
    ack = await (await service.send(slash("investigate checkout", url))).json()
    assert ack["response_type"] == "ephemeral" and "Looking at checkout" in ack["text"]
    await wait_for(lambda: _answered(service, key))
    (answer,) = service.fake.answers(key)
    assert answer["response_type"] == "in_channel"
    assert "*checkout* ranks #2 (score 0.42)" in answer["text"]
    assert service.fake.errors == []


async def test_investigate_without_signals_says_it_is_not_configured(
    aiohttp_client: Client, tmp_path: Path, slack: tuple[FakeSlack, TestServer]
) -> None:
    service = await start(aiohttp_client, tmp_path, slack, investigation={"signals": []})
    _, url = service.response_url()
    answer = await (await service.send(slash("investigate checkout", url))).json()
    assert "not configured" in answer["text"] and "investigation.signals" in answer["text"]


async def test_similar_recalls_from_memory_and_answers_in_the_channel(service: Service) -> None:
    key, url = service.response_url()
    ack = await (await service.send(slash("similar 1", url))).json()
    assert ack["response_type"] == "ephemeral" and "Looking for incidents like 1" in ack["text"]
    await wait_for(lambda: _answered(service, key))
    (answer,) = service.fake.answers(key)
    assert answer["response_type"] == "in_channel" and answer["text"].startswith("*Incidents like 1*")
    assert service.fake.errors == []


async def test_similar_without_memory_says_memory_is_off(
    aiohttp_client: Client, tmp_path: Path, slack: tuple[FakeSlack, TestServer]
) -> None:
    service = await opened(await start(aiohttp_client, tmp_path, slack, memory={"enabled": False}))
    _, url = service.response_url()
    answer = await (await service.send(slash("similar 1", url))).json()
    assert "memory is off" in answer["text"]


# -- the parent stays a message Slack takes; the fake refuses what Slack refuses ------------------------


def test_the_parent_with_buttons_and_long_feedback_stays_within_slacks_limits() -> None:
    huge = "x" * 5000
    names = ["a" * 200, *(f"svc{n}-" + "e" * 100 for n in range(5)), "short"]  # the first never fits
    report = {
        "facts": {"alertname": "A" + huge, "severity": "s" + huge, "runbook_url": "https://rb/" + "r" * 1400},
        "hypotheses": [{"entity": name, "evidence": [_evidence(name, 1, 2)]} for name in names],
    }
    view = {
        "id": "7",
        "title": huge,
        "status": "firing",
        "service": huge,
        "members": [huge] * 3,
        "feedback": {"correct": False, "root_cause": "<!channel>" * 20, "resolution": "&" * 2000, "by": huge},
    }
    proposals = [
        {"action": f"{'n' * 38}{n}", "does": "<!channel> " + huge, "auto": n == 0} for n in range(4)
    ]  # three are shown, each line and dialog capped
    report["remediation"] = proposals
    parent = messages.slack_parent(view, report, "https://obs.example/" + "p" * 1400, "abcdef012345")
    assert slack_refusal({"channel": "C1", **parent}) is None
    approvals = [e for e in _buttons(parent) if e["action_id"].startswith("agentic_obs:approve.")]
    assert len(approvals) == 3 and all(e["confirm"]["confirm"]["text"] == "Run it" for e in approvals)
    assert sum(len(t) for b in parent["blocks"] for t in _block_texts(b)) <= messages.SLACK_MESSAGE_BUDGET
    assert "<!channel>" not in json.dumps(parent)
    (menu,) = [e for e in _buttons(parent) if e["type"] == "static_select"]
    assert [o["value"] for o in menu["options"]] == [f"entity:svc{n}-" + "e" * 100 for n in range(5)] + [
        "other"
    ]
    assert all(len(o["text"]["text"]) <= 75 for o in menu["options"])


@pytest.mark.parametrize(
    ("element", "problem"),
    [
        ({"type": "button", "text": {"type": "plain_text", "text": "b" * 76}, "action_id": "a"}, "75"),
        ({"type": "button", "text": {"type": "plain_text", "text": "b"}, "action_id": "a" * 256}, "255"),
        (
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "b"},
                "action_id": "a",
                "value": "v" * 2001,
            },
            "2000",
        ),
        ({"type": "button", "text": {"type": "mrkdwn", "text": "b"}, "action_id": "a"}, "plain_text"),
        (
            {
                "type": "static_select",
                "action_id": "a",
                "options": [{"text": {"type": "plain_text", "text": "o"}, "value": "v"}] * 2,
            },
            "unique",
        ),
        (
            {
                "type": "static_select",
                "action_id": "a",
                "options": [{"text": {"type": "plain_text", "text": "o"}, "value": "v" * 151}],
            },
            "150",
        ),
    ],
)
def test_the_fake_refuses_interactive_elements_slack_refuses(element: dict[str, Any], problem: str) -> None:
    refusal = slack_refusal({"blocks": [{"type": "actions", "elements": [element]}]})
    assert refusal is not None and refusal[0] == "invalid_blocks" and problem in refusal[1]


# -- the work after the answer ---------------------------------------------------------------------------


async def test_work_after_the_answer_is_awaited_on_shutdown_and_failures_are_counted() -> None:
    failures: list[int] = []
    after = slack_route.AfterAnswer(lambda: failures.append(1))
    finished: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.1)
        finished.append("slow")

    async def failing() -> None:
        raise RuntimeError("boom")

    async def stuck() -> None:
        await asyncio.sleep(60)

    after.run(slow(), "slow")
    after.run(failing(), "failing")
    after.run(stuck(), "stuck")
    await after.wait(deadline=0.5)
    assert finished == ["slow"] and failures == [1]  # the stuck one was cut off, not left running
