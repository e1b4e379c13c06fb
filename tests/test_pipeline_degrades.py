"""Every stage degrades, none drops: an unexpected failure in evidence, ranking, recall or reasoning
becomes a named problem in the report, and the report (so its actions) still goes out."""

from __future__ import annotations

from typing import Any

import numpy as np

from agentic_observability import pipeline
from agentic_observability.config import InvestigationConfig
from agentic_observability.models import Alert, Incident, ModelReply, PastIncident, Series, SimilarIncident
from agentic_observability.outbox.plan import ActSettings
from agentic_observability.pipeline import reason
from agentic_observability.pipeline.ports import PipelineDeps

STARTED = 1_700_000_000.0
URL = "http://prometheus/graph?g0.expr=rate%28errors_total%5B5m%5D%29+%3E+1"


def incident() -> Incident:
    alert = Alert("firing", {"alertname": "Errors", "service": "carts"}, {}, STARTED, None, URL, "f1")
    return Incident("9", "g", "alertmanager", "firing", "Errors", dict(alert.labels), STARTED, None, (alert,))


class BrokenSource:
    """Answers like Prometheus would, then breaks in a way no adapter error covers (a bug)."""

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        if self.fail_on in expr:
            raise RuntimeError(f"unexpected shape for {expr}")
        ts = tuple(float(t) for t in np.arange(start, end, step))
        return [Series({"service": "carts"}, ts, tuple(1.0 for _ in ts))]

    def explore_url(self, expr: str, start: float, end: float) -> str:
        return "http://prometheus/graph"


class BrokenMemory:
    async def recall(self, query: PastIncident, limit: int = 3) -> list[SimilarIncident]:
        raise KeyError("payload without a cause")

    async def remember(self, incident: PastIncident) -> None:
        return None


class BrokenModel:
    model = "fake"

    async def chat(self, messages: list[dict[str, str]], max_tokens: int) -> ModelReply:
        raise AttributeError("the client returned None")


def deps(**overrides: Any) -> PipelineDeps:
    signals = InvestigationConfig.model_validate({"signals": [{"name": "cpu", "query": "cpu_usage"}]})
    return PipelineDeps(
        metrics=BrokenSource(overrides.pop("fail_on", "nothing")), investigation=signals, **overrides
    )


async def test_a_failure_in_each_stage_is_named_and_the_report_goes_out() -> None:
    report = await pipeline.run(
        incident(), deps(fail_on="cpu_usage", memory=BrokenMemory(), chat=BrokenModel())
    )
    assert "Root-cause ranking failed (RuntimeError: unexpected shape for cpu_usage)" in report.summary
    assert "Recall failed (KeyError" in report.summary
    assert report.reasoner == "rules"
    assert "reasoning failed: AttributeError" in report.reasoner_note
    with_file = deps(act=ActSettings(enabled=frozenset({"file"})))
    [action] = pipeline.actions_for(incident(), report.to_dict(), "analyze", with_file)
    assert action.sink == "file" and "Root-cause ranking failed" in action.payload["summary"]


async def test_evidence_failure_keeps_the_ranking() -> None:
    report = await pipeline.run(incident(), deps(fail_on="errors_total"))
    assert "Alert evidence failed (RuntimeError" in report.summary
    assert report.hypotheses and report.hypotheses[0]["entity"] == "carts"


async def test_a_failing_rules_report_still_gives_a_bare_report(monkeypatch: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(reason, "rules_report", broken)
    report = await pipeline.run(incident(), deps())
    assert report.summary.startswith("Errors (firing)")
    assert "ZeroDivisionError" in report.summary
    assert report.to_dict()["facts"]["alertname"] == "Errors"
