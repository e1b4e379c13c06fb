from __future__ import annotations

import aiohttp
import pytest

from agentic_observability.config import SignalConfig
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.investigation import Candidate, SignalEvidence
from agentic_observability.models import Series, iso_time
from agentic_observability.pipeline.investigate import _hypothesis, summarize
from agentic_observability.pipeline.promql import (
    expression_from_generator_url,
    promql_for_entity,
    promql_string,
    split_threshold,
)
from tests.conftest import fixture_body


@pytest.mark.parametrize(
    ("name", "expr"),
    [
        ("am-0.25-firing.json", "vector(1) and on () (vector(time() % 40) < 20)"),
        ("legacy-firing-3-alerts.json", 'probe_success{job="blackbox-icmp"} == 0'),
        (
            "resolved-escaped-receiver.json",
            'kube_deployment_spec_replicas{namespace="eric-eo-cm-ci406"} != '
            'kube_deployment_status_replicas_available{namespace="eric-eo-cm-ci406"}',
        ),
    ],
)
def test_expression_recovered_from_recorded_generator_urls(name: str, expr: str) -> None:
    url = fixture_body(name)["alerts"][0]["generatorURL"]
    assert expression_from_generator_url(url) == expr


@pytest.mark.parametrize("url", ["", "http://x/graph", "http://x/graph?g0.tab=1", "not a url"])
def test_no_expression(url: str) -> None:
    assert expression_from_generator_url(url) is None


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(x[5m]) > 0.5", ("rate(x[5m])", ">", 0.5)),
        ('probe_success{job="a"} == 0', ('probe_success{job="a"}', "==", 0.0)),
        ("up < bool 1", ("up", "<", 1.0)),
        ('x{a=">"} >= 2e3', ('x{a=">"}', ">=", 2000.0)),
        ('x{a="\\"q>1"} > 3', ('x{a="\\"q>1"}', ">", 3.0)),
        ("a > b", None),
        ("vector(1) and on () (vector(time() % 40) < 20)", None),
        ("sum(rate(x[5m]))", None),
        ("> 3", None),
    ],
)
def test_split_threshold(expr: str, expected: tuple[str, str, float] | None) -> None:
    assert split_threshold(expr) == expected


def test_summarize_skips_nan_and_finds_the_peak() -> None:
    series = Series({"service": "a"}, (1.0, 2.0, 3.0, 4.0), (1.0, float("nan"), 5.0, 2.0))
    summary = summarize(series)
    assert summary is not None
    assert (summary.points, summary.maximum, summary.peak_at, summary.last) == (3, 5.0, 3.0, 2.0)
    assert summarize(Series({}, (1.0,), (float("nan"),))) is None


async def test_entity_filter_is_valid_promql_for_hostile_label_values(prometheus: ManagedProcess) -> None:
    hostile = 'we"ird} {x="1"}\nnew\\line'
    expr = (
        f'label_replace(vector(1), "service", {promql_string(hostile)}, "", "") '
        'or label_replace(vector(2), "service", "other", "", "")'
    )
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(prometheus.url, session)
        assert len(await client.query(expr)) == 2
        [sample] = await client.query(promql_for_entity(expr, "service", hostile))
    assert sample.labels["service"] == hostile and sample.value == 1


class _Links:
    """Only what a hypothesis asks of its source: an explore link."""

    def explore_url(self, expr: str, start: float, end: float) -> str:
        return f"https://prom.example/graph?expr={expr}"


def test_a_hypothesis_carries_its_units_and_its_onset_as_unix_time() -> None:
    """The text needs both: a signal's configured unit wins, else its metric name says; the onset
    comes as the ISO time (the API, the annotation) and as unix seconds (placed against the alert)."""
    signals = {
        "latency": SignalConfig(name="latency", query="max by (service) (request_latency_seconds)"),
        "cpu": SignalConfig(name="cpu", query="max by (service) (cpu_usage_ratio)", unit="percent"),
        "queue": SignalConfig(name="queue", query="max by (service) (queue_depth)"),
    }
    onset = 1_796_031_777.803
    evidence = tuple(
        SignalEvidence(name, {"service": "carts"}, 0.1, 1.2, 40.0, onset)
        for name in ("latency", "cpu", "queue")
    )
    candidate = Candidate("carts", 0.94123, onset, evidence)
    made = _hypothesis(1, candidate, "service", signals, _Links(), onset - 300, onset + 120)  # type: ignore[arg-type]
    assert [e["unit"] for e in made["evidence"]] == ["seconds", "percent", None]
    assert made["onset_unix"] == onset and made["onset"] == iso_time(onset)
    assert made["evidence"][0]["baseline"] == 0.1 and made["evidence"][0]["incident"] == 1.2  # raw numbers
    unknown = _hypothesis(1, Candidate("carts", 0.5, None, evidence), "service", signals, _Links(), 0, 1)  # type: ignore[arg-type]
    assert unknown["onset_unix"] is None and unknown["onset"] is None
