"""Async client for the Grafana Loki query API (``/loki/api/v1/query_range`` and ``/loki/api/v1/query``).

Like the Prometheus client it is a small module over the shared aiohttp session: every call has a
timeout, retries transient failures (429, 5xx, timeouts, refused connections) with backoff and sits
behind a circuit breaker (``Guard``). A 400 is bad LogQL: Loki's own message (a plain-text body such as
``parse error at line 1, col 13: syntax error: unexpected IDENTIFIER``) is carried by a
``LokiQueryError``, which is neither retried nor counted against the breaker.

Answers follow Loki's documented shapes, ``{"status": "success", "data": {"resultType": ..., "result":
[...]}}``: ``matrix`` (a metric query over a range: ``[[<unix seconds>, "<value>"], ...]`` per label
set), ``vector`` (a metric query at an instant), ``streams`` (a log query: ``{"stream": {labels},
"values": [["<unix nanoseconds>", "<line>"], ...]}``). They are read up to ``max_response_bytes``.

Credentials (LOKI_BEARER_TOKEN, or LOKI_USERNAME + LOKI_PASSWORD) go in an ``Authorization`` header;
``tenant`` in ``X-Scope-OrgID``. Neither ever appears in a message: errors name ``base_url`` only.
"""

from __future__ import annotations

import base64
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import aiohttp

from agentic_observability.config import Config, Secrets, redact_url
from agentic_observability.errors import UpstreamError, UpstreamUnavailableError
from agentic_observability.integrations.prometheus import basic_authorization, parse_json, read_capped
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import Sample, Series

Direction = Literal["forward", "backward"]
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1_048_576
MAX_POINTS = 11_000  # Loki, like Prometheus, refuses a range query with more points per series
ERROR_SNIPPET = 300  # characters of an error body quoted in a message


class LokiError(UpstreamError):
    """Loki answered with an error."""


class LokiQueryError(LokiError):
    """Loki refused the LogQL (HTTP 400), or its answer was over the size cap: retrying will not help."""


class LogLine(NamedTuple):
    """One log line: its time (unix seconds), its text and the labels of its stream."""

    timestamp: float
    line: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class LogStream:
    labels: Mapping[str, str]
    entries: tuple[tuple[float, str], ...]  # (unix seconds, line), in the order Loki sent them


@dataclass(frozen=True)
class LokiResult:
    """One answer: ``kind`` is Loki's resultType; the matching field holds it."""

    kind: Literal["matrix", "vector", "scalar", "streams"]
    series: tuple[Series, ...] = ()  # matrix
    samples: tuple[Sample, ...] = ()  # vector, scalar
    streams: tuple[LogStream, ...] = ()  # streams


def authorization(secrets: Secrets) -> str | None:
    """The Authorization header value the environment asks for (config validation allows one kind)."""
    if secrets.loki_bearer_token is not None:
        return f"Bearer {secrets.loki_bearer_token.get_secret_value()}"
    if secrets.loki_username is not None and secrets.loki_password is not None:
        login = secrets.loki_username.get_secret_value()
        return basic_authorization(login, secrets.loki_password.get_secret_value())
    return None


class LokiClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout: float = 10.0,
        guard: Guard | None = None,
        *,
        tenant: str | None = None,
        authorization: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = redact_url(base_url).rstrip("/")
        self._session = session
        self._timeout = timeout
        self.guard = guard or Guard("loki", excluded=(LokiQueryError,))
        self._headers = {
            **({"Authorization": authorization} if authorization else {}),
            **({"X-Scope-OrgID": tenant} if tenant else {}),
        }
        self._max_bytes = max_response_bytes
        self._secrets = _secret_parts(authorization)

    @classmethod
    def from_config(
        cls, config: Config, session: aiohttp.ClientSession, name: str = "loki"
    ) -> LokiClient | None:
        """The client the service builds, or None while ``logs.url`` is unset (log evidence is off)."""
        settings = config.file.logs
        if settings.url is None:
            return None
        guard = Guard(
            name,
            retries=settings.retries,
            fail_max=config.tunables.circuit_breaker_threshold,
            reset_after=config.tunables.circuit_breaker_reset,
            excluded=(LokiQueryError,),
        )
        return cls(
            settings.url,
            session,
            settings.timeout,
            guard,
            tenant=settings.tenant,
            authorization=authorization(config.secrets),
            max_response_bytes=settings.max_response_bytes,
        )

    async def query_range(
        self,
        logql: str,
        start: float,
        end: float,
        *,
        step: float | None = None,
        limit: int | None = None,
        direction: Direction = "backward",
    ) -> LokiResult:
        """A range query: ``matrix`` for a metric query (evaluated every ``step`` seconds), ``streams``
        for a log query (at most ``limit`` lines, newest first when ``direction`` is backward)."""
        if end < start:
            raise LokiQueryError(f"range query end ({end}) is before start ({start})")
        params = {"query": logql, "start": _ns(start), "end": _ns(end), "direction": direction}
        if step is not None:
            params["step"] = f"{max(step, (end - start) / MAX_POINTS, 0.001):.3f}"
        if limit is not None:
            params["limit"] = str(limit)
        result = _parse_result(await self._call("/loki/api/v1/query_range", params))
        return _capped(result, limit, direction)

    async def query(
        self,
        logql: str,
        at: float | None = None,
        *,
        limit: int | None = None,
        direction: Direction = "backward",
    ) -> LokiResult:
        """An instant query: ``vector`` for a metric query, ``streams`` for a log query."""
        params = {"query": logql, "direction": direction}
        if at is not None:
            params["time"] = _ns(at)
        if limit is not None:
            params["limit"] = str(limit)
        return _capped(_parse_result(await self._call("/loki/api/v1/query", params)), limit, direction)

    # -- the pipeline's LogSource (pipeline/logs.py) ----------------------------------------------

    async def metric_range(self, logql: str, start: float, end: float, step: float) -> list[Series]:
        result = await self.query_range(logql, start, end, step=step)
        if result.kind != "matrix":
            raise LokiError(f"{logql!r} returned {result.kind!r}, expected a matrix (a metric query)")
        return list(result.series)

    async def log_lines(
        self, logql: str, start: float, end: float, limit: int, direction: Direction = "backward"
    ) -> list[LogLine]:
        """At most ``limit`` lines of a log query, in ``direction`` order across all its streams."""
        result = await self.query_range(logql, start, end, limit=limit, direction=direction)
        if result.kind != "streams":
            raise LokiError(f"{logql!r} returned {result.kind!r}, expected streams (a log query)")
        lines = [LogLine(ts, text, s.labels) for s in result.streams for ts, text in s.entries]
        lines.sort(key=lambda item: item.timestamp, reverse=direction == "backward")
        return lines[:limit]

    async def ping(self) -> None:
        """One quick readiness probe (``/ready``), outside the retry/breaker path."""
        await self._request("/ready", {}, min(self._timeout, 3.0), expect_json=False)

    # -- transport --------------------------------------------------------------------------------

    async def _call(self, path: str, params: Mapping[str, str]) -> Any:
        return await self.guard.call(lambda: self._request(path, params, self._timeout))

    async def _request(
        self, path: str, params: Mapping[str, str], seconds: float, expect_json: bool = True
    ) -> Any:
        url = self.base_url + path
        timeout = aiohttp.ClientTimeout(total=seconds)
        try:
            async with self._session.get(url, params=params, headers=self._headers, timeout=timeout) as reply:
                body = await read_capped(reply, self._max_bytes, self._too_large)
                if not expect_json and reply.status == 200:
                    return None
                return _decode(self.base_url, reply.status, body, await parse_json(body), self._scrub)
        except TimeoutError as exc:
            raise UpstreamUnavailableError(f"Loki at {self.base_url} timed out after {seconds:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(f"Loki at {self.base_url} unreachable: {exc}") from exc

    def _scrub(self, text: str) -> str:
        """An error body quoted in a message never carries the credentials (a proxy may echo them)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _too_large(self) -> LokiQueryError:
        # the same query would fail the same way: neither retried nor counted against the breaker
        return LokiQueryError(
            f"Loki's answer is larger than logs.max_response_bytes ({self._max_bytes} bytes); "
            "narrow the query (a tighter selector, a shorter range or a smaller limit)"
        )


def _secret_parts(header: str | None) -> list[str]:
    """The secret strings of an Authorization header: the token, or the password and the encoding."""
    if not header:
        return []
    scheme, _, value = header.partition(" ")
    parts = [value]
    if scheme == "Basic":
        with contextlib.suppress(ValueError):  # not base64: nothing more to hide
            parts.append(base64.b64decode(value).decode().partition(":")[2])
    return sorted((p for p in parts if p), key=len, reverse=True)


def _ns(seconds: float) -> str:
    """Loki's canonical time parameter: integer unix nanoseconds."""
    return str(round(seconds * 1e9))


def _error_text(body: bytes, payload: Any) -> str:
    """Loki's message: a plain-text body (what its query endpoints send), or the ``error`` of a JSON
    one (what a Prometheus-compatible front, or a newer Loki, may send)."""
    if isinstance(payload, dict) and payload.get("error"):
        return str(payload["error"])[:ERROR_SNIPPET]
    text = body[:ERROR_SNIPPET].decode("utf-8", "replace").strip()
    return text or "(empty body)"


def _decode(base_url: str, status: int, body: bytes, payload: Any, scrub: Callable[[str], str]) -> Any:
    if status == 200 and isinstance(payload, dict) and payload.get("status") == "success":
        return payload.get("data")
    message = scrub(_error_text(body, payload))
    if status == 200:
        raise LokiError(f"Loki at {base_url} answered HTTP 200 without a success body: {message!r}")
    if status == 400:
        raise LokiQueryError(f"Loki rejected the query: {message}")
    if status >= 500 or status in (408, 429):
        raise UpstreamUnavailableError(f"Loki unavailable (HTTP {status}): {message}")
    raise LokiError(f"Loki error (HTTP {status}): {message}")


def _value(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _series(item: Mapping[str, Any]) -> Series:
    values = item.get("values") or []
    return Series(
        labels=dict(item.get("metric") or {}),
        timestamps=tuple(float(t) for t, _ in values),
        values=tuple(_value(v) for _, v in values),
    )


def _stream(item: Mapping[str, Any]) -> LogStream:
    # timestamps are strings of unix nanoseconds: int() keeps their precision, float() would not
    entries = tuple((int(ts) / 1e9, str(line)) for ts, line, *_ in item.get("values") or [])
    return LogStream(labels=dict(item.get("stream") or {}), entries=entries)


def _parse_result(data: Any) -> LokiResult:
    if not isinstance(data, dict):
        raise LokiError("Loki's answer has no data object")
    kind, result = data.get("resultType"), data.get("result") or []
    try:
        if kind == "matrix":
            return LokiResult("matrix", series=tuple(_series(i) for i in result))
        if kind == "vector":
            samples = (
                Sample(dict(i.get("metric") or {}), float(i["value"][0]), _value(i["value"][1]))
                for i in result
            )
            return LokiResult("vector", samples=tuple(samples))
        if kind == "scalar":
            return LokiResult("scalar", samples=(Sample({}, float(result[0]), _value(result[1])),))
        if kind == "streams":
            return LokiResult("streams", streams=tuple(_stream(i) for i in result))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LokiError(f"Loki's {kind} answer is malformed: {exc}") from exc
    raise LokiError(f"Loki answered with resultType {kind!r}")


def _capped(result: LokiResult, limit: int | None, direction: Direction) -> LokiResult:
    """A log answer holds at most ``limit`` lines, the first in ``direction`` across all streams,
    whatever the server sent (a proxy or an older Loki may not apply the limit)."""
    if limit is None or result.kind != "streams":
        return result
    places = [(ts, i, j) for i, s in enumerate(result.streams) for j, (ts, _) in enumerate(s.entries)]
    if len(places) <= limit:
        return result
    places.sort(key=lambda p: p[0], reverse=direction == "backward")
    chosen = {(i, j) for _, i, j in places[:limit]}
    kept = (
        LogStream(s.labels, tuple(e for j, e in enumerate(s.entries) if (i, j) in chosen))
        for i, s in enumerate(result.streams)
    )
    return LokiResult("streams", streams=tuple(k for k in kept if k.entries))


__all__ = [
    "LogLine",
    "LogStream",
    "LokiClient",
    "LokiError",
    "LokiQueryError",
    "LokiResult",
    "authorization",
]
