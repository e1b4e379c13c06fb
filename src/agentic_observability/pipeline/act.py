"""Act stage: a finished report becomes outbox actions, planned per sink by ``outbox/plan.py``. The
caller commits them together with the report; the service's dispatcher delivers them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentic_observability.models import Action, Incident
from agentic_observability.outbox.plan import plan_actions
from agentic_observability.pipeline.ports import PipelineDeps


def actions_for(incident: Incident, report: Mapping[str, Any], kind: str, deps: PipelineDeps) -> list[Action]:
    """The outbox actions a finished job's report (as stored) calls for."""
    with deps.stage_timer("act"):
        return plan_actions(incident, report, kind, deps.act)
