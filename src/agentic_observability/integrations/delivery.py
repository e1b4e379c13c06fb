"""What every sink adapter shares: classifying an HTTP failure as retryable or permanent, and reading
the receiver's ``Retry-After``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.resilience import Guard


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def http_failure(
    sink: str, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> DeliveryError:
    """429 and 5xx are worth retrying; any other 4xx will fail the same way again."""
    retryable = status == 429 or status >= 500 or status == 0
    message = f"{sink}: HTTP {status}: {detail[:300]}"
    return DeliveryError(message, permanent=not retryable, retry_after=retry_after(headers))


def _is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.permanent


def sink_guard(name: str, fail_max: int, reset_after: float) -> Guard:
    """A breaker without in-call retries: the outbox retries durably. A permanent rejection (a 400)
    says nothing about the receiver's health, so it does not count towards opening the breaker."""
    return Guard(name, retries=0, fail_max=fail_max, reset_after=reset_after, excluded=(_is_permanent,))


def connection_failure(sink: str, exc: Any) -> DeliveryError:
    return DeliveryError(f"{sink}: {type(exc).__name__}: {exc}", permanent=False)


class PriorityRateLimiter:
    """A token bucket (``rate`` per second, bursts of ``burst``) in which urgent callers go first: an
    ordinary caller takes a token only while no urgent one is waiting, and never the last one, which
    stays for the next urgent caller. aiolimiter serves callers in arrival order, so a queue of thread
    replies would hold up the next incident's first message."""

    # No lock or condition: the event loop runs one caller at a time between awaits, so checking and
    # taking a token cannot interleave. (An asyncio.Condition waited with wait_for, cancelled at
    # shutdown, could leave its lock unheld: the release then raised "Lock is not acquired" in every
    # waiting delivery, and the service did not stop.) Waiters sleep until a token is due; an urgent
    # caller arriving meanwhile is served at once.

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._urgent_waiting = 0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self, urgent: bool) -> None:
        self._urgent_waiting += urgent
        try:
            while True:
                self._refill()
                needed = 1.0 if urgent else 2.0  # ordinary callers leave one token in reserve
                if self._tokens >= needed and (urgent or not self._urgent_waiting):
                    self._tokens -= 1
                    return
                # Held back by an urgent caller (who takes the token now): the next one is a refill
                # away. Polling sooner would wake every queued reply many times a second.
                behind = 1.0 / self._rate if self._urgent_waiting and not urgent else 0.0
                await asyncio.sleep(max((needed - self._tokens) / self._rate, behind, 0.01))
        finally:
            self._urgent_waiting -= urgent
