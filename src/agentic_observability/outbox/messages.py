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
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from agentic_observability.readable import (
    describe_change,
    format_change,
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
# header 150 + 4 fields of 400 + cause 3,000 + members 1,000 + links 1,500 + feedback 600 + the buttons'
# labels and menu options 500 (see _ACTIONS_TEXT) + what changed before the onset 240 + what the logs
# say 240 and its LogQL link 1,000 = 9,830 < budget (the proposals take theirs from the cause: see
# _REMEDIATION_ROOM). The fields (status, service, severity, start) need far less than 400 but for a
# runaway label value; the Explore link quotes the LogQL (about 570 characters for the default selector).
_PARENT_FIELD_LIMIT = 400
_PARENT_LINKS_LIMIT = 1500
SLACK_MEMBERS_LIMIT = 1000  # the other alert groups of the same fault, listed in the parent
SLACK_FEEDBACK_LIMIT = 600  # what people said through the buttons (or the API), shown under the links
SLACK_CHANGE_LIMIT = 240  # "Changed before the onset": the report's first named change, one line
SLACK_LOGS_LIMIT = 240  # "Logs": the first log signal's error lines and its first new template, one line
SLACK_LOGS_LINK_LIMIT = 1000  # and beside them, when it fits whole, the link to their LogQL in Explore
# Robust units from which a log signal is named: pipeline/logs.py's LOG_SIGNAL_MIN (the outbox may not
# import the pipeline, tests/test_architecture.py; tests/test_messages.py holds the two equal).
LOG_SIGNAL_MIN = 3.0
_HEADING_LIMIT = 200
_SECTIONS_PER_MESSAGE = min(  # 3: a heading of at most 220 characters and 3 × 3,000 fit the budget
    (SLACK_MESSAGE_BUDGET - _HEADING_LIMIT - 20) // SLACK_TEXT_LIMIT, SLACK_MAX_BLOCKS - 1
)
# A runaway text must not flood the thread (Slack allows about one message a second per channel):
# past this many messages the last one says how much was left out; the API has the whole report.
SLACK_MAX_REPLY_MESSAGES = 20


def slack_parent(
    incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None, install_id: str = ""
) -> dict[str, Any]:
    """The one parent message of an incident (posted on open, updated in place on resolve and on
    feedback), ending with its buttons (``slack_actions``). Every element is capped (label values and
    the cause quote alert text of any length), and together they stay within ``SLACK_MESSAGE_BUDGET``."""
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
    proposals = slack_proposals(incident, report)
    cause_room = SLACK_TEXT_LIMIT - (_REMEDIATION_ROOM if proposals else 0)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, SLACK_HEADER_LIMIT)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{k}*\n{slack_escape(str(v))}", _PARENT_FIELD_LIMIT)}
                for k, v in fields[:SLACK_MAX_FIELDS]
            ],
        },
        _mrkdwn(_clip(f"*Most likely cause*\n{cause}", cause_room)),
    ]
    changed = _slack_change(report)
    if changed:
        blocks.append(_context(changed))
    logged = _slack_logs(report)
    if logged:
        blocks.append(_context(logged))
    members = incident.get("members") or []
    if members:
        listed = "\n".join(f"• {slack_escape(str(m))}" for m in members)
        blocks.append(_mrkdwn(_clip(f"*Also in this incident*\n{listed}", SLACK_MEMBERS_LIMIT)))
    links = _slack_links(report, incident_url)
    if links:
        blocks.append(_context(links))
    feedback = feedback_line(incident.get("feedback"))
    if feedback:
        blocks.append(_context(feedback))
    blocks.append(slack_actions(incident, report, install_id))
    if proposals:
        blocks += remediation_blocks(incident, proposals, install_id)
    fallback = f"{_status_emoji(status)} {slack_escape(title)}: {cause}"
    return {"text": _clip(fallback, _FALLBACK_LIMIT), "blocks": blocks}


def named_change(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first change the report's summary names (``line``: "carts: image v1.4.2 → v1.4.3 at
    09:41:00 UTC, 2 min before the onset"), or None."""
    return next((c for c in report.get("changes") or [] if isinstance(c, Mapping) and c.get("line")), None)


def _slack_change(report: Mapping[str, Any]) -> str | None:
    """ "*Changed before the onset* carts: image … · <link|details>", within ``SLACK_CHANGE_LIMIT``; the
    link only when it fits whole."""
    change = named_change(report)
    if change is None:
        return None
    text = _clip(f"*Changed before the onset* {slack_escape(str(change['line']))}", SLACK_CHANGE_LIMIT)
    return text + _link(change.get("line_link"), "details", SLACK_CHANGE_LIMIT - len(text))


def strong_log_signal(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The report's first log signal (best first: ``logs.signals``, pipeline/logs.py) when its
    error-like lines rose at least ``LOG_SIGNAL_MIN`` robust units, or None (no log evidence, or
    nothing that moved enough to name)."""
    logs = report.get("logs")
    signals = logs.get("signals") if isinstance(logs, Mapping) else None
    first = signals[0] if isinstance(signals, list | tuple) and signals else None
    if not isinstance(first, Mapping):
        return None
    try:
        deviation = float(first.get("deviation") or 0)
    except (TypeError, ValueError):
        return None
    return first if deviation >= LOG_SIGNAL_MIN else None  # NaN is not


def _new_template(report: Mapping[str, Any], entity: object) -> str | None:
    """The first (most frequent) new log template of ``entity``; log text, untrusted."""
    templates = (report.get("logs") or {}).get("templates") or []
    for template in templates:
        if isinstance(template, Mapping) and template.get("entity") == entity and template.get("template"):
            return str(template["template"])
    return None


_TEMPLATE_MIN = 20  # characters of a template worth showing; with less room it is left out


def _slack_logs(report: Mapping[str, Any]) -> str | None:
    """ "*Logs* carts: error-like lines 0 → 42 a minute · <link|LogQL> · new: "…"": the words within
    ``SLACK_LOGS_LIMIT`` (the entity's first new template, log text, escaped and clipped to the room
    the rest leaves), the link within ``SLACK_LOGS_LINK_LIMIT`` and only whole; None without a strong
    log signal."""
    signal = strong_log_signal(report)
    if signal is None:
        return None
    try:
        change = format_change(float(signal["baseline"]), float(signal["incident"]), None)
    except (KeyError, TypeError, ValueError):
        return None
    entity = signal.get("entity")
    text = _clip(f"*Logs* {slack_escape(str(entity))}: error-like lines {change} a minute", SLACK_LOGS_LIMIT)
    template = _new_template(report, entity)
    room = SLACK_LOGS_LIMIT - len(text) - len(' · new: ""')
    new = f' · new: "{_clip(slack_escape(template), room)}"' if template and room >= _TEMPLATE_MIN else ""
    return text + _link(signal.get("explore_url"), "LogQL", SLACK_LOGS_LINK_LIMIT) + new


def _link(url: object, label: str, room: int) -> str:
    """`` · <url|label>`` when the URL passes ``safe_link`` and the whole of it fits in ``room`` (a
    cut ``<url|text>`` would show as text); else nothing."""
    href = safe_link(url) if isinstance(url, str) else None
    link = f" · <{href}|{label}>" if href else ""
    return link if len(link) <= room else ""


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


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


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


# -- Slack interactivity: the parent's buttons, the feedback it shows, the forms they open -------------
# Each element names its verb, this installation and the incident in its action_id (a modal, in its
# callback_id): ``agentic_obs:<verb>:<install>:<incident>``. Incident ids restart at 1 in every store, so
# a press on a message of a wiped store or of another installation must not land on today's incident of
# the same id: the handler (service/slack_interactions.py) refuses another install's.
# Block Kit's limits for what is used here (tests/fakes.py enforces them):
# - an actions block has at most 25 elements (docs.slack.dev/reference/block-kit/blocks/actions-block);
# - a button: a plain_text of at most 75 characters, an action_id of at most 255, a value of at most
#   2,000, style primary or danger (.../block-kit/block-elements/button-element);
# - a static_select: a placeholder of at most 150, at most 100 options, each a plain_text of at most 75
#   and a value of at most 150 (.../block-elements/select-menu-element, .../composition-objects/
#   option-object);
# - a modal: title, submit and close of at most 24 characters, a callback_id of at most 255,
#   private_metadata of at most 3,000 (docs.slack.dev/reference/views/modal-views); an input's label at
#   most 2,000, a plain_text_input's max_length at most 3,000 (.../block-elements/plain-text-input-element).
ACTION_PREFIX = "agentic_obs"
CONFIRM, WRONG, RESOLUTION, REINVESTIGATE = "confirm", "wrong", "resolution", "reinvestigate"
OTHER_CAUSE = "other_cause"  # the modal that asks what the cause was, when it is not in the menu
OTHER_OPTION = "other"  # the Wrong cause menu's last option
ENTITY_OPTION = "entity:"  # how the menu's other options' values start
MODAL_INPUT = "answer"  # the block_id and action_id of a modal's one text input
SLACK_BUTTON_VALUE_LIMIT = 2000
SLACK_OPTION_TEXT_LIMIT = 75
SLACK_OPTION_VALUE_LIMIT = 150
SLACK_MODAL_TITLE_LIMIT = 24
SLACK_METADATA_LIMIT = 3000
_CAUSE_OPTIONS = 5  # the ranked services offered as the real cause (a report keeps at most 5)
_ACTIONS_TEXT = 500  # labels (< 60), placeholder, 5 options of 75 and "Other…": what the budget counts
_SLACK_USER = re.compile(r"slack:([UW][A-Z0-9]{2,40})\b")
_BY_LIMIT = 80


def action_id(verb: str, install_id: str, incident_id: object) -> str:
    return f"{ACTION_PREFIX}:{verb}:{install_id}:{incident_id}"


def parse_action_id(value: str) -> tuple[str, str, str] | None:
    """``(verb, install id, incident id)`` of one of our action or callback ids, else None."""
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != ACTION_PREFIX:
        return None
    _, verb, install, incident = parts
    return (verb, install, incident) if incident.isascii() and incident.isdigit() else None


def top_entity(report: Mapping[str, Any]) -> str | None:
    """The entity ranked first (what Confirm cause confirms), or None when nothing was ranked."""
    hypotheses = report.get("hypotheses") or []
    return str(hypotheses[0]["entity"]) if hypotheses else None


def slack_actions(incident: Mapping[str, Any], report: Mapping[str, Any], install_id: str) -> dict[str, Any]:
    """The parent's buttons: Confirm cause (the top ranked entity; left out when nothing was ranked),
    Wrong cause (a menu of the ranked entities and "Other…"), Resolved by… (a modal for the fix) and,
    while the incident fires, Re-investigate."""
    incident_id = incident["id"]
    elements = []
    top = top_entity(report)
    if top is not None:
        value = _confirm_value(incident_id, install_id, top)
        elements.append(
            _button("Confirm cause", action_id(CONFIRM, install_id, incident_id), value, "primary")
        )
    elements.append(_cause_menu(action_id(WRONG, install_id, incident_id), report))
    elements.append(_button("Resolved by…", action_id(RESOLUTION, install_id, incident_id)))
    if incident.get("status") != "resolved":
        elements.append(_button("Re-investigate", action_id(REINVESTIGATE, install_id, incident_id)))
    return {"type": "actions", "elements": elements}


# -- remediation: proposed actions on the parent, each with Approve and Dry run (issue 22) --------------
# At most _PROPOSALS_SHOWN, while the incident fires. The cause gives up _REMEDIATION_ROOM characters
# when there are some: the proposals' lines (3 × 200), their buttons' labels (6 × 75) and the confirm
# dialogs (3 × 330) fit in it, and the parent stays within SLACK_MESSAGE_BUDGET.
APPROVE, DRY_RUN = "approve", "dryrun"
_PROPOSALS_SHOWN = 3
_PROPOSAL_LINE = 200
_REMEDIATION_ROOM = 2000
SLACK_CONFIRM_TITLE_LIMIT, SLACK_CONFIRM_TEXT_LIMIT, SLACK_CONFIRM_BUTTON_LIMIT = 100, 300, 30


def slack_proposals(incident: Mapping[str, Any], report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The remediation proposals the parent offers: none once the incident resolved."""
    if incident.get("status") == "resolved":
        return []
    return list(report.get("remediation") or [])[:_PROPOSALS_SHOWN]


def remediation_blocks(
    incident: Mapping[str, Any], proposals: Sequence[Mapping[str, Any]], install_id: str
) -> list[dict[str, Any]]:
    """What each proposal will do, then an Approve (with Slack's confirmation dialog) and a Dry run
    button per proposal. The catalogue entry's name rides in the verb (``approve.<name>``)."""
    lines = []
    for proposal in proposals:
        auto = " _(runs automatically for this severity)_" if proposal.get("auto") else ""
        if proposal.get("suggested_by") == "model":
            auto = " _(the model's suggestion)_"
        lines.append(_clip(f"• {slack_escape(str(proposal.get('does', '')))}{auto}", _PROPOSAL_LINE))
    elements = []
    for proposal in proposals:
        name = str(proposal.get("action", ""))
        does = str(proposal.get("does", ""))
        approve = _button(
            f"Approve: {name}"[:SLACK_OPTION_TEXT_LIMIT],
            action_id(f"{APPROVE}.{name}", install_id, incident["id"]),
            proposal_value(proposal),
            style="danger",
        )
        approve["confirm"] = {
            "title": _plain(f"Run {name}?"[:SLACK_CONFIRM_TITLE_LIMIT]),
            "text": _plain(
                _clip(
                    f"{_plain_safe(does)}. A dry run goes first; the result follows in the thread.",
                    SLACK_CONFIRM_TEXT_LIMIT,
                )
            ),
            "confirm": _plain("Run it"),
            "deny": _plain("Cancel"),
        }
        elements.append(approve)
        elements.append(
            _button(
                f"Dry run: {name}"[:SLACK_OPTION_TEXT_LIMIT],
                action_id(f"{DRY_RUN}.{name}", install_id, incident["id"]),
                proposal_value(proposal),
            )
        )
    return [
        _mrkdwn(
            "*Proposed remediation* (a person approves; nothing runs on the model's word)\n"
            + "\n".join(lines)
        ),
        {"type": "actions", "elements": elements},
    ]


def proposal_value(proposal: Mapping[str, Any]) -> str:
    """What an Approve button carries: the target the person saw, so an approval of a proposal that
    changed since (another workload after a re-investigation) is refused, not run on the new one."""
    return json.dumps(proposal.get("target") or {}, sort_keys=True)[:SLACK_BUTTON_VALUE_LIMIT]


def _plain_safe(text: str) -> str:
    """Text for a plain_text field, where Slack shows escapes literally: no angle brackets, so no
    ``<!channel>`` can even look like a mention."""
    return text.replace("<", "‹").replace(">", "›")


def parse_verb(verb: str) -> tuple[str, str]:
    """``approve.carts-restart`` -> (``approve``, ``carts-restart``); a bare verb -> (verb, "")."""
    base, _, argument = verb.partition(".")
    return base, argument


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def _button(text: str, action: str, value: str | None = None, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": _plain(text), "action_id": action}
    if value is not None:
        button["value"] = value
    if style is not None:
        button["style"] = style
    return button


def _confirm_value(incident_id: object, install_id: str, cause: str) -> str:
    """The incident and the cause the person saw. A cause too long for a button's value is left out:
    the handler then confirms the report's top entity."""
    value = {"incident": str(incident_id), "install": install_id, "cause": cause}
    text = json.dumps(value)
    if len(text) <= SLACK_BUTTON_VALUE_LIMIT:
        return text
    return json.dumps({k: v for k, v in value.items() if k != "cause"})


def _cause_menu(action: str, report: Mapping[str, Any]) -> dict[str, Any]:
    """The ranked entities, best first, then "Other…". An entity whose name does not fit an option's
    value is left out (it can still be typed after "Other…")."""
    ranked = dict.fromkeys(str(h["entity"]) for h in report.get("hypotheses") or [] if h.get("entity"))
    fitting = [e for e in ranked if len(ENTITY_OPTION + e) <= SLACK_OPTION_VALUE_LIMIT]
    options = [_option(e, ENTITY_OPTION + e) for e in fitting[:_CAUSE_OPTIONS]]
    options.append(_option("Other…", OTHER_OPTION))
    return {
        "type": "static_select",
        "action_id": action,
        "placeholder": _plain("Wrong cause…"),
        "options": options,
    }


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(_clip(text, SLACK_OPTION_TEXT_LIMIT)), "value": value}


def slack_person(by: object) -> str:
    """Who gave feedback, in mrkdwn: a Slack user (``slack:U123 (name)``) as a mention, anyone else (an
    MCP client, an API caller who said) as escaped text."""
    text = str(by or "")
    found = _SLACK_USER.match(text)
    return f"<@{found.group(1)}>" if found else _clip(slack_escape(text), _BY_LIMIT)


def feedback_line(feedback: Mapping[str, Any] | None, room: int = SLACK_FEEDBACK_LIMIT) -> str | None:
    """Feedback as one mrkdwn line: "Feedback from <@U1>: Cause confirmed: *carts* · Fix: rolled back".
    None when there is none. Its text is people's, escaped; the fix gets what room the rest leaves
    (it is last, so a cut never reaches a mention)."""
    if not feedback:
        return None
    phrases = _cause_phrases(feedback)
    who = slack_person(feedback.get("by")) if feedback.get("by") else ""
    line = (f"Feedback from {who}: " if who else "Feedback: ") + " · ".join(phrases)
    fix = feedback.get("resolution")
    if fix:
        line += (" · " if phrases else "") + "Fix: " + slack_escape(str(fix))
    return _clip(line, room) if phrases or fix else None


def _cause_phrases(feedback: Mapping[str, Any]) -> list[str]:
    cause, correct = feedback.get("root_cause"), feedback.get("correct")
    named = f"*{_clip(slack_escape(str(cause)), 250)}*" if cause else ""
    if correct is True:
        return [f"Cause confirmed: {named}" if cause else "Cause confirmed"]
    if correct is False:
        return [f"The ranked cause was wrong; it was {named}" if cause else "The ranked cause was wrong"]
    return [f"Cause: {named}"] if cause else []


def slack_note(text: str) -> dict[str, Any]:
    """A short message of mrkdwn already made safe (escaped text, mentions made here): a thread reply
    or an answer to a button or a command."""
    return {"text": _clip(text, _FALLBACK_LIMIT), "blocks": [_mrkdwn(_clip(text, SLACK_TEXT_LIMIT))]}


def slack_modal(
    title: str, callback_id: str, prompt: str, label: str, max_length: int, metadata: str = ""
) -> dict[str, Any]:
    """A modal with one required text input (``MODAL_INPUT``), for views.open. ``prompt`` is mrkdwn
    already made safe; ``metadata`` comes back with the submission (at most 3,000 characters)."""
    text_input = {
        "type": "plain_text_input",
        "action_id": MODAL_INPUT,
        "multiline": max_length > 200,
        "max_length": max_length,
    }
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": _plain(title[:SLACK_MODAL_TITLE_LIMIT]),
        "submit": _plain("Save"),
        "close": _plain("Cancel"),
        "private_metadata": metadata[:SLACK_METADATA_LIMIT],
        "blocks": [
            _mrkdwn(_clip(prompt, SLACK_TEXT_LIMIT)),
            {"type": "input", "block_id": MODAL_INPUT, "label": _plain(label), "element": text_input},
        ],
    }


def slack_summary(
    incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None
) -> dict[str, Any]:
    """An incident in a few lines, as ``/agentic-obs incident <id>`` answers in the channel: status,
    title, service, start, the most likely cause, feedback and the links."""
    facts = report.get("facts") or {}
    status = str(incident["status"])
    title = slack_escape(str(facts.get("alertname") or incident["title"]))
    started = format_stored_time(incident["started_at"]) if incident.get("started_at") else "unknown"
    lines = [
        _clip(f"{_status_emoji(status)} *Incident {incident['id']}* ({status}): {title}", 400),
        _clip(
            f"*Service* {slack_escape(str(incident.get('service') or 'unknown'))} · *Started* {started}", 400
        ),
        _clip(f"*Most likely cause* {slack_escape(_cause_line(report))}", 2000),
    ]
    blocks = [_mrkdwn("\n".join(lines))]
    feedback = feedback_line(incident.get("feedback"))
    if feedback:
        blocks.append(_context(feedback))
    links = _slack_links(report, incident_url)
    if links:
        blocks.append(_context(links))
    return {"text": _clip(lines[0], _FALLBACK_LIMIT), "blocks": blocks}


GRAFANA_TEXT_LIMIT = 2000


def grafana_text(incident: Mapping[str, Any], report: Mapping[str, Any], incident_url: str | None) -> str:
    """The report's summary (its first line names the alert and state; a change before the onset,
    "What changed: …", is among the next), capped and HTML-escaped (Grafana renders annotation text
    as HTML, and the summary quotes alert text), and links back: the incident report, its chart when
    there is one, the change's own link (a pipeline run, an Argo CD app) when it has one, and the
    strong log signal's Explore link (its LogQL) when there is one."""
    summary = str(report.get("summary") or f"{incident['title']} ({incident['status']})")
    change = named_change(report)
    logged = strong_log_signal(report)
    if len(summary) > GRAFANA_TEXT_LIMIT:
        summary = summary[:GRAFANA_TEXT_LIMIT].rsplit("\n", 1)[0] + "\n…"
    changed_link = change.get("line_link") if change is not None else None
    logs_link = logged.get("explore_url") if logged is not None else None
    candidates = (
        (incident_url, "incident report"),
        (chart_url(report, incident_url), "chart"),
        (changed_link, "change"),
        (logs_link, "logs"),
    )
    anchors = [_anchor(url, text) for url, text in candidates if isinstance(url, str) and url]
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
