"""PagerDuty Events API v2: trigger and resolve with one dedup key per incident.

Rate limits, as PagerDuty documents them ("Events API v2 Overview", section Rate Limits, and
"Events API Rate Limits": github.com/PagerDuty/developer-docs, docs/events-API-v2/01-Overview.md and
05-Rate-Limits.md): about 120 events a minute per integration key, and "be sure to retry on a 429
response code, preferably with a backoff of a few minutes". So a 429 is not retried seconds later:
the outbox row is rescheduled 60 s out, doubling with each failed attempt up to 10 minutes (longer
when PagerDuty's own Retry-After asks for it). The limit belongs to the routing key, not to one
incident, so until that time has passed no other event is sent on the key either: each is
rescheduled without a request. A 429 also stays out of the circuit breaker: PagerDuty is up, only
busy, and the breaker's short reset would undo the long wait.
"""

from __future__ import annotations

import json
import logging
import time

import aiohttp

from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.delivery import connection_failure, http_failure
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import OutboxItem

log = logging.getLogger(__name__)

RATE_LIMIT_FIRST_WAIT = 60.0
RATE_LIMIT_MAX_WAIT = 600.0


def rate_limit_wait(attempts: int) -> float:
    """Seconds to wait after a 429 on a row that has failed ``attempts`` times before."""
    return min(RATE_LIMIT_FIRST_WAIT * 2.0 ** min(attempts, 10), RATE_LIMIT_MAX_WAIT)


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
        self._quiet_until = 0.0  # time.monotonic(): after a 429, nothing goes out on the key before

    async def deliver(self, item: OutboxItem) -> str | None:
        held = self._quiet_until - time.monotonic()
        if held > 0:
            raise DeliveryError(
                f"{self.name}: rate limited, holding events for {held:.0f}s", retry_after=held
            )
        body = {**item.payload, "routing_key": self._routing_key}  # the key is never stored
        if item.ref:  # the dedup key PagerDuty knows the incident by (older ones: without install id)
            body["dedup_key"] = item.ref
        outcome = await self.guard.call(lambda: self._post(body))
        if isinstance(outcome, DeliveryError):  # a 429, raised here: outside the breaker
            wait = max(outcome.retry_after or 0.0, rate_limit_wait(item.attempts))
            self._quiet_until = max(self._quiet_until, time.monotonic() + wait)
            raise DeliveryError(str(outcome), retry_after=wait)
        return outcome

    async def _post(self, body: dict[str, object]) -> str | DeliveryError:
        """The dedup key on a 202; a 429 comes back as its error (see ``deliver``); any other
        failure is raised."""
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as response:
                text = await response.text()
                if response.status == 202:
                    return str(body["dedup_key"])
                # a rejection may quote the event back; the routing key is then neither logged nor
                # kept with the outbox row
                detail = _message(text).replace(self._routing_key, "***")
                error = http_failure(self.name, response.status, detail, dict(response.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_failure(self.name, exc) from exc
        if response.status == 429:
            return error
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
