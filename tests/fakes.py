"""Local fake servers for what cannot run here: Slack, Grafana, PagerDuty and an OpenAI-compatible model.

Each checks every request against the documented API shape (auth header, required fields, types, times
in milliseconds) and records it; a request of the wrong shape is answered 400 and kept in ``errors``,
which the tests assert is empty. ``script`` queues failures to answer with before behaving normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import BodyPartReader, web

SLACK_TOKEN = "xoxb-test-bot-token"
GRAFANA_TOKEN = "glsa_test_grafana_token"
PD_ROUTING_KEY = "R0UTINGKEY0123456789ABCDEFGHIJKL"
MODEL_TOKEN = "hf_test_model_token"


@dataclass
class Fake:
    """Shared bookkeeping: recorded requests, shape errors, scripted failures."""

    requests: list[tuple[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)  # status, headers, body
    down: bool = False

    def scripted(self) -> web.Response | None:
        if self.down:
            return web.json_response({"message": "down"}, status=503)
        if self.script:
            status, headers, body = self.script.pop(0)
            return web.json_response(body, status=status, headers=headers)
        return None

    def reject(self, problem: str, status: int = 400) -> web.Response:
        self.errors.append(problem)
        return web.json_response({"message": problem}, status=status)


def _bearer(request: web.Request, token: str) -> bool:
    return request.headers.get("Authorization") == f"Bearer {token}"


SLACK_CHANNEL_ID = "C0123456789"
# Message metadata as Slack documents it (https://docs.slack.dev/messaging/message-metadata, and the
# "Designing metadata event schema" page, https://api.slack.com/reference/metadata): an object with an
# alphanumeric, human-readable event_type ("job_created") and a free-form event_payload object. Slack
# answers a wrong shape with HTTP 200, ok: false, error "invalid_metadata_format".
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_]+$")


# What Slack refuses, from its documentation; each refusal is HTTP 200, ok: false, and the error code:
# - auth: the bot token in the Authorization header, or (form-encoded calls only) a ``token`` field
#   (chat.postMessage, "token": "passed as an HTTP Authorization header or alternatively, as a POST
#   parameter"; "to make use of sending JSON on write operations, you must provide your token value
#   using an Authorization HTTP header", docs.slack.dev/changelog/2017-10-keeping-up-with-the-jsons;
#   no token in a query string, docs.slack.dev/changelog/2020-11-no-more-tokens-in-querystrings-for-
#   newly-created-apps); none → not_authed, another → invalid_auth (errors every method lists).
# - bodies: application/x-www-form-urlencoded (blocks and metadata as JSON strings) or
#   application/json (docs.slack.dev/apis/web-api, "POST bodies"; chat.postMessage's content types).
# - at most 50 blocks in a message (docs.slack.dev/reference/block-kit/blocks) → invalid_blocks;
# - a header: a plain_text object of at most 150 characters (.../blocks/header-block) → invalid_blocks;
# - a section: text at most 3,000 characters; fields at most 10, each at most 2,000
#   (api.slack.com/reference/block-kit/blocks#section, now .../blocks/section-block) → invalid_blocks;
#   a text object has 1 to 3,000 characters (api.slack.com/reference/block-kit/composition-objects
#   #text__fields); a context block at most 10 elements (.../blocks/context-block);
# - the blocks' text together: about 12,000 characters (the markdown block page's cumulative limit,
#   .../blocks/markdown-block; "12,000 text characters with a buffer for block containers", Slack on
#   github.com/slackapi/bolt-js/issues/2509) → msg_blocks_too_long.
# Deliberately not imported from the service: the fake states what Slack does, the service must meet it.
SLACK_MAX_BLOCKS = 50
SLACK_HEADER_LIMIT = 150
SLACK_SECTION_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
SLACK_MAX_FIELDS = 10
SLACK_MAX_CONTEXT_ELEMENTS = 10
SLACK_BLOCKS_TEXT_LIMIT = 12_000

# Slack's external file upload, three steps (docs.slack.dev/messaging/working-with-files#upload):
# 1. files.getUploadURLExternal (docs.slack.dev/reference/methods/files.getUploadURLExternal): required
#    ``filename`` (string) and ``length`` (integer, the file's size in bytes; "missing_argument ...
#    typically only occurs when the length provided is 0"), optional ``alt_txt`` (at most 1,000
#    characters, else alt_txt_too_large) and ``snippet_type``; answers ``upload_url`` and ``file_id``.
# 2. A POST of the file's bytes to ``upload_url`` (raw, or multipart form-encoded): HTTP 200 once received.
# 3. files.completeUploadExternal (docs.slack.dev/reference/methods/files.completeUploadExternal):
#    required ``files``, a JSON array of ``{"id", "title"?}`` (a title is optional); optional
#    ``channel_id`` (where to share it; without one the file stays private), ``thread_ts`` ("another
#    message's ts value to upload this file as a reply. Never use a reply's ts value; use its parent
#    instead"), ``initial_comment`` (the message text introducing the file), ``blocks``.
# Arguments as form fields, a JSON body or the query string; the bot token in the Authorization header.
# Shared into a thread, the file appears there as a message whose ``files`` list names it (id, name,
# title): what conversations.replies returns, and what the sink's crash-window lookup looks for.
SLACK_ALT_TEXT_LIMIT = 1000

# Interactivity, as Slack documents it:
# - an actions block: 1 to 25 interactive elements (docs.slack.dev/reference/block-kit/blocks/actions-block),
#   their action_ids unique in the block; a button (.../block-elements/button-element): a plain_text of
#   at most 75 characters, an action_id of at most 255, a value of at most 2,000, style primary or
#   danger; a static_select (.../block-elements/select-menu-element): a placeholder plain_text of at
#   most 150, 1 to 100 options, each (.../composition-objects/option-object) a plain_text of at most 75
#   and a unique value of at most 150.
# - views.open (docs.slack.dev/reference/methods/views.open): ``trigger_id`` and ``view``, the bot token,
#   errors as ok: false. A modal (docs.slack.dev/reference/views/modal-views): type modal, a title of at
#   most 24 characters, submit (required with an input block) and close of at most 24, at most 100
#   blocks, callback_id at most 255, private_metadata at most 3,000. An input block
#   (.../blocks/input-block): a plain_text label of at most 2,000, one element; a plain_text_input
#   (.../block-elements/plain-text-input-element): action_id at most 255, min_length and max_length 0
#   to 3,000, a placeholder of at most 150.
# - a response_url (docs.slack.dev/interactivity/handling-user-interaction, "Message responses"): a JSON
#   POST of a message (text and/or blocks) with an optional response_type (in_channel or ephemeral),
#   replace_original and delete_original (booleans); usable up to 5 times within 30 minutes.
SLACK_MAX_ACTIONS = 25
SLACK_BUTTON_TEXT_LIMIT = 75
SLACK_ACTION_ID_LIMIT = 255
SLACK_BUTTON_VALUE_LIMIT = 2000
SLACK_PLACEHOLDER_LIMIT = 150
SLACK_MAX_OPTIONS = 100
SLACK_OPTION_VALUE_LIMIT = 150
SLACK_MODAL_TEXT_LIMIT = 24
SLACK_MODAL_MAX_BLOCKS = 100
SLACK_METADATA_LIMIT = 3000
SLACK_LABEL_LIMIT = 2000
SLACK_INPUT_LENGTH_LIMIT = 3000
SLACK_RESPONSE_URL_USES = 5


class FakeSlack(Fake):
    """Slack Web API: chat.postMessage and chat.update (JSON or form-encoded bodies, the bot token,
    the documented block limits above, ok:false on errors), and the reads that find a message already
    posted: conversations.history (top-level messages, newest first) and conversations.replies (the
    parent, then its replies), both GET with ``oldest``/``limit``/``cursor``, and returning each
    message's metadata only when ``include_all_metadata`` is true; and conversations.list (to learn a
    channel's id from its name). File uploads in the three documented steps above, each recorded in
    ``uploads`` once completed."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> message
        self.delay = delay  # seconds before answering: a slow Slack
        self.arrived = 0  # posts and updates received, answered or not
        self.lookups: list[tuple[str, dict[str, str]]] = []  # reads: method and query
        self.channel_name = "incidents"  # what conversations.list calls SLACK_CHANNEL_ID
        self.missing_scopes: set[str] = set()  # reads needing one of these answer missing_scope
        self.stall_posts = 0  # this many posts are recorded, then answered only after release()
        self.stall_after = 0  # ... once this many posts were answered normally
        self.stall_uploads = 0  # this many completed uploads are answered only after release()
        self.files: dict[str, dict[str, Any]] = {}  # file id -> name, length, bytes once uploaded
        self.uploads: list[dict[str, Any]] = []  # completed uploads: file, title, channel, thread, comment
        self.expired_triggers: set[str] = set()  # views.open with one of these: expired_trigger_id
        self.responses: list[dict[str, Any]] = []  # what came to a response_url: key, and the body
        self._released = asyncio.Event()
        self._last_us = 0
        self._file_ids = itertools.count(1)
        self._view_ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self.post_message)
        app.router.add_post("/api/chat.update", self.update)
        app.router.add_get("/api/conversations.history", self.history)
        app.router.add_get("/api/conversations.replies", self.replies_of)
        app.router.add_get("/api/conversations.list", self.list_channels)
        app.router.add_post("/api/files.getUploadURLExternal", self.get_upload_url)
        app.router.add_post("/upload/v1/{file_id}", self.receive_file)
        app.router.add_post("/api/files.completeUploadExternal", self.complete_upload)
        app.router.add_post("/api/views.open", self.open_view)
        app.router.add_post("/response/{key}", self.respond)
        return app

    def release(self) -> None:
        """Answer the stalled posts (their client may be long gone)."""
        self._released.set()

    def _check(self, body: Any) -> str | None:
        """Shape problems of our own making (answered 400): Slack would take an unescaped mass
        mention, and ping the whole channel with it."""
        if not isinstance(body, dict) or not isinstance(body.get("channel"), str):
            return "channel must be a string"
        if re.search(r"<!(channel|here|everyone)>", json.dumps(body.get("blocks") or [])):
            return "unescaped mass mention"
        return None

    def _refuse(self, error: str, problem: str) -> web.Response:
        """Slack's way of saying no: HTTP 200, ok: false, an error code (kept in ``errors`` too)."""
        self.errors.append(f"{error}: {problem}")
        return web.json_response({"ok": False, "error": error})

    async def _parse(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        self.arrived += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        body, token = await _slack_body(request)
        auth = _slack_auth(request, token)
        if auth is not None:
            return None, self._refuse(auth, "the bot token is missing or wrong")
        scripted = self.scripted()
        if scripted is not None:
            return None, scripted
        if body is None:
            return None, self.reject(f"a body neither JSON nor form-encoded ({request.content_type})")
        problem = self._check(body)
        if problem:
            return None, self.reject(problem)
        refusal = slack_refusal(body)
        if refusal is not None:
            return None, self._refuse(*refusal)
        problem = _metadata_problem(body)
        if problem:
            return None, self._refuse("invalid_metadata_format", problem)
        return body, None

    def _next_ts(self) -> str:
        """A ts is the post's time, as in Slack: the sink looks back from when it queued the action."""
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    async def post_message(self, request: web.Request) -> web.Response:
        body, response = await self._parse(request)
        if response is not None:
            return response
        assert body is not None
        if body.get("thread_ts") is not None and body["thread_ts"] not in self.messages:
            return self.reject(f"thread_ts {body['thread_ts']} is not a message")
        ts = self._next_ts()
        self.messages[ts] = {**body, "ts": ts}
        self.requests.append(("chat.postMessage", body))
        if self.stall_after > 0:
            self.stall_after -= 1
        elif self.stall_posts > 0:  # accepted, but the answer (and with it the ts) is held back
            self.stall_posts -= 1
            await self._released.wait()
        return web.json_response({"ok": True, "channel": SLACK_CHANNEL_ID, "ts": ts, "message": body})

    async def update(self, request: web.Request) -> web.Response:
        body, response = await self._parse(request)
        if response is not None:
            return response
        assert body is not None
        if body["channel"] != SLACK_CHANNEL_ID or body.get("ts") not in self.messages:
            return self.reject("chat.update needs the channel id and the ts of an existing message")
        self.messages[body["ts"]].update(body)
        self.requests.append(("chat.update", body))
        return web.json_response({"ok": True, "channel": body["channel"], "ts": body["ts"]})

    async def _read(
        self, request: web.Request, method: str, scope: str, by_channel: bool = True
    ) -> tuple[dict[str, str], web.Response | None]:
        query = dict(request.query)
        auth = _slack_auth(request, None)  # a read takes the token in the header only
        if auth is not None:
            return query, self._refuse(auth, "the bot token is missing or wrong")
        scripted = self.scripted()
        if scripted is not None:
            return query, scripted
        if scope in self.missing_scopes:
            answer = {"ok": False, "error": "missing_scope", "needed": scope, "provided": "chat:write"}
            return query, web.json_response(answer)
        self.lookups.append((method, query))
        if by_channel and query.get("channel") != SLACK_CHANNEL_ID:  # an id, never a #name
            return query, web.json_response({"ok": False, "error": "channel_not_found"})
        return query, None

    async def history(self, request: web.Request) -> web.Response:
        query, response = await self._read(request, "conversations.history", "channels:history")
        if response is not None:
            return response
        return _page(query, self.parents(), newest_first=True)

    async def replies_of(self, request: web.Request) -> web.Response:
        query, response = await self._read(request, "conversations.replies", "channels:history")
        if response is not None:
            return response
        parent = self.messages.get(query.get("ts", ""))
        if parent is None or parent.get("thread_ts"):
            return web.json_response({"ok": False, "error": "thread_not_found"})
        return _page(query, self.replies(parent["ts"]), newest_first=False, first=parent)

    async def list_channels(self, request: web.Request) -> web.Response:
        _, response = await self._read(request, "conversations.list", "channels:read", by_channel=False)
        if response is not None:
            return response
        channels = [
            {"id": "C0000000001", "name": "general", "is_channel": True, "is_archived": False},
            {"id": SLACK_CHANNEL_ID, "name": self.channel_name, "is_channel": True, "is_archived": False},
        ]
        return web.json_response({"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}})

    async def _upload_args(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """A files.* call's arguments (query string and body together), or Slack's refusal."""
        args: dict[str, Any] = dict(request.query)
        token = None
        if request.can_read_body:
            body, token = await _slack_body(request)
            if body is None:
                return args, self.reject(f"a body neither JSON nor form-encoded ({request.content_type})")
            args.update(body)
        if "token" in request.query:
            return args, self.reject("a token in the query string")
        auth = _slack_auth(request, token)
        if auth is not None:
            return args, self._refuse(auth, "the bot token is missing or wrong")
        return args, self.scripted()

    async def get_upload_url(self, request: web.Request) -> web.Response:
        args, response = await self._upload_args(request)
        if response is not None:
            return response
        filename, length = args.get("filename"), str(args.get("length", ""))
        if not isinstance(filename, str) or not filename:
            return self._refuse("invalid_arguments", "filename is required")
        if not length.isdigit() or int(length) == 0:
            return self._refuse("missing_argument", f"length must be a positive integer, got {length!r}")
        if len(str(args.get("alt_txt") or "")) > SLACK_ALT_TEXT_LIMIT:
            return self._refuse("alt_txt_too_large", f"alt_txt over {SLACK_ALT_TEXT_LIMIT} characters")
        file_id = f"F{next(self._file_ids):010d}"
        self.files[file_id] = {"id": file_id, "name": filename, "length": int(length), "content": None}
        self.requests.append(("files.getUploadURLExternal", args))
        upload_url = request.url.with_path(f"/upload/v1/{file_id}").with_query(None)
        return web.json_response({"ok": True, "upload_url": str(upload_url), "file_id": file_id})

    async def receive_file(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        if file is None:
            return self.reject("an upload to a URL files.getUploadURLExternal never gave", 404)
        content = await _uploaded_bytes(request)
        if len(content) != file["length"]:
            return self.reject(f"{len(content)} bytes uploaded, {file['length']} announced as length")
        file["content"] = content
        self.requests.append(("upload", {"file_id": file["id"], "bytes": len(content)}))
        return web.Response(text=f"OK - {len(content)}")

    async def complete_upload(self, request: web.Request) -> web.Response:
        args, response = await self._upload_args(request)
        if response is not None:
            return response
        listed, problem = self._completed_files(args.get("files"))
        if problem is None:
            problem = self._share_problem(args)
        if problem is not None:
            return self._refuse(*problem)
        channel, thread = args.get("channel_id"), args.get("thread_ts")
        shared = [
            {**self.files[f["id"]], "title": f.get("title") or self.files[f["id"]]["name"]} for f in listed
        ]
        self.requests.append(("files.completeUploadExternal", args))
        comment = args.get("initial_comment")
        for file in shared:
            self.files[file["id"]]["completed"] = True
            self.uploads.append(
                {**file, "channel_id": channel, "thread_ts": thread, "initial_comment": comment}
            )
        if channel:  # shared: a message in the channel, or in the thread, listing the files
            ts = self._next_ts()
            files = [{k: f[k] for k in ("id", "name", "title")} for f in shared]
            text = str(comment or "")
            self.messages[ts] = {
                "ts": ts,
                "channel": channel,
                "thread_ts": thread,
                "text": text,
                "files": files,
            }
        if self.stall_uploads > 0:  # completed, but the answer is held back
            self.stall_uploads -= 1
            await self._released.wait()
        return web.json_response(
            {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in shared]}
        )

    def _completed_files(self, raw: Any) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """The ``files`` argument: a JSON array of {id, title?}, each uploaded and not completed yet."""
        try:
            listed = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return [], ("invalid_arguments", "files is not JSON")
        if not isinstance(listed, list) or not listed:
            return [], ("invalid_arguments", "files must be a non-empty array")
        for item in listed:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return [], ("invalid_arguments", f"each file is an object with a string id: {item!r}")
            file = self.files.get(item["id"])
            if file is None or file["content"] is None or file.get("completed"):
                return [], ("invalid_arguments", f"file {item['id']} was not uploaded, or was completed")
            if "title" in item and not isinstance(item["title"], str):
                return [], ("invalid_arguments", "a file's title is a string")
        return listed, None

    def _share_problem(self, args: dict[str, Any]) -> tuple[str, str] | None:
        channel, thread = args.get("channel_id"), args.get("thread_ts")
        if channel is not None and channel != SLACK_CHANNEL_ID:  # an id, never a #name
            return "channel_not_found", f"channel_id {channel!r}"
        if thread is not None:
            parent = self.messages.get(str(thread))
            if channel is None or parent is None or parent.get("thread_ts"):
                return "invalid_arguments", "thread_ts needs channel_id and the ts of a parent message"
        if "initial_comment" in args and not isinstance(args["initial_comment"], str):
            return "invalid_arguments", "initial_comment is a string"
        return None

    async def open_view(self, request: web.Request) -> web.Response:
        """views.open: a modal for the user who pressed (its trigger_id), checked as Slack checks it."""
        body, token = await _slack_body(request)
        auth = _slack_auth(request, token)
        if auth is not None:
            return self._refuse(auth, "the bot token is missing or wrong")
        scripted = self.scripted()
        if scripted is not None:
            return scripted
        if body is None:
            return self.reject(f"a body neither JSON nor form-encoded ({request.content_type})")
        view = body.get("view")
        if isinstance(view, str):  # form-encoded: the view as a JSON string
            with contextlib.suppress(ValueError):
                view = json.loads(view)
        trigger = body.get("trigger_id")
        if not isinstance(trigger, str) or not trigger:
            return self._refuse("invalid_arguments", "trigger_id is required")
        if trigger in self.expired_triggers:
            return web.json_response({"ok": False, "error": "expired_trigger_id"})
        problem = _modal_problem(view)
        if problem is not None:
            return self._refuse("invalid_arguments", problem)
        self.requests.append(("views.open", {"trigger_id": trigger, "view": view}))
        opened = {**view, "id": f"V{next(self._view_ids):010d}", "state": {"values": {}}}
        return web.json_response({"ok": True, "view": opened})

    async def respond(self, request: web.Request) -> web.Response:
        """A response_url: a message (to the person, or in the channel), at most 5 times per URL."""
        key = request.match_info["key"]
        if request.content_type != "application/json":
            return self.reject(f"a response_url takes JSON, not {request.content_type}")
        body = await request.json()
        if not isinstance(body, dict):
            return self.reject("a response_url takes a JSON object")
        uses = sum(1 for r in self.responses if r["key"] == key)
        if uses >= SLACK_RESPONSE_URL_USES:
            return self.reject(f"response_url {key} used more than {SLACK_RESPONSE_URL_USES} times", 404)
        problem = _response_problem(body)
        if problem is not None:
            return self.reject(problem)
        self.responses.append({"key": key, **body})
        return web.json_response({"ok": True})

    def answers(self, key: str) -> list[dict[str, Any]]:
        """What came to the response_url ``/response/<key>``, in order."""
        return [r for r in self.responses if r["key"] == key]

    def uploads_in(self, parent_ts: str) -> list[dict[str, Any]]:
        return [u for u in self.uploads if u["thread_ts"] == parent_ts]

    def parents(self) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if not m.get("thread_ts")]

    def replies(self, parent_ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m.get("thread_ts") == parent_ts]


def _metadata_problem(body: dict[str, Any]) -> str | None:
    """The documented shape (see the comment on _EVENT_TYPE); metadata itself is optional."""
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if isinstance(metadata, str):  # form-encoded clients send it as a JSON string
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return "metadata is not JSON"
    if not isinstance(metadata, dict):
        return "metadata must be an object"
    if not isinstance(metadata.get("event_type"), str) or not _EVENT_TYPE.match(metadata["event_type"]):
        return f"metadata.event_type must be an alphanumeric string, got {metadata.get('event_type')!r}"
    if not isinstance(metadata.get("event_payload"), dict):
        return "metadata.event_payload must be an object"
    return None


def _page(
    query: dict[str, str],
    messages: list[dict[str, Any]],
    newest_first: bool,
    first: dict[str, Any] | None = None,
) -> web.Response:
    """One page of a conversations.history/replies answer: ``oldest`` < ts < ``latest``, ``limit`` a
    page, the cursor an offset; metadata only when asked for with ``include_all_metadata``."""
    oldest, latest = float(query.get("oldest") or 0), float(query.get("latest") or "inf")
    inside = sorted(
        (m for m in messages if oldest < float(m["ts"]) < latest),
        key=lambda m: float(m["ts"]),
        reverse=newest_first,
    )
    start, limit = int(query.get("cursor") or 0), int(query.get("limit") or 100)
    shown = ([first] if first is not None and start == 0 else []) + inside[start : start + limit]
    more = start + limit < len(inside)
    with_metadata = query.get("include_all_metadata") in ("1", "true")
    return web.json_response(
        {
            "ok": True,
            "messages": [_as_read(m, with_metadata) for m in shown],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }
    )


def _as_read(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
    read = {"type": "message", "ts": message["ts"], "text": message.get("text", ""), "bot_id": "B0123"}
    if message.get("thread_ts"):
        read["thread_ts"] = message["thread_ts"]
    if with_metadata and message.get("metadata") is not None:
        read["metadata"] = message["metadata"]
    if message.get("files"):
        read["files"] = message["files"]
    return read


async def _uploaded_bytes(request: web.Request) -> bytes:
    """The file as sent to an upload URL: the raw body, or a multipart form's file part."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.filename:
            return bytes(await part.read())
    return b""


def _block_texts(block: dict[str, Any]) -> list[str]:
    """Every text a block shows: its own, its fields', its elements' (a context's texts; a button's
    label; a menu's placeholder and options)."""
    texts = []
    if isinstance(block.get("text"), dict):
        texts.append(str(block["text"].get("text", "")))
    for item in list(block.get("fields") or []) + list(block.get("elements") or []):
        if not isinstance(item, dict):
            continue
        shown = [item.get("text"), item.get("placeholder")]
        shown += [o.get("text") for o in item.get("options") or [] if isinstance(o, dict)]
        confirm = item.get("confirm")
        if isinstance(confirm, dict):  # a button's confirmation dialog
            shown += [confirm.get(k) for k in ("title", "text", "confirm", "deny")]
        texts += [str(t.get("text", "")) if isinstance(t, dict) else str(t) for t in shown if t is not None]
    return texts


async def _slack_body(request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    """The arguments of a JSON or a form-encoded call, and a token given as a form field. A form sends
    ``blocks`` and ``metadata`` as JSON strings; they are decoded here (a bad one stays a string, and
    is refused as Slack refuses it)."""
    if request.content_type == "application/json":
        body = await request.json()
        return (body if isinstance(body, dict) else None), None  # a JSON body's token does not count
    if request.content_type != "application/x-www-form-urlencoded":
        return None, None
    form = {key: str(value) for key, value in (await request.post()).items()}
    token = form.pop("token", None)
    for key in ("blocks", "metadata"):
        if key in form:
            with contextlib.suppress(ValueError):
                form[key] = json.loads(form[key])
    return form, token


def _slack_auth(request: web.Request, form_token: str | None) -> str | None:
    """None for the bot token (the Authorization header, or a form field); else Slack's error."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else form_token
    if not token:
        return "not_authed"
    return None if token == SLACK_TOKEN else "invalid_auth"


def slack_refusal(body: dict[str, Any]) -> tuple[str, str] | None:
    """What Slack answers a chat.postMessage or chat.update body with (error code, why), or None when
    it would take it; the limits are those listed above ``FakeSlack``."""
    blocks = body.get("blocks")
    if blocks is None:
        return None if body.get("text") else ("no_text", "neither text nor blocks")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        return "invalid_blocks_format", "blocks is not a JSON array of objects"
    if len(blocks) > SLACK_MAX_BLOCKS:
        return "invalid_blocks", f"{len(blocks)} blocks (at most {SLACK_MAX_BLOCKS})"
    for number, block in enumerate(blocks):
        problem = _block_problem(block)
        if problem:
            return "invalid_blocks", f"block {number} ({block.get('type')}): {problem}"
    total = sum(len(text) for block in blocks for text in _block_texts(block))
    if total > SLACK_BLOCKS_TEXT_LIMIT:
        return "msg_blocks_too_long", f"the blocks' text adds up to {total} characters"
    return None


def _block_problem(block: dict[str, Any]) -> str | None:
    kind = block.get("type")
    if kind == "header":
        return _text_problem(block.get("text"), SLACK_HEADER_LIMIT, ("plain_text",))
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            return "a section needs text or fields"
        if text is not None and (problem := _text_problem(text, SLACK_SECTION_LIMIT)):
            return problem
        if fields is None:
            return None
        if not isinstance(fields, list) or len(fields) > SLACK_MAX_FIELDS:
            return f"fields must be a list of at most {SLACK_MAX_FIELDS}"
        return next(filter(None, (_text_problem(f, SLACK_FIELD_LIMIT) for f in fields)), None)
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= SLACK_MAX_CONTEXT_ELEMENTS:
            return f"a context block has 1 to {SLACK_MAX_CONTEXT_ELEMENTS} elements"
        return next(filter(None, (_text_problem(e, SLACK_SECTION_LIMIT) for e in elements)), None)
    if kind == "actions":
        return _actions_problem(block.get("elements"))
    return None if kind == "divider" else f"a block type this fake does not know: {kind!r}"


def _actions_problem(elements: Any) -> str | None:
    if not isinstance(elements, list) or not 1 <= len(elements) <= SLACK_MAX_ACTIONS:
        return f"an actions block has 1 to {SLACK_MAX_ACTIONS} elements"
    ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
    if len(ids) != len(elements) or len(set(ids)) != len(ids):
        return "each element an object, their action_ids unique in the block"
    return next(filter(None, (_element_problem(e) for e in elements)), None)


def _element_problem(element: dict[str, Any]) -> str | None:
    action_id = element.get("action_id")
    if not isinstance(action_id, str) or not 1 <= len(action_id) <= SLACK_ACTION_ID_LIMIT:
        return f"an action_id of 1 to {SLACK_ACTION_ID_LIMIT} characters, got {action_id!r}"
    if element.get("type") == "button":
        value, style = element.get("value"), element.get("style")
        if value is not None and (not isinstance(value, str) or len(value) > SLACK_BUTTON_VALUE_LIMIT):
            return f"a button's value is a string of at most {SLACK_BUTTON_VALUE_LIMIT} characters"
        if style not in (None, "primary", "danger"):
            return f"a button's style is primary or danger, not {style!r}"
        if "confirm" in element and (problem := _confirm_problem(element["confirm"])):
            return problem
        return _text_problem(element.get("text"), SLACK_BUTTON_TEXT_LIMIT, ("plain_text",))
    if element.get("type") == "static_select":
        placeholder = element.get("placeholder")
        if placeholder is not None and (
            problem := _text_problem(placeholder, SLACK_PLACEHOLDER_LIMIT, ("plain_text",))
        ):
            return problem
        return _options_problem(element.get("options"))
    return f"an element type this fake does not know: {element.get('type')!r}"


def _confirm_problem(confirm: Any) -> str | None:
    """A confirmation dialog (docs.slack.dev/reference/block-kit/composition-objects/confirmation-dialog-
    object): title, text, confirm and deny, plain_text of at most 100, 300, 30 and 30 characters."""
    if not isinstance(confirm, dict):
        return "a confirm is an object"
    limits = {"title": 100, "text": 300, "confirm": 30, "deny": 30}
    for name, limit in limits.items():
        kinds = ("plain_text", "mrkdwn") if name == "text" else ("plain_text",)
        if problem := _text_problem(confirm.get(name), limit, kinds):
            return f"confirm.{name}: {problem}"
    if confirm.get("style") not in (None, "primary", "danger"):
        return "confirm.style is primary or danger"
    return None


def _options_problem(options: Any) -> str | None:
    if not isinstance(options, list) or not 1 <= len(options) <= SLACK_MAX_OPTIONS:
        return f"a static_select has 1 to {SLACK_MAX_OPTIONS} options"
    values = [o.get("value") for o in options if isinstance(o, dict)]
    if len(values) != len(options) or len(set(values)) != len(values):
        return "each option an object with a unique value"
    for option in options:
        value = option["value"]
        if not isinstance(value, str) or not 1 <= len(value) <= SLACK_OPTION_VALUE_LIMIT:
            return f"an option's value has 1 to {SLACK_OPTION_VALUE_LIMIT} characters, got {len(str(value))}"
        if problem := _text_problem(option.get("text"), SLACK_BUTTON_TEXT_LIMIT, ("plain_text",)):
            return problem
    return None


def _modal_problem(view: Any) -> str | None:
    """What Slack would refuse in a modal view (the limits above FakeSlack)."""
    if not isinstance(view, dict) or view.get("type") != "modal":
        return "view must be an object of type modal"
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= SLACK_MODAL_MAX_BLOCKS:
        return f"a modal has 1 to {SLACK_MODAL_MAX_BLOCKS} blocks"
    has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
    if has_input and view.get("submit") is None:
        return "submit is required with an input block"
    for name in ("title", "submit", "close"):
        if (name == "title" or view.get(name) is not None) and (
            problem := _text_problem(view.get(name), SLACK_MODAL_TEXT_LIMIT, ("plain_text",))
        ):
            return f"{name}: {problem}"
    if len(str(view.get("callback_id") or "")) > SLACK_ACTION_ID_LIMIT:
        return f"callback_id longer than {SLACK_ACTION_ID_LIMIT}"
    if len(str(view.get("private_metadata") or "")) > SLACK_METADATA_LIMIT:
        return f"private_metadata longer than {SLACK_METADATA_LIMIT}"
    return next(filter(None, (_view_block_problem(b) for b in blocks)), None)


def _view_block_problem(block: Any) -> str | None:
    if not isinstance(block, dict):
        return "a block is an object"
    if block.get("type") != "input":
        return _block_problem(block)
    if len(str(block.get("block_id") or "")) > SLACK_ACTION_ID_LIMIT:
        return f"block_id longer than {SLACK_ACTION_ID_LIMIT}"
    if problem := _text_problem(block.get("label"), SLACK_LABEL_LIMIT, ("plain_text",)):
        return f"label: {problem}"
    element = block.get("element")
    if not isinstance(element, dict) or element.get("type") != "plain_text_input":
        return "an input's element here is a plain_text_input"
    if len(str(element.get("action_id") or "")) > SLACK_ACTION_ID_LIMIT:
        return f"action_id longer than {SLACK_ACTION_ID_LIMIT}"
    for bound in ("min_length", "max_length"):
        value = element.get(bound, 0)
        if not isinstance(value, int) or not 0 <= value <= SLACK_INPUT_LENGTH_LIMIT:
            return f"{bound} is 0 to {SLACK_INPUT_LENGTH_LIMIT}"
    placeholder = element.get("placeholder")
    if placeholder is not None:
        return _text_problem(placeholder, SLACK_PLACEHOLDER_LIMIT, ("plain_text",))
    return None


def _response_problem(body: dict[str, Any]) -> str | None:
    """What a response_url refuses: not a message, or flags of the wrong type (see above FakeSlack)."""
    if body.get("response_type") not in (None, "in_channel", "ephemeral"):
        return f"response_type is in_channel or ephemeral, not {body.get('response_type')!r}"
    for flag in ("replace_original", "delete_original"):
        if flag in body and not isinstance(body[flag], bool):
            return f"{flag} is a boolean"
    if re.search(r"<!(channel|here|everyone)>", json.dumps(body.get("blocks") or [])):
        return "unescaped mass mention"
    refusal = slack_refusal(body)
    return None if refusal is None else f"{refusal[0]}: {refusal[1]}"


def _text_problem(text: Any, limit: int, types: tuple[str, ...] = ("plain_text", "mrkdwn")) -> str | None:
    """A text object's problem: its type, or its length (1 to ``limit`` characters)."""
    if not isinstance(text, dict) or text.get("type") not in types or not isinstance(text.get("text"), str):
        return f"not a text object of type {' or '.join(types)}"
    if not 1 <= len(text["text"]) <= limit:
        return f"a text of {len(text['text'])} characters (1 to {limit})"
    return None


class FakeGrafana(Fake):
    """Grafana HTTP API: annotations (create, PATCH, find), folders and dashboards, as Grafana answers.

    What it holds requests to, and where each rule comes from:
    - ``prefix``: a Grafana served under a sub-path (``root_url`` + ``serve_from_sub_path``) has every
      route under it; a request outside it (``/grafanaapi/…``, what grafana-client makes of a URL
      without its trailing slash: ``construct_api_url`` in grafana_client/client.py) gets a 404.
    - auth: every request needs the service-account token as ``Authorization: Bearer`` (Grafana HTTP
      API docs, "Authentication"); without it, 401.
    - annotation tags (create and PATCH): together, as Grafana estimates their JSON array, at most
      ``tags_length`` (500 by default) bytes, else 400 "Tags length exceeds the maximum allowed."
      (``validateTagsLength`` in pkg/services/annotations/annotationsimpl/xorm_store.go,
      ``ErrBaseTagLimitExceeded`` in pkg/services/annotations/annotations.go); each tag's key and value
      (split at the first ``:``) at most 100 characters, the ``tag`` table's columns
      (pkg/services/sqlstore/migrations/tag_mig.go), which MySQL and PostgreSQL enforce: a 500.
    - find: ``from``/``to`` (epoch ms) keep annotations with ``time <= to`` and ``timeEnd >= from``
      (both given, as in the annotations store's query), ``type=annotation`` leaves out alert ones,
      every ``tags`` must match; ``limit`` defaults to 100 (HTTP API docs, "Find Annotations").
    - dashboards (POST /api/dashboards/db, HTTP API docs "Create / Update dashboard", and
      pkg/services/dashboards/errors.go): a uid in ``provisioned`` (file or sidecar provisioning,
      ``allowUiUpdates: false``) gives 400 "Cannot save provisioned dashboard"; without
      ``overwrite: true``, an existing uid whose version differs gives 412 "version-mismatch", and the
      same title under another uid in the folder 412 "name-exists".
    """

    TAGS_LENGTH = 500
    TAG_PART_LIMIT = 100

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.annotations: dict[int, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.provisioned: set[str] = set()  # uids Grafana provisions from files
        self.searches: list[dict[str, str]] = []  # the query of every find
        self.stall_adds = 0  # creates stored but answered only after release(): a crash window
        self._released = asyncio.Event()
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        api = f"{self.prefix}/api"
        app.router.add_post(f"{api}/annotations", self.add)
        app.router.add_patch(f"{api}/annotations/{{id}}", self.patch)
        app.router.add_get(f"{api}/annotations", self.find)
        app.router.add_get(f"{api}/folders/{{uid}}", self.get_folder)
        app.router.add_post(f"{api}/folders", self.create_folder)
        app.router.add_post(f"{api}/dashboards/db", self.save_dashboard)
        return app

    def release(self) -> None:
        self._released.set()

    def provision_from_files(self, dashboard: dict[str, Any]) -> None:
        """A dashboard as Grafana's file provisioning (or the chart's sidecar) keeps it."""
        self.dashboards[dashboard["uid"]] = {"dashboard": {**dashboard, "version": 1}, "folderUid": None}
        self.provisioned.add(dashboard["uid"])

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if not request.path.startswith(f"{self.prefix}/api/"):
            return self.reject(f"no route {request.path} under {self.prefix or '/'}", 404)
        if not _bearer(request, GRAFANA_TOKEN):
            return self.reject("missing or wrong bearer token", 401)
        scripted = self.scripted()
        return scripted if scripted is not None else await handler(request)

    @staticmethod
    def _check_times(body: dict[str, Any]) -> str | None:
        for key in ("time", "timeEnd"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or value < 10**12):
                return f"{key} must be epoch milliseconds, got {value!r}"
        return None

    def _tags_problem(self, tags: list[str]) -> web.Response | None:
        estimated = 2 + sum(len(str(t).encode()) + 2 for t in tags) + max(len(tags) - 1, 0)
        if estimated > self.TAGS_LENGTH:
            self.errors.append(f"tags length ({estimated}) exceeds the maximum allowed ({self.TAGS_LENGTH})")
            body = {
                "message": "Tags length exceeds the maximum allowed.",
                "messageId": "annotations.tag-limit-exceeded",
                "statusCode": 400,
            }
            return web.json_response(body, status=400)
        for tag in tags:
            key, _, value = str(tag).partition(":")
            if max(len(key.strip()), len(value.strip())) > self.TAG_PART_LIMIT:
                return self.reject(f"tag {tag[:40]!r}…: a key or value over 100 characters", 500)
        return None

    async def add(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._check_times(body)
        if problem or not isinstance(body.get("text"), str) or not body.get("tags"):
            return self.reject(problem or "text and tags are required")
        too_long = self._tags_problem(body["tags"])
        if too_long is not None:
            return too_long
        annotation_id = next(self._ids)
        self.annotations[annotation_id] = {**body, "id": annotation_id}
        self.requests.append(("add", body))
        if self.stall_adds > 0:
            self.stall_adds -= 1
            await self._released.wait()
        return web.json_response({"id": annotation_id, "message": "Annotation added"})

    async def patch(self, request: web.Request) -> web.Response:
        annotation_id = int(request.match_info["id"])
        body = await request.json()
        problem = self._check_times(body)
        if annotation_id not in self.annotations:
            return self.reject(f"annotation {annotation_id} not found", 404)
        if problem or not body.get("tags"):
            return self.reject(problem or "a PATCH with empty tags would clear them")
        too_long = self._tags_problem(body["tags"])
        if too_long is not None:
            return too_long
        self.annotations[annotation_id].update({k: v for k, v in body.items() if v is not None})
        self.requests.append(("patch", body))
        return web.json_response({"message": "Annotation patched"})

    async def find(self, request: web.Request) -> web.Response:
        query = request.query
        self.searches.append(dict(query))
        tags = set(query.getall("tags", []))
        start, end = int(query.get("from", "0")), int(query.get("to", "0"))
        found = []
        for annotation in self.annotations.values():
            time_end = annotation.get("timeEnd") or annotation["time"]
            if start > 0 and end > 0 and not (annotation["time"] <= end and time_end >= start):
                continue
            if query.get("type") == "alert" or not tags <= set(annotation["tags"]):
                continue
            found.append(annotation)
        return web.json_response(found[: int(query.get("limit", "100"))])

    async def get_folder(self, request: web.Request) -> web.Response:
        folder = self.folders.get(request.match_info["uid"])
        return web.json_response(folder or {"message": "folder not found"}, status=200 if folder else 404)

    async def create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("title") or not body.get("uid"):
            return self.reject("folder title and uid are required")
        self.folders[body["uid"]] = body
        return web.json_response({**body, "id": len(self.folders)})

    async def save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dashboard = body.get("dashboard") or {}
        uid, folder = dashboard.get("uid"), body.get("folderUid")
        if not uid or not dashboard.get("title") or folder not in self.folders:
            return self.reject("dashboard uid/title and an existing folderUid are required")
        if uid in self.provisioned:
            return web.json_response({"message": "Cannot save provisioned dashboard"}, status=400)
        existing = self.dashboards.get(uid)
        if not body.get("overwrite"):
            if existing and existing["dashboard"].get("version") != dashboard.get("version"):
                message = "The dashboard has been changed by someone else"
                return self._precondition(message, "version-mismatch")
            if any(
                d["dashboard"]["title"] == dashboard["title"] and d.get("folderUid") == folder and u != uid
                for u, d in self.dashboards.items()
            ):
                message = "A dashboard with the same name in the folder already exists"
                return self._precondition(message, "name-exists")
        version = (existing["dashboard"].get("version") or 0) + 1 if existing else 1
        self.dashboards[uid] = {**body, "dashboard": {**dashboard, "version": version}}
        return web.json_response({"status": "success", "uid": uid, "version": version})

    def _precondition(self, message: str, status: str) -> web.Response:
        self.errors.append(f"412 {status}: {message}")
        return web.json_response({"message": message, "status": status}, status=412)


# The Events API v2 as PagerDuty documents it ("Send an Alert Event" and "Events API v2 Overview":
# developer.pagerduty.com/docs/events-api-v2/, in github.com/PagerDuty/developer-docs
# docs/events-API-v2/02-Trigger-Events.md and 01-Overview.md): a 32-character routing_key; event_action
# trigger | acknowledge | resolve; dedup_key at most 255 characters (required to acknowledge or
# resolve); on a trigger a payload with summary (at most 1024), source and severity (critical | error |
# warning | info); payload.timestamp ISO 8601; component, group, class strings and custom_details an
# object; links [{href, text?}], images [{src (https), href?, alt?}]; at most 512 KB. An optional key
# is left out, never null. A rejection is HTTP 400 with {"status": "invalid event", "message": "Event
# object is invalid", "errors": [...]} (the shape Alertmanager's notifier reads, notify/pagerduty).
PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_MAX_BYTES = 512 * 1024
_PD_OPTIONAL_STRINGS = ("dedup_key", "client", "client_url")
_PD_PAYLOAD_STRINGS = ("component", "group", "class")


class FakePagerDuty(Fake):
    """Events API v2 (POST /v2/enqueue). ``received`` counts every request, scripted ones too."""

    received = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.enqueue)
        return app

    async def enqueue(self, request: web.Request) -> web.Response:
        self.received += 1
        scripted = self.scripted()
        if scripted is not None:
            return scripted
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = "the body must be a JSON object" if not isinstance(body, dict) else _pd_problem(body)
        if len(raw) > PD_MAX_BYTES:
            problem = "the event is larger than 512 KB"
        if problem:
            self.errors.append(problem)
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": [problem]},
                status=400,
            )
        self.requests.append((body["event_action"], body))
        return web.json_response(
            {
                "status": "success",
                "message": "Event processed",
                "dedup_key": body.get("dedup_key", "generated"),
            },
            status=202,
        )

    def events(self, action: str | None = None) -> list[dict[str, Any]]:
        return [b for a, b in self.requests if action is None or a == action]


def _pd_problem(body: dict[str, Any]) -> str | None:
    nulls = [k for k, v in body.items() if v is None]
    if nulls:
        return f"'{nulls[0]}' is null: leave an optional key out instead"
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        return "Length of 'routing_key' is incorrect (should be 32 characters)"
    if key != PD_ROUTING_KEY:
        return "'routing_key' is not this integration's key"
    if body.get("event_action") not in PD_ACTIONS:
        return "'event_action' is invalid (must be one of trigger, acknowledge, resolve)"
    for name in _PD_OPTIONAL_STRINGS:
        if name in body and not isinstance(body[name], str):
            return f"'{name}' must be a string"
    if "dedup_key" in body and not 0 < len(body["dedup_key"]) <= 255:
        return "'dedup_key' must be 1 to 255 characters"
    if body["event_action"] != "trigger" and "dedup_key" not in body:
        return f"'dedup_key' is required to {body['event_action']}"
    if body["event_action"] == "trigger" and "payload" not in body:
        return "'payload' is missing"
    return (
        (_pd_payload_problem(body["payload"]) if "payload" in body else None)
        or _pd_list_problem(body, "links", "href", ("text",))
        or _pd_list_problem(body, "images", "src", ("href", "alt"))
    )


def _pd_payload_problem(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "'payload' must be an object"
    nulls = [k for k, v in payload.items() if v is None]
    if nulls:
        return f"'payload.{nulls[0]}' is null: leave an optional key out instead"
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
        return "'payload.summary' must be a string of 1 to 1024 characters"
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        return "'payload.source' is missing"
    if payload.get("severity") not in PD_SEVERITIES:
        return "'payload.severity' is invalid (must be one of critical, error, warning, info)"
    if "timestamp" in payload and not _iso_8601(payload["timestamp"]):
        return "'payload.timestamp' must be an ISO 8601 date and time"
    for name in _PD_PAYLOAD_STRINGS:
        if name in payload and not isinstance(payload[name], str):
            return f"'payload.{name}' must be a string"
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        return "'payload.custom_details' must be an object"
    return None


def _pd_list_problem(body: dict[str, Any], name: str, required: str, optional: tuple[str, ...]) -> str | None:
    items = body.get(name, [])
    if not isinstance(items, list):
        return f"'{name}' must be an array of objects"
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(required), str) or not item[required]:
            return f"each of '{name}' needs '{required}'"
        if any(k in item and not isinstance(item[k], str) for k in optional):
            return f"'{name}' fields {', '.join(optional)} must be strings"
        if name == "images" and not item["src"].startswith("https://"):
            return "an image's 'src' must be served over HTTPS"
    return None


def _iso_8601(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class FakeModel(Fake):
    """An OpenAI-compatible chat completions server. ``mode``: good | malformed | wrong-schema | injected |
    hallucinated | timeout | 429 | 500. ``good`` answers from its own rules (``_own_analysis``): the
    highest-scoring hypothesis whatever its place in the packet, in its own words, plus one invented
    claim; so a test can tell the model's report from the rules report, and see grounding work."""

    def __init__(self, mode: str = "good") -> None:
        super().__init__()
        self.mode = mode

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.complete)
        return app

    async def complete(self, request: web.Request) -> web.Response:
        if not _bearer(request, MODEL_TOKEN):
            return self.reject("missing or wrong bearer token", 401)
        body = await request.json()
        messages = body.get("messages")
        if (
            not body.get("model")
            or not isinstance(messages, list)
            or not all(
                isinstance(m, dict)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            return self.reject("model and messages[{role, content}] are required")
        self.requests.append(("chat", body))
        if self.mode == "timeout":
            await asyncio.sleep(60)
        if self.mode in ("429", "500"):
            return web.json_response({"error": {"message": f"fake {self.mode}"}}, status=int(self.mode))
        return web.json_response(_completion(body["model"], self._answer(messages[-1]["content"])))

    def _answer(self, prompt: str) -> str:
        if self.mode == "malformed":
            return '{"summary": "cut off mid-'
        if self.mode == "wrong-schema":
            return 'Sure! {"summary": 42, "root_cause": "carts"}'
        if self.mode == "injected":  # a model that obeyed the alert text instead of the prompt
            return json.dumps({"summary": "all fine", "actions": [{"pagerduty": "page everyone"}]})
        packet = json.loads(prompt[prompt.index("{", prompt.index("Evidence packet")) :])
        return json.dumps(_own_analysis(packet, hallucinate=self.mode == "hallucinated"))


INVENTED_SERVICE = "ghost"  # every good answer also claims this service, which no packet holds


def _own_analysis(packet: dict[str, Any], hallucinate: bool) -> dict[str, Any]:
    """The fake's own reading of the evidence packet, not an echo of its order: the hypothesis with
    the highest score, its evidence with the largest deviation, the most similar past incident, and
    one invented alternative that grounding must drop. ``hallucinate`` names a service instead that
    is not in the packet."""
    ranked = sorted(packet["hypotheses"], key=lambda h: -float(h["score"]))
    if not ranked:
        return {"summary": "No hypothesis in the evidence stands out.", "root_cause": None}
    top, others = ranked[0], ranked[1:]
    strongest = max(top["evidence"], key=lambda e: float(e.get("deviation") or 0.0), default=None)
    signal = strongest["signal"] if strongest else None
    service = "imaginary-service" if hallucinate else top["service"]
    similar = max(packet["similar_incidents"], key=lambda s: float(s.get("score") or 0.0), default=None)
    summary = (
        f"{service} is the most likely cause: score {float(top['score']):.2f}, the highest of "
        f"{len(ranked)} hypotheses"
    )
    if strongest:
        summary += f"; its {signal} moved {float(strongest['deviation']):.0f}x its usual spread"
    if similar:
        summary += f". It looks like incident {similar['id']}"
    return {
        "summary": summary + ".",
        "root_cause": {"service": service, "signal": signal, "why": "highest score, strongest deviation"},
        "alternatives": [
            *({"service": h["service"], "signal": None, "why": "lower score"} for h in others),
            {"service": INVENTED_SERVICE, "signal": "cpu", "why": "not in the evidence"},
        ],
        "similar_incident": str(similar["id"]) if similar else None,
        "next_steps": [
            f"Check {service} {signal}: {strongest['promql']}" if strongest else f"Check {service}"
        ],
    }


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": len(content) // 4 + 100,
            "completion_tokens": len(content) // 4,
            "total_tokens": 0,
        },
    }
