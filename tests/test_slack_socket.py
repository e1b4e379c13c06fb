"""Slack Socket Mode (SLACK_APP_TOKEN): the same buttons and slash command, over a WebSocket the service
opens itself, through slack-sdk's own aiohttp SocketModeClient.

The fake is Slack's side as documented (docs.slack.dev/apis/events-api/using-socket-mode):
``apps.connections.open`` (POST, the app-level token as the bearer token) answers a WebSocket URL; on it
Slack says ``hello``, then sends envelopes (``envelope_id``, ``type``, ``payload``,
``accepts_response_payload``), and the app acknowledges each with ``{"envelope_id", "payload"?}``. The
payloads are the ones tests/test_slack_interactions.py signs and posts over HTTP: an ``interactive``
envelope carries the block_actions payload as JSON, a ``slash_commands`` envelope the command's fields.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.config import load_config
from agentic_observability.errors import ConfigError
from agentic_observability.outbox import messages
from agentic_observability.service import init_app
from agentic_observability.service.keys import METRICS
from agentic_observability.service.slack_socket import SOCKET
from tests.conftest import make_config
from tests.fakes import SLACK_TOKEN, FakeSlack
from tests.test_slack_interactions import (
    SECRET,
    Service,
    block_actions,
    opened,
    pressed,
    ranked,  # noqa: F401  (the fixture: a ranking that names carts)
    slash,
)
from tests.test_webhook import wait_for

Client = Callable[..., Awaitable[TestClient]]
APP_TOKEN = "xapp-1-A0123ABCD-1234567890123-0123456789abcdef0123456789abcdef"  # the shape, not a real one
HELLO = {
    "type": "hello",
    "num_connections": 1,
    "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
    "connection_info": {"app_id": "A0123ABCD"},
}


class FakeSocketMode:
    """Slack's side of Socket Mode, added to the fake Slack Web API's server: ``apps.connections.open``
    (the app-level token or ``not_authed``; ``refuse`` answers that error instead) and the WebSocket it
    hands out, which says hello, sends what ``send`` is given and keeps each acknowledgement by its
    envelope_id (anything else the app sends goes to ``other``)."""

    def __init__(self) -> None:
        self.refuse: str | None = None
        self.link_path = "/link"  # where the URL handed out points (elsewhere: the WebSocket fails)
        self.opened = 0  # apps.connections.open calls
        self.acks: dict[str, dict[str, Any]] = {}
        self.other: list[Any] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()

    def install(self, app: web.Application) -> web.Application:
        app.router.add_post("/api/apps.connections.open", self.open)
        app.router.add_get("/link", self.link)
        app.on_shutdown.append(self._close_all)
        return app

    async def open(self, request: web.Request) -> web.Response:
        self.opened += 1
        if request.headers.get("Authorization") != f"Bearer {APP_TOKEN}":
            return web.json_response({"ok": False, "error": "not_authed"})
        if self.refuse is not None:
            return web.json_response({"ok": False, "error": self.refuse})
        url = request.url.with_scheme("ws").with_path(self.link_path).with_query(ticket=uuid.uuid4().hex)
        return web.json_response({"ok": True, "url": str(url)})

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()  # answers the SDK's pings
        await socket.prepare(request)
        await socket.send_json(HELLO)
        self._sockets.append(socket)
        self._connected.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                body = json.loads(message.data)
                if isinstance(body, dict) and "envelope_id" in body:
                    self.acks[body["envelope_id"]] = body
                else:
                    self.other.append(body)
        return socket

    @property
    def connected(self) -> bool:
        return bool(self._sockets) and not self._sockets[-1].closed

    async def _close_all(self, app: web.Application) -> None:
        for socket in self._sockets:
            await socket.close()

    async def send(self, kind: str, payload: dict[str, Any], accepts_response_payload: bool) -> str:
        """An envelope down the app's connection; its envelope_id."""
        await asyncio.wait_for(self._connected.wait(), timeout=10)
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        await self._sockets[-1].send_json(envelope)
        return envelope_id

    async def ack(self, envelope_id: str) -> dict[str, Any]:
        async def acknowledged() -> bool:
            return envelope_id in self.acks

        await wait_for(acknowledged)
        return self.acks[envelope_id]


@pytest.fixture
def socket_mode() -> FakeSocketMode:
    return FakeSocketMode()


@pytest.fixture
async def slack(socket_mode: FakeSocketMode) -> AsyncIterator[tuple[FakeSlack, TestServer]]:
    """The fake Slack Web API with Socket Mode on the same server (the SDK opens the connection through
    ``actions.slack.api_url``). It outlives the app, as in tests/test_slack_interactions.py."""
    fake = FakeSlack()
    server = TestServer(socket_mode.install(fake.app()), host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


async def start(
    aiohttp_client: Client, tmp_path: Path, slack: tuple[FakeSlack, TestServer], app_token: str | None
) -> Service:
    """The service with the bot token, the signing secret (HTTP on too) and, when given, the app token."""
    fake, server = slack
    secrets = {"slack_bot_token": SLACK_TOKEN, "slack_signing_secret": SECRET}
    config = make_config(
        tmp_path,
        secrets={**secrets, **({"slack_app_token": app_token} if app_token else {})},
        actions={"slack": {"api_url": str(server.make_url("/api")), "channel": "#incidents"}},
        investigation={"signals": [{"name": "cpu", "query": "rate(cpu_seconds_total[1m])"}]},
    )
    return Service(await aiohttp_client(init_app(config)), fake, server)


@pytest.fixture
async def service(slack: tuple[FakeSlack, TestServer], aiohttp_client: Client, tmp_path: Path) -> Service:
    """Socket Mode on, and an incident opened (its Slack parent posted, with the buttons)."""
    return await opened(await start(aiohttp_client, tmp_path, slack, APP_TOKEN))


def payload_of(form: str) -> dict[str, Any]:
    """The JSON payload inside an interaction's form body: what an ``interactive`` envelope carries."""
    payload: dict[str, Any] = json.loads(parse_qs(form)["payload"][0])
    return payload


def slack_errors(client: TestClient) -> float:
    value = client.app[METRICS].registry.get_sample_value("agentic_obs_errors_total", {"component": "slack"})
    return value or 0.0


async def test_a_confirm_press_is_acknowledged_by_its_envelope_id_and_lands_as_feedback(
    service: Service, socket_mode: FakeSocketMode
) -> None:
    _, url = service.response_url()
    parent = service.parent()
    press = payload_of(block_actions(parent, pressed(parent, messages.CONFIRM), url))
    envelope_id = await socket_mode.send("interactive", press, accepts_response_payload=False)
    assert await socket_mode.ack(envelope_id) == {"envelope_id": envelope_id}  # nothing to show: empty

    async def feedback_given() -> bool:
        return await service.feedback() is not None and len(service.calls("chat.update")) == 1

    await wait_for(feedback_given)
    feedback = await service.feedback()
    assert {k: feedback[k] for k in ("correct", "root_cause", "by")} == {
        "correct": True,
        "root_cause": "carts",
        "by": "slack:U0123ABCD (jane)",
    }
    assert socket_mode.opened == 1 and socket_mode.other == []
    assert service.fake.errors == [] and slack_errors(service.client) == 0


@pytest.mark.parametrize("text", ["help", "incident 1", "incident 77"])
async def test_a_slash_command_is_acknowledged_with_the_answer_the_http_route_gives(
    service: Service, socket_mode: FakeSocketMode, text: str
) -> None:
    _, url = service.response_url()
    over_http = await service.send(slash(text, url))  # signed, to the HTTP route: both are on
    assert over_http.status == 200
    fields = dict(parse_qsl(slash(text, url)))  # Slack's fields for the command, as JSON strings
    envelope_id = await socket_mode.send("slash_commands", fields, accepts_response_payload=True)
    ack = await socket_mode.ack(envelope_id)
    assert ack == {"envelope_id": envelope_id, "payload": await over_http.json()}


async def test_other_envelopes_and_malformed_payloads_are_acknowledged_and_change_nothing(
    service: Service, socket_mode: FakeSocketMode
) -> None:
    event = {"type": "event_callback", "event": {"type": "app_mention", "text": "<@U0BOT> hi"}}
    no_user = {"type": "block_actions", "actions": [{"action_id": "agentic_obs:confirm:x:1"}]}
    sent = [
        await socket_mode.send("events_api", event, accepts_response_payload=False),
        await socket_mode.send("interactive", no_user, accepts_response_payload=False),
        await socket_mode.send("slash_commands", {"text": "help"}, accepts_response_payload=True),
    ]
    for envelope_id in sent:
        assert await socket_mode.ack(envelope_id) == {"envelope_id": envelope_id}
    assert await service.feedback() is None and service.calls("chat.update") == []
    assert slack_errors(service.client) == 0  # a payload Slack would not send is logged, no error


async def test_shutdown_closes_the_connection(service: Service, socket_mode: FakeSocketMode) -> None:
    async def connected() -> bool:
        return socket_mode.connected

    await wait_for(connected)
    client = service.client.app[SOCKET]
    await service.client.close()  # the app's shutdown: Socket Mode first, then the rest

    async def closed() -> bool:
        return not socket_mode.connected

    await wait_for(closed)
    assert client.closed and client.aiohttp_client_session.closed


async def test_without_the_app_token_the_service_runs_without_socket_mode(
    slack: tuple[FakeSlack, TestServer], socket_mode: FakeSocketMode, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await start(aiohttp_client, tmp_path, slack, app_token=None)
    assert (await service.client.get("/api/v1/health")).status == 200
    _, url = service.response_url()
    assert (await service.send(slash("help", url))).status == 200  # HTTP interactivity as before
    await asyncio.sleep(0.2)
    assert SOCKET not in service.client.app and socket_mode.opened == 0


async def test_a_refused_app_token_is_logged_without_it_counted_and_the_service_runs_on(
    slack: tuple[FakeSlack, TestServer],
    socket_mode: FakeSocketMode,
    aiohttp_client: Client,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    socket_mode.refuse = "invalid_auth"
    caplog.set_level(logging.DEBUG)
    service = await start(aiohttp_client, tmp_path, slack, APP_TOKEN)

    async def refused() -> bool:
        return socket_mode.opened >= 1 and slack_errors(service.client) >= 1

    await wait_for(refused)
    assert (await service.client.get("/api/v1/health")).status == 200
    ready = await service.client.get("/api/v1/health/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"]["slack"]["status"] == "ok"  # the sink's breaker: not this
    _, url = service.response_url()
    assert (await service.send(slash("help", url))).status == 200  # HTTP interactivity unaffected
    said = [r for r in caplog.records if r.name.startswith("agentic_observability.service.slack_socket")]
    assert any("invalid_auth" in r.getMessage() and "SLACK_APP_TOKEN" in r.getMessage() for r in said)
    for record in caplog.records:
        shown = record.getMessage() + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        )
        assert APP_TOKEN not in shown
    assert SOCKET in service.client.app  # still there, the SDK retrying; shutdown closes it


async def test_a_websocket_that_will_not_open_is_counted_and_the_service_runs_on(
    slack: tuple[FakeSlack, TestServer], socket_mode: FakeSocketMode, aiohttp_client: Client, tmp_path: Path
) -> None:
    socket_mode.link_path = "/nowhere"  # apps.connections.open answers, the WebSocket handshake gets a 404
    service = await start(aiohttp_client, tmp_path, slack, APP_TOKEN)

    async def failed() -> bool:
        return socket_mode.opened >= 1 and slack_errors(service.client) >= 1

    await wait_for(failed)
    assert (await service.client.get("/api/v1/health")).status == 200


def test_the_app_token_comes_from_the_environment_masked_and_must_be_an_app_level_token() -> None:
    config = load_config(None, environ={"SLACK_APP_TOKEN": APP_TOKEN})
    assert config.secrets.slack_app_token is not None
    assert config.secrets.slack_app_token.get_secret_value() == APP_TOKEN
    assert config.masked()["secrets"]["SLACK_APP_TOKEN"] == "set (masked)"
    assert APP_TOKEN in config.secrets.values()  # so the log formatter scrubs it
    assert APP_TOKEN not in repr(config) + str(config.masked()) + config.model_dump_json()
    assert load_config(None, environ={"SLACK_APP_TOKEN": "  "}).secrets.slack_app_token is None
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN") as refused:
        load_config(None, environ={"SLACK_APP_TOKEN": SLACK_TOKEN})  # the bot token, by mistake
    assert SLACK_TOKEN not in str(refused.value)
