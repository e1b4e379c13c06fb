"""Investigation stage: gather PromQL evidence for an incident.

Today: recover each alert's own expression from its ``generatorURL`` and query its last hour. When
the rule is a comparison against a constant (``x > 0.5``), the value side is queried instead, so the
evidence shows the whole curve and the threshold rather than only the moments it was breached.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

from agentic_observability.errors import PrometheusQueryError, UpstreamError
from agentic_observability.models import Evidence, Incident, Series, SeriesSummary
from agentic_observability.pipeline.ports import MetricsSource

log = logging.getLogger(__name__)

MAX_QUERIES = 5
MAX_SERIES = 20
TARGET_POINTS = 240
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def expression_from_generator_url(url: str) -> str | None:
    """The PromQL of ``…/graph?g0.expr=…`` (Prometheus, Thanos, VictoriaMetrics vmalert links)."""
    if not url:
        return None
    query = parse_qs(urlsplit(url).query)
    for key in ("g0.expr", "expr", "query"):
        values = query.get(key)
        if values and values[0].strip():
            return values[0].strip()
    return None


def split_threshold(expr: str) -> tuple[str, str, float] | None:
    """``rate(x[5m]) > 0.5`` -> (``rate(x[5m])``, ``>``, 0.5); None unless the top-level
    operator is a comparison with a numeric literal on its right."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            operator = next((op for op in _COMPARISONS if expr.startswith(op, i)), None)
            if operator is not None:
                return _threshold_parts(expr, i, operator)
        i += 1
    return None


def _threshold_parts(expr: str, index: int, operator: str) -> tuple[str, str, float] | None:
    left = expr[:index].strip()
    right = expr[index + len(operator) :].strip()
    if right.startswith("bool "):
        right = right[5:].strip()
    try:
        value = float(right)
    except ValueError:
        return None
    return (left, operator, value) if left else None


def summarize(series: Series) -> SeriesSummary | None:
    points = [(t, v) for t, v in zip(series.timestamps, series.values, strict=True) if math.isfinite(v)]
    if not points:
        return None
    values = [v for _, v in points]
    peak_at = max(points, key=lambda p: p[1])[0]
    return SeriesSummary(
        labels=dict(series.labels),
        points=len(points),
        first=values[0],
        last=values[-1],
        minimum=min(values),
        maximum=max(values),
        mean=sum(values) / len(values),
        peak_at=peak_at,
    )


def incident_expressions(incident: Incident) -> list[str]:
    seen: dict[str, None] = {}
    for alert in incident.alerts:
        expr = expression_from_generator_url(alert.generator_url)
        if expr:
            seen.setdefault(expr, None)
    return list(seen)[:MAX_QUERIES]


async def alert_evidence(
    incident: Incident, source: MetricsSource, now: float, window: float
) -> tuple[Evidence, ...]:
    """Evidence for each distinct alert expression over ``window`` seconds up to the incident's end."""
    end = min(incident.resolved_at or now, now)
    start = end - window
    return tuple([await query_evidence(source, expr, start, end) for expr in incident_expressions(incident)])


async def query_evidence(source: MetricsSource, expr: str, start: float, end: float) -> Evidence:
    """Run one query (its value side, for a threshold rule) and summarise what came back."""
    parts = split_threshold(expr)
    query = parts[0] if parts else expr
    step = max((end - start) / TARGET_POINTS, 1.0)
    link = source.explore_url(query, start, end)
    try:
        series = await source.query_range(query, start, end, step)
    except UpstreamError as exc:
        log.warning("evidence query failed: %s", exc)
        kind = "query" if isinstance(exc, PrometheusQueryError) else "unavailable"
        return Evidence(
            query=query, start=start, end=end, step=step, explore_url=link, error=str(exc), error_kind=kind
        )
    return Evidence(
        query=query,
        start=start,
        end=end,
        step=step,
        explore_url=link,
        series=_top_series(s for s in map(summarize, series) if s is not None),
    )


def _top_series(summaries: Iterable[SeriesSummary]) -> tuple[SeriesSummary, ...]:
    """Keep the series with the largest range (the ones that moved), bounded so reports stay small."""
    ranked: Sequence[SeriesSummary] = sorted(summaries, key=lambda s: s.maximum - s.minimum, reverse=True)
    return tuple(ranked[:MAX_SERIES])
