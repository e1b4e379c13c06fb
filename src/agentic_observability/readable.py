"""Numbers and times as a person reads them at 3 a.m.: "51.6 ms → 1.15 s", "09:42:57 UTC, 14 s before
the alert". Pure; every layer may use it. Only human text goes through here: the report's structured
fields keep raw numbers and ISO times.

A signal's unit is its configured ``unit``, else guessed from its metric names' suffixes (the
Prometheus naming conventions: base units, ``_total`` for counters). Units are words: ``seconds``,
``bytes``, ``ratio`` (shown as a percentage), ``percent``, ``per_second``, ``bytes_per_second``,
``celsius``; any other word is printed after the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# -- units of a query ---------------------------------------------------------------------------------

# Prometheus base units a metric name may end in (prometheus.io/docs/practices/naming/#base-units).
_BASE_UNITS = ("seconds", "bytes", "ratio", "percent", "celsius", "volts", "amperes", "joules", "watts")
_FORMATTED = (*_BASE_UNITS, "per_second", "bytes_per_second")
_ALIASES = {"s": "seconds", "b": "bytes", "%": "percent", "/s": "per_second", "°c": "celsius"}
_PER_SECOND = ("rate", "irate")
# Keywords that are not metric names; a grouping keyword is followed by a list of label names.
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
_AGGREGATORS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk"}
    | {"topk", "quantile", "limitk", "limit_ratio"}
)
# Strings, label matchers and ranges carry no metric names: each is one token, skipped whole.
_TOKEN = re.compile(
    r"""(?P<skip>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`"""
    r"""|\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^}"'])*\}|\[[^\]]*\])"""
    r"|(?P<name>[A-Za-z_:][\w:]*)|(?P<number>\d[\w.]*|\.\d\w*)|(?P<other>\S)"
)


# Functions and aggregations whose values are counts, flags or clock readings, whatever the metric's
# unit: ``count(x_bytes > 1e9)`` is a number of series, ``timestamp(x_seconds)`` a time.
_UNITLESS = frozenset(
    {"count", "count_values", "count_over_time", "absent", "absent_over_time", "present_over_time"}
    | {"changes", "resets", "timestamp", "group", "sgn", "histogram_count", "histogram_fraction"}
    | {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"}
)
_DERIVATIVES = ("deriv",)  # of a gauge: its unit per second
# Longer text is not a signal anyone wrote by hand; the scan (a regex per token) stays linear only
# when braces balance, so unbalanced text is not scanned at all.
MAX_UNIT_QUERY = 8192


def unit_for(query: str, explicit: str | None) -> str | None:
    """The unit of a signal's values: ``explicit`` (its configured ``unit``) when set, else what its
    metric names say. Names that disagree, or arithmetic with a constant (``x_bytes / 1024``), give
    no unit: a wrong unit misleads more than none."""
    if explicit and explicit.strip():
        word = explicit.strip()
        known = _ALIASES.get(word.lower(), word.lower())
        return known if known in _FORMATTED else word  # any other word is shown as written ("RPM")
    if len(query) > MAX_UNIT_QUERY or query.count("{") != query.count("}"):
        return None
    if re.search(r"\bbool\b", query):  # ``x > bool 1``: 0 or 1
        return None
    uses, arithmetic = _metric_uses(query)
    if not uses:
        return None
    names = {name for name, _ in uses}
    mean = _mean_of_histogram(names)
    if mean is not None:
        return _base_unit(mean)
    units = {_use_unit(name, functions) for name, functions in uses}
    if len(units) != 1:
        return None
    (unit,) = units
    if arithmetic:  # a / b of the same unit is a ratio; scaled by a constant it is anyone's guess
        return "ratio" if unit is not None and len(uses) > 1 and arithmetic == {"/"} else None
    return unit


def _metric_uses(query: str) -> tuple[list[tuple[str, tuple[str, ...]]], set[str]]:
    """Each metric name in ``query`` with the functions it sits inside (outermost first), and the
    arithmetic operators (``* / %``) the query uses. A scan, not a parser: good enough for units."""
    uses: list[tuple[str, tuple[str, ...]]] = []
    arithmetic: set[str] = set()
    stack: list[str] = []
    pending = ""  # the function (or aggregation) whose "(" comes next
    label_list = False  # the next "(...)" lists label names (``by (service)``)
    tokens = list(_TOKEN.finditer(query))
    for n, token in enumerate(tokens):
        name, other = token["name"], token["other"]
        following = tokens[n + 1]["other"] if n + 1 < len(tokens) else None
        if name:
            lowered = name.lower()
            if label_list:
                continue
            if lowered in _GROUPING:
                label_list = following == "("
            elif following == "(" or lowered in _AGGREGATORS:
                pending = lowered
            elif lowered not in _KEYWORDS:
                uses.append((name, tuple(stack)))
        elif other == "(" and not label_list:  # ``sum by (x) (...)``: sum's "(" is the second one
            stack.append(pending)
            pending = ""
        elif other == ")":
            stack = stack if label_list else stack[:-1]
            label_list = False
        elif other in ("*", "/", "%", "^"):
            arithmetic.add(other)
    return uses, arithmetic


def _mean_of_histogram(names: set[str]) -> str | None:
    """``x_sum / x_count`` (a mean, in x's unit): the base name x, else None."""
    base = min(names).removesuffix("_count")  # "x_count" sorts before "x_sum"
    return base if names == {f"{base}_count", f"{base}_sum"} else None


def _use_unit(name: str, functions: Sequence[str]) -> str | None:
    """The unit of one metric where it is used: a counter under ``rate`` is per second, its
    ``increase`` is an amount in the window, a histogram bucket under ``histogram_quantile`` is in
    its base unit."""
    if any(f in _UNITLESS for f in functions):
        return None
    if "histogram_quantile" in functions:  # classic (``x_seconds_bucket``) or native (``x_seconds``)
        return _base_unit(name.removesuffix("_bucket"))
    if any(f in _DERIVATIVES for f in functions):
        return _per_second(_base_unit(name))
    per_second = any(f in _PER_SECOND for f in functions)
    if name.endswith("_bucket"):
        return None
    if name.endswith("_count"):
        return "per_second" if per_second else None
    for suffix in ("_total", "_sum"):
        if name.endswith(suffix):
            counted = _base_unit(name.removesuffix(suffix))
            return _per_second(counted) if per_second else counted
    return None if per_second else _base_unit(name)


def _per_second(unit: str | None) -> str | None:
    """What ``rate()`` of a counter of ``unit`` is. Seconds per second (``rate(cpu_seconds_total)``:
    CPU time spent each second, i.e. cores busy) is a ratio, shown as a percentage the way ``top``
    shows CPU (320% = 3.2 cores); bytes per second is a throughput; a bare count, events a second."""
    return {None: "per_second", "seconds": "ratio", "bytes": "bytes_per_second"}.get(unit)


def _base_unit(name: str) -> str | None:
    word = name.rsplit("_", 1)[-1].lower()
    return word if word in _BASE_UNITS else None


# -- values -------------------------------------------------------------------------------------------

_SECONDS = (
    (1e-9, " ns"),
    (1e-6, " µs"),
    (1e-3, " ms"),
    (1.0, " s"),
    (60.0, " min"),
    (3600.0, " h"),
    (86400.0, " d"),
)
_BYTES = ((1.0, " B"), (1024.0, " KiB"), (1024.0**2, " MiB"), (1024.0**3, " GiB"), (1024.0**4, " TiB"))
_COUNT = ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"))
_SCALES = {
    "seconds": (_SECONDS, ""),
    "bytes": (_BYTES, ""),
    "bytes_per_second": (_BYTES, "/s"),
    "per_second": (_COUNT, "/s"),
}
_SUFFIXES = {"percent": "%", "celsius": " °C"}


def format_value(value: float, unit: str | None) -> str:
    """``value`` to 3 significant digits in the human scale of ``unit``: "51.6 ms", "1.5 GiB",
    "12.5%" (a ratio), "1.2k/s", "3.2 volts"; plain "1.23k" without a unit; "n/a" for NaN."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "ratio":
        value, unit = value * 100, "percent"
    if unit in _SCALES:
        scales, per = _SCALES[unit]
        return _scaled(value, scales) + per
    if unit in _SUFFIXES:
        return _number(value) + _SUFFIXES[unit]
    plain = _scaled(value, _COUNT)
    return f"{plain} {unit}" if unit else plain


def _scaled(value: float, scales: Sequence[tuple[float, str]]) -> str:
    """In the largest scale the value (rounded first, so 999.96 ms is "1 s") reaches; the smallest
    for anything below it, and the unit itself for 0 ("0 s", not "0 ns")."""
    size = abs(_round3(value))
    factor, symbol = scales[0] if size else next(s for s in scales if s[0] == 1.0)
    for candidate, name in scales:
        if size >= candidate:
            factor, symbol = candidate, name
    return _number(value / factor) + symbol


def _round3(value: float) -> float:
    return float(f"{value:.3g}")


def _number(value: float) -> str:
    """3 significant digits, never in exponent form above 1 (a value past the largest scale, say
    12,300 h, is grouped instead)."""
    rounded = _round3(value)
    if rounded == 0:
        return "0"  # never "-0"
    if abs(rounded) >= 1e12:  # past any scale by a trillion: digits nobody reads
        return f"{rounded:.3g}"
    if abs(rounded) >= 1000:
        return f"{rounded:,.0f}"
    return f"{rounded:.3g}".replace("e-0", "e-")


def format_change(before: float, after: float, unit: str | None) -> str:
    """A signal's usual value and its value in the incident: "51.6 ms → 1.15 s"."""
    return f"{format_value(before, unit)} → {format_value(after, unit)}"


# -- times --------------------------------------------------------------------------------------------

_DURATION_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def format_time(ts: float, with_date: bool = False) -> str:
    """The clock time, "09:42:57 UTC", or ``with_date`` "2026-11-30 09:42:57 UTC" (another day's)."""
    moment = _utc(ts)
    if moment is None:
        return "an unknown time"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S UTC")


def format_date(ts: float) -> str:
    moment = _utc(ts)
    return moment.strftime("%Y-%m-%d") if moment else "an unknown date"


def format_duration(seconds: float) -> str:
    """Whole seconds in the two largest units people would say: "14 s", "2 min 5 s", "1 h 3 min",
    "2 d 4 h" (the rest is noise at that scale)."""
    if not math.isfinite(seconds):
        return "an unknown time"
    left = int(abs(seconds) + 0.5)
    parts: list[str] = []
    for size, name in _DURATION_UNITS:
        count, left = divmod(left, size)
        if count or parts:
            parts.append(f"{count} {name}")
    shown = [p for p in parts[:2] if not p.startswith("0 ")] or ["0 s"]
    return ("-" if seconds <= -0.5 else "") + " ".join(shown)


def relative_to_alert(ts: float, alert_ts: float) -> str:
    """Where ``ts`` falls against the alert: "14 s before the alert", "2 min 5 s after the alert", or
    "at the alert" within half a second."""
    delta = ts - alert_ts
    if not math.isfinite(delta):
        return "at an unknown time relative to the alert"
    if abs(delta) < 0.5:
        return "at the alert"
    return f"{format_duration(abs(delta))} {'before' if delta < 0 else 'after'} the alert"


def format_onset(ts: float, alert_ts: float | None) -> str:
    """When a change began, placed against the alert: "09:42:57 UTC, 14 s before the alert"."""
    if alert_ts is None:
        return format_time(ts)
    return f"{format_time(ts)}, {relative_to_alert(ts, alert_ts)}"


def unix_time(value: object) -> float | None:
    """Unix seconds from a number or an ISO 8601 string (how reports store times); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def format_stored_time(value: object, with_date: bool = True) -> str:
    """A time as a report stores it (ISO 8601, or unix seconds) as people read it; a value that is
    neither is shown as it is (better a raw time than none)."""
    ts = unix_time(value)
    if ts is None:
        return str(value) if value else "an unknown " + ("date" if with_date else "time")
    return format_time(ts, with_date)


def _utc(ts: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):  # NaN, ±Inf, or past year 9999
        return None


# -- a report's pieces --------------------------------------------------------------------------------
# The report and every sink describe the top hypothesis the same way. Its dicts come from
# pipeline/investigate.py; one stored before units were recorded has no ``unit`` (its PromQL says)
# and no ``onset_unix`` (its ISO ``onset`` does).


def describe_change(evidence: Mapping[str, Any]) -> str:
    """One piece of evidence: "latency_p90 51.6 ms → 1.15 s (435× its usual spread)"."""
    unit = evidence.get("unit") or unit_for(str(evidence.get("promql") or ""), None)
    change = format_change(float(evidence["baseline"]), float(evidence["incident"]), unit)
    spread = format_value(float(evidence["deviation"]), None)
    return f"{evidence['signal']} {change} ({spread}× its usual spread)"


def hypothesis_onset(hypothesis: Mapping[str, Any]) -> float | None:
    """When the hypothesis' change began, in unix seconds; None when the ranking could not tell."""
    return unix_time(hypothesis.get("onset_unix")) or unix_time(hypothesis.get("onset"))
