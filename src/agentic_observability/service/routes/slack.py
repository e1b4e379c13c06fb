"""``POST /api/v1/slack/interactions``: Slack's button presses, modal submissions and slash commands.

Not slack-bolt: the service already has its aiohttp routes, its outbox and its auth, and bolt would
bring a second app framework (its own router, listeners, acknowledgement and lazy-listener runner) for
this one route. slack-sdk has the parts needed: the signature verifier, the Web API client (views.open)
and the response_url client.

Nothing in a request is read before it is known to be Slack's: ``X-Slack-Signature`` must be ``v0=`` and
the HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{body}`` under the app's signing secret
(SLACK_SIGNING_SECRET), compared in constant time; the timestamp within 5 minutes of now; and the
signature not seen within those 5 minutes (a replay). Otherwise: 401, and nothing changes. The bearer
token is not asked for, since Slack cannot send it (service/auth.py leaves this path open).

Slack waits 3 seconds for the response, so it goes at once; the work (feedback, the parent message
updated, a reply in the thread, a slow command's answer) runs after it, in tasks the app keeps and
waits for at shutdown (up to ``server.shutdown_timeout``). A failure there is logged and counted.

What a payload does does not depend on how it came: ``handle_interaction`` and ``handle_command`` take
the payload (or the command's fields) and give the response body; ``service/slack_socket.py`` feeds them
the same payloads arriving over Socket Mode (SLACK_APP_TOKEN), for clusters Slack cannot reach.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import ValidationError
from slack_sdk.signature import SignatureVerifier

from agentic_observability.service.keys import CONFIG, METRICS
from agentic_observability.service.responses import error_response, invalid_body
from agentic_observability.service.routes.webhook import read_body
from agentic_observability.service.slack_commands import SlashCommand, answer
from agentic_observability.service.slack_interactions import (
    Answer,
    BlockActions,
    ViewSubmission,
    check_submission,
    on_answer,
    on_press,
    tell,
    tell_text,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PATH = "/api/v1/slack/interactions"
REPLAY_WINDOW = 300.0  # Slack's: a request whose timestamp is further than 5 minutes from now is refused
_FORM = "application/x-www-form-urlencoded"


class SeenSignatures:
    """The signatures of the last 5 minutes, so a replayed request is refused. In memory and per
    process: behind several replicas, a replay sent to another one is stopped only by the 5-minute
    window. Bounded: past ``capacity`` the oldest are forgotten, at any real rate of presses and
    commands long after their 5 minutes are over."""

    def __init__(self, window: float = REPLAY_WINDOW, capacity: int = 10_000) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, signature: str, now: float) -> bool:
        while self._seen and next(iter(self._seen.values())) < now - self._window:
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


class AfterAnswer:
    """Work that runs after Slack got its response. Each task is kept until done, so shutdown can wait
    for it and none is dropped unfinished; a failure is logged with its traceback and counted."""

    def __init__(self, on_failure: Callable[[], None]) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_failure = on_failure

    def run(self, work: Awaitable[None], what: str) -> None:
        task = asyncio.create_task(self._logged(work, what), name=f"slack-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _logged(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception:
            self._on_failure()
            log.exception("slack: the %s failed after Slack was answered", what)

    async def wait(self, deadline: float) -> None:
        """Let the work finish for up to ``deadline`` seconds; cancel (and log) what is left."""
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=deadline)
        for task in unfinished:
            log.warning("slack: %s cut off by the shutdown", task.get_name())
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)


SEEN = web.AppKey("slack_seen", SeenSignatures)
AFTER = web.AppKey("slack_after", AfterAnswer)


def setup(app: web.Application) -> None:
    """The route and what it keeps: the signatures seen, and the work after each response (waited for
    on shutdown, which comes before the store, the sinks and the HTTP session close)."""
    app.add_routes(routes)
    app[SEEN] = SeenSignatures()
    app[AFTER] = AfterAnswer(lambda: app[METRICS].errors.labels("slack").inc())
    app.on_shutdown.append(_finish)


async def _finish(app: web.Application) -> None:
    await app[AFTER].wait(app[CONFIG].file.server.shutdown_timeout)


@routes.post(PATH)
async def interactions(request: web.Request) -> web.StreamResponse:
    app = request.app
    secret = app[CONFIG].secrets.slack_signing_secret
    if secret is None:
        detail = "set SLACK_SIGNING_SECRET (the Slack app's signing secret) to take Slack's requests"
        return error_response(503, "slack interactivity not configured", detail)
    body = await read_body(request)  # 413 / 408 past server.max_body_bytes / server.body_timeout
    refused = unsigned(request, body, secret.get_secret_value(), app[SEEN])
    if refused is not None:
        return error_response(401, "unauthorized", refused)
    form = _form(body) if request.content_type == _FORM else None
    if form is None:
        return error_response(400, "invalid Slack request", f"the body must be {_FORM}")
    try:
        if "payload" in form:
            answered = await handle_interaction(app, _payload(form["payload"]))
            return web.json_response(answered) if answered is not None else web.Response()
        if "command" in form:
            return web.json_response(await handle_command(app, form))
    except InvalidSlackRequest as exc:
        return exc.response()
    return error_response(
        400, "invalid Slack request", "neither an interaction payload nor a command", "payload"
    )


def unsigned(request: web.Request, body: bytes, secret: str, seen: SeenSignatures) -> str | None:
    """Why the request is not known to be Slack's, or None when it is."""
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "X-Slack-Request-Timestamp is missing or not unix seconds"
    now = time.time()
    if abs(now - int(timestamp)) > REPLAY_WINDOW:
        return "X-Slack-Request-Timestamp is more than 5 minutes from now"
    # The verifier compares str in constant time, which raises on non-ASCII text, and decodes the body.
    if not signature.isascii() or not _utf8(body):
        return "X-Slack-Signature does not match the body"
    if not SignatureVerifier(secret).is_valid(body, timestamp, signature):
        return "X-Slack-Signature does not match the body"
    if not seen.first_time(signature, now):  # only a valid signature is remembered
        return "this request was received before (a replay)"
    return None


def _utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _form(body: bytes) -> dict[str, str] | None:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=64))
    except ValueError:
        return None


class InvalidSlackRequest(ValueError):
    """What Slack sent is not JSON, or not in the documented shape. Over HTTP it is a 400 naming the
    field (``response``); over Socket Mode the envelope is acknowledged and the problem logged."""

    def __init__(self, what: str, problem: ValidationError | str, field: str | None = None) -> None:
        self.what, self.problem, self.field = what, problem, field
        if isinstance(problem, ValidationError):
            problem = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in problem.errors()
            )
        super().__init__(f"invalid {what}: {problem}")

    def response(self) -> web.Response:
        if isinstance(self.problem, ValidationError):
            return invalid_body(self.problem, self.what)
        return error_response(400, f"invalid {self.what}", self.problem, self.field)


def _payload(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidSlackRequest("Slack request", "payload is not JSON", "payload") from None


async def handle_interaction(app: web.Application, payload: Any) -> dict[str, Any] | None:
    """An interaction payload, from either transport: the response body for Slack, or None (an empty
    200 over HTTP, a bare acknowledgement over Socket Mode). block_actions: answered empty at once (Slack
    keeps the message), the press handled after. view_submission: checked first, so the modal can show
    why it was not taken. Anything else (a view_closed, say) is nothing to do.
    Raises InvalidSlackRequest when the payload is not in Slack's documented shape."""
    kind = payload.get("type") if isinstance(payload, dict) else None
    try:
        if kind == "block_actions":
            app[AFTER].run(on_press(app, BlockActions.model_validate(payload)), "press")
        elif kind == "view_submission":
            checked = await check_submission(app, ViewSubmission.model_validate(payload))
            if not isinstance(checked, Answer):
                return checked or None
            app[AFTER].run(on_answer(app, checked), "modal answer")
    except ValidationError as exc:
        raise InvalidSlackRequest("Slack payload", exc) from None
    return None


async def handle_command(app: web.Application, form: Mapping[str, Any]) -> dict[str, Any]:
    """A slash command's fields, from either transport: the answer Slack shows at once; a slow answer
    follows through the command's response_url. Raises InvalidSlackRequest on a malformed command."""
    try:
        command = SlashCommand.model_validate(form)
    except ValidationError as exc:
        raise InvalidSlackRequest("slash command", exc) from None
    reply = await answer(app, command)
    if reply.later is not None:
        app[AFTER].run(_answer_later(app, command.response_url, reply.later), "command")
    return reply.now


async def _answer_later(
    app: web.Application, response_url: str | None, later: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    try:
        message = await later()
    except Exception:
        await tell_text(app, response_url, "That did not work out; the service's log says why.")
        raise
    await tell(app, response_url, message, in_channel=True, keep_original=False)
