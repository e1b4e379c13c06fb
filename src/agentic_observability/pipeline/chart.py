"""Chart data for an incident, gathered at analysis time and kept in the report (``Report.chart``), so
its picture (``outbox/chart.py``) can be drawn any time later without asking Prometheus again.

What is charted: the alert's own value expression with its threshold, and the top signal of each of
the two best hypotheses (their evidence's PromQL, already restricted to the entity), over the
investigation window (``baseline`` before the incident start, ``after`` it). A chart is bounded in
size (points per series, series in all: the report is stored, listed and sent around) and in time
(one short deadline for all its queries: a chart is never worth holding the report up). Whatever
could not be read is left out and named in ``missing``; with nothing at all there is no chart.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from agentic_observability.config import InvestigationConfig
from agentic_observability.errors import UpstreamError
from agentic_observability.models import Evidence, Incident, Series
from agentic_observability.pipeline.ports import MetricsSource
from agentic_observability.pipeline.promql import incident_expressions, split_threshold
from agentic_observability.readable import unit_for

log = logging.getLogger(__name__)

MAX_POINTS = 240  # per series: enough for a 1000 px wide picture
MAX_SERIES = 6  # in all; panels are the alert and the top two hypotheses, so at most 2 each
SERIES_PER_PANEL = 2
HYPOTHESES = 2
GATHER_SECONDS = 5.0  # all chart queries together; what has not answered by then is left out
TITLE_CHARS = 100


@dataclass(frozen=True)
class _Panel:
    """One query to chart and how to pick its series: the ones that fired (``prefer``) first."""

    role: str  # "alert" | "hypothesis"
    title: str
    query: str
    prefer: tuple[Mapping[str, str], ...]
    details: dict[str, Any] = field(default_factory=dict)  # shown with each of its series


async def chart_data(
    incident: Incident,
    evidence: Sequence[Evidence],
    hypotheses: Sequence[Mapping[str, Any]],
    source: MetricsSource,
    settings: InvestigationConfig,
    now: float,
) -> dict[str, Any] | None:
    """The series to draw for ``incident`` (JSON-ready), or None when there is nothing to show."""
    start = incident.started_at - settings.baseline
    end = min(incident.started_at + settings.after, now)
    panels = [*_alert_panels(incident, evidence), *_hypothesis_panels(hypotheses)]
    if not panels or end <= start:
        return None
    step = max((end - start) / MAX_POINTS, 1.0)
    answers, missing = await _query_all(source, panels, start, end, step)
    series = _chosen_series(panels, answers, settings.entity_label)
    if not series:
        return None
    threshold = next((s["threshold"] for s in series if s.get("threshold")), None)
    return {
        "title": incident.title,
        "entity_label": settings.entity_label,
        "start": start,
        "end": end,
        "step": step,
        "alert_at": incident.started_at,
        "onset": _onset(hypotheses),
        "threshold": threshold,
        "series": series,
        "missing": missing,
    }


def _alert_panels(incident: Incident, evidence: Sequence[Evidence]) -> list[_Panel]:
    """The first alert expression whose value side had data (the evidence already asked): one is
    what an SRE compares with its threshold; more would crowd out the hypotheses."""
    empty = {e.query for e in evidence if e.error or not e.series}
    fired = tuple(a.labels for a in incident.alerts)
    for expr in incident_expressions(incident):
        parts = split_threshold(expr)
        query = parts[0] if parts else expr
        if query in empty:
            continue
        threshold = {"operator": parts[1], "value": parts[2]} if parts else None
        name = incident.labels.get("alertname") or (incident.alerts[0].name if incident.alerts else "alert")
        title = _short(f"Alert {name}: {query}")
        details = {"threshold": threshold, "unit": unit_for(query, None)}
        return [_Panel("alert", title, query, fired, details)]
    return []


def _hypothesis_panels(hypotheses: Sequence[Mapping[str, Any]]) -> list[_Panel]:
    panels = []
    for hypothesis in hypotheses[:HYPOTHESES]:
        strongest = (hypothesis.get("evidence") or [None])[0]
        if not strongest:
            continue
        entity, signal = hypothesis["entity"], strongest["signal"]
        unit = strongest.get("unit") or unit_for(strongest["promql"], None)
        details = {"rank": hypothesis["rank"], "entity": entity, "signal": signal, "unit": unit}
        title = _short(f"#{hypothesis['rank']} {entity}: {signal}")
        panels.append(_Panel("hypothesis", title, strongest["promql"], (strongest["labels"],), details))
    return panels


async def _query_all(
    source: MetricsSource, panels: list[_Panel], start: float, end: float, step: float
) -> tuple[list[list[Series]], list[str]]:
    """Every panel's query at once, under one deadline; what failed or was late is named instead."""
    tasks = [asyncio.create_task(source.query_range(p.query, start, end, step)) for p in panels]
    try:
        _, late = await asyncio.wait(tasks, timeout=GATHER_SECONDS)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for the finished ones; the late ones are not worth waiting for
        await asyncio.gather(*tasks, return_exceptions=True)
    answers: list[list[Series]] = []
    missing: list[str] = []
    for panel, task in zip(panels, tasks, strict=True):
        problem = _problem(task, task in late)
        if problem:
            missing.append(f"{panel.title}: {problem}")
        answers.append([] if problem else task.result())
    return answers, missing


def _problem(task: asyncio.Task[list[Series]], late: bool) -> str | None:
    """Why a query has no answer; an unexpected exception (a bug) is raised for the caller to name."""
    if late:
        return f"no answer within {GATHER_SECONDS:g}s"
    error = task.exception()
    if error is None:
        return None
    if isinstance(error, UpstreamError):
        return str(error)[:200]
    raise error


def _chosen_series(
    panels: list[_Panel], answers: list[list[Series]], entity_label: str
) -> list[dict[str, Any]]:
    chosen: list[dict[str, Any]] = []
    for number, (panel, found) in enumerate(zip(panels, answers, strict=True)):
        ranked = sorted(found, key=lambda s: (not _fired(s, panel.prefer), -_spread(s)))[:SERIES_PER_PANEL]
        shown = _telling_labels(ranked, entity_label)
        for item in ranked:
            points = downsample(item.timestamps, item.values, MAX_POINTS)
            if points[0]:
                chosen.append(_series_entry(number, panel, _label_text(item.labels, shown), points))
    return chosen[:MAX_SERIES]


def _telling_labels(series: Sequence[Series], entity_label: str) -> set[str] | None:
    """The labels that tell a panel's series apart, and the entity's: a legend of
    ``service="carts"`` rather than ``instance="10.0.3.7:9100", job="node", service="carts"``.
    None (all of them) when that would leave a series nameless."""
    keys = {k for s in series for k in s.labels if k != "__name__"}
    telling = {k for k in keys if len({s.labels.get(k) for s in series}) > 1} | ({entity_label} & keys)
    return telling or None


def _series_entry(
    panel_number: int,
    panel: _Panel,
    label: str,
    points: tuple[list[float], list[float]],
) -> dict[str, Any]:
    timestamps, values = points
    return {
        "panel": panel_number,
        "role": panel.role,
        "title": panel.title,
        "label": label,
        "query": panel.query,
        **panel.details,
        "timestamps": timestamps,
        "values": values,
    }


def _fired(series: Series, prefer: tuple[Mapping[str, str], ...]) -> bool:
    """The series is one that fired: every label it has (but its name) is the alert's, or the
    hypothesis evidence's, own."""
    own = {k: v for k, v in series.labels.items() if k != "__name__"}
    return any(all(wanted.get(k) == v for k, v in own.items()) for wanted in prefer)


def _spread(series: Series) -> float:
    finite = [v for v in series.values if math.isfinite(v)]
    return max(finite) - min(finite) if finite else -1.0


def downsample(
    timestamps: Sequence[float], values: Sequence[float], limit: int
) -> tuple[list[float], list[float]]:
    """At most ``limit`` finite points, rounded for a compact report. Past the limit, each of
    ``limit / 2`` buckets keeps its lowest and its highest point: a spike or a dip stays visible,
    where averaging or striding would smooth it away."""
    ts = np.asarray(timestamps, dtype=float)
    vs = np.asarray(values, dtype=float)
    keep = np.isfinite(vs) & np.isfinite(ts)
    ts, vs = ts[keep], vs[keep]
    if len(vs) > limit:
        picked: list[int] = []
        for bucket in np.array_split(np.arange(len(vs)), limit // 2):
            low, high = bucket[np.argmin(vs[bucket])], bucket[np.argmax(vs[bucket])]
            picked.extend(sorted({int(low), int(high)}))
        ts, vs = ts[picked], vs[picked]
    return [round(float(t), 3) for t in ts], [float(f"{v:.6g}") for v in vs]


def _label_text(labels: Mapping[str, str], keys: set[str] | None) -> str:
    shown = (
        f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__" and (keys is None or k in keys)
    )
    return _short(", ".join(shown))


def _onset(hypotheses: Sequence[Mapping[str, Any]]) -> float | None:
    """The top hypothesis's onset (an RFC 3339 string in the report) as unix seconds."""
    onset = hypotheses[0].get("onset") if hypotheses else None
    if not onset:
        return None
    try:
        return datetime.fromisoformat(str(onset).replace("Z", "+00:00")).timestamp()
    except ValueError:
        log.warning("unreadable onset %r: the chart goes without it", onset)
        return None


def _short(text: str) -> str:
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"
