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


class FakeSlack(Fake):
    """Slack Web API: chat.postMessage and chat.update (JSON bodies, bot token, ok:false on errors)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> message
        self._ts = itertools.count(1)
        self.delay = delay  # seconds before answering: a slow Slack
        self.arrived = 0  # requests received, answered or not

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self.post_message)
        app.router.add_post("/api/chat.update", self.update)
        return app

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
        return body, None

    async def post_message(self, request: web.Request) -> web.Response:
        body, response = await self._parse(request)
        if response is not None:
            return response
        assert body is not None
        if body.get("thread_ts") is not None and body["thread_ts"] not in self.messages:
            return self.reject(f"thread_ts {body['thread_ts']} is not a message")
        ts = f"1700000000.{next(self._ts):06d}"
        self.messages[ts] = {**body, "ts": ts}
        self.requests.append(("chat.postMessage", body))
        return web.json_response({"ok": True, "channel": "C0123456789", "ts": ts, "message": body})

    async def update(self, request: web.Request) -> web.Response:
        body, response = await self._parse(request)
        if response is not None:
            return response
        assert body is not None
        if body["channel"] != "C0123456789" or body.get("ts") not in self.messages:
            return self.reject("chat.update needs the channel id and the ts of an existing message")
        self.messages[body["ts"]].update(body)
        self.requests.append(("chat.update", body))
        return web.json_response({"ok": True, "channel": body["channel"], "ts": body["ts"]})

    def parents(self) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if not m.get("thread_ts")]

    def replies(self, parent_ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m.get("thread_ts") == parent_ts]


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
