"""Slack through slack-sdk's AsyncWebClient (bot token: one parent message per incident, replies in its
thread, the parent updated in place), or an incoming webhook (no threads) as a fallback.

The reference kept per incident is ``<channel id>|<parent ts>``: chat.update needs the channel's id,
which only the postMessage answer gives when the config names the channel.

Every message carries Slack message metadata naming the incident and the outbox action. A post that
may already have gone (a retry after a timeout, or an action queued before a crash) first looks for
its own message in the channel history (parents) or the thread (replies), since Slack has no
idempotency key. A failed lookup (no ``channels:history`` scope, rate limit, error) posts anyway:
at least once. The incoming-webhook fallback cannot read anything back, so it cannot look.

An incident's chart (``upload:chart``) is uploaded into its thread with Slack's external upload
(files.getUploadURLExternal, the bytes to the URL it gives, files.completeUploadExternal: slack-sdk's
``files_upload_v2``). A file carries no message metadata, so its name does: the incident, this
installation and when the action was queued; an upload that may already have gone first looks for a
file of that name in the thread. The picture is drawn at delivery by the ``render`` the sink is given
(a failure to draw gives the upload up); without a bot token (the incoming webhook) nothing is uploaded.

Only a parent (or its update) becomes the incident's reference: a reply whose parent was given up is
posted top-level and returns none. A short ``Retry-After`` is waited inside the delivery; a long one
goes back to the outbox as the row's retry time (``ShortRateLimitRetry``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.delivery import (
    PriorityRateLimiter,
    connection_failure,
    http_failure,
    retry_after,
)
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import OutboxItem

log = logging.getLogger(__name__)

# Slack's answers (HTTP 200, ok: false) that mean "try again later"; any other error will repeat.
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# Message metadata (https://docs.slack.dev/messaging/message-metadata): an alphanumeric event_type
# and a free-form event_payload object.
EVENT_TYPE = "agentic_obs_action"
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
# Looking back from when the action was queued, minus this margin for clock skew between us and Slack.
LOOKUP_MARGIN = 300.0
_LOOKUP_LIMIT = 100
_LOOKUP_PAGES = 3  # a bounded look: a busy channel may push an old post out of reach (then: at least once)
_LIST_PAGES = 5
# A Retry-After up to this is waited inside the delivery (cheaper than a durable retry, which counts
# an attempt and makes the next try look for a post that cannot have gone); a longer one goes back to
# the outbox with its retry time. Also never more than one request's timeout.
INLINE_RETRY_AFTER = 5.0
_ALT_TEXT_LIMIT = 1000  # files.getUploadURLExternal: alt_txt_too_large past it
_LOOKUP_FAILED = (
    "slack: could not look for a message already posted (%s); posting anyway, so a message "
    "cut off by a crash may appear twice"
)
_NO_UPLOADS = "slack: incident charts are not uploaded (%s); set SLACK_BOT_TOKEN and a channel for them"

Lister = Callable[..., Awaitable[AsyncSlackResponse]]
# Draws a chart (the report's chart data) as PNG bytes; a DeliveryError when it cannot.
Renderer = Callable[[Mapping[str, Any]], Awaitable[bytes]]
Matcher = Callable[[Mapping[str, Any]], bool]
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class SlackSink:
    name = "slack"

    def __init__(
        self,
        guard: Guard,
        client: AsyncWebClient | None = None,
        channel: str | None = None,
        webhook: AsyncWebhookClient | None = None,
        install: str = "default",
        render: Renderer | None = None,
    ) -> None:
        self.guard = guard
        self._render = render
        self._client = client
        self._channel = channel
        self._webhook = webhook
        self._install = install  # tells this installation's messages from another's in a shared channel
        # Slack allows about one message per second per channel, with short bursts.
        self._per_channel = PriorityRateLimiter(rate=1.0, burst=3)
        # A crash does not count an attempt: an action queued before this process started may have
        # been mid-post when the previous one died.
        self._started = time.time()
        # conversations.history takes only the channel's id; a configured name is resolved once.
        self._channel_id: str | None = channel if channel and _CHANNEL_ID.match(channel) else None
        self._channel_unknown = False
        self._resolving = asyncio.Lock()  # after a restart many lanes look at once: one list call
        self._warned: set[str] = set()

    @classmethod
    def create(
        cls,
        guard: Guard,
        api_url: str,
        token: str | None,
        channel: str | None,
        webhook_url: str | None,
        timeout: float,
        session: aiohttp.ClientSession | None = None,
        install: str = "default",
        render: Renderer | None = None,
    ) -> SlackSink:
        client = None
        if token and channel:
            client = AsyncWebClient(
                token=token,
                base_url=api_url.rstrip("/") + "/",
                timeout=int(timeout),
                session=session,
                retry_handlers=[ShortRateLimitRetry(max_wait=min(INLINE_RETRY_AFTER, timeout))],
            )
        webhook = (
            AsyncWebhookClient(webhook_url, timeout=int(timeout), session=session) if webhook_url else None
        )
        return cls(guard, client, channel, webhook, install, render)

    async def wait_turn(self, item: OutboxItem) -> None:
        """Keep to the channel's rate; a new incident's parent message goes before any follow-up.
        The dispatcher awaits this before taking a delivery slot, so waiting here blocks no one else."""
        await self._per_channel.acquire(urgent=item.ref is None)

    async def deliver(self, item: OutboxItem) -> str | None:
        return await self.guard.call(lambda: self._deliver(item))

    async def _deliver(self, item: OutboxItem) -> str | None:
        try:
            if self._client is None:
                if _kind(item) == "upload":
                    self._warn_once("no-upload", "an incoming webhook cannot upload a file", _NO_UPLOADS)
                    return None
                return await self._via_webhook(item.payload)
            return await self._via_api(self._client, item)
        except SlackApiError as exc:
            raise _api_failure(exc) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._hide_webhook_url(connection_failure(self.name, exc)) from exc

    def _hide_webhook_url(self, error: DeliveryError) -> DeliveryError:
        """The webhook URL is a secret, and some aiohttp errors (redirect loops) quote it; the message is
        kept with the outbox row and shown by the API, which the log scrubber does not cover."""
        url = self._webhook.url if self._webhook is not None else ""
        if not url or url not in str(error):
            return error
        message = str(error).replace(url, "<SLACK_WEBHOOK_URL>")
        return DeliveryError(message, permanent=error.permanent, retry_after=error.retry_after)

    async def _via_api(self, client: AsyncWebClient, item: OutboxItem) -> str | None:
        body = dict(item.payload)
        kind = _kind(item)
        if kind == "upload":
            return await self._upload(client, item)
        if item.ref is None and kind == "reply":
            # The parent was given up (the outbox hands out a reply only once every older action of
            # the incident here is settled, and retries the parent first): waiting would be forever.
            # The reply goes top-level, saying whose it is, and is never the incident's reference: a
            # later chat.update would overwrite it with the parent.
            await self._post_parent(client, item, _orphaned(item, body))
            return None
        if item.ref is None:  # the parent, or its update when the parent never made it: posted anew
            return await self._post_parent(client, item, body)
        channel, _, ts = item.ref.partition("|")
        if kind == "update":  # idempotent; without a metadata argument Slack keeps the parent's
            await client.chat_update(channel=channel, ts=ts, **body)
        elif kind != "open":  # an "open" with a ref was already posted: never twice
            await self._post_reply(client, item, channel, ts, body)
        return item.ref

    async def _post_parent(self, client: AsyncWebClient, item: OutboxItem, body: dict[str, Any]) -> str:
        if self._may_have_gone(item):
            found = await self._find_parent(client, item)
            if found is not None:
                return found
        metadata = self._metadata(item)
        response = await client.chat_postMessage(channel=str(self._channel), metadata=metadata, **body)
        self._channel_id = self._channel_id or str(response["channel"])
        return f"{response['channel']}|{response['ts']}"

    async def _post_reply(
        self, client: AsyncWebClient, item: OutboxItem, channel: str, ts: str, body: dict[str, Any]
    ) -> None:
        if self._may_have_gone(item):
            found = await self._search(
                item, client.conversations_replies, self._posted(item), channel=channel, ts=ts
            )
            if found is not None:
                return
        metadata = self._metadata(item)
        await client.chat_postMessage(channel=channel, thread_ts=ts, metadata=metadata, **body)

    async def _upload(self, client: AsyncWebClient, item: OutboxItem) -> str | None:
        """The chart into the incident's thread, once: looked for first when it may have gone."""
        if item.ref is None:
            raise DeliveryError(
                "slack: the incident's parent message was given up: no thread", permanent=True
            )
        if self._render is None:
            raise DeliveryError("slack: this sink cannot draw charts", permanent=True)
        channel, _, ts = item.ref.partition("|")
        filename = self._filename(item)
        if self._may_have_gone(item):
            found = await self._search(
                item, client.conversations_replies, lambda m: _has_file(m, filename), channel=channel, ts=ts
            )
            if found is not None:
                return item.ref
        png = await self._render(item.payload["chart"])  # before any request: a failure sends nothing
        try:
            await client.files_upload_v2(
                channel=channel,
                thread_ts=ts,
                content=png,
                filename=filename,
                title=str(item.payload.get("title") or filename),
                alt_txt=str(item.payload.get("alt_text") or "")[:_ALT_TEXT_LIMIT] or None,
                initial_comment=item.payload.get("comment") or None,
            )
        except SlackRequestError as exc:  # the bytes' upload answered other than 200: try again later
            raise DeliveryError(f"slack: {str(exc)[:300]}", permanent=False) from exc
        return item.ref

    def _filename(self, item: OutboxItem) -> str:
        """What a lookup matches a file on (a file has no metadata): unique per outbox row, as the
        metadata's ``queued_at`` is, so another installation's or a wiped store's never matches."""
        key = f"{self._install}-{item.incident_id}-{item.created_at:.6f}"
        return f"agentic-obs-chart-{_UNSAFE_IN_FILENAME.sub('_', key)}.png"

    def _may_have_gone(self, item: OutboxItem) -> bool:
        """Tried before (a timeout may hide a post Slack accepted), or queued before this process."""
        return item.attempts > 0 or item.created_at < self._started

    def _metadata(self, item: OutboxItem) -> dict[str, Any]:
        """What a lookup matches on. ``queued_at`` is fixed per outbox row, so a message from a wiped
        store (its incident ids start at 1 again) or another installation in the channel never matches."""
        payload = {
            "incident": item.incident_id,
            "action": item.action,
            "install": self._install,
            "queued_at": f"{item.created_at:.6f}",
        }
        return {"event_type": EVENT_TYPE, "event_payload": payload}

    async def _find_parent(self, client: AsyncWebClient, item: OutboxItem) -> str | None:
        channel = await self._lookup_channel(client)
        if channel is None:
            return None
        ts = await self._search(item, client.conversations_history, self._posted(item), channel=channel)
        return f"{channel}|{ts}" if ts is not None else None

    def _posted(self, item: OutboxItem) -> Matcher:
        """A message this action posted: it carries the action's metadata."""
        wanted = self._metadata(item)
        return lambda message: _same_metadata(message.get("metadata"), wanted)

    async def _search(self, item: OutboxItem, lister: Lister, matches: Matcher, **where: str) -> str | None:
        """The ts of the message this action already posted, or None, also when the lookup fails."""
        cursor = None
        try:
            for _ in range(_LOOKUP_PAGES):
                page = await lister(
                    **where,
                    include_all_metadata=True,  # without it, messages come without their metadata
                    oldest=f"{item.created_at - LOOKUP_MARGIN:.6f}",
                    limit=_LOOKUP_LIMIT,
                    cursor=cursor,
                )
                for message in page.get("messages") or []:
                    if matches(message):
                        return str(message["ts"])
                if not (cursor := _next_cursor(page)):
                    return None
        except (SlackClientError, TimeoutError, aiohttp.ClientError) as exc:
            self._lookup_failed(exc)
        return None

    async def _lookup_channel(self, client: AsyncWebClient) -> str | None:
        async with self._resolving:
            if self._channel_id is not None or self._channel_unknown:
                return self._channel_id
            try:
                self._channel_id = await self._resolve_channel(client)
            except (SlackClientError, TimeoutError, aiohttp.ClientError) as exc:
                self._lookup_failed(exc)
                return None
            self._channel_unknown = self._channel_id is None
            if self._channel_unknown:
                self._warn_once("not-found", f"channel {self._channel} not found by conversations.list")
            return self._channel_id

    async def _resolve_channel(self, client: AsyncWebClient) -> str | None:
        """The configured channel's id by its name (needs ``channels:read``, ``groups:read`` if private)."""
        name = str(self._channel).lstrip("#")
        cursor = None
        for _ in range(_LIST_PAGES):
            page = await client.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
            )
            for channel in page.get("channels") or []:
                if channel.get("name") == name:
                    return str(channel["id"])
            if not (cursor := _next_cursor(page)):
                break
        return None

    def _lookup_failed(self, exc: Exception) -> None:
        if isinstance(exc, SlackApiError):
            error = str(exc.response.get("error", "")) or f"HTTP {exc.response.status_code}"
            needed = exc.response.get("needed")
            reason = f"{error} (needs {needed})" if needed else error
        else:
            reason = type(exc).__name__
        self._warn_once(reason, reason)

    def _warn_once(self, key: str, reason: str, message: str = _LOOKUP_FAILED) -> None:
        """One line per cause, not per message: a missing scope would otherwise log on every retry."""
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(message, reason)

    async def _via_webhook(self, body: Mapping[str, Any]) -> str | None:
        if self._webhook is None:
            raise DeliveryError(
                "slack: neither SLACK_BOT_TOKEN with a channel nor SLACK_WEBHOOK_URL is set", permanent=True
            )
        response = await self._webhook.send(text=body.get("text"), blocks=body.get("blocks"))
        if response.status_code != 200:
            raise http_failure(self.name, response.status_code, response.body, dict(response.headers or {}))
        return None


def _orphaned(item: OutboxItem, body: dict[str, Any]) -> dict[str, Any]:
    """A thread reply posted without its thread: a context line first says which incident it is of."""
    note = f"Incident {item.incident_id}: its parent message could not be posted."
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}
    return {**body, "blocks": [context, *(body.get("blocks") or [])]}


class ShortRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's 429 handler, for a short ``Retry-After`` only. It sleeps inside the delivery, which
    the dispatcher bounds with an outer timeout: a long wait would be cut off there and retried at
    once, too early. A longer (or missing, or unreadable) ``Retry-After`` raises instead, and the
    outbox schedules the row's retry for when Slack said (``DeliveryError.retry_after``)."""

    def __init__(self, max_wait: float) -> None:
        super().__init__(max_retry_count=1)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        values = [v for k, v in response.headers.items() if k.lower() == "retry-after"]
        first = values[0][0] if values and values[0] else ""
        # The base class sleeps int(Retry-After) + up to 1 s: only a whole number is taken here.
        return first.strip().isdigit() and int(first) + 1 <= self.max_wait


def _kind(item: OutboxItem) -> str:
    return item.action.split(":", 1)[0]


def _has_file(message: Mapping[str, Any], filename: str) -> bool:
    """A message sharing the file named ``filename`` (how an upload shows in its thread)."""
    return any(isinstance(f, Mapping) and f.get("name") == filename for f in message.get("files") or [])


def _same_metadata(found: Any, wanted: Mapping[str, Any]) -> bool:
    if not isinstance(found, Mapping) or found.get("event_type") != wanted["event_type"]:
        return False
    payload = found.get("event_payload")
    return isinstance(payload, Mapping) and all(
        payload.get(key) == value for key, value in wanted["event_payload"].items()
    )


def _next_cursor(page: AsyncSlackResponse) -> str | None:
    return str((page.get("response_metadata") or {}).get("next_cursor") or "") or None


def _api_failure(exc: SlackApiError) -> DeliveryError:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    error = str(response.get("error", "")) if hasattr(response, "get") else ""
    headers = dict(getattr(response, "headers", {}) or {})
    if status == 200 and error:
        return DeliveryError(
            f"slack: {error}", permanent=error not in _TRANSIENT, retry_after=retry_after(headers)
        )
    return http_failure("slack", status, error or str(exc).splitlines()[0], headers)
