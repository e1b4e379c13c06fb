"""Slack through slack-sdk's AsyncWebClient (bot token: one parent message per incident, replies in its
thread, the parent updated in place), or an incoming webhook (no threads) as a fallback.

The reference kept per incident is ``<channel id>|<parent ts>``: chat.update needs the channel's id,
which only the postMessage answer gives when the config names the channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
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

# Slack's answers (HTTP 200, ok: false) that mean "try again later"; any other error will repeat.
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class SlackSink:
    name = "slack"

    def __init__(
        self,
        guard: Guard,
        client: AsyncWebClient | None = None,
        channel: str | None = None,
        webhook: AsyncWebhookClient | None = None,
    ) -> None:
        self.guard = guard
        self._client = client
        self._channel = channel
        self._webhook = webhook
        # Slack allows about one message per second per channel, with short bursts.
        self._per_channel = PriorityRateLimiter(rate=1.0, burst=3)

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
    ) -> SlackSink:
        client = None
        if token and channel:
            client = AsyncWebClient(
                token=token,
                base_url=api_url.rstrip("/") + "/",
                timeout=int(timeout),
                session=session,
                retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
            )
        webhook = (
            AsyncWebhookClient(webhook_url, timeout=int(timeout), session=session) if webhook_url else None
        )
        return cls(guard, client, channel, webhook)

    async def wait_turn(self, item: OutboxItem) -> None:
        """Keep to the channel's rate; a new incident's parent message goes before any follow-up.
        The dispatcher awaits this before taking a delivery slot, so waiting here blocks no one else."""
        await self._per_channel.acquire(urgent=item.ref is None)

    async def deliver(self, item: OutboxItem) -> str | None:
        return await self.guard.call(lambda: self._deliver(item))

    async def _deliver(self, item: OutboxItem) -> str | None:
        try:
            if self._client is None:
                return await self._via_webhook(item.payload)
            return await self._via_api(self._client, item)
        except SlackApiError as exc:
            raise _api_failure(exc) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_failure(self.name, exc) from exc

    async def _via_api(self, client: AsyncWebClient, item: OutboxItem) -> str | None:
        body = dict(item.payload)
        kind = item.action.split(":", 1)[0]
        if item.ref is None:
            if kind != "open":  # the parent never made it: say it as a top-level message instead
                kind = "open"
            response = await client.chat_postMessage(channel=str(self._channel), **body)
            return f"{response['channel']}|{response['ts']}" if kind == "open" else None
        channel, _, ts = item.ref.partition("|")
        if kind == "open":
            return item.ref  # already posted: never twice
        if kind == "update":
            await client.chat_update(channel=channel, ts=ts, **body)
        else:
            await client.chat_postMessage(channel=channel, thread_ts=ts, **body)
        return item.ref

    async def _via_webhook(self, body: Mapping[str, Any]) -> str | None:
        if self._webhook is None:
            raise DeliveryError(
                "slack: neither a bot token and channel nor a webhook_url is set", permanent=True
            )
        response = await self._webhook.send(text=body.get("text"), blocks=body.get("blocks"))
        if response.status_code != 200:
            raise http_failure(self.name, response.status_code, response.body, dict(response.headers or {}))
        return None


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
