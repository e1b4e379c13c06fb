"""The ``http`` action: one POST of the rendered JSON body to an automation system the team already runs
(Rundeck, StackStorm, Argo Events, a GitHub Actions dispatch).

The request carries ``Idempotency-Key`` (one per incident and action, from the caller), so a receiver
that honours it runs the job once however often the request arrives; the POST itself is sent once per
call (no in-call retry: the outbox above retries with its own look-before-acting). The token comes
from the environment variable the action names and goes only into the ``Authorization`` header: it
is never logged, and a receiver that echoes it back has it starred out of the outcome. Such systems
have no standard dry run, so a dry run sends nothing and says what would be sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from agentic_observability.config import redact_url
from agentic_observability.errors import UpstreamUnavailableError
from agentic_observability.integrations.resilience import Guard
from agentic_observability.remediation.outcome import Outcome

EXCERPT = 200  # characters of a refusal's body kept in the outcome


class _Unavailable(UpstreamUnavailableError):
    """Connection failure, timeout, 429 or 5xx: counts towards the action's circuit breaker."""


def http_guard(name: str, fail_max: int = 5, reset_after: float = 30.0) -> Guard:
    """A breaker without retries: a real POST is never sent twice by this layer."""
    return Guard(f"remediation {name}", retries=0, fail_max=fail_max, reset_after=reset_after)


def describe(url: str, body: Mapping[str, Any], key: str) -> Outcome:
    """The dry run: nothing is sent."""
    keys = ", ".join(sorted(body)) or "none"
    detail = f"dry run: would POST to {redact_url(url)} a JSON body with keys {keys} (Idempotency-Key {key})"
    return Outcome(True, detail, dry_run=True, changes={"url": redact_url(url), "body_keys": sorted(body)})


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    token: str | None,
    key: str,
    time_limit: float,
    guard: Guard,
    token_header: tuple[str, str] = ("Authorization", "Bearer"),
) -> Outcome:
    """POST ``body`` once; 2xx is ok, anything else is not, with its status and a short excerpt."""
    sent = {**headers, "Content-Type": "application/json", "Idempotency-Key": key}
    if token:
        name, scheme = token_header
        sent[name] = f"{scheme} {token}" if scheme else token
    shown = redact_url(url)
    try:
        status, text = await guard.call(lambda: _send(session, url, body, sent, time_limit))
    except UpstreamUnavailableError as exc:
        return Outcome(False, _scrub(f"POST to {shown}: {exc}", token), dry_run=False)
    if 200 <= status < 300:
        return Outcome(True, f"POST to {shown}: HTTP {status}", dry_run=False, changes={"status": status})
    excerpt = _scrub(" ".join(text.split())[:EXCERPT], token)
    detail = f"POST to {shown}: HTTP {status}" + (f": {excerpt}" if excerpt else "")
    return Outcome(False, detail, dry_run=False, changes={"status": status})


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    time_limit: float,
) -> tuple[int, str]:
    try:
        # no redirects: the URL is the allowlisted one, and a 307 would re-send the body elsewhere
        async with session.post(
            url,
            data=json.dumps(body),
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,
        ) as response:
            text = await response.text(errors="replace")
    except TimeoutError as exc:
        raise _Unavailable(
            f"no answer within {time_limit:g}s; the job may have started (a second request carries the same "
            "Idempotency-Key)"
        ) from exc
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a header aiohttp will not send
        raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
    if response.status == 429 or response.status >= 500:
        # raised to count towards the breaker; the status and excerpt still reach the outcome
        raise _Unavailable(f"HTTP {response.status}: {' '.join(text.split())[:EXCERPT]}")
    return response.status, text


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
