"""Slack Socket Mode: the buttons, modals and slash command for a cluster Slack cannot reach.

With SLACK_APP_TOKEN set (the Slack app's app-level token, ``xapp-…``, scope ``connections:write``; Socket
Mode switched on in the app's settings), the service opens the connection itself, outbound: slack-sdk's
aiohttp ``SocketModeClient`` asks ``apps.connections.open`` on the configured Slack API
(``actions.slack.api_url``) for a WebSocket URL and keeps that WebSocket open, reconnecting when Slack
drops it or it goes quiet. Slack sends each interaction and slash command down it as an envelope.

Each envelope goes through the same dispatch as ``POST /api/v1/slack/interactions``
(``routes/slack.py``: ``handle_interaction``, ``handle_command``) and is acknowledged with its
``envelope_id``, and the response body when there is one (a command's answer, a modal's errors), as soon
as that dispatch answers: as quickly as over HTTP, within Slack's 3 seconds. The slow work runs after, in
the same kept tasks (``AFTER``), awaited on shutdown. Envelopes of other types (``events_api``, say) are
acknowledged and ignored.

No signature check here: Socket Mode payloads are not signed. The WebSocket is one the service opened
itself, to a URL Slack issued for the app-level token, so the connection is what is authenticated.

Not connecting never stops the service: a refused token or an unreachable Slack is logged (never the
token) and counted in ``agentic_obs_errors_total{component="slack"}``, and the SDK keeps retrying;
readiness does not depend on it. HTTP and Socket Mode may both be on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from agentic_observability.config import redact_url
from agentic_observability.service.keys import CONFIG, HTTP_SESSION, METRICS
from agentic_observability.service.routes.slack import (
    InvalidSlackRequest,
    handle_command,
    handle_interaction,
)

log = logging.getLogger(__name__)

ACK_WINDOW = 3.0  # Slack's: an envelope not acknowledged by then has failed for the person
Dispatch = Callable[[SocketModeRequest], Awaitable[dict[str, Any] | None]]
_BAD_TOKEN = {"invalid_auth", "not_authed", "token_revoked", "account_inactive", "not_allowed_token_type"}


class SlackSocket(SocketModeClient):
    """slack-sdk's Socket Mode client, with each failed connection counted, and said once per cause
    (the SDK retries every ``ping_interval`` seconds; its own log lines carry no token either)."""

    def __init__(
        self, app_token: str, web_client: AsyncWebClient, dispatch: Dispatch, on_failure: Callable[[], None]
    ) -> None:
        super().__init__(app_token, web_client=web_client)
        self.logger = _SdkLog(self)
        self.on_failure = on_failure
        self.told: BaseException | None = None  # the last failure counted and logged here
        self._cause: str | None = None
        self.connecting: asyncio.Task[None] | None = None
        self._dispatch = dispatch
        self._answering: set[asyncio.Task[Any]] = set()
        self.socket_mode_request_listeners.append(self._acknowledge)

    async def _acknowledge(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        """One envelope: dispatched as over HTTP, then acknowledged (with the response body, if any)."""
        task = asyncio.current_task()  # the SDK's, one per envelope; kept so shutdown can let it finish
        if task is not None:
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        body = await self._dispatch(request)
        await self.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload=body))

    async def issue_new_wss_url(self) -> str:  # apps.connections.open: where a bad token shows
        try:
            return await super().issue_new_wss_url()
        except Exception as exc:
            self._failed(exc)
            raise

    async def connect(self) -> None:
        await super().connect()  # returns once connected (or closed); retries until then
        if not self.closed:
            self._cause = None
            log.info("slack socket mode: connected")

    def _failed(self, exc: BaseException) -> None:
        self.told = exc
        self.on_failure()
        cause = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        cause = str(cause) if cause else f"{type(exc).__name__}: {exc}"
        if cause == self._cause:
            return
        self._cause = cause
        hint = " (check SLACK_APP_TOKEN: the app-level xapp- token)" if cause in _BAD_TOKEN else ""
        log.error(
            "slack socket mode: apps.connections.open failed: %s%s; retrying every %ss",
            cause,
            hint,
            self.ping_interval,
        )

    async def stop(self, deadline: float) -> None:
        """Let the envelopes being answered get their acknowledgement (up to ``deadline``), then close
        the connection and wait for the SDK's tasks to end."""
        if self._answering:
            await asyncio.wait(set(self._answering), timeout=deadline)
        await self.close()
        tasks = [self.connecting, self.message_processor, self.current_session_monitor, self.message_receiver]
        running = [t for t in tasks if t is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


class _SdkLog(logging.Logger):
    """The client's logger: records go on to this module's logger (so to the service's handlers and its
    scrubbing). An error the SDK logs with its exception (a WebSocket that would not open, a listener
    that failed) is counted; a failure already counted and said by ``SlackSocket._failed`` is not logged
    a second time with its traceback. One per client, not registered: its counts go to its own app."""

    def __init__(self, client: SlackSocket) -> None:
        super().__init__(f"{__name__}.sdk")
        self.parent = log
        self._client = client

    def handle(self, record: logging.LogRecord) -> None:
        failure = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.ERROR and failure is not None:
            if failure is self._client.told:
                return
            self._client.on_failure()
        elif (
            record.levelno >= logging.ERROR
            and self._client.told is not None
            and _RETRIEVING in str(record.msg)
        ):
            return  # the SDK's own line for a failure _failed counted and said (once per cause)
        super().handle(_without_ticket(record))


_RETRIEVING = "WSS URL"  # the SDK's "Failed to retrieve WSS URL: ..." (logged without its exception)
_TICKET = re.compile(r"([?&]ticket=)[^&\s'\"]+")  # the WebSocket URL's one-time credential


def _without_ticket(record: logging.LogRecord) -> logging.LogRecord:
    """The record with any WebSocket URL's ``ticket`` hidden, in its message and its traceback."""
    message = record.getMessage()
    trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else record.exc_text
    if "ticket=" not in message and "ticket=" not in (trace or ""):
        return record
    record.msg, record.args = _TICKET.sub(r"\1…", message), None
    record.exc_info, record.exc_text = None, _TICKET.sub(r"\1…", trace) if trace else None
    return record


SOCKET = web.AppKey("slack_socket", SlackSocket)


def setup(app: web.Application) -> None:
    """Socket Mode, when SLACK_APP_TOKEN is set: connects once the store, the HTTP session and the workers
    are up (after every cleanup context's start), and closes first on shutdown, before the work after
    Slack's answers is awaited and long before the HTTP session closes. Call before ``slack.setup``."""
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)


async def _start(app: web.Application) -> None:
    config = app[CONFIG]
    token = config.secrets.slack_app_token
    if token is None:
        return
    api_url = str(config.file.actions.slack.api_url)
    web_client = AsyncWebClient(
        base_url=api_url.rstrip("/") + "/",
        timeout=int(config.file.actions.timeout),
        session=app[HTTP_SESSION],
    )
    failed = app[METRICS].errors.labels("slack").inc
    client = SlackSocket(token.get_secret_value(), web_client, partial(_dispatch, app), failed)
    app[SOCKET] = client
    # In the background: the SDK retries until it connects, and the service does not wait for Slack.
    client.connecting = asyncio.create_task(client.connect(), name="slack-socket-mode")
    log.info("slack socket mode: connecting through %s", redact_url(api_url))


async def _stop(app: web.Application) -> None:
    client = app.get(SOCKET)
    if client is not None:
        await client.stop(deadline=ACK_WINDOW)


async def _dispatch(app: web.Application, request: SocketModeRequest) -> dict[str, Any] | None:
    """The response body for an envelope, or None. Never raises: every envelope gets its ack."""
    try:
        if request.type == "interactive":
            return await handle_interaction(app, request.payload)
        if request.type == "slash_commands":
            return await handle_command(app, request.payload)
    except InvalidSlackRequest as exc:
        log.warning("slack socket mode: %s envelope not taken: %s", request.type, exc)
    except Exception:
        app[METRICS].errors.labels("slack").inc()
        log.exception("slack socket mode: the %s envelope failed", request.type)
    return None  # acknowledged, nothing to show (another type: nothing this service subscribes to)
