"""Async client for the Prometheus HTTP API (also Thanos, Mimir, VictoriaMetrics).

The PyPI clients are synchronous, so this is a small module over aiohttp. Every call has a timeout,
retries transient failures with backoff and sits behind a circuit breaker (``Guard``). Prometheus
error bodies (``{"status": "error", "errorType": ..., "error": ...}``) become exceptions that carry
Prometheus's own message; an invalid query is never retried.

Credentials go in an ``Authorization`` header on every request (``ping`` included): a bearer token or
basic auth from the environment, or the ``user:password@`` of the configured URL, which is moved into
the header so that ``base_url`` (used in every link and message) never carries it. Answers are read up
to ``max_response_bytes``; large ones are parsed in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import aiohttp

from agentic_observability.config import Config, Secrets, redact_url
from agentic_observability.errors import PrometheusError, PrometheusQueryError, UpstreamUnavailableError
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import Sample, Series

Params = Mapping[str, str] | Sequence[tuple[str, str]]

# Prometheus refuses range queries with more than 11,000 points per series.
MAX_POINTS = 11_000
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1_048_576
# Parsing a few hundred KiB of JSON takes milliseconds; above this it moves off the event loop.
OFF_LOOP_PARSE_BYTES = 256 * 1024


def authorization(secrets: Secrets) -> str | None:
    """The Authorization header value the environment asks for (config validation allows one kind)."""
    if secrets.prometheus_bearer_token is not None:
        return f"Bearer {secrets.prometheus_bearer_token.get_secret_value()}"
    if secrets.prometheus_username is not None and secrets.prometheus_password is not None:
        login = secrets.prometheus_username.get_secret_value()
        return basic_authorization(login, secrets.prometheus_password.get_secret_value())
    return None


def basic_authorization(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


def _userinfo_authorization(url: str) -> str | None:
    """Basic auth from ``http://user:password@host`` (percent-decoded), or None without userinfo."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return basic_authorization(unquote(parts.username), unquote(parts.password or ""))


class PrometheusClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout: float = 10.0,
        guard: Guard | None = None,
        *,
        authorization: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = redact_url(base_url).rstrip("/")  # shown in links and errors: no userinfo
        self._session = session
        self._timeout = timeout
        self.guard = guard or Guard("prometheus", excluded=(PrometheusQueryError,))
        header = authorization or _userinfo_authorization(base_url)
        self._headers = {"Authorization": header} if header else {}
        self._max_bytes = max_response_bytes

    @classmethod
    def from_config(
        cls,
        config: Config,
        session: aiohttp.ClientSession,
        name: str = "prometheus",
        retries: int | None = None,
    ) -> PrometheusClient:
        """The client every caller builds (service, replay): URL, timeout, credentials, size cap and
        a breaker of its own named ``name``."""
        settings = config.file.prometheus
        guard = Guard(
            name,
            retries=settings.retries if retries is None else retries,
            fail_max=config.tunables.circuit_breaker_threshold,
            reset_after=config.tunables.circuit_breaker_reset,
            excluded=(PrometheusQueryError,),
        )
        return cls(
            settings.url,
            session,
            settings.timeout,
            guard,
            authorization=authorization(config.secrets),
            max_response_bytes=settings.max_response_bytes,
        )

    async def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr, **({"time": _fmt(at)} if at is not None else {})}
        data = await self._call("/api/v1/query", params)
        return _parse_instant(data)

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        if end < start:
            raise PrometheusQueryError(f"range query end ({end}) is before start ({start})")
        step = max(step, (end - start) / MAX_POINTS, 0.001)
        params = {"query": expr, "start": _fmt(start), "end": _fmt(end), "step": _fmt(step)}
        data = await self._call("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"range query returned {data.get('resultType')!r}, expected a matrix")
        return [_series(item) for item in data.get("result", [])]

    async def ping(self) -> None:
        """One quick readiness probe, outside the retry/breaker path so health checks stay cheap."""
        await self._request("/api/v1/query", {"query": "1"}, min(self._timeout, 3.0))

    def explore_url(self, expr: str, start: float, end: float) -> str:
        """A link that opens the query in Prometheus's own graph UI over the window."""
        range_s = max(int(end - start), 60)
        query = urlencode(
            {"g0.expr": expr, "g0.tab": "0", "g0.range_input": f"{range_s}s", "g0.end_input": _iso(end)}
        )
        return f"{self.base_url}/graph?{query}"

    async def _call(self, path: str, params: Params, method: str = "POST") -> Any:
        return await self.guard.call(lambda: self._request(path, params, self._timeout, method))

    async def _request(self, path: str, params: Params, seconds: float, method: str = "POST") -> Any:
        """POST (form-encoded) where the API allows it, so long PromQL never hits URL length limits."""
        url = self.base_url + path
        timeout = aiohttp.ClientTimeout(total=seconds)
        request = (
            self._session.post(url, data=params, headers=self._headers, timeout=timeout)
            if method == "POST"
            else self._session.get(url, params=params, headers=self._headers, timeout=timeout)
        )
        try:
            async with request as response:
                body = await read_capped(response, self._max_bytes, self._too_large)
                return _decode(url, response.status, body, await parse_json(body))
        except TimeoutError as exc:
            raise UpstreamUnavailableError(
                f"Prometheus at {self.base_url} timed out after {seconds:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(f"Prometheus at {self.base_url} unreachable: {exc}") from exc

    def _too_large(self) -> PrometheusQueryError:
        # A query error, not an outage: the same query would fail the same way, so it is neither
        # retried nor counted against the breaker.
        return PrometheusQueryError(
            f"Prometheus's answer is larger than prometheus.max_response_bytes ({self._max_bytes} bytes); "
            "narrow the query (fewer series, a shorter range or a coarser step)"
        )


async def read_capped(
    response: aiohttp.ClientResponse, max_bytes: int, too_large: Callable[[], Exception]
) -> bytes:
    """The body, refused (``too_large()`` raised) past ``max_bytes``: by its declared length before
    reading, else while reading (chunked or compressed answers only reveal their size as they arrive).
    Shared with the Loki adapter."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise too_large()
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise too_large()
    return bytes(body)


async def parse_json(body: bytes) -> Any:
    """The JSON of a body (None when it is not JSON), parsed off the event loop when it is large."""
    if len(body) > OFF_LOOP_PARSE_BYTES:
        return await asyncio.to_thread(_loads, body)
    return _loads(body)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _decode(url: str, status: int, body: bytes, payload: Any) -> Any:
    if not isinstance(payload, dict):
        snippet = body[:200].decode("utf-8", "replace")
        message = f"{url} answered HTTP {status} with a non-JSON body: {snippet!r}"
        if status >= 500:
            raise UpstreamUnavailableError(message)
        raise PrometheusError(message)
    if payload.get("status") == "success":
        return payload.get("data")
    message = f"{payload.get('errorType', 'error')}: {payload.get('error', 'unknown error')}"
    if status in (400, 422):
        raise PrometheusQueryError(f"Prometheus rejected the query: {message}")
    if status >= 500 or status == 429:
        raise UpstreamUnavailableError(f"Prometheus unavailable (HTTP {status}): {message}")
    raise PrometheusError(f"Prometheus error (HTTP {status}): {message}")


def _value(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.nan


def _series(item: Mapping[str, Any]) -> Series:
    values = item.get("values", [])
    return Series(
        labels=dict(item.get("metric", {})),
        timestamps=tuple(float(t) for t, _ in values),
        values=tuple(_value(v) for _, v in values),
    )


def _parse_instant(data: Mapping[str, Any]) -> list[Sample]:
    kind = data.get("resultType")
    result = data.get("result", [])
    if kind == "vector":
        return [
            Sample(dict(i.get("metric", {})), float(i["value"][0]), _value(i["value"][1])) for i in result
        ]
    if kind == "scalar":
        return [Sample({}, float(result[0]), _value(result[1]))]
    raise PrometheusError(f"instant query returned {kind!r}; expected a vector or scalar")


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
