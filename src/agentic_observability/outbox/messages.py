"""How an incident reads in each sink: Slack Block Kit, Grafana annotation text, PagerDuty events.

Pure functions over the report dict. Alert text is untrusted: for Slack it is escaped (``&``, ``<``,
``>``, so ``<!channel>`` or a crafted link cannot ping or phish), every text element is capped at
Slack's documented limit for it, and a long reply is split at whitespace, never mid-word, into as
many messages as its text needs (see ``SLACK_MESSAGE_BUDGET``). Links (the runbook comes from an
alert annotation) pass ``safe_link`` first: only http(s), with ``<``, ``>`` and ``|`` percent-encoded.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from agentic_observability.readable import (
    describe_change,
    format_onset,
    format_stored_time,
    hypothesis_onset,
    unix_time,
)

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
            cut = _entity_safe_end(rest, limit)
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _entity_safe_end(text: str, end: int) -> int:
    """``end``, or where an escape (``&amp;``, ``&lt;``, ``&gt;``) cut short by it starts: half an
    escape (``&am``) would show in Slack as typed."""
    amp = text.rfind("&", max(end - 4, 0), end)
    return amp if amp > 0 and ";" not in text[amp:end] else end


def _clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, an ellipsis marking a cut (never inside an escape)."""
    if len(text) <= limit:
        return text
    return text[: _entity_safe_end(text, limit - 1)] + "…"


def pagerduty_severity(label: str) -> str:
    return _PD_SEVERITY.get(label.strip().lower(), "warning")


def _cause_line(report: Mapping[str, Any]) -> str:
    hypotheses = report.get("hypotheses") or []
    if not hypotheses or not hypotheses[0].get("evidence"):
        return "No root-cause candidate stood out in the configured signals."
    top = hypotheses[0]
    line = f"{top['entity']}: {describe_change(top['evidence'][0])}"
    onset = hypothesis_onset(top)
    if onset is None:
        return line
    alert_at = unix_time((report.get("facts") or {}).get("started_at"))
    return f"{line}, from {format_onset(onset, alert_at)}"


CHART_LINK = "chart_link"  # the signed chart URL the planner puts beside a report (see chart_url)


def chart_url(report: Mapping[str, Any], incident_url: str | None) -> str | None:
    """The incident's chart (``GET /api/v1/incidents/{id}/chart.png``), when its report has one: the
    signed link the planner added (``CHART_LINK``) when the API needs a token, else the plain one."""
    if not report.get("chart") or not incident_url:
        return None
    signed = report.get(CHART_LINK)
    return signed if isinstance(signed, str) else incident_url.rstrip("/") + "/chart.png"


def chart_signature(key: str, incident_id: object) -> str:
    """The ``sig`` of an incident's chart link. PagerDuty fetches ``images`` without credentials and a
    person opens a Slack or Grafana link in a browser with none: the link itself carries the right to
    that one chart (an HMAC of its incident id under the API token), and opens nothing else."""
    digest = hmac.new(key.encode(), f"chart:{incident_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def _links(report: Mapping[str, Any], incident_url: str | None) -> list[tuple[str, str]]:
    """The links every sink shows, each through ``safe_link`` (the runbook is alert text; the explore
    link quotes the alert's PromQL)."""
    candidates = []
    hypotheses = report.get("hypotheses") or []
    if hypotheses and hypotheses[0].get("evidence"):
        candidates.append((hypotheses[0]["evidence"][0].get("explore_url"), "Explore the evidence"))
    candidates.append(((report.get("facts") or {}).get("runbook_url"), "Runbook"))
    candidates.append((incident_url, "Incident report"))
    candidates.append((chart_url(report, incident_url), "Chart"))
    links = []
    for url, text in candidates:
        safe = safe_link(url) if isinstance(url, str) else None
        if safe:
            links.append((safe, text))
    return links


def _status_emoji(status: str) -> str:
    return ":large_green_circle:" if status == "resolved" else ":red_circle:"


# Slack's limits, each from its reference page (tests/fakes.py enforces the same ones):
# - a message has at most 50 blocks ("Blocks", docs.slack.dev/reference/block-kit/blocks);
# - a header's plain_text is at most 150 characters (docs.slack.dev/reference/block-kit/blocks/header-block);
# - a section's text is at most 3,000 characters; its fields at most 10, each at most 2,000
#   (api.slack.com/reference/block-kit/blocks#section, now docs.slack.dev/reference/block-kit/blocks/
#   section-block); any text object has 1 to 3,000 (api.slack.com/reference/block-kit/
#   composition-objects#text__fields), a context element's too;
# - chat.postMessage refuses blocks whose text adds up to too much with ``msg_blocks_too_long``. The
#   markdown block's page documents 12,000 characters for all markdown blocks in a payload; Slack's
#   maintainers put the general limit at "12,000 text characters with a buffer for block containers"
#   (github.com/slackapi/bolt-js/issues/2509), and a rejection at 11,341 was reported (bolt-js#2867),
#   so a message here keeps its blocks' text within SLACK_MESSAGE_BUDGET.
# ``msg_blocks_too_long`` and ``invalid_blocks`` are permanent: a message over any limit is lost.
SLACK_MAX_BLOCKS = 50
SLACK_FIELD_LIMIT = 2000
SLACK_MAX_FIELDS = 10
SLACK_MESSAGE_BUDGET = 10_000
_FALLBACK_LIMIT = 1000  # the notification text beside the blocks; the blocks carry the message
# 4 fields of 1,000 + cause 3,000 + links 1,500 + members 1,000 + header 150 < budget
_PARENT_FIELD_LIMIT = 1000
_PARENT_LINKS_LIMIT = 1500
SLACK_MEMBERS_LIMIT = 1000  # the other alert groups of the same fault, listed in the parent
_HEADING_LIMIT = 200
_SECTIONS_PER_MESSAGE = min(  # 3: a heading of at most 220 characters and 3 × 3,000 fit the budget
    (SLACK_MESSAGE_BUDGET - _HEADING_LIMIT - 20) // SLACK_TEXT_LIMIT, SLACK_MAX_BLOCKS - 1
)
# A runaway text must not flood the thread (Slack allows about one message a second per channel):
# past this many messages the last one says how much was left out; the API has the whole report.
SLACK_MAX_REPLY_MESSAGES = 20


def slack_parent(
    incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None
) -> dict[str, Any]:
    """The one parent message of an incident (posted on open, updated in place on resolve). Every
    element is capped (label values and the cause quote alert text of any length), and together they
    stay within ``SLACK_MESSAGE_BUDGET``."""
    facts = report.get("facts") or {}
    status = str(incident["status"])
    title = f"[{status.upper()}] {facts.get('alertname') or incident['title']}"
    service = incident.get("service") or "unknown"
    fields = [
        ("Status", status),
        ("Service", service),
        ("Severity", facts.get("severity") or "none"),
        ("Started", format_stored_time(incident["started_at"]) if incident.get("started_at") else ""),
    ]
    cause = slack_escape(_cause_line(report))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, SLACK_HEADER_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{k}*\n{slack_escape(str(v))}", _PARENT_FIELD_LIMIT)}
                for k, v in fields[:SLACK_MAX_FIELDS]
            ],
        },
        _mrkdwn(_clip(f"*Most likely cause*\n{cause}", SLACK_TEXT_LIMIT)),
    ]
    members = incident.get("members") or []
    if members:
        listed = "\n".join(f"• {slack_escape(str(m))}" for m in members)
        blocks.append(_mrkdwn(_clip(f"*Also in this incident*\n{listed}", SLACK_MEMBERS_LIMIT)))
    links = _slack_links(report, incident_url)
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    fallback = f"{_status_emoji(status)} {slack_escape(title)}: {cause}"
    return {"text": _clip(fallback, _FALLBACK_LIMIT), "blocks": blocks}


def _slack_links(report: Mapping[str, Any], incident_url: str | None) -> str:
    """The links that fit in ``_PARENT_LINKS_LIMIT``, whole: a cut ``<url|text>`` would show as text
    (an explore URL quoting a long PromQL expression can take thousands of characters)."""
    shown: list[str] = []
    for url, text in _links(report, incident_url):
        link = f"<{url}|{slack_escape(text)}>"
        if len(" · ".join([*shown, link])) <= _PARENT_LINKS_LIMIT:
            shown.append(link)
    return " · ".join(shown)


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_replies(heading: str, body: str) -> list[dict[str, Any]]:
    """A thread reply as the messages it takes, in order: each a heading and up to
    ``_SECTIONS_PER_MESSAGE`` sections of at most 3,000 characters, so every message stays within
    Slack's limits and the whole body arrives. Continuations say which part they are ("(2/3)")."""
    title = _clip(slack_escape(heading), _HEADING_LIMIT)
    chunks = split_text(slack_escape(body))
    groups = [
        chunks[i : i + _SECTIONS_PER_MESSAGE] for i in range(0, len(chunks), _SECTIONS_PER_MESSAGE)
    ] or [[]]
    if len(groups) > SLACK_MAX_REPLY_MESSAGES:
        kept, rest = groups[:SLACK_MAX_REPLY_MESSAGES], groups[SLACK_MAX_REPLY_MESSAGES:]
        left_out = len(kept[-1][-1]) + sum(len(chunk) for group in rest for chunk in group)
        note = f"_… and about {left_out:,} more characters: the whole report is in the incident API._"
        groups = [*kept[:-1], [*kept[-1][:-1], note]]
    total = len(groups)
    messages = []
    for number, group in enumerate(groups, 1):
        part = f" ({number}/{total})" if total > 1 else ""
        blocks = [_mrkdwn(f"*{title}*{part}")] + [_mrkdwn(chunk) for chunk in group]
        fallback = f"{title}{part}: {group[0]}" if group else title
        messages.append({"text": _clip(fallback, _FALLBACK_LIMIT), "blocks": blocks})
    return messages


def recurrence_text(similar: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for past in similar:
        cause = past.get("root_cause") or "unknown"
        fixed = f"; fixed by: {past['resolution']}" if past.get("resolution") else ""
        when = format_stored_time(past.get("started_at"))
        lines.append(f"Incident {past['id']} ({when}): root cause {cause}{fixed}")
    return "\n".join(lines)


GRAFANA_TEXT_LIMIT = 2000


def grafana_text(incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None) -> str:
    """The report's summary (its first line names the alert and state), capped and HTML-escaped
    (Grafana renders annotation text as HTML, and the summary quotes alert text), and links back: the
    incident report and, when there is one, its chart."""
    summary = str(report.get("summary") or f"{incident['title']} ({incident['status']})")
    if len(summary) > GRAFANA_TEXT_LIMIT:
        summary = summary[:GRAFANA_TEXT_LIMIT].rsplit("\n", 1)[0] + "\n…"
    candidates = ((incident_url, "incident report"), (chart_url(report, incident_url), "chart"))
    anchors = [_anchor(url, text) for url, text in candidates if url]
    shown = " · ".join(a for a in anchors if a)
    return html.escape(summary, quote=False) + (f"\n{shown}" if shown else "")


def _anchor(url: str, text: str) -> str | None:
    href = safe_link(url)
    return f'<a href="{html.escape(href)}">{text}</a>' if href else None


def incident_key(incident_id: object, install_id: str = "") -> str:
    """How receivers outside the store know an incident: ``<install>-<id>``. Incident ids restart at 1
    in every store, so without the install id two installations sharing a PagerDuty routing key or a
    Grafana org, or one whose volume was wiped, would meet on the same key. No install id: the bare id."""
    return f"{install_id}-{incident_id}" if install_id else str(incident_id)


# Grafana's limits on an annotation's tags (tests/fakes.py enforces both):
# - all tags together, as Grafana estimates their JSON array (each tag's UTF-8 bytes + 2 quotes, a
#   comma between, 2 brackets), at most ``[annotations] tags_length``, 500 by default: else 400
#   "annotations.tag-limit-exceeded" (``validateTagsLength`` in Grafana's
#   pkg/services/annotations/annotationsimpl/xorm_store.go; the setting, grafana/grafana#54754);
# - each tag is stored split at its first ``:`` into a key and a value column of 100 characters
#   (pkg/services/sqlstore/migrations/tag_mig.go): MySQL and PostgreSQL refuse a longer part.
GRAFANA_TAGS_LENGTH = 500
GRAFANA_TAG_PART_LIMIT = 100


def grafana_tags(incident: Mapping[str, Any], report: Mapping[str, Any], install_id: str = "") -> list[str]:
    """``agentic-obs``, ``incident:<install>-<id>`` (what the crash-window search looks for), the alert
    name and the service. The last two are alert text of any length: each is capped to Grafana's
    columns, and together to what is left of its tags_length, the earlier tag first."""
    facts = report.get("facts") or {}
    tags = ["agentic-obs", f"incident:{incident_key(incident['id'], install_id)}"]
    free = [str(facts.get("alertname") or incident["title"])]
    if incident.get("service"):
        free.append(str(incident["service"]))
    left = GRAFANA_TAGS_LENGTH - grafana_tags_length(tags)
    for n, tag in enumerate(free):
        share = left // (len(free) - n) - 3  # a tag costs its bytes + 2 quotes + 1 comma
        capped = _grafana_tag(tag, share)
        if capped:
            tags.append(capped)
            left -= len(capped.encode()) + 3
    return tags


def grafana_tags_length(tags: Sequence[str]) -> int:
    """Grafana's estimate of the tags' length: ``["a","b"]`` in UTF-8 bytes."""
    return 2 + sum(len(t.encode()) + 2 for t in tags) + max(len(tags) - 1, 0)


def _grafana_tag(tag: str, max_bytes: int) -> str:
    key, colon, value = tag.partition(":")
    capped = key[:GRAFANA_TAG_PART_LIMIT] + colon + value[:GRAFANA_TAG_PART_LIMIT]
    return capped.encode()[: max(max_bytes, 0)].decode("utf-8", "ignore")  # never half a character


def pagerduty_event(
    incident: Mapping[str, Any],
    report: Mapping[str, Any],
    action: str,
    incident_url: str | None,
    install_id: str = "",
) -> dict[str, Any]:
    """An Events API v2 body without the routing key (added at delivery, never stored). The dedup key
    names the installation too (``incident_key``); a resolve goes out under the key its trigger
    was sent with, which the sink has recorded (so an incident opened before install ids keeps its
    old key)."""
    dedup_key = f"agentic-obs-{incident_key(incident['id'], install_id)}"
    facts = report.get("facts") or {}
    if action == "resolve":
        # The Events API lists no payload for a resolve, but accepts a complete one (Alertmanager's
        # notifier sends it on every resolve); it carries when the incident resolved.
        when = _pd_time(incident.get("resolved_at")) or _pd_time(facts.get("resolved_at"))
        resolved = f"{incident['title']}: resolved"
        return {
            "event_action": "resolve",
            "dedup_key": dedup_key,
            "payload": _pd_payload(incident, facts, resolved, when),
        }
    summary = f"{incident['title']}: {_cause_line(report)}"
    hypotheses = [
        {"service": h["entity"], "score": h["score"], "evidence": [e["promql"] for e in h["evidence"][:2]]}
        for h in (report.get("hypotheses") or [])[:3]
    ]
    when = _pd_time(incident.get("started_at")) or _pd_time(facts.get("started_at"))
    payload = _pd_payload(incident, facts, summary, when)
    details = {"incident_id": incident["id"], "hypotheses": hypotheses, "reasoner": report.get("reasoner")}
    payload["custom_details"] = _present(details)
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "agentic-observability",
        "payload": payload,
        "links": [{"href": url, "text": text} for url, text in _links(report, incident_url)],
    }
    image = _pd_image(report, incident_url, str(incident["title"]))
    if image:
        event["images"] = [image]
    return event


def _pd_image(report: Mapping[str, Any], incident_url: str | None, title: str) -> dict[str, str] | None:
    """The chart shown in the PagerDuty alert: ``images`` entries are ``{src, href?, alt?}`` and
    ``src`` "must be served via HTTPS" (docs/events-API-v2/02-Trigger-Events.md, "The images
    Property"); over plain http the chart stays a link, or the whole event would be refused."""
    url = chart_url(report, incident_url)
    src = safe_link(url) if url else None
    if not src or not src.lower().startswith("https://"):
        return None
    return {"src": src, "href": src, "alt": f"{title[:200]}: the signals around the incident's start"}


# PagerDuty, "Send an Alert Event" (developer.pagerduty.com/docs/events-api-v2/trigger-events/, in
# github.com/PagerDuty/developer-docs docs/events-API-v2/02-Trigger-Events.md): payload.summary
# (≤ 1024), .source and .severity (critical | error | warning | info) are required; .timestamp is
# "the time at which the emitting tool detected or generated the event" (ISO 8601; PagerDuty stamps
# the receipt time when it is absent); component, group, class and custom_details are optional and
# are left out rather than sent as null.
def _pd_payload(
    incident: Mapping[str, Any], facts: Mapping[str, Any], summary: str, timestamp: str | None
) -> dict[str, Any]:
    return _present(
        {
            "summary": summary[:PAGERDUTY_SUMMARY_LIMIT],
            "source": incident.get("service") or facts.get("alertname") or "agentic-observability",
            "severity": pagerduty_severity(str(facts.get("severity") or "")),
            "timestamp": timestamp,
            "component": incident.get("service"),
            "group": facts.get("alertname"),
        }
    )


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that have a value: an optional key is omitted, never sent as null or empty."""
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def _pd_time(value: object) -> str | None:
    """``value`` when it is an ISO 8601 time (what the incident's times are), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value
