"""One incident per fault: does a newly analysed alert group (or watch episode) belong to an open
incident? Pure rules over what the store holds; the worker applies the decision.

Three pieces of evidence, all required, each named in the decision's reason so a test (and the
on-call reading the thread) can see why two groups became one:

* time: the two started within ``correlation.window`` of each other;
* labels: every ``correlation.by`` label that both carry is equal, so two clusters' (or two
  namespaces') outages never merge;
* cause: the same root cause, or one of them calls the other (``investigation.calls``). Each side's
  cause is the top-ranked entity *its alert can see*: the alerting service itself or one it calls,
  directly or not. The ranking is over the whole system, so with two faults at once both reports
  rank the same two services; scoping by the alert keeps a carts alert on carts and a catalogue
  alert on catalogue. Without a call graph or an entity label on the alert, the overall top.

The cause is what keeps two simultaneous faults on unrelated services apart; without a ranked cause
on either side nothing is merged. An earlier open incident still being analysed has no cause yet, so
the decision is to wait for it (the caller bounds the wait), never to guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentic_observability.config import CallEdge, CorrelationConfig
from agentic_observability.models import Incident, iso_time
from agentic_observability.outbox.plan import incident_labels


@dataclass(frozen=True)
class Decision:
    root: str | None  # the incident to join; None: this one stays its own incident
    reason: str
    wait_for: str | None = None  # an earlier open incident whose analysis has not finished yet

    def record(self, how: str, at: float) -> dict[str, Any]:
        """What is stored with the member (and shown in the API): why it joined, how, when."""
        return {"root": self.root, "reason": self.reason, "by": how, "at": iso_time(at)}


def alert_cause(
    incident: Incident, report: Mapping[str, Any] | None, calls: Sequence[CallEdge], entity_label: str
) -> str | None:
    """The root cause as the incident's alert sees it: the top-ranked entity among the alerting
    service and those it calls (transitively); the overall top without a call graph or entity."""
    ranked = [str(h["entity"]) for h in (report or {}).get("hypotheses") or () if h.get("entity")]
    if not ranked:
        return None
    own = incident_labels(incident).get(entity_label)
    if not own or not calls:
        return ranked[0]
    reach = downstream(own, calls)
    return next((entity for entity in ranked if entity in reach), ranked[0])


def downstream(service: str, calls: Sequence[CallEdge]) -> set[str]:
    """``service`` and every service it calls, directly or through others."""
    found, frontier = {service}, {service}
    while frontier:
        frontier = {e.callee for e in calls if e.caller in frontier} - found
        found |= frontier
    return found


def decide(
    incident: Incident,
    report: Mapping[str, Any],
    candidates: Sequence[Incident],
    settings: CorrelationConfig,
    calls: Sequence[CallEdge] = (),
    entity_label: str = "service",
) -> Decision:
    """Join the oldest open incident that shares the fault; else wait for an earlier one still being
    analysed that might; else stay alone."""
    cause = alert_cause(incident, report, calls, entity_label)
    if cause is None:
        return Decision(None, "no root cause was ranked, so there is nothing to match on")
    never = (incident.correlation or {}).get("split_from")  # a split by hand is not undone
    waiting: str | None = None
    for other in candidates:
        if other.id in (incident.id, never) or abs(other.started_at - incident.started_at) > settings.window:
            continue
        if label_clash(incident, other, settings.by):
            continue
        if other.report is None:
            if waiting is None and _earlier(other, incident):
                waiting = other.id
            continue
        link = cause_link(cause, alert_cause(other, other.report, calls, entity_label), calls)
        if link:
            gap = incident.started_at - other.started_at
            when = f"{abs(gap):.0f} s {'after' if gap >= 0 else 'before'}"
            return Decision(other.id, f"started {when} incident {other.id} ({other.title}); {link}")
    if waiting is not None:
        return Decision(None, f"waiting for incident {waiting}'s analysis", wait_for=waiting)
    return Decision(None, f"no open incident within the window has a root cause related to {cause}")


def _earlier(a: Incident, b: Incident) -> bool:
    """Started first (ties broken by id), so of two groups only the later one ever waits."""
    return (a.started_at, len(a.id), a.id) < (b.started_at, len(b.id), b.id)


def cause_link(mine: str, theirs: str | None, calls: Sequence[CallEdge]) -> str | None:
    """How two root causes are one fault, in words; None when they are not."""
    if theirs is None:
        return None
    if mine == theirs:
        return f"the same root cause ({mine})"
    for edge in calls:
        if {edge.caller, edge.callee} == {mine, theirs}:
            return f"{edge.caller} calls {edge.callee} (root causes {theirs} and {mine})"
    return None


def label_clash(a: Incident, b: Incident, by: Iterable[str]) -> str | None:
    """The first ``by`` label both carry with different values (their merged labels), else None."""
    mine, theirs = incident_labels(a), incident_labels(b)
    for name in by:
        if name in mine and name in theirs and mine[name] != theirs[name]:
            return name
    return None


def timeline(root: Incident) -> str:
    """The alerts a fault fired, in the order they started: "A at 13:00:05, then B (+10 s)"."""
    firsts: dict[str, float] = {}
    for alert in sorted(root.every_alert, key=lambda a: a.starts_at):
        firsts.setdefault(alert.name, alert.starts_at)
    if len(firsts) < 2:
        return ""
    (first, start), *rest = firsts.items()
    later = ", ".join(f"{name} (+{at - start:.0f} s)" for name, at in rest)
    return f"Alerts of this fault in order: {first} at {clock(start)}, then {later}."


def clock(ts: float) -> str:
    """HH:MM:SS (UTC) of unix seconds: times in a thread where the date goes without saying."""
    return (iso_time(ts) or "")[11:19]
