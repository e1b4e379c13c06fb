"""The interfaces the pipeline depends on. Adapters satisfy them structurally; the pipeline never
imports a concrete adapter, which keeps every stage testable with small hand-written fakes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agentic_observability.config import InvestigationConfig, LogsConfig, RemediationConfig
from agentic_observability.models import Change, ModelReply, PastIncident, Series, SimilarIncident
from agentic_observability.outbox.plan import ActSettings


class MetricsSource(Protocol):
    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]: ...

    def explore_url(self, expr: str, start: float, end: float) -> str: ...


class Memory(Protocol):
    async def recall(self, query: PastIncident, limit: int = 3) -> list[SimilarIncident]: ...

    async def remember(self, incident: PastIncident) -> None: ...


class ChangeSource(Protocol):
    """Change events (rollouts, images, config edits, deploys) by time and entity: the store's."""

    async def changes_between(
        self, start: float, end: float, entities: Sequence[str] | None = None
    ) -> list[Change]: ...


class ChatModel(Protocol):
    model: str

    async def chat(self, messages: list[dict[str, str]], max_tokens: int) -> ModelReply: ...


StageTimer = Callable[[str], AbstractContextManager[None]]
# (outcome "answered" | "fallback", the reply when there was one, claims dropped)
ModelObserver = Callable[[str, ModelReply | None, int], None]


def _no_timer(stage: str) -> AbstractContextManager[None]:
    return nullcontext()


def _no_observer(outcome: str, reply: ModelReply | None, dropped: int) -> None:
    return None


class LogSource(Protocol):
    """What log evidence needs from Loki (``integrations.loki.LokiClient`` satisfies it)."""

    async def metric_range(self, logql: str, start: float, end: float, step: float) -> list[Series]: ...

    async def log_lines(
        self,
        logql: str,
        start: float,
        end: float,
        limit: int,
        direction: Literal["forward", "backward"] = "backward",
    ) -> Sequence[tuple[float, str, Mapping[str, str]]]: ...


@dataclass(frozen=True)
class PipelineDeps:
    metrics: MetricsSource
    investigation: InvestigationConfig = field(default_factory=InvestigationConfig)
    grafana_url: str | None = None
    stage_timer: StageTimer = field(default=_no_timer)
    memory: Memory | None = None
    recall_limit: int = 3
    chat: ChatModel | None = None
    reasoning_timeout: float = 20.0
    observe_model: ModelObserver = field(default=_no_observer)
    act: ActSettings = field(default_factory=ActSettings)
    remediation: RemediationConfig = field(default_factory=RemediationConfig)  # off unless configured
    changes: ChangeSource | None = None  # change events around the onset; None: reports do not look
    logs: LogSource | None = None  # Loki (logs.url): error lines and new templates; None: no log evidence
    logs_settings: LogsConfig = field(default_factory=LogsConfig)
