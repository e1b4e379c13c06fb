"""PagerDuty Events API v2: trigger and resolve with one dedup key per incident."""

from __future__ import annotations

import json
import logging

import aiohttp

from agentic_observability.integrations.delivery import connection_failure, http_failure
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import OutboxItem

log = logging.getLogger(__name__)


class PagerDutySink:
    name = "pagerduty"

    def __init__(
        self, session: aiohttp.ClientSession, events_url: str, routing_key: str, timeout: float, guard: Guard
    ) -> None:
        self._session = session
        self._url = events_url
        self._routing_key = routing_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.guard = guard

    async def deliver(self, item: OutboxItem) -> str | None:
        body = {**item.payload, "routing_key": self._routing_key}  # the key is never stored
        return await self.guard.call(lambda: self._post(body))

    async def _post(self, body: dict[str, object]) -> str:
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as response:
                text = await response.text()
                if response.status == 202:
                    return str(body["dedup_key"])
                error = http_failure(self.name, response.status, _message(text), dict(response.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_failure(self.name, exc) from exc
        if error.permanent:
            log.error("PagerDuty rejected the event and it will not be retried: %s", error)
        raise error


def _message(text: str) -> str:
    """PagerDuty explains a rejection in ``message`` and ``errors``."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict):
        return text
    errors = "; ".join(str(e) for e in data.get("errors", []))
    return f"{data.get('message', '')} {errors}".strip() or text
