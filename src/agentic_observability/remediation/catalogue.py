"""Which catalogue entries apply to an incident, rendered into what each would do. Pure: no I/O.

An entry applies when its matchers hold over the incident's labels (its first alert's under its own,
as routing sees them), its ``cause`` regex matches the ranked cause in full, and its ``signals`` list
(when not empty) holds the fault kind: the top hypothesis' first evidence signal. Its templates are
then rendered from the incident; an entry whose template has no value (no ``namespace`` label, no
ranked cause), whose namespace is not in its allowlist or whose workload is not a Kubernetes name is
dropped, with the reason in ``consider`` (and in the debug log). Only catalogue entries are ever
proposed, so neither a label value nor the model's text can name an action or a namespace of its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentic_observability.config import RemediationAction, RemediationConfig, parse_matcher, template_parts
from agentic_observability.models import Incident
from agentic_observability.outbox.plan import incident_labels

log = logging.getLogger(__name__)

# A Kubernetes object name (DNS-1123 subdomain). Checked after rendering: a cause or a label value is
# anyone's text, and a '/' in a name would change the API path the request goes to.
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Proposal:
    action: str  # the catalogue entry's name
    kind: str
    target: dict[str, str]  # kubernetes: namespace, workload, workload_kind; http: url
    does: str  # one human line: "rollout restart of Deployment carts in namespace shop"
    params: dict[str, Any]  # kubernetes.scale: scale_by, min_replicas, max_replicas; http: body, headers
    auto: bool  # may run without approval for this incident (auto, and its severity listed)
    approvers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "kind": self.kind,
            "target": dict(self.target),
            "does": self.does,
            "params": dict(self.params),
            "auto": self.auto,
            "approvers": list(self.approvers),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        return cls(
            action=str(data["action"]),
            kind=str(data["kind"]),
            target={str(k): str(v) for k, v in dict(data["target"]).items()},
            does=str(data.get("does", "")),
            params=dict(data.get("params") or {}),
            auto=bool(data.get("auto", False)),
            approvers=tuple(str(a) for a in data.get("approvers") or ()),
        )


@dataclass(frozen=True)
class Considered:
    """One catalogue entry against one incident: its proposal, or why there is none."""

    action: str
    proposal: Proposal | None
    reason: str = ""


@dataclass(frozen=True)
class _Facts:
    labels: Mapping[str, str]
    cause: str  # the ranked cause; "" when there is none
    signal: str  # the fault kind: the top hypothesis' first evidence signal; "" when none
    values: Mapping[str, str]  # what templates render from (without {action})


class _NoValue(Exception):
    """A template's placeholder has no value for this incident."""


def propose(
    incident: Incident, report: Mapping[str, Any], config: RemediationConfig, entity_label: str
) -> list[Proposal]:
    """The catalogue entries that apply to ``incident``, in catalogue order; empty when disabled."""
    chosen = []
    for considered in consider(incident, report, config, entity_label):
        if considered.proposal is None:
            log.debug(
                "remediation %s not proposed for incident %s: %s",
                considered.action,
                incident.id,
                considered.reason,
            )
        else:
            chosen.append(considered.proposal)
    return chosen


def consider(
    incident: Incident, report: Mapping[str, Any], config: RemediationConfig, entity_label: str
) -> list[Considered]:
    """Every catalogue entry with its proposal or the reason it does not apply."""
    if not config.enabled:
        return []
    facts = _facts(incident, report, entity_label)
    return [_consider(entry, facts) for entry in config.actions]


def _facts(incident: Incident, report: Mapping[str, Any], entity_label: str) -> _Facts:
    labels = incident_labels(incident)
    hypotheses = report.get("hypotheses") or []
    top = hypotheses[0] if hypotheses and isinstance(hypotheses[0], Mapping) else {}
    # No ranked cause (no investigation signals): the incident's own entity, as the report shows it.
    cause = str(top.get("entity") or "") if top else labels.get(entity_label, "")
    evidence = top.get("evidence") or []
    signal = str(evidence[0].get("signal") or "") if evidence and isinstance(evidence[0], Mapping) else ""
    values = {
        "cause": cause,
        "incident.id": incident.id,
        "incident.title": incident.title,
        "incident.severity": labels.get("severity", ""),
        **{f"labels.{name}": value for name, value in labels.items()},
    }
    return _Facts(labels, cause, signal, values)


def _consider(entry: RemediationAction, facts: _Facts) -> Considered:
    reason = _mismatch(entry, facts)
    if reason is not None:
        return Considered(entry.name, None, reason)
    values = {**facts.values, "action": entry.name}
    try:
        proposal = _http(entry, values) if entry.kind == "http" else _kubernetes(entry, values)
    except _NoValue as missing:
        return Considered(entry.name, None, f"{{{missing}}} has no value for this incident")
    if isinstance(proposal, str):
        return Considered(entry.name, None, proposal)
    severity = facts.labels.get("severity", "")
    auto = entry.auto and severity in entry.auto_severities
    return Considered(entry.name, Proposal(**proposal, auto=auto, approvers=entry.approvers))


def _mismatch(entry: RemediationAction, facts: _Facts) -> str | None:
    """Why ``entry`` does not apply (labels, cause, fault kind), or None when it does."""
    for matcher in entry.matchers:
        if not label_matches(matcher, facts.labels):
            return f"the incident's labels do not match {matcher}"
    if entry.cause is not None:
        if not facts.cause:
            return "no ranked cause to match its cause pattern"
        if re.fullmatch(entry.cause, facts.cause) is None:
            return f"the cause {facts.cause!r} does not match {entry.cause!r}"
    if entry.signals and facts.signal not in entry.signals:
        shown = repr(facts.signal) if facts.signal else "no signal"
        return f"the fault kind ({shown}) is not one of {', '.join(entry.signals)}"
    return None


def label_matches(matcher: str, labels: Mapping[str, str]) -> bool:
    """An Alertmanager-style matcher over ``labels`` (a missing label is the empty string)."""
    name, op, value = parse_matcher(matcher)
    actual = labels.get(name, "")
    if op in ("=", "!="):
        return (actual == value) == (op == "=")
    return (re.fullmatch(value, actual) is not None) == (op == "=~")


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with its placeholders filled; a missing or empty value raises _NoValue."""
    out: list[str] = []
    for literal, name in template_parts(template):
        out.append(literal)
        if name is not None:
            value = values.get(name, "")
            if not value:
                raise _NoValue(name)
            out.append(value)
    return "".join(out)


def is_object_name(name: str) -> bool:
    """A valid Kubernetes object name (DNS-1123 subdomain), so it can go into an API path as it is."""
    return len(name) <= 253 and _OBJECT_NAME.match(name) is not None


def _render_json(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, Mapping):
        return {key: _render_json(item, values) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render_json(item, values) for item in value]
    return value


def _kubernetes(entry: RemediationAction, values: Mapping[str, str]) -> dict[str, Any] | str:
    namespace = render(entry.namespace, values)
    workload = render(entry.workload, values)
    if namespace not in entry.namespaces:
        return f"namespace {namespace!r} is not in its allowlist ({', '.join(entry.namespaces)})"
    if not is_object_name(workload):
        return f"workload {workload!r} is not a Kubernetes object name"
    target = {"namespace": namespace, "workload": workload, "workload_kind": entry.workload_kind}
    what = f"{entry.workload_kind} {workload} in namespace {namespace}"
    if entry.kind == "kubernetes.rollout_restart":
        does = f"rollout restart of {what}"
        return {"action": entry.name, "kind": entry.kind, "target": target, "does": does, "params": {}}
    low, high = entry.min_replicas, entry.max_replicas
    plural = "replica" if abs(entry.scale_by) == 1 else "replicas"
    does = f"scale {what} by {entry.scale_by:+d} {plural} (within {low}-{high})"
    params = {"scale_by": entry.scale_by, "min_replicas": low, "max_replicas": high}
    return {"action": entry.name, "kind": entry.kind, "target": target, "does": does, "params": params}


def _http(entry: RemediationAction, values: Mapping[str, str]) -> dict[str, Any] | str:
    url = str(entry.url)
    headers = {name: render(value, values) for name, value in entry.headers.items()}
    bad = next((name for name, value in headers.items() if any(c in value for c in "\r\n\0")), None)
    if bad is not None:  # a label value with a line break would split the header (or crash the send)
        return f"header {bad} would carry a line break from the incident's labels"
    params = {"body": _render_json(entry.body, values), "headers": headers}
    does = f"POST to {url}" + (f" ({entry.description})" if entry.description else "")
    return {"action": entry.name, "kind": entry.kind, "target": {"url": url}, "does": does, "params": params}
