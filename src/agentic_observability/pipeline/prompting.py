"""What the language model sees and what of its answer is kept.

* The evidence packet is built by priority (alert facts, hypotheses, similar incidents, alert
  evidence) and trimmed whole items at a time, lowest priority first, until prompt plus answer fit
  the context window: never cut mid-structure.
* Alert text is untrusted: every string that comes from an alert (alertname and severity too, label
  names as well as values, the titles of similar incidents) is length-capped, HTML-escaped so no tag
  can be formed inside it, and fenced in ``<untrusted>…</untrusted>``.
* The answer must parse as JSON against ``ModelAnswer``; then every claim that names a service,
  signal or incident absent from the packet is dropped (and counted): only grounded claims survive.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentic_observability.errors import ModelAnswerError

CONTEXT_TOKENS = 8192
ANSWER_TOKENS = 1024
CHARS_PER_TOKEN = 3.2  # conservative for JSON-heavy English with a Llama 3 tokenizer
UNTRUSTED_CHARS = 500
_TEMPLATE = Template(files("agentic_observability.pipeline").joinpath("prompts/reason.txt").read_text())


class Claim(BaseModel):
    model_config = ConfigDict(extra="ignore")
    service: str = Field(max_length=200)
    signal: str | None = Field(None, max_length=200)
    why: str = Field("", max_length=600)


class ModelAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str = Field(min_length=1, max_length=1500)
    root_cause: Claim | None = None
    alternatives: list[Claim] = Field(default_factory=list, max_length=8)
    similar_incident: str | None = Field(None, max_length=40)
    next_steps: list[str] = Field(default_factory=list, max_length=8)


@dataclass(frozen=True)
class GroundedAnswer:
    answer: ModelAnswer
    dropped: tuple[str, ...]  # why each dropped claim went


def fence(text: str) -> str:
    """Untrusted text as data: capped, and unable to close its own fence. Escaped, not stripped:
    stripping ``</untrusted>`` from ``</untrus</untrusted>ted>`` leaves a working closing tag."""
    escaped = html.escape(text[:UNTRUSTED_CHARS], quote=False)  # no ``<`` is left to start a tag
    return f"<untrusted>{escaped}</untrusted>"


def _facts_item(facts: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "alertname": fence(str(facts.get("alertname", ""))),
        "severity": fence(str(facts.get("severity", ""))),
        "labels": {fence(str(k)): fence(str(v)) for k, v in dict(facts.get("labels", {})).items()},
        "summary": fence(str(facts.get("summary", ""))),
        "description": fence(str(facts.get("description", ""))),
        "started_at": facts.get("started_at"),
        "status": facts.get("status", ""),
    }


def _hypothesis_item(hypothesis: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "service": hypothesis["entity"],
        "score": round(float(hypothesis["score"]), 3),
        "onset": hypothesis.get("onset"),
        "evidence": [
            {k: e[k] for k in ("signal", "unit", "baseline", "incident", "deviation", "promql") if k in e}
            for e in hypothesis.get("evidence", [])[:3]
        ],
    }


# A past incident's title is its alert's text; its cause may be a label value or what a person wrote.
_SIMILAR_TEXT = ("title", "root_cause", "resolution")


def _similar_item(similar: Mapping[str, Any]) -> dict[str, Any]:
    return {k: fence(str(v)) if k in _SIMILAR_TEXT and v is not None else v for k, v in similar.items()}


def _change_item(change: Mapping[str, Any]) -> dict[str, Any]:
    """A change event as the model sees it: its text came from a CI system or a webhook, so fenced."""
    return {
        "service": change.get("entity"),
        "relation": change.get("relation"),  # cause, callee, ranked or nearby: to the top hypothesis
        "kind": change.get("kind"),
        "seconds_before_onset": change.get("before_onset"),
        "what": fence(str(change.get("summary", ""))),
    }


def _template_item(template: Mapping[str, Any]) -> dict[str, Any]:
    """A new log template: log text is untrusted, so fenced."""
    return {
        "service": template.get("entity"),
        "template": fence(str(template.get("template", ""))),
        "lines_after_onset": template.get("count"),
        "lines_before": template.get("before"),
    }


def build_packet(
    facts: Mapping[str, Any],
    hypotheses: Sequence[Mapping[str, Any]],
    similar: Sequence[Mapping[str, Any]],
    evidence_lines: Sequence[str],
    budget_chars: int,
    changes: Sequence[Mapping[str, Any]] = (),
    logs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The packet, trimmed from the lowest-priority end until its JSON fits ``budget_chars``. What
    changed before the onset (``changes``: the report's) and the new log templates (``logs``: the
    report's log evidence) rank below the hypotheses; the log signals are in the hypotheses' evidence."""
    packet: dict[str, Any] = {
        "alert": _facts_item(facts),
        "hypotheses": [_hypothesis_item(h) for h in hypotheses[:5]],
        "changes_before_onset": [_change_item(c) for c in changes[:5]],
        "new_log_templates": [_template_item(t) for t in (logs or {}).get("templates", [])[:3]],
        "similar_incidents": [_similar_item(s) for s in similar[:3]],
        "alert_evidence": [fence(line) for line in evidence_lines[:20]],
    }
    for section in (
        "alert_evidence",
        "similar_incidents",
        "new_log_templates",
        "changes_before_onset",
        "hypotheses",
    ):
        while packet[section] and len(json.dumps(packet)) > budget_chars:
            packet[section].pop()
    if len(json.dumps(packet)) > budget_chars:
        packet["alert"]["labels"] = {}
        packet["alert"]["description"] = fence("")
    return packet


def messages_for(packet: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You answer with JSON only."},
        {"role": "user", "content": _TEMPLATE.substitute(packet=json.dumps(packet, indent=1))},
    ]


def prompt_budget_chars() -> int:
    template_chars = len(_TEMPLATE.template) + 100
    return int((CONTEXT_TOKENS - ANSWER_TOKENS) * CHARS_PER_TOKEN) - template_chars


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_answer(text: str) -> ModelAnswer:
    """The answer's JSON object (models like to wrap it in prose or code fences)."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        raise ModelAnswerError("the model's answer holds no JSON object")
    try:
        return ModelAnswer.model_validate_json(match.group(0))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(answer)"
        raise ModelAnswerError(f"the model's answer fails the schema at {where}: {first['msg']}") from exc


def ground(answer: ModelAnswer, packet: Mapping[str, Any]) -> GroundedAnswer:
    """Drop every claim that names something the packet does not contain."""
    services = {h["service"] for h in packet["hypotheses"]}
    signals = {e["signal"] for h in packet["hypotheses"] for e in h["evidence"]}
    incidents = {str(s.get("id")) for s in packet["similar_incidents"]}
    dropped: list[str] = []

    def keep(claim: Claim | None) -> Claim | None:
        if claim is None:
            return None
        if claim.service not in services:
            dropped.append(f"service {claim.service!r} is not among the hypotheses")
            return None
        if claim.signal and claim.signal not in signals:
            dropped.append(f"signal {claim.signal!r} is not in the evidence")
            return None
        return claim

    root = keep(answer.root_cause)
    alternatives = [c for c in (keep(a) for a in answer.alternatives) if c is not None]
    similar = answer.similar_incident
    if similar is not None and similar not in incidents:
        dropped.append(f"incident {similar!r} is not among the similar incidents")
        similar = None
    grounded = answer.model_copy(
        update={"root_cause": root, "alternatives": alternatives, "similar_incident": similar}
    )
    return GroundedAnswer(grounded, tuple(dropped))
