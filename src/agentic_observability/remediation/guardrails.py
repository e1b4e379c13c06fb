"""Whether an action may run now, from the record of past real runs. Pure: the caller passes the
history (action name, target key, ran_at) of runs that changed something, and the time.

Two limits, both decided in daylight in the catalogue: ``min_interval`` per target (a workload, or
the url of an http action), whichever action ran on it, and ``max_per_hour`` per action across all
incidents. A run time in the future (a clock step back) counts as just now: it never frees a slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentic_observability.config import RemediationAction
from agentic_observability.readable import format_duration
from agentic_observability.remediation.catalogue import Proposal

HOUR = 3600.0
_DONE = {"kubernetes.rollout_restart": "restarted", "kubernetes.scale": "scaled", "http": "called"}


def target_key(proposal: Proposal) -> str:
    """What ``min_interval`` is counted per: ``namespace/Kind/name`` for a workload, the url for http."""
    target = proposal.target
    if proposal.kind == "http":
        return target["url"]
    return f"{target['namespace']}/{target['workload_kind']}/{target['workload']}"


def allowed(
    proposal: Proposal, history: Sequence[tuple[str, str, float]], now: float, entry: RemediationAction
) -> str | None:
    """None when ``proposal`` may run at ``now``; else the reason, in words for the thread."""
    return _too_soon(proposal, history, now, entry) or _too_often(proposal, history, now, entry)


def _too_soon(
    proposal: Proposal, history: Sequence[tuple[str, str, float]], now: float, entry: RemediationAction
) -> str | None:
    if entry.min_interval <= 0:
        return None
    key = target_key(proposal)
    recent = [(ran_at, name) for name, ran_key, ran_at in history if ran_key == key]
    recent = [(ran_at, name) for ran_at, name in recent if now - ran_at < entry.min_interval]
    if not recent:
        return None
    ran_at, name = max(recent)
    subject = proposal.target["url"] if proposal.kind == "http" else proposal.target["workload"]
    done = _DONE.get(proposal.kind, "acted on") if name == proposal.action else f"changed by {name}"
    ago = format_duration(max(now - ran_at, 0.0))
    return f"{subject} was {done} {ago} ago; min_interval is {format_duration(entry.min_interval)}"


def _too_often(
    proposal: Proposal, history: Sequence[tuple[str, str, float]], now: float, entry: RemediationAction
) -> str | None:
    ran = sum(1 for name, _key, ran_at in history if name == proposal.action and now - ran_at < HOUR)
    if ran < entry.max_per_hour:
        return None
    times = "time" if ran == 1 else "times"
    return f"{proposal.action} ran {ran} {times} in the last hour; max_per_hour is {entry.max_per_hour}"
