"""What the MCP tools and resources answer: compact, bounded views of incidents and reports.

An agent on an 8K-token model must be able to read any answer, so each is cut to ``OUTPUT_CAP``
characters (about 1,000 tokens): lists are shortened and long texts cut, step by step, until it
fits, and the answer then says so (``truncated``). A PromQL expression is kept whole longer than any
other text, since a cut one cannot be run: every figure comes with the query that shows it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentic_observability.models import Incident, iso_time
from agentic_observability.readable import describe_change, format_stored_time, unix_time

OUTPUT_CAP = 4000  # characters per tool answer or resource text
# (items per list, characters per text), tried in order until the answer fits
_LEVELS = ((50, 400), (50, 160), (20, 160), (10, 120), (5, 100), (3, 80), (2, 60), (1, 40))
_WHOLE = frozenset({"promql", "query", "id", "uri", "incident_id"})  # cut last, and only past _WHOLE_MAX
_WHOLE_MAX = 1000
_MAX_KEYS = 16
MAX_EVIDENCE = 3  # pieces of evidence for the top hypothesis (the strongest; the ranking keeps them first)
MAX_EVIDENCE_OTHERS = 2  # and for each other one
MAX_CHANGES = 3  # recent changes shown per hypothesis
MAX_SERIES = 5  # series shown per alert expression


def bounded(data: Mapping[str, Any], cap: int = OUTPUT_CAP) -> str:
    """``data`` as compact JSON of at most ``cap`` characters."""
    text = _dumps(data)
    if len(text) <= cap:
        return text
    for items, chars in _LEVELS:
        note = f"cut to fit {cap} characters: lists to {items} items, texts to {chars} characters"
        text = _dumps({**_shrink(data, items, chars), "truncated": note})
        if len(text) <= cap:
            return text
    head = text
    while True:  # only a pathological answer (a thousand-character PromQL in each of many places)
        head = head[: len(head) // 2]
        text = _dumps({"truncated": f"cut to fit {cap} characters", "head": head})
        if len(text) <= cap:
            return text


def bounded_text(text: str, cap: int = OUTPUT_CAP, where: str = "") -> str:
    """Plain text cut to ``cap`` characters at a line end, saying where the rest is."""
    if len(text) <= cap:
        return text
    tail = f"\n… cut to {cap} characters" + (f"; the full report: {where}" if where else "")
    kept = text[: cap - len(tail)]
    return kept[: kept.rfind("\n")] + tail if "\n" in kept else kept + tail


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def _shrink(value: Any, items: int, chars: int, key: str = "") -> Any:
    if isinstance(value, str):
        limit = _WHOLE_MAX if key in _WHOLE else chars
        return value if len(value) <= limit else value[: limit - 1] + "…"
    if isinstance(value, list | tuple):
        kept = [_shrink(v, items, chars, key) for v in value[:items]]
        return kept + ([f"… {len(value) - items} more"] if len(value) > items else [])
    if isinstance(value, Mapping):
        pairs = list(value.items())
        return {str(k): _shrink(v, items, chars, str(k)) for k, v in pairs[:_MAX_KEYS]}
    return value


def number(value: Any) -> float | None:
    """4 significant digits: enough to compare, short to read."""
    try:
        figure = float(value)
    except (TypeError, ValueError):
        return None
    return float(f"{figure:.4g}") if math.isfinite(figure) else None


def selector(labels: Mapping[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


# -- incidents ----------------------------------------------------------------------------------------


def service_of(incident: Incident, entity_label: str) -> str:
    if incident.labels.get(entity_label):
        return str(incident.labels[entity_label])
    return next((a.labels[entity_label] for a in incident.alerts if a.labels.get(entity_label)), "")


def top_cause(incident: Incident) -> str:
    """The confirmed cause when feedback gave one, else the top hypothesis with its score."""
    feedback = incident.feedback or {}
    if feedback.get("root_cause"):
        return f"{feedback['root_cause']} (confirmed by feedback)"
    hypotheses = (incident.report or {}).get("hypotheses") or []
    if not hypotheses:
        return ""
    top = hypotheses[0]
    correct = feedback.get("correct")
    verdict = ", confirmed" if correct is True else ", marked wrong" if correct is False else ""
    return f"{top.get('entity')} (score {number(top.get('score'))}{verdict})"


def incident_row(incident: Incident, entity_label: str) -> dict[str, Any]:
    return {
        "id": incident.id,
        "status": incident.status,
        "title": incident.title[:160],
        "service": service_of(incident, entity_label),
        "started": iso_time(incident.started_at),
        "top_cause": top_cause(incident),
    }


def hypothesis_view(hypothesis: Mapping[str, Any]) -> dict[str, Any]:
    """One ranked entity and its strongest evidence, each figure with its PromQL: the usual value
    (baseline) and the value in the incident, in ``unit``, and how many usual spreads apart."""
    shown = MAX_EVIDENCE if hypothesis.get("rank") == 1 else MAX_EVIDENCE_OTHERS
    view = {
        "rank": hypothesis.get("rank"),
        "entity": hypothesis.get("entity"),
        "score": number(hypothesis.get("score")),
        "onset": _time(hypothesis.get("onset")),
        "evidence": [_evidence_view(e) for e in list(hypothesis.get("evidence") or [])[:shown]],
        "changes": [_change_view(c) for c in list(hypothesis.get("changes") or [])[:MAX_CHANGES]],
    }
    return _present(view)


def _change_view(change: Mapping[str, Any]) -> dict[str, Any]:
    """A recent change on the entity, which weighed in its ranking: what, when, where it came from."""
    return _present(
        {
            "kind": change.get("kind"),
            "summary": change.get("summary"),
            "at": _time(change.get("at")),
            "source": change.get("source"),
            "link": change.get("link"),
        }
    )


def _evidence_view(evidence: Mapping[str, Any]) -> dict[str, Any]:
    view = {
        "signal": evidence.get("signal"),
        "baseline": number(evidence.get("baseline")),
        "incident": number(evidence.get("incident")),
        "unit": evidence.get("unit"),
        "deviation": number(evidence.get("deviation")),
        "onset": _time(evidence.get("onset")),
        "promql": evidence.get("promql"),
    }
    return _present(view)


def _change(evidence: Mapping[str, Any]) -> str:
    try:
        return describe_change(evidence)
    except (KeyError, TypeError, ValueError):
        return str(evidence.get("signal"))


def _time(value: Any) -> str | None:
    """A stored time (ISO 8601 or unix seconds) as ISO 8601 to the second."""
    ts = unix_time(value)
    return None if ts is None else iso_time(float(int(ts)))


def _present(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if v not in (None, [], "")}


def alert_evidence_view(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """What one alert expression showed over its window: the series that moved most."""
    series = list(evidence.get("series") or [])
    view: dict[str, Any] = {
        "promql": evidence.get("query"),
        "from": _time(evidence.get("start")),
        "to": _time(evidence.get("end")),
        "series": [_series_view(s) for s in series[:MAX_SERIES]],
    }
    if len(series) > MAX_SERIES:
        view["more_series"] = len(series) - MAX_SERIES
    if evidence.get("error"):
        view["error"] = str(evidence["error"])[:300]
    return view


def _series_view(series: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "labels": selector(series.get("labels") or {}),
        "min": number(series.get("minimum")),
        "max": number(series.get("maximum")),
        "last": number(series.get("last")),
        "peak_at": _time(series.get("peak_at")),
    }


def similar_view(similar: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": similar.get("id"),
        "score": number(similar.get("score")),
        "root_cause": similar.get("root_cause"),
        "resolution": similar.get("resolution"),
        "confirmed": similar.get("confirmed"),
        "title": str(similar.get("title") or "")[:160],
        "started": similar.get("started_at"),
    }


def incident_view(incident: Incident, entity_label: str) -> dict[str, Any]:
    """The report with its evidence and PromQL (what ``get_incident`` answers)."""
    report = incident.report or {}
    view: dict[str, Any] = {
        **incident_row(incident, entity_label),
        "resolved": iso_time(incident.resolved_at),
        "summary": report.get("summary", "not analysed yet"),
        "hypotheses": [hypothesis_view(h) for h in report.get("hypotheses") or []],
        "alert_evidence": [alert_evidence_view(e) for e in report.get("evidence") or []],
        "similar_incidents": [similar_view(s) for s in report.get("similar_incidents") or []],
        "next_steps": list(report.get("next_steps") or []),
        "feedback": feedback_view(incident.feedback),
        "members": [{"id": m.id, "status": m.status, "title": m.title[:120]} for m in incident.members],
        "reasoner": report.get("reasoner"),
        "resource": f"incident://{incident.id}",
    }
    return _present(view)


def feedback_view(feedback: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not feedback:
        return None
    return {**feedback, **({"at": _time(feedback["at"])} if "at" in feedback else {})}


# -- the report as text (the incident:// resource) -----------------------------------------------------


def report_text(incident: Incident, entity_label: str) -> str:
    """The report as Markdown: what a person would read in Slack, with every figure's PromQL."""
    report = incident.report or {}
    lines = [
        f"# {incident.title}",
        f"Incident {incident.id}, {incident.status}, service {service_of(incident, entity_label) or '?'}, "
        f"started {format_stored_time(incident.started_at)}",
        "",
        "## Summary",
        str(report.get("summary") or "Not analysed yet."),
    ]
    lines += _section("Likely root causes", _hypothesis_lines(report.get("hypotheses") or []))
    lines += _section("Alert evidence", _alert_lines(report.get("evidence") or []))
    lines += _section("Similar past incidents", _similar_lines(report.get("similar_incidents") or []))
    lines += _section("Next steps", [f"- {s}" for s in report.get("next_steps") or []])
    if incident.feedback:
        feedback = feedback_view(incident.feedback) or {}
        lines += _section("Feedback", [f"- {k}: {v}" for k, v in feedback.items()])
    return "\n".join(lines)


def _section(title: str, lines: Sequence[str]) -> list[str]:
    return ["", f"## {title}", *lines] if lines else []


def _hypothesis_lines(hypotheses: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = []
    for h in hypotheses:
        onset = _time(h.get("onset")) or "unknown"
        lines.append(f"{h.get('rank')}. {h.get('entity')} (score {number(h.get('score'))}, onset {onset})")
        shown = MAX_EVIDENCE if h.get("rank") == 1 else MAX_EVIDENCE_OTHERS
        for e in list(h.get("evidence") or [])[:shown]:
            lines.append(f"   - {_change(e)}: `{e.get('promql')}`")
    return lines


def _alert_lines(evidence: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = []
    for e in evidence:
        view = alert_evidence_view(e)
        lines.append(f"- `{view['promql']}`" + (f" (error: {view['error']})" if "error" in view else ""))
        for s in view["series"]:
            lines.append(
                f"   - {s['labels']}: min {s['min']}, max {s['max']} at {s['peak_at']}, last {s['last']}"
            )
    return lines


def _similar_lines(similar: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = []
    for s in similar:
        view = similar_view(s)
        confirmed = ", confirmed" if view["confirmed"] else ""
        fix = f"; fix: {view['resolution']}" if view["resolution"] else ""
        lines.append(
            f"- incident {view['id']} (score {view['score']}{confirmed}): {view['title']}; "
            f"cause {view['root_cause'] or '?'}{fix}"
        )
    return lines
