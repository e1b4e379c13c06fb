"""*Approve* and *Dry run* on a proposed remediation (the parent's second row of buttons).

Approve: the person must be among the catalogue entry's ``approvers`` (a Slack user id, or a member of a
listed user group, asked of Slack with ``usergroups.users.list``); otherwise they are told, alone, and
the refusal is audited. A permitted approval commits, in one transaction, the audit entry, the run (an
outbox action whose dedup key is the incident and the catalogue entry, so a second press, a replay or a
retry queues nothing more) and a reply saying who approved what. The run itself (dry run first, then
the action, then its follow-up) is remediation/sink.py's.

Dry run: anyone who can see the message may ask what the action would do; it is run at once
(server-side ``dryRun=All``), audited, and the answer goes to the person alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from slack_sdk.errors import SlackApiError, SlackClientError

from agentic_observability.models import AuditEntry, Incident
from agentic_observability.outbox import messages
from agentic_observability.outbox.messages import slack_escape
from agentic_observability.outbox.plan import plan_thread_note, remediation_run
from agentic_observability.remediation.catalogue import Proposal
from agentic_observability.remediation.guardrails import target_key
from agentic_observability.service.keys import CONFIG, DISPATCHER, METRICS, REMEDIATION, STORE, WORKERS
from agentic_observability.service.slack_interactions import (
    BlockAction,
    BlockActions,
    SlackUser,
    slack_web_client,
    tell_text,
)

log = logging.getLogger(__name__)


async def on_remediation(
    app: web.Application, incident: Incident, press: BlockActions, action: BlockAction
) -> None:
    """A press on Approve or Dry run of one proposal (its name rides in the verb)."""
    parsed = messages.parse_action_id(action.action_id)
    verb, name = messages.parse_verb(parsed[0]) if parsed else ("", "")
    executor = app.get(REMEDIATION)
    if executor is None:
        await tell_text(
            app, press.response_url, "Remediation is off here (`remediation.enabled`): nothing ran."
        )
        return
    proposal = _proposed(incident, name)
    if proposal is None:
        note = f"`{slack_escape(name)}` is not proposed for incident {incident.id} (any more): nothing ran."
        await tell_text(app, press.response_url, note)
        return
    if action.value != messages.proposal_value(proposal.to_dict()):
        # the report changed since the message was drawn (a re-investigation, a group that joined):
        # approving would act on a target the person did not see
        note = (
            f"The proposal `{slack_escape(name)}` changed since that message was drawn (now: "
            f"{slack_escape(proposal.does)}): nothing ran. Press again on the updated message."
        )
        await tell_text(app, press.response_url, note)
        return
    if incident.status == "resolved":
        note = f"Incident {incident.id} resolved meanwhile: `{slack_escape(name)}` was not run."
        await tell_text(app, press.response_url, note)
        return
    if verb == messages.DRY_RUN:
        await _dry_run(app, incident, proposal, press)
    else:
        await _approve(app, incident, proposal, press)


def _proposed(incident: Incident, name: str) -> Proposal | None:
    for proposal in (incident.report or {}).get("remediation") or []:
        if proposal.get("action") == name:
            return Proposal.from_dict(proposal)
    return None


async def _approve(app: web.Application, incident: Incident, proposal: Proposal, press: BlockActions) -> None:
    user = press.user
    entry = app[CONFIG].file.remediation.action(proposal.action)  # who may approve: today's catalogue
    approvers = entry.approvers if entry is not None else ()
    why_not = await _not_permitted(app, user.id, approvers)
    now = time.time()
    if why_not is not None:
        refused = _audit("refused", proposal, f"refused:{uuid.uuid4().hex[:12]}", user, {"text": why_not})
        await app[STORE].record_audit(incident.id, [refused])
        app[METRICS].remediations.labels(proposal.action, "refused").inc()
        await tell_text(
            app, press.response_url, f"You may not approve `{slack_escape(proposal.action)}`: {why_not}."
        )
        return
    key = f"approved:{incident.id}:{proposal.action}:{uuid.uuid4().hex[:12]}"
    approved = _audit("approved", proposal, key, user, {"text": proposal.does})
    run = remediation_run(incident.id, proposal.to_dict(), key, now, user.by)
    note = (
        f":white_check_mark: {messages.slack_person(user.by)} approved *{slack_escape(proposal.does)}*. "
        "A dry run goes first, then the action; the result follows here."
    )
    actions = [
        run,
        *plan_thread_note(
            incident, f"remediation:approved:{proposal.action}", note, app[WORKERS].act_settings
        ),
    ]
    if not await app[STORE].queue_remediation(incident.id, proposal.action, [approved], actions):
        await tell_text(
            app,
            press.response_url,
            f"`{slack_escape(proposal.action)}` was approved already for incident {incident.id} (it is "
            "queued, or it ran): see the thread.",
        )
        return
    app[METRICS].remediations.labels(proposal.action, "approved").inc()
    app[DISPATCHER].wake()


async def _dry_run(app: web.Application, incident: Incident, proposal: Proposal, press: BlockActions) -> None:
    key = f"dryrun:{uuid.uuid4().hex[:12]}"
    outcome = await app[REMEDIATION].dry_run(proposal, key, time.time())
    detail = {"text": outcome.detail, "changes": outcome.changes, "ok": outcome.ok}
    await app[STORE].record_audit(incident.id, [_audit("dry-run", proposal, key, press.user, detail)])
    app[METRICS].remediations.labels(proposal.action, "dry-run").inc()
    mark = ":test_tube:" if outcome.ok else ":x:"
    await tell_text(
        app,
        press.response_url,
        f"{mark} *Dry run* of {slack_escape(proposal.does)}: {slack_escape(outcome.detail)}",
    )


def _audit(
    event: str, proposal: Proposal, key: str, user: SlackUser, detail: Mapping[str, Any]
) -> AuditEntry:
    return AuditEntry(event, proposal.action, key, time.time(), user.by, target_key(proposal), detail)


async def _not_permitted(app: web.Application, user_id: str, approvers: Sequence[str]) -> str | None:
    """None when ``user_id`` may approve: listed, or in a listed user group (S…). Else why not."""
    if user_id in approvers:
        return None
    groups = [a for a in approvers if a.startswith("S")]
    if not approvers:
        return "nobody may approve it (the catalogue entry lists no approvers)"
    for group in groups:
        members = await _group_members(app, group)
        if members is None:
            return f"the members of user group {group} could not be read from Slack; ask someone listed by id"
        if user_id in members:
            return None
    return "you are not among its approvers"


async def _group_members(app: web.Application, group: str) -> set[str] | None:
    token = app[CONFIG].secrets.slack_bot_token
    if token is None:
        return None
    try:
        response = await slack_web_client(app, token.get_secret_value()).usergroups_users_list(
            usergroup=group
        )
    except (SlackApiError, SlackClientError, TimeoutError, OSError) as exc:
        log.warning("slack: usergroups.users.list for %s failed: %s", group, type(exc).__name__)
        return None
    return {str(u) for u in response.get("users") or []}
