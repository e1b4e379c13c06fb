"""The interfaces the pipeline depends on. Adapters satisfy them structurally; the pipeline never
imports a concrete adapter, which keeps every stage testable with small hand-written fakes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from agentic_observability.config import InvestigationConfig
from agentic_observability.models import Series


class MetricsSource(Protocol):
    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]: ...

    def explore_url(self, expr: str, start: float, end: float) -> str: ...


StageTimer = Callable[[str], AbstractContextManager[None]]


def _no_timer(stage: str) -> AbstractContextManager[None]:
    from contextlib import nullcontext

    return nullcontext()


@dataclass(frozen=True)
class PipelineDeps:
    metrics: MetricsSource
    investigation: InvestigationConfig = field(default_factory=InvestigationConfig)
    grafana_url: str | None = None
    stage_timer: StageTimer = field(default=_no_timer)
