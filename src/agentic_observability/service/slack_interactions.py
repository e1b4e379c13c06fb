"""What a press on a parent message's buttons and a modal's submission do. The route
(``service/routes/slack.py``) has verified and acknowledged them; this runs after Slack got its answer.

Feedback goes through ``service.feedback.submit_feedback``, the one feedback path: in the commit that
stores it, the outbox is given the parent's update (it shows the feedback) and a reply saying who said
what, so both go exactly once, retried and rate-limited like every Slack message, even if Slack is down
for a while or the service restarts. *Re-investigate* queues a new analysis of the incident in the
store (``Store.queue_job``), with a reply saying who asked; the new report then updates the parent and
the annotation and goes to the thread (``outbox.plan.plan_reinvestigated``).

A press that cannot be acted on (another installation's button, an incident pruned since, a resolved
one to re-investigate) is answered to the person alone, through Slack's ``response_url``, never with an
error.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from agentic_observability.models import Incident
from agentic_observability.outbox import messages
from agentic_observability.outbox.messages import slack_escape
from agentic_observability.outbox.plan import plan_thread_note
from agentic_observability.pipeline import investigate
from agentic_observability.readable import describe_change, format_duration, format_time
from agentic_observability.service.feedback import submit_feedback
from agentic_observability.service.keys import (
    ANALYZE_PROMETHEUS,
    CONFIG,
    DISPATCHER,
    HTTP_SESSION,
    STORE,
    WORKERS,
)
from agentic_observability.service.routes.analyze import analyze_slot, busy_detail, change_source
from agentic_observability.service.workers import REINVESTIGATE

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 3  # a parent update or a reply, tried this often (the sink's guard does not retry)
ROOT_CAUSE_LIMIT, RESOLUTION_LIMIT = 200, 2000  # as POST /api/v1/incidents/{id}/feedback takes them
NOT_CONFIGURED = (
    "Investigation is not configured here: the service's config has no `investigation.signals` to rank."
)


# -- what Slack sends (the parts used; Slack adds more, which is ignored) ------------------------------


class SlackUser(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    username: str = Field("", max_length=200)
    name: str = Field("", max_length=200)

    @property
    def by(self) -> str:
        """How feedback records who gave it: ``slack:<user id> (<name>)``; the parent mentions the id."""
        name = self.username or self.name
        return f"slack:{self.id}" + (f" ({name})" if name else "")


class SelectedOption(BaseModel):
    value: str = Field(max_length=200)


class BlockAction(BaseModel):
    action_id: str = Field(max_length=300)
    value: str | None = Field(None, max_length=3000)
    selected_option: SelectedOption | None = None


class BlockActions(BaseModel):
    """A press on a button or a choice in a menu (docs.slack.dev/reference/interaction-payloads/
    block_actions-payload)."""

    type: Literal["block_actions"]
    user: SlackUser
    actions: list[BlockAction] = Field(min_length=1)
    trigger_id: str = ""  # opens a modal, for 3 seconds
    response_url: str | None = None  # answers the person (30 minutes, 5 times)


class InputValue(BaseModel):
    value: str | None = None


class ViewState(BaseModel):
    values: dict[str, dict[str, InputValue]] = {}


class SubmittedView(BaseModel):
    callback_id: str = Field("", max_length=300)
    private_metadata: str = Field("", max_length=3000)
    state: ViewState = ViewState()


class ViewSubmission(BaseModel):
    """A modal's Save (docs.slack.dev/reference/interaction-payloads/view-interactions-payload)."""

    type: Literal["view_submission"]
    user: SlackUser
    view: SubmittedView


# -- answering -----------------------------------------------------------------------------------------


def trusted_response_url(url: str | None, api_url: str) -> bool:
    """Slack's (``https://hooks.slack.com/…``), or on the configured Slack API's host (a Slack-compatible
    server, a test's fake): a signed payload's URL, but the service posts to no other host."""
    if not url:
        return False
    parts, api = urlsplit(url), urlsplit(api_url)
    if (parts.scheme, parts.netloc) == (api.scheme, api.netloc):
        return True
    host = parts.hostname or ""
    return parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))


async def tell(
    app: web.Application,
    response_url: str | None,
    message: Mapping[str, Any],
    in_channel: bool = False,
    keep_original: bool = True,
) -> None:
    """Answer through ``response_url``: to the person alone, or (``in_channel``) in the channel.
    ``keep_original``: the message pressed stays (Slack could otherwise replace it with the answer)."""
    config = app[CONFIG].file
    if not trusted_response_url(response_url, str(config.actions.slack.api_url)):
        log.warning("slack: no usable response_url to answer with; the answer is dropped")
        return
    body = {**message, "response_type": "in_channel" if in_channel else "ephemeral"}
    if keep_original:
        body["replace_original"] = False
    client = AsyncWebhookClient(
        str(response_url), timeout=int(config.actions.timeout), session=app[HTTP_SESSION]
    )
    try:
        response = await client.send_dict(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("slack: answering through response_url failed: %s", type(exc).__name__)
        return
    if response.status_code != 200:
        log.warning(
            "slack: response_url answered HTTP %d: %s", response.status_code, str(response.body)[:200]
        )


async def tell_text(app: web.Application, response_url: str | None, text: str) -> None:
    await tell(app, response_url, messages.slack_note(text))


# -- presses ---------------------------------------------------------------------------------------------


def not_ours(what: str = "button") -> str:
    return (
        f"This {what} belongs to another agentic-obs installation (or to one whose data was reset since): "
        "nothing was changed."
    )


def gone(incident_id: str) -> str:
    return (
        f"Incident {incident_id} no longer exists here (incidents are pruned after `storage.retention`): "
        "nothing was changed."
    )


async def on_press(app: web.Application, press: BlockActions) -> None:
    """One press (Slack sends one action per payload): find its incident, then do what its verb says."""
    action = press.actions[0]
    parsed = messages.parse_action_id(action.action_id)
    handler = PRESSES.get(messages.parse_verb(parsed[0])[0]) if parsed else None
    if parsed is None or handler is None:
        log.info("slack: ignoring an action that is not ours: %.80s", action.action_id)
        return
    _, install, incident_id = parsed
    if install != app[WORKERS].act_settings.install_id:
        await tell_text(app, press.response_url, not_ours())
        return
    incident = await app[STORE].get_incident(incident_id)
    if incident is None:
        await tell_text(app, press.response_url, gone(incident_id))
        return
    await handler(app, incident, press, action)


async def _confirm(
    app: web.Application, incident: Incident, press: BlockActions, action: BlockAction
) -> None:
    """The cause the person saw (the button's value), else the report's top entity."""
    cause = _shown_cause(action.value) or messages.top_entity(incident.report or {})
    if cause is None:
        note = f"Incident {incident.id} has no ranked cause to confirm: pick *Other…* under *Wrong cause*."
        await tell_text(app, press.response_url, note)
        return
    given = {"correct": True, "root_cause": cause[:ROOT_CAUSE_LIMIT]}
    await give_feedback(app, incident, given, press.user, press.response_url)


def _shown_cause(value: str | None) -> str | None:
    try:
        cause = json.loads(value or "{}").get("cause")
    except (ValueError, AttributeError):
        return None
    return cause if isinstance(cause, str) and cause else None


async def _wrong(app: web.Application, incident: Incident, press: BlockActions, action: BlockAction) -> None:
    chosen = action.selected_option.value if action.selected_option else ""
    if chosen.startswith(messages.ENTITY_OPTION):
        cause = chosen.removeprefix(messages.ENTITY_OPTION)[:ROOT_CAUSE_LIMIT]
        await give_feedback(
            app, incident, {"correct": False, "root_cause": cause}, press.user, press.response_url
        )
    elif chosen == messages.OTHER_OPTION:
        await open_modal(app, incident, press, messages.OTHER_CAUSE)


async def _resolution(
    app: web.Application, incident: Incident, press: BlockActions, action: BlockAction
) -> None:
    await open_modal(app, incident, press, messages.RESOLUTION)


async def _reinvestigate(
    app: web.Application, incident: Incident, press: BlockActions, action: BlockAction
) -> None:
    """A new analysis of the incident (of the whole fault, when it is one), queued in the store with a
    reply saying who asked; a press while one is under way queues nothing more."""
    root_id = incident.parent_id or incident.id  # the fault's root speaks for its members
    asked = (
        f":mag: {messages.slack_person(press.user.by)} asked to re-investigate: the new report follows here."
    )
    key = f"reinvestigate-asked:{uuid.uuid4().hex[:12]}"
    root = incident if root_id == incident.id else await app[STORE].get_incident(root_id)
    notes = plan_thread_note(root, key, asked, app[WORKERS].act_settings) if root else []
    queued = await app[STORE].queue_job(root_id, REINVESTIGATE, notes)
    if queued is None:
        await tell_text(app, press.response_url, _not_open(root or incident))
        return
    job, new = queued
    if new:
        app[WORKERS].run_soon(job)
        app[DISPATCHER].wake()
    if not new or not notes:  # nobody in the thread hears of it: the person who pressed does
        what = "being analysed already" if not new else "being analysed again"
        await tell_text(app, press.response_url, f"Incident {root_id} is {what}: the new report follows.")


def _not_open(incident: Incident) -> str:
    if incident.status != "resolved":
        return gone(incident.id)
    when = format_time(incident.resolved_at, with_date=True) if incident.resolved_at else "some time ago"
    return (
        f"Incident {incident.id} resolved at {when}: there is nothing to re-investigate. "
        f"`/agentic-obs incident {incident.id}` shows its report."
    )


async def _remediation(
    app: web.Application, incident: Incident, press: BlockActions, action: BlockAction
) -> None:
    # Imported here: remediation_presses builds on this module's payloads and answers.
    from agentic_observability.service.remediation_presses import on_remediation

    await on_remediation(app, incident, press, action)


Press = Callable[[web.Application, Incident, BlockActions, BlockAction], Awaitable[None]]
PRESSES: dict[str, Press] = {  # by the verb before any ".argument" (approve.<catalogue entry>)
    messages.CONFIRM: _confirm,
    messages.WRONG: _wrong,
    messages.RESOLUTION: _resolution,
    messages.REINVESTIGATE: _reinvestigate,
    messages.APPROVE: _remediation,
    messages.DRY_RUN: _remediation,
}


async def give_feedback(
    app: web.Application, incident: Incident, given: dict[str, Any], user: SlackUser, response_url: str | None
) -> None:
    """Store it by the one feedback path (which queues the parent's update and the thread's reply);
    the person hears it was saved when the incident has no Slack thread to show it."""
    said = {**given, "by": user.by}
    done = await submit_feedback(app, incident.id, said)
    if done is None:
        await tell_text(app, response_url, gone(incident.id))
        return
    if not await app[STORE].action_refs("slack", [incident.id]):
        note = messages.feedback_line(said, room=messages.SLACK_TEXT_LIMIT - 10)
        await tell_text(app, response_url, f"Saved. {note}")


# -- modals ---------------------------------------------------------------------------------------------

_MODALS = {  # verb: title, question, input label, longest answer
    messages.RESOLUTION: ("Resolved by…", "What fixed", "The fix", RESOLUTION_LIMIT),
    messages.OTHER_CAUSE: (
        "What caused it?",
        "The ranked cause was wrong. What caused",
        "The cause",
        ROOT_CAUSE_LIMIT,
    ),
}


async def open_modal(app: web.Application, incident: Incident, press: BlockActions, verb: str) -> None:
    """views.open with the bot token, within the 3 seconds the trigger_id lives."""
    token = app[CONFIG].secrets.slack_bot_token
    if token is None or not press.trigger_id:
        api = f"POST /api/v1/incidents/{incident.id}/feedback"
        note = f"A form needs the bot token (SLACK_BOT_TOKEN); meanwhile {api} takes the answer."
        await tell_text(app, press.response_url, note)
        return
    title, question, label, longest = _MODALS[verb]
    prompt = f"{question} *incident {incident.id}* ({slack_escape(incident.title[:200])})?"
    metadata = json.dumps({"response_url": press.response_url}) if press.response_url else ""
    callback = messages.action_id(verb, app[WORKERS].act_settings.install_id, incident.id)
    view = messages.slack_modal(title, callback, prompt, label, longest, metadata)
    try:
        await slack_web_client(app, token.get_secret_value()).views_open(
            trigger_id=press.trigger_id, view=view
        )
    except SlackApiError as exc:
        await tell_text(
            app, press.response_url, f"The form did not open ({exc.response.get('error')}): press again."
        )
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        await tell_text(
            app, press.response_url, f"The form did not open ({type(exc).__name__}): press again."
        )


def slack_web_client(app: web.Application, token: str) -> AsyncWebClient:
    """Slack's Web API (or the configured Slack-compatible server) with the bot token, the app's
    timeout and HTTP session."""
    config = app[CONFIG].file.actions
    return AsyncWebClient(
        token=token,
        base_url=str(config.slack.api_url).rstrip("/") + "/",
        timeout=int(config.timeout),
        session=app[HTTP_SESSION],
    )


@dataclass(frozen=True)
class Answer:
    """A modal's answer, checked before Slack got its response: what the work after it needs."""

    incident: Incident
    given: dict[str, Any]
    user: SlackUser
    response_url: str | None


async def check_submission(app: web.Application, submission: ViewSubmission) -> Answer | dict[str, Any]:
    """The answer, or what Slack is to show in the modal instead (it stays open). Done before the
    response (Slack waits 3 seconds for it; a store read is quick), so a vanished incident is said
    there, where the person is."""
    parsed = messages.parse_action_id(submission.view.callback_id)
    if parsed is None or parsed[0] not in _MODALS:
        return {}  # not ours: closed, nothing done
    verb, install, incident_id = parsed
    if install != app[WORKERS].act_settings.install_id:
        return _modal_error(not_ours("form"))
    incident = await app[STORE].get_incident(incident_id)
    if incident is None:
        return _modal_error(gone(incident_id))
    typed = submission.view.state.values.get(messages.MODAL_INPUT, {}).get(messages.MODAL_INPUT)
    text = (typed.value if typed else None) or ""
    if not text.strip():
        return _modal_error("Write what it was, or press Cancel.")
    if verb == messages.RESOLUTION:
        given: dict[str, Any] = {"resolution": text.strip()[:RESOLUTION_LIMIT]}
    else:
        given = {"correct": False, "root_cause": text.strip()[:ROOT_CAUSE_LIMIT]}
    return Answer(incident, given, submission.user, _response_url(submission.view.private_metadata))


def _modal_error(text: str) -> dict[str, Any]:
    return {"response_action": "errors", "errors": {messages.MODAL_INPUT: text}}


def _response_url(metadata: str) -> str | None:
    """The press's response_url, kept in the modal's private_metadata (a submission carries none)."""
    try:
        url = json.loads(metadata or "{}").get("response_url")
    except (ValueError, AttributeError):
        return None
    return url if isinstance(url, str) else None


async def on_answer(app: web.Application, answer: Answer) -> None:
    await give_feedback(app, answer.incident, answer.given, answer.user, answer.response_url)


# -- the signals of one service now (Re-investigate, /agentic-obs investigate) ---------------------------


async def signals_now(app: web.Application, service: str) -> str:
    """How ``service`` ranks among the configured signals over the last ``investigation.after``
    against the baseline before it, with the evidence: mrkdwn, made safe here."""
    config = app[CONFIG].file
    settings = config.investigation
    if not settings.signals:
        return NOT_CONFIGURED
    now = time.time()
    probe = Incident("slack", "", "slack", "firing", "", {}, now - settings.after, None)
    source = investigate.with_explore_links(app[ANALYZE_PROMETHEUS], config.actions.grafana.url)
    slot = analyze_slot(app)  # the ad-hoc queries' slots and client: never the incident path's breaker
    if slot is None:
        return f"Busy: {busy_detail(app)}. Try again in a moment."
    async with slot:
        ranked, problems = await investigate.root_cause_hypotheses(
            probe, source, settings, now, changes=change_source(app)
        )
    window = (
        f"the last {format_duration(settings.after)} against the {format_duration(settings.baseline)} before"
    )
    return _ranked_text(service, ranked, window, problems)


def _ranked_text(service: str, ranked: Sequence[Mapping[str, Any]], window: str, problems: list[str]) -> str:
    name = slack_escape(service)
    mine = next((h for h in ranked if h.get("entity") == service), None)
    if mine is None:
        first = ", ".join(slack_escape(str(h["entity"])) for h in ranked[:3])
        lines = [f"Nothing of *{name}* ranks among what moved most over {window}."]
        lines += [f"Ranked first: {first}."] if first else []
    else:
        lines = [f"*{name}* ranks #{mine['rank']} (score {mine['score']:.2f}) over {window}:"]
        lines += [f"• {_evidence_line(e)}" for e in mine.get("evidence", [])[:5]]
    if problems:
        lines.append(f"_Not read: {slack_escape('; '.join(problems)[:500])}_")
    return "\n".join(lines)


def _evidence_line(evidence: Mapping[str, Any]) -> str:
    link = messages.safe_link(str(evidence.get("explore_url") or ""))
    return slack_escape(describe_change(evidence)) + (f" <{link}|PromQL>" if link else "")
