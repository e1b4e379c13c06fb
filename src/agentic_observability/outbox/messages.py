"""How an incident reads in each sink: Slack Block Kit, Grafana annotation text, PagerDuty events.

Pure functions over the report dict. Alert text is untrusted: for Slack it is escaped (``&``, ``<``,
``>``, so ``<!channel>`` or a crafted link cannot ping or phish), and every text block stays under
Slack's 3,000-character limit, split at whitespace, never mid-word. Links (the runbook comes from an
alert annotation) pass ``safe_link`` first: only http(s), with ``<``, ``>`` and ``|`` percent-encoded.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

SLACK_TEXT_LIMIT = 3000
SLACK_HEADER_LIMIT = 150
PAGERDUTY_SUMMARY_LIMIT = 1024
_PD_SEVERITY = {
    "critical": "critical",
    "page": "critical",
    "p1": "critical",
    "error": "error",
    "high": "error",
    "major": "error",
    "p2": "error",
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "minor": "warning",
    "info": "info",
    "low": "info",
    "none": "info",
}


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Everything a URL may carry unencoded, minus what ends or re-labels a Slack link (``<``, ``>``, ``|``);
# ``%`` stays so an already-encoded URL is not encoded twice. Spaces and controls get encoded too.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def safe_link(url: str) -> str | None:
    """An http(s) URL that cannot break out of ``<url|text>`` (Slack) or an href; None for any other.
    A ``javascript:`` or ``slack://`` runbook is dropped, not shown as a link."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. an unbalanced [ in the host
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(parts.geturl(), safe=_URL_SAFE)  # what was checked is what is sent


def split_text(text: str, limit: int = SLACK_TEXT_LIMIT) -> list[str]:
    """Chunks of at most ``limit`` characters, cut at whitespace; only a single word longer than the
    limit is ever cut (there is no other way to send it)."""
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = max(rest.rfind("\n", 0, limit + 1), rest.rfind(" ", 0, limit + 1))
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def pagerduty_severity(label: str) -> str:
    return _PD_SEVERITY.get(label.strip().lower(), "warning")


def _cause_line(report: Mapping[str, Any]) -> str:
    hypotheses = report.get("hypotheses") or []
    if not hypotheses or not hypotheses[0].get("evidence"):
        return "No root-cause candidate stood out in the configured signals."
    top = hypotheses[0]
    strongest = top["evidence"][0]
    return (
        f"{top['entity']}: {strongest['signal']} {strongest['baseline']:.4g} → {strongest['incident']:.4g} "
        f"({strongest['deviation']:.0f}× its usual spread)"
    )


def _links(report: Mapping[str, Any], incident_url: str | None) -> list[tuple[str, str]]:
    """The links every sink shows, each through ``safe_link`` (the runbook is alert text; the explore
    link quotes the alert's PromQL)."""
    candidates = []
    hypotheses = report.get("hypotheses") or []
    if hypotheses and hypotheses[0].get("evidence"):
        candidates.append((hypotheses[0]["evidence"][0].get("explore_url"), "Explore the evidence"))
    candidates.append(((report.get("facts") or {}).get("runbook_url"), "Runbook"))
    candidates.append((incident_url, "Incident report"))
    links = []
    for url, text in candidates:
        safe = safe_link(url) if isinstance(url, str) else None
        if safe:
            links.append((safe, text))
    return links


def _status_emoji(status: str) -> str:
    return ":large_green_circle:" if status == "resolved" else ":red_circle:"


def slack_parent(
    incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None
) -> dict[str, Any]:
    """The one parent message of an incident (posted on open, updated in place on resolve)."""
    facts = report.get("facts") or {}
    status = str(incident["status"])
    title = f"[{status.upper()}] {facts.get('alertname') or incident['title']}"
    service = incident.get("service") or "unknown"
    fields = [
        ("Status", status),
        ("Service", service),
        ("Severity", facts.get("severity") or "none"),
        ("Started", incident.get("started_at") or ""),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:SLACK_HEADER_LIMIT]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{slack_escape(str(v))}"} for k, v in fields],
        },
        _mrkdwn(f"*Most likely cause*\n{slack_escape(_cause_line(report))}"),
    ]
    links = _links(report, incident_url)
    if links:
        joined = " · ".join(f"<{url}|{slack_escape(text)}>" for url, text in links)
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": joined[:SLACK_TEXT_LIMIT]}]}
        )
    fallback = f"{_status_emoji(status)} {slack_escape(title)}: {slack_escape(_cause_line(report))}"
    return {"text": fallback[:SLACK_TEXT_LIMIT], "blocks": blocks}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_reply(heading: str, body: str) -> dict[str, Any]:
    """A thread reply: a heading and the body, escaped and split into blocks under the limit."""
    escaped = slack_escape(body)
    blocks = [_mrkdwn(f"*{slack_escape(heading)}*")] + [_mrkdwn(chunk) for chunk in split_text(escaped)]
    return {"text": f"{slack_escape(heading)}: {escaped}"[:SLACK_TEXT_LIMIT], "blocks": blocks[:50]}


def recurrence_text(similar: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for past in similar:
        cause = past.get("root_cause") or "unknown"
        fixed = f"; fixed by: {past['resolution']}" if past.get("resolution") else ""
        lines.append(f"Incident {past['id']} ({past.get('started_at')}): root cause {cause}{fixed}")
    return "\n".join(lines)


GRAFANA_TEXT_LIMIT = 2000


def grafana_text(incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None) -> str:
    """The report's summary (its first line names the alert and state), capped and HTML-escaped
    (Grafana renders annotation text as HTML, and the summary quotes alert text), and a link back."""
    summary = str(report.get("summary") or f"{incident['title']} ({incident['status']})")
    if len(summary) > GRAFANA_TEXT_LIMIT:
        summary = summary[:GRAFANA_TEXT_LIMIT].rsplit("\n", 1)[0] + "\n…"
    href = safe_link(incident_url) if incident_url else None
    link = f'\n<a href="{html.escape(href)}">incident report</a>' if href else ""
    return html.escape(summary, quote=False) + link


def grafana_tags(incident: Mapping[str, Any], report: Mapping[str, Any]) -> list[str]:
    facts = report.get("facts") or {}
    tags = ["agentic-obs", f"incident:{incident['id']}", str(facts.get("alertname") or incident["title"])]
    if incident.get("service"):
        tags.append(str(incident["service"]))
    return tags


def pagerduty_event(
    incident: Mapping[str, Any], report: Mapping[str, Any], action: str, incident_url: str | None
) -> dict[str, Any]:
    """An Events API v2 body without the routing key (added at delivery, never stored)."""
    dedup_key = f"agentic-obs-{incident['id']}"
    if action == "resolve":
        return {"event_action": "resolve", "dedup_key": dedup_key}
    facts = report.get("facts") or {}
    summary = f"{incident['title']}: {_cause_line(report)}"
    hypotheses = [
        {"service": h["entity"], "score": h["score"], "evidence": [e["promql"] for e in h["evidence"][:2]]}
        for h in (report.get("hypotheses") or [])[:3]
    ]
    return {
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "agentic-observability",
        "payload": {
            "summary": summary[:PAGERDUTY_SUMMARY_LIMIT],
            "source": incident.get("service") or facts.get("alertname") or "agentic-observability",
            "severity": pagerduty_severity(str(facts.get("severity") or "")),
            "component": incident.get("service") or None,
            "group": facts.get("alertname") or None,
            "custom_details": {
                "incident_id": incident["id"],
                "hypotheses": hypotheses,
                "reasoner": report.get("reasoner"),
            },
        },
        "links": [{"href": url, "text": text} for url, text in _links(report, incident_url)],
    }
