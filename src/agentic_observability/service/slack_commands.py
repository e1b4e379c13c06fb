"""The slash command (``/agentic-obs``, or whatever the Slack app names it): ``incident <id>``,
``investigate <service>``, ``similar <id>``, ``help``; anything else gets the help.

Slack waits 3 seconds for the answer. What a store read can answer (an incident's summary, the help)
is the answer itself, in the channel. What needs Prometheus or incident memory is acknowledged to the
person at once and answered in the channel through the command's ``response_url`` when done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from agentic_observability.errors import UpstreamError
from agentic_observability.memory.records import past_incident
from agentic_observability.models import Incident
from agentic_observability.outbox import messages
from agentic_observability.outbox.messages import slack_escape
from agentic_observability.outbox.plan import slack_view
from agentic_observability.service.keys import CONFIG, MEMORY, STORE, WORKERS
from agentic_observability.service.slack_interactions import NOT_CONFIGURED, signals_now

SIMILAR_LIMIT = 3


class SlashCommand(BaseModel):
    """What Slack posts for a slash command (docs.slack.dev/interactivity/implementing-slash-commands)."""

    command: str = Field(min_length=1, max_length=100)
    text: str = Field("", max_length=4000)
    user_id: str = Field(min_length=1, max_length=64)
    user_name: str = Field("", max_length=200)
    channel_id: str = Field("", max_length=64)
    response_url: str | None = None


@dataclass(frozen=True)
class Reply:
    """``now`` is the response Slack gets within its 3 seconds; ``later``, when set, is slow work whose
    message then goes to the channel through the command's response_url."""

    now: dict[str, Any]
    later: Callable[[], Awaitable[dict[str, Any]]] | None = None


def in_channel(message: dict[str, Any]) -> dict[str, Any]:
    return {"response_type": "in_channel", **message}


def to_asker(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", **messages.slack_note(text)}


async def answer(app: web.Application, command: SlashCommand) -> Reply:
    verb, _, argument = command.text.strip().partition(" ")
    handler = COMMANDS.get(verb.lower(), _help)
    return await handler(app, command, argument.strip())


async def _help(app: web.Application, command: SlashCommand, argument: str) -> Reply:
    name = slack_escape(command.command)
    text = "\n".join(
        [
            f"*{name}*: the incident analyst, from Slack.",
            f"• `{name} incident <id>`: its status, most likely cause and links",
            f"• `{name} investigate <service>`: how the service's signals rank now against their baseline",
            f"• `{name} similar <id>`: past incidents like it, and what fixed them (incident memory)",
            f"• `{name} help`: this",
            "The buttons under each incident's message confirm or correct its cause and record the fix.",
        ]
    )
    return Reply(to_asker(text))


async def _incident(app: web.Application, command: SlashCommand, argument: str) -> Reply:
    incident = await _find(app, argument)
    if isinstance(incident, str):
        return Reply(to_asker(incident))
    view, report, url = slack_view(incident, app[WORKERS].act_settings)
    return Reply(in_channel(messages.slack_summary(view, report, url)))


async def _find(app: web.Application, argument: str) -> Incident | str:
    """The incident ``argument`` names, or what to tell the person instead."""
    if not (argument.isascii() and argument.isdigit()):
        return "Which incident? Give its number, as in `incident 42`."
    incident = await app[STORE].get_incident(argument)
    return incident if incident is not None else f"There is no incident {argument} here."


async def _investigate(app: web.Application, command: SlashCommand, argument: str) -> Reply:
    service = argument[:200]
    if not service:
        return Reply(to_asker("Which service? As in `investigate carts`."))
    if not app[CONFIG].file.investigation.signals:
        return Reply(to_asker(NOT_CONFIGURED))

    async def ranked() -> dict[str, Any]:
        return messages.slack_note(":mag: " + await signals_now(app, service))

    return Reply(to_asker(f"Looking at {slack_escape(service)}'s signals…"), ranked)


async def _similar(app: web.Application, command: SlashCommand, argument: str) -> Reply:
    incident = await _find(app, argument)
    if isinstance(incident, str):
        return Reply(to_asker(incident))
    memory = app[MEMORY]
    if memory is None:
        return Reply(to_asker("Incident memory is off here (`memory.enabled: false`): nothing to recall."))
    entity_label = app[CONFIG].file.investigation.entity_label
    hypotheses = (incident.report or {}).get("hypotheses") or []
    query = past_incident(incident, hypotheses, entity_label, feedback=incident.feedback)

    async def recalled() -> dict[str, Any]:
        try:
            found = await memory.recall(query, SIMILAR_LIMIT)
        except UpstreamError as exc:
            return messages.slack_note(
                f"Incident memory could not be searched: {slack_escape(str(exc))[:300]}"
            )
        listed = messages.recurrence_text([s.to_dict() for s in found]) or "none remembered yet"
        return messages.slack_note(f"*Incidents like {incident.id}*\n{slack_escape(listed)}")

    return Reply(to_asker(f"Looking for incidents like {incident.id}…"), recalled)


Command = Callable[[web.Application, SlashCommand, str], Awaitable[Reply]]
COMMANDS: dict[str, Command] = {
    "incident": _incident,
    "investigate": _investigate,
    "similar": _similar,
    "help": _help,
}
