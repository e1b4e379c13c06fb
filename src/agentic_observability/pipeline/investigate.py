"""Investigation stage: gather PromQL evidence for an incident and rank its likely root causes.

Evidence: each alert's own expression (recovered from its ``generatorURL``, see ``promql.py``) over
its last hour. When the rule is a comparison against a constant (``x > 0.5``), the value side is
queried instead, so the evidence shows the whole curve and the threshold rather than only the moments
it was breached. Root cause: the configured signal templates per entity, ranked by ``investigation/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import numpy as np

from agentic_observability.config import InvestigationConfig, SignalConfig, redact_url
from agentic_observability.errors import PrometheusQueryError, UpstreamError
from agentic_observability.investigation import Candidate, RankConfig, SignalSeries, rank_entities
from agentic_observability.investigation.rank import with_evidence
from agentic_observability.models import Change, Evidence, Incident, Series, SeriesSummary, iso_time
from agentic_observability.pipeline.logs import LogProbe
from agentic_observability.pipeline.ports import ChangeSource, MetricsSource
from agentic_observability.pipeline.promql import incident_expressions, promql_for_entity, split_threshold
from agentic_observability.readable import unit_for

log = logging.getLogger(__name__)

MAX_SERIES = 20
TARGET_POINTS = 240
SIGNAL_POINTS = 720  # points per signal over baseline + after: enough to place an onset within a few steps
MAX_HYPOTHESES = 5


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


# -- root-cause investigation ------------------------------------------------------------------------


async def gather_signals(
    source: MetricsSource, settings: InvestigationConfig, start: float, end: float
) -> tuple[list[SignalSeries], list[str]]:
    """Query every configured signal over the window; returns the series and what could not be read."""
    step = max((end - start) / SIGNAL_POINTS, 1.0)
    series: list[SignalSeries] = []
    problems: list[str] = []
    for signal in settings.signals:
        try:
            found = await source.query_range(signal.query, start, end, step)
        except UpstreamError as exc:
            problems.append(f"{signal.name}: {exc}")
            continue
        for item in found:
            entity = item.labels.get(settings.entity_label)
            if entity is not None and item.timestamps:
                series.append(
                    SignalSeries(
                        entity,
                        signal.name,
                        dict(item.labels),
                        np.asarray(item.timestamps),
                        np.asarray(item.values, dtype=float),
                    )
                )
    return series, problems


async def root_cause_hypotheses(
    incident: Incident,
    source: MetricsSource,
    settings: InvestigationConfig,
    now: float,
    changes: ChangeSource | None = None,
    logs: LogProbe | None = None,
) -> tuple[tuple[dict[str, Any], ...], list[str]]:
    """Rank entities around the incident's start; each hypothesis carries its checkable evidence. With
    ``changes``, a recent change on a strong suspect weighs in and is listed in its hypothesis; with
    ``logs``, so does a sustained rise in its error lines that began with its metrics
    (``with_evidence``). When either cannot be read, the ranking stands on the rest."""
    if not settings.signals:
        return (), []
    start = incident.started_at - settings.baseline
    end = min(incident.started_at + settings.after, now)
    series, problems = await gather_signals(source, settings, start, end)
    rank_config = RankConfig(calls=tuple((e.caller, e.callee) for e in settings.calls))
    # thousands of series take a second or two of numpy: keep the event loop (and the webhook) free
    ranking = await asyncio.to_thread(rank_entities, series, incident.started_at, rank_config)
    supported: Counter[str] = Counter()  # kinds of evidence beside the metrics, per entity
    if logs is not None and ranking:  # the logs of the metrics' top entities: evidence beside theirs
        await logs([c.entity for c in ranking], ranking[0].onset)  # around the top suspect's change
        supported.update(logs.risen(ranking))
    by_entity: dict[str, list[Change]] = {}
    if changes is not None and ranking:
        try:
            found = await nearby_changes(incident, ranking, settings, changes)
        except Exception as exc:  # the store is down: the report's change stage says so
            log.warning("change events could not be read for the ranking: %s", exc)
            found = []
        by_entity = changes_by_entity(found, ranking, incident.started_at, settings.change_window)
        supported.update(by_entity.keys())
    ranking = with_evidence(ranking, supported)
    signals = {s.name: s for s in settings.signals}
    hypotheses = tuple(
        _hypothesis(position, candidate, settings.entity_label, signals, source, start, end, logs)
        | _with_change_list(by_entity.get(candidate.entity, ()))
        for position, candidate in enumerate(ranking[:MAX_HYPOTHESES], start=1)
    )
    return hypotheses, problems


# -- change events (issue 18) ------------------------------------------------------------------------

CHANGE_MARGIN = 60.0  # seconds after an onset a change still counts: the onset is known to a step or so
_NOT_EVIDENCE = frozenset({"other"})  # a scale (an HPA reacting) is more often effect than cause


def callees(entity: str, settings: InvestigationConfig) -> list[str]:
    """Every entity ``entity`` calls, directly or not (``investigation.calls``), nearest first."""
    found: list[str] = []
    frontier = [entity]
    while frontier:
        frontier = [e.callee for e in settings.calls if e.caller in frontier and e.callee not in found]
        frontier = [c for c in dict.fromkeys(frontier) if c != entity]
        found += frontier
    return found


def _change_entities(incident: Incident, named: Sequence[str], settings: InvestigationConfig) -> list[str]:
    """``named`` (ranked entities), the alert's own and the callees of all of them."""
    alerted = incident.labels.get(settings.entity_label)
    entities = [*named, *([alerted] if alerted else [])]
    return list(dict.fromkeys(entities + [c for e in entities for c in callees(e, settings)]))


async def nearby_changes(
    incident: Incident, ranking: Sequence[Candidate], settings: InvestigationConfig, source: ChangeSource
) -> list[Change]:
    """The change events of the ranked entities, the alert's own and their callees, from
    ``change_window`` before the earliest onset to ``CHANGE_MARGIN`` after the latest."""
    entities = _change_entities(incident, [c.entity for c in ranking], settings)
    onsets = [incident.started_at, *(c.onset for c in ranking if c.onset is not None)]
    start, end = min(onsets) - settings.change_window, max(onsets) + CHANGE_MARGIN
    return await source.changes_between(start, end, entities) if entities else []


async def changes_for_report(
    incident: Incident,
    hypotheses: Sequence[Mapping[str, Any]],
    settings: InvestigationConfig,
    source: ChangeSource,
) -> tuple[dict[str, Any], ...]:
    """The change events a report shows (``report_changes``), read for the hypotheses' entities, the
    alert's own and their callees around the top hypothesis' onset."""
    entities = _change_entities(incident, [str(h["entity"]) for h in hypotheses], settings)
    if not entities:
        return ()
    onset = _hypothesis_onset(incident, hypotheses)
    found = await source.changes_between(onset - settings.change_window, onset + CHANGE_MARGIN, entities)
    return report_changes(incident, hypotheses, found, settings)


def _hypothesis_onset(incident: Incident, hypotheses: Sequence[Mapping[str, Any]]) -> float:
    """The top hypothesis' onset, else the incident's start."""
    onset = hypotheses[0].get("onset_unix") if hypotheses else None
    return float(onset) if onset is not None else incident.started_at


def changes_by_entity(
    changes: Sequence[Change], ranking: Sequence[Candidate], started_at: float, window: float
) -> dict[str, list[Change]]:
    """Per ranked entity, its changes that count as evidence: from ``window`` before its own onset (the
    incident's start when it has none) to ``CHANGE_MARGIN`` after."""
    found: dict[str, list[Change]] = {}
    for candidate in ranking:
        onset = candidate.onset if candidate.onset is not None else started_at
        mine = [
            c
            for c in changes
            if c.entity == candidate.entity
            and c.kind not in _NOT_EVIDENCE
            and onset - window <= c.at <= onset + CHANGE_MARGIN
        ]
        if mine:
            found[candidate.entity] = mine
    return found


def _with_change_list(changes: Sequence[Change]) -> dict[str, Any]:
    return {"changes": [c.to_dict() for c in changes]} if changes else {}


def report_changes(
    incident: Incident,
    hypotheses: Sequence[Mapping[str, Any]],
    changes: Sequence[Change],
    settings: InvestigationConfig,
) -> tuple[dict[str, Any], ...]:
    """The changes a report shows, oldest first: those within ``change_window`` before the onset (and
    ``CHANGE_MARGIN`` after), each with ``before_onset`` (seconds; negative: after it) and ``relation``:
    ``cause`` (the top entity, or the alert's own when nothing was ranked), ``callee`` (of it, with
    ``of``), ``ranked`` (another hypothesis) or ``nearby``."""
    cause = str(hypotheses[0]["entity"]) if hypotheses else incident.labels.get(settings.entity_label)
    onset = _hypothesis_onset(incident, hypotheses)
    below = callees(cause, settings) if cause else []
    ranked = {str(h["entity"]) for h in hypotheses}
    shown = []
    for change in sorted(changes, key=lambda c: (c.at, c.entity)):
        if not onset - settings.change_window <= change.at <= onset + CHANGE_MARGIN:
            continue
        relation: dict[str, Any] = {"relation": "nearby"}
        if change.entity == cause:
            relation = {"relation": "cause"}
        elif change.entity in below:
            relation = {"relation": "callee", "of": cause}
        elif change.entity in ranked:
            relation = {"relation": "ranked"}
        shown.append({**change.to_dict(), "before_onset": round(onset - change.at, 1), **relation})
    return tuple(shown)


def _hypothesis(
    position: int,
    candidate: Candidate,
    label: str,
    signals: Mapping[str, SignalConfig],
    source: MetricsSource,
    start: float,
    end: float,
    logs: LogProbe | None = None,
) -> dict[str, Any]:
    evidence = []
    for item in candidate.evidence:
        signal = signals[item.signal]
        promql = promql_for_entity(signal.query, label, candidate.entity)
        evidence.append(
            {
                "signal": item.signal,
                "promql": promql,
                "labels": dict(item.labels),
                "baseline": item.baseline,
                "incident": item.incident,
                "unit": unit_for(signal.query, signal.unit),  # how text shows baseline and incident
                "deviation": round(item.deviation, 2),
                "onset": iso_time(item.onset),
                "explore_url": source.explore_url(promql, start, end),
            }
        )
    logged = logs.strong_signal_of(candidate.entity) if logs is not None else None
    if logged is not None:  # Loki's error lines moved: shown with the LogQL and its Explore link
        evidence.append({**logged, "promql": logged.get("logql"), "query_language": "logql"})
    return {
        "rank": position,
        "entity_label": label,
        "entity": candidate.entity,
        "score": round(candidate.score, 4),
        "onset": iso_time(candidate.onset),
        "onset_unix": candidate.onset,  # the same moment, for text that places it against the alert
        "evidence": evidence,
    }


class _GrafanaLinks:
    """A MetricsSource whose explore links open Grafana Explore instead of Prometheus's graph page."""

    def __init__(self, inner: MetricsSource, grafana_url: str) -> None:
        self._inner = inner
        self._grafana = redact_url(grafana_url).rstrip("/")  # the links are shown: never with userinfo

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        return await self._inner.query_range(expr, start, end, step)

    def explore_url(self, expr: str, start: float, end: float) -> str:
        pane = {
            "a": {
                "queries": [{"refId": "A", "expr": expr}],
                "range": {"from": str(int(start * 1000)), "to": str(int(end * 1000))},
            }
        }
        return f"{self._grafana}/explore?" + urlencode({"schemaVersion": "1", "panes": json.dumps(pane)})


def with_explore_links(source: MetricsSource, grafana_url: str | None) -> MetricsSource:
    return _GrafanaLinks(source, grafana_url) if grafana_url else source
