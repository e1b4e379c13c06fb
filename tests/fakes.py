"""Local fake servers for what cannot run here: Slack, Grafana, PagerDuty and an OpenAI-compatible model.

Each checks every request against the documented API shape (auth header, required fields, types, times
in milliseconds) and records it; a request of the wrong shape is answered 400 and kept in ``errors``,
which the tests assert is empty. ``script`` queues failures to answer with before behaving normally.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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


class FakeSlack(Fake):
    """Slack Web API: chat.postMessage and chat.update (JSON bodies, bot token, ok:false on errors), and
    the reads that find a message already posted: conversations.history (top-level messages, newest
    first) and conversations.replies (the parent, then its replies), both GET with ``oldest``/``limit``/
    ``cursor``, and returning each message's metadata only when ``include_all_metadata`` is true; and
    conversations.list (to learn a channel's id from its name)."""

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
        self._released = asyncio.Event()
        self._last_us = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self.post_message)
        app.router.add_post("/api/chat.update", self.update)
        app.router.add_get("/api/conversations.history", self.history)
        app.router.add_get("/api/conversations.replies", self.replies_of)
        app.router.add_get("/api/conversations.list", self.list_channels)
        return app

    def release(self) -> None:
        """Answer the stalled posts (their client may be long gone)."""
        self._released.set()

    def _check(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("channel"), str):
            return "channel must be a string"
        if not body.get("text") and not body.get("blocks"):
            return "text or blocks is required"
        for block in body.get("blocks") or []:
            if not isinstance(block, dict) or "type" not in block:
                return "every block needs a type"
            for text in _block_texts(block):
                if len(text) > 3000:
                    return f"a text block has {len(text)} characters (limit 3000)"
        if re.search(r"<!(channel|here|everyone)>", json.dumps(body.get("blocks") or [])):
            return "unescaped mass mention"
        return None

    async def _parse(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        self.arrived += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not _bearer(request, SLACK_TOKEN):
            return None, web.json_response({"ok": False, "error": "invalid_auth"})
        scripted = self.scripted()
        if scripted is not None:
            return None, scripted
        body = await request.json()
        problem = self._check(body)
        if problem:
            return None, self.reject(problem)
        problem = _metadata_problem(body)
        if problem:
            self.errors.append(problem)
            return None, web.json_response({"ok": False, "error": "invalid_metadata_format"})
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
        if not _bearer(request, SLACK_TOKEN):
            return query, web.json_response({"ok": False, "error": "invalid_auth"})
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
    return read


def _block_texts(block: dict[str, Any]) -> list[str]:
    texts = []
    if isinstance(block.get("text"), dict):
        texts.append(str(block["text"].get("text", "")))
    for item in block.get("fields", []) + block.get("elements", []):
        if isinstance(item, dict) and "text" in item:
            texts.append(str(item["text"]))
    return texts


class FakeGrafana(Fake):
    """Grafana HTTP API: annotations (create, PATCH, find), folders and dashboards."""

    def __init__(self) -> None:
        super().__init__()
        self.annotations: dict[int, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/api/annotations", self.add)
        app.router.add_patch("/api/annotations/{id}", self.patch)
        app.router.add_get("/api/annotations", self.find)
        app.router.add_get("/api/folders/{uid}", self.get_folder)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
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

    async def add(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._check_times(body)
        if problem or not isinstance(body.get("text"), str) or not body.get("tags"):
            return self.reject(problem or "text and tags are required")
        annotation_id = next(self._ids)
        self.annotations[annotation_id] = {**body, "id": annotation_id}
        self.requests.append(("add", body))
        return web.json_response({"id": annotation_id, "message": "Annotation added"})

    async def patch(self, request: web.Request) -> web.Response:
        annotation_id = int(request.match_info["id"])
        body = await request.json()
        problem = self._check_times(body)
        if annotation_id not in self.annotations:
            return self.reject(f"annotation {annotation_id} not found", 404)
        if problem or not body.get("tags"):
            return self.reject(problem or "a PATCH with empty tags would clear them")
        self.annotations[annotation_id].update({k: v for k, v in body.items() if v is not None})
        self.requests.append(("patch", body))
        return web.json_response({"message": "Annotation patched"})

    async def find(self, request: web.Request) -> web.Response:
        tags = set(request.query.getall("tags", []))
        found = [a for a in self.annotations.values() if tags <= set(a["tags"])]
        return web.json_response(found[: int(request.query.get("limit", "100"))])

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
        if (
            not dashboard.get("uid")
            or not dashboard.get("title")
            or body.get("folderUid") not in self.folders
        ):
            return self.reject("dashboard uid/title and an existing folderUid are required")
        self.dashboards[dashboard["uid"]] = body
        return web.json_response({"status": "success", "uid": dashboard["uid"], "version": 1})


class FakePagerDuty(Fake):
    """Events API v2 (POST /v2/enqueue)."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.enqueue)
        return app

    async def enqueue(self, request: web.Request) -> web.Response:
        scripted = self.scripted()
        if scripted is not None:
            return scripted
        body = await request.json()
        problem = _pd_problem(body)
        if problem:
            self.errors.append(problem)
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": [problem]},
                status=400,
            )
        self.requests.append((body["event_action"], body))
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]}, status=202
        )

    def events(self, action: str | None = None) -> list[dict[str, Any]]:
        return [b for a, b in self.requests if action is None or a == action]


def _pd_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or body.get("routing_key") != PD_ROUTING_KEY:
        return "routing_key is missing or wrong"
    if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        return "event_action must be trigger, acknowledge or resolve"
    if not isinstance(body.get("dedup_key"), str) or not 0 < len(body["dedup_key"]) <= 255:
        return "dedup_key must be a string of 1..255 characters"
    if body["event_action"] != "trigger":
        return None
    payload = body.get("payload") or {}
    if not isinstance(payload.get("summary"), str) or not 0 < len(payload["summary"]) <= 1024:
        return "payload.summary must be 1..1024 characters"
    if not payload.get("source"):
        return "payload.source is required"
    if payload.get("severity") not in ("critical", "error", "warning", "info"):
        return "payload.severity must be critical, error, warning or info"
    return None


class FakeModel(Fake):
    """An OpenAI-compatible chat completions server. ``mode``: good | malformed | wrong-schema | injected |
    hallucinated | timeout | 429 | 500. ``good`` names the first hypothesis of the packet it was sent."""

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
        top = packet["hypotheses"][0] if packet["hypotheses"] else None
        service = "imaginary-service" if self.mode == "hallucinated" or top is None else top["service"]
        signal = top["evidence"][0]["signal"] if top else "cpu"
        return json.dumps(
            {
                "summary": f"{service} is the most likely cause: its {signal} changed first.",
                "root_cause": {
                    "service": service,
                    "signal": signal,
                    "why": "largest deviation, earliest onset",
                },
                "alternatives": [{"service": "ghost", "signal": "cpu", "why": "not in the evidence"}],
                "similar_incident": None,
                "next_steps": [f"Check {service} {signal}"],
            }
        )


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
