"""PromQL expressions as the pipeline handles them: an alert's own expression recovered from its
``generatorURL``, a threshold rule split into its value side and threshold, a signal restricted to
one entity, a string quoted as a PromQL literal. Pure string work, no I/O."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from agentic_observability.models import Incident

MAX_QUERIES = 5  # alert expressions recovered per incident
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


def incident_expressions(incident: Incident) -> list[str]:
    seen: dict[str, None] = {}
    for alert in incident.alerts:
        expr = expression_from_generator_url(alert.generator_url)
        if expr:
            seen.setdefault(expr, None)
    return list(seen)[:MAX_QUERIES]


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal; quotes, backslashes and newlines cannot break out."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def promql_for_entity(query: str, label: str, value: str) -> str:
    """Restrict an arbitrary signal query to one entity without parsing it: keep only the series whose
    ``label`` equals ``value``."""
    return f'({query}) and on({label}) label_replace(vector(1), "{label}", {promql_string(value)}, "", "")'
