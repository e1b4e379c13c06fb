"""Async client for the Prometheus HTTP API (also Thanos, Mimir, VictoriaMetrics).

The PyPI clients are synchronous, so this is a small module over aiohttp. Every call has a timeout,
retries transient failures with backoff and sits behind a circuit breaker (``Guard``). Prometheus
error bodies (``{"status": "error", "errorType": ..., "error": ...}``) become exceptions that carry
Prometheus's own message; an invalid query is never retried.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

from agentic_observability.errors import PrometheusError, PrometheusQueryError, UpstreamUnavailableError
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import Sample, Series

Params = Mapping[str, str] | Sequence[tuple[str, str]]

# Prometheus refuses range queries with more than 11,000 points per series.
MAX_POINTS = 11_000


class PrometheusClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout: float = 10.0,
        guard: Guard | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self.guard = guard or Guard("prometheus", excluded=(PrometheusQueryError,))

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
        request = (
            self._session.post(url, data=params, timeout=aiohttp.ClientTimeout(total=seconds))
            if method == "POST"
            else self._session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=seconds))
        )
        try:
            async with request as response:
                body = await response.read()
                return _decode(url, response.status, body)
        except TimeoutError as exc:
            raise UpstreamUnavailableError(
                f"Prometheus at {self.base_url} timed out after {seconds:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(f"Prometheus at {self.base_url} unreachable: {exc}") from exc


def _decode(url: str, status: int, body: bytes) -> Any:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
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
