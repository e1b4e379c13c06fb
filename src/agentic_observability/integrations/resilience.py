"""Timeout + retry-with-backoff + circuit breaker, the wrapper every external call goes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from agentic_observability.errors import UpstreamUnavailableError

T = TypeVar("T")


class Guard:
    """Retries transient failures (UpstreamUnavailableError only) and trips a breaker after repeated ones.

    One guarded call that exhausts its retries counts as one breaker failure; while the breaker is
    open calls fail at once instead of piling timeouts onto a struggling dependency.
    """

    def __init__(
        self,
        name: str,
        retries: int = 3,
        fail_max: int = 5,
        reset_after: float = 30.0,
        max_backoff: float = 4.0,
        excluded: tuple[Any, ...] = (),  # exception types, or predicates over the exception
    ) -> None:
        self.name = name
        self.retries = retries
        self.max_backoff = max_backoff
        self.breaker = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_after),
            exclude=list(excluded),
            name=name,
        )

    @property
    def state(self) -> str:
        return str(self.breaker.current_state.name).lower()

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.breaker.call_async(self._with_retries, func)
        except CircuitBreakerError as exc:
            if isinstance(exc.__cause__, Exception):
                raise exc.__cause__ from None  # the call that tripped the breaker reports its own failure
            raise UpstreamUnavailableError(
                f"{self.name}: circuit open after repeated failures; next try in "
                f"{max(exc.time_remaining.total_seconds(), 0):.0f}s"
            ) from exc

    async def _with_retries(self, func: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(UpstreamUnavailableError),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(multiplier=0.2, max=self.max_backoff),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await func()
        raise AssertionError("unreachable: tenacity reraises the last error")
