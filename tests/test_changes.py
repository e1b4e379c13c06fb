"""Change events (issue 18), the parts without a Prometheus: the store (dedup, reads, retention), the
ranking's change evidence (never the only evidence), the report's "What changed" line, the Slack
parent and Grafana text, the Grafana deploy annotations, the kube-state-metrics name rules and the
poller's windows. tests/test_changes_ksm.py runs the kube-state-metrics source on a real Prometheus."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from agentic_observability.changes import ChangePoller, GrafanaDeploys, entity_for
from agentic_observability.changes.grafana import annotation_entity
from agentic_observability.changes.ksm import image_text, pod_workload_by_name
from agentic_observability.config import InvestigationConfig
from agentic_observability.integrations.grafana import GrafanaSink
from agentic_observability.integrations.resilience import Guard
from agentic_observability.investigation import SignalSeries, rank_entities
from agentic_observability.investigation.rank import with_changes
from agentic_observability.models import Alert, Change, Incident
from agentic_observability.outbox import messages
from agentic_observability.pipeline import reason
from agentic_observability.pipeline.investigate import callees, report_changes
from agentic_observability.store import SqliteStore, Store
from agentic_observability.telemetry import Metrics
from tests.fakes import GRAFANA_TOKEN, FakeGrafana, _block_texts, slack_refusal

FAULT = 1_000_000.0
TS = np.arange(FAULT - 600, FAULT + 300, 5.0)


def change(entity: str, at: float, kind: str = "image", key: str | None = None, **extra: Any) -> Change:
    return Change(
        source=extra.pop("source", "webhook"),
        at=at,
        entity=entity,
        kind=kind,  # type: ignore[arg-type]
        summary=extra.pop("summary", "image v1.4.2 → v1.4.3"),
        dedup_key=key or f"{entity}:{at}:{kind}",
        **extra,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state")
    yield opened
    await opened.close()


# -- the store ---------------------------------------------------------------------------------------


async def test_changes_are_stored_once_and_read_by_time_and_entity(store: SqliteStore) -> None:
    first = [change("carts", 100.0, link="https://ci/1"), change("orders", 200.0), change("carts", 300.0)]
    assert await store.record_changes(first) == 3
    assert await store.record_changes([*first, change("payment", 250.0)]) == 1  # a re-poll: one new
    assert [c.entity for c in await store.changes_between(0, 1000)] == ["carts", "orders", "payment", "carts"]
    carts = await store.changes_between(150, 1000, ["carts"])
    assert [(c.entity, c.at) for c in carts] == [("carts", 300.0)]
    assert await store.changes_between(0, 1000, []) == []
    [stored] = await store.changes_between(0, 150)
    assert stored.link == "https://ci/1" and stored.id is not None and stored.received_at is not None


async def test_changes_go_with_the_retention(store: SqliteStore) -> None:
    now = time.time()
    await store.record_changes([change("carts", now - 40 * 86400), change("carts", now - 3600)])
    pruned = await store.prune(now - 30 * 86400, batch=100)
    assert pruned["changes"] == 1
    assert [c.at for c in await store.changes_between(0, now)] == [now - 3600]
    assert (await store.prune(now - 30 * 86400, batch=100))["changes"] == 0


# -- the ranking: a change is evidence, never the only evidence ----------------------------------------


def series(entity: str, jump: float, seed: int, at: float = FAULT) -> SignalSeries:
    rng = np.random.default_rng(seed)
    values = 0.1 + rng.normal(0, 0.01, TS.size) + np.where(at <= TS, jump, 0.0)
    return SignalSeries(entity, "latency", {"service": entity}, TS, values)


def ranked(changed: set[str], *data: SignalSeries) -> list[tuple[str, float]]:
    return [(c.entity, round(c.score, 9)) for c in with_changes(rank_entities(data, FAULT), changed)]


def test_a_change_alone_never_ranks_an_entity() -> None:
    data = [series("carts", 1.0, 1), series("orders", 0.0, 2), series("payment", 0.0, 3)]
    plain = ranked(set(), *data)
    # orders and payment did not change: a rollout on either lifts nothing; "db" has no series at all
    assert ranked({"orders", "payment", "db"}, *data) == plain
    assert "db" not in [name for name, _ in plain]


def test_a_rollout_on_a_bystander_does_not_move_the_ranking() -> None:
    # carts is the cause; orders moves a little too (a fifth of it), catalogue not at all
    data = [series("carts", 1.0, 1), series("orders", 0.2, 2), series("catalogue", 0.0, 3)]
    plain = ranked(set(), *data)
    assert [name for name, _ in plain] == ["carts", "orders", "catalogue"]
    assert ranked({"orders"}, *data) == plain
    assert ranked({"catalogue"}, *data) == plain


QUIET = [series(name, 0.0, seed) for seed, name in enumerate(("a", "b", "c"), start=10)]


def test_a_change_decides_between_comparable_suspects() -> None:
    data = [series("carts", 1.0, 1), series("orders", 0.9, 2), *QUIET]
    assert [name for name, _ in ranked(set(), *data)][:2] == ["carts", "orders"]
    assert [name for name, _ in ranked({"orders"}, *data)][:2] == ["orders", "carts"]
    lifted = dict(ranked({"orders"}, *data))
    assert lifted["orders"] == pytest.approx(dict(ranked(set(), *data))["orders"] + np.log(2))
    # a third of the cause's change is not comparable: the rollout is noted, the ranking stays
    weaker = [series("carts", 1.0, 1), series("orders", 0.3, 2), *QUIET]
    assert ranked({"orders"}, *weaker) == ranked(set(), *weaker)


# -- what the report says ---------------------------------------------------------------------------

CALLS = InvestigationConfig.model_validate(
    {"calls": [{"caller": "front-end", "callee": "orders"}, {"caller": "orders", "callee": "carts"}]}
)


def incident(service: str = "front-end", started: float = FAULT) -> Incident:
    alert = Alert("firing", {"alertname": "Slow", "service": service}, {}, started, None, "", "fp")
    return Incident(
        "1",
        "g",
        "alertmanager",
        "firing",
        "Slow",
        {"alertname": "Slow", "service": service},
        started,
        None,
        (alert,),
    )


def hypothesis(entity: str, onset: float) -> dict[str, Any]:
    return {"entity": entity, "onset_unix": onset, "evidence": [], "entity_label": "service", "score": 1.0}


def test_callees_are_followed_through_the_call_graph() -> None:
    assert callees("front-end", CALLS) == ["orders", "carts"]
    assert callees("carts", CALLS) == []


def test_the_report_names_the_change_before_the_onset_on_the_cause_or_a_callee() -> None:
    found = [
        change("carts", FAULT - 3000, summary="too early"),  # outside the 30 min window
        change("carts", FAULT - 300, kind="rollout", summary="spec changed: generation 1 → 2"),
        change("carts", FAULT - 125, kind="image"),
        change("carts", FAULT - 120, kind="deploy", summary="deploy carts v1.4.3", link="https://ci/812"),
        change("catalogue", FAULT - 60, summary="a bystander's rollout"),
    ]
    shown = report_changes(incident(), [hypothesis("orders", FAULT)], found, CALLS)
    assert [(c["entity"], c["relation"]) for c in shown] == [
        ("carts", "callee"),
        ("carts", "callee"),
        ("carts", "callee"),
        ("catalogue", "nearby"),
    ]
    assert [c["before_onset"] for c in shown] == [300.0, 125.0, 120.0, 60.0]
    report = reason.rules_report(incident(), (), (), [], FAULT + 60, changes=shown)
    [line] = reason.change_lines(report.changes)
    assert line == (
        "What changed: carts (called by orders): image v1.4.2 → v1.4.3 at 13:44:35 UTC, "
        "2 min 5 s before the onset (and 2 more changes)"
    )
    assert report.summary.splitlines()[2] == line  # after the headline and when it started
    [named] = [c for c in report.to_dict()["changes"] if c.get("line")]
    assert named["kind"] == "image" and named["line"].startswith("carts (called by orders): image")
    assert named["link"] is None and named["line_link"] == "https://ci/812"  # the CI run's, close by


def test_a_change_after_the_onset_or_on_the_alerts_own_service_reads_so() -> None:
    shown = report_changes(incident("carts"), [], [change("carts", FAULT + 20)], CALLS)
    assert shown[0]["relation"] == "cause"
    report = reason.rules_report(incident("carts"), (), (), [], FAULT + 60, changes=shown)
    assert re.search(
        r"^What changed: carts: image .* at 13:47:00 UTC, 20 s after the onset$", report.summary, re.M
    )


def test_no_change_no_line() -> None:
    report = reason.rules_report(incident(), (), (), [], FAULT)
    assert "What changed" not in report.summary and report.to_dict()["changes"] == []


# -- the Slack parent and the Grafana annotation ----------------------------------------------------


def named(line: str, link: str | None = None) -> dict[str, Any]:
    return {"entity": "carts", "relation": "cause", "line": line, "line_link": link, "at_unix": FAULT}


def test_the_slack_parent_says_what_changed_with_its_link() -> None:
    report = {
        "facts": {"alertname": "Slow"},
        "hypotheses": [],
        "changes": [named("carts: image a → b", "https://ci/812")],
    }
    parent = messages.slack_parent({"id": "1", "status": "firing", "title": "Slow"}, report, None)
    contexts = [b["elements"][0]["text"] for b in parent["blocks"] if b["type"] == "context"]
    assert contexts[0] == "*Changed before the onset* carts: image a → b · <https://ci/812|details>"
    text = messages.grafana_text(
        {"id": "1", "status": "firing", "title": "Slow"}, {**report, "summary": "S"}, None
    )
    assert text == 'S\n<a href="https://ci/812">change</a>'


def test_the_parent_with_a_huge_change_stays_within_the_budget() -> None:
    huge = "x" * 5000
    report = {
        "facts": {"alertname": "A" + huge, "severity": "s" + huge, "runbook_url": "https://rb/" + "r" * 1400},
        "hypotheses": [
            {
                "entity": "e" * 200,
                "evidence": [{"signal": "cpu", "baseline": 1, "incident": 2, "deviation": 3}],
            }
        ],
        "remediation": [{"action": f"{'n' * 38}{n}", "does": huge, "auto": False} for n in range(4)],
        "changes": [named("<!channel> " + huge, "https://ci/" + "p" * 3000)],
    }
    view = {
        "id": "7",
        "title": huge,
        "status": "firing",
        "service": huge,
        "members": [huge] * 3,
        "feedback": {"correct": False, "root_cause": huge, "resolution": huge, "by": huge},
    }
    parent = messages.slack_parent(view, report, "https://obs.example/" + "p" * 1400, "abcdef012345")
    assert slack_refusal({"channel": "C1", **parent}) is None
    assert sum(len(t) for b in parent["blocks"] for t in _block_texts(b)) <= messages.SLACK_MESSAGE_BUDGET
    [changed] = [b for b in parent["blocks"] if "Changed before the onset" in str(b)]
    assert len(changed["elements"][0]["text"]) <= messages.SLACK_CHANGE_LIMIT
    assert "<!channel>" not in str(changed) and "https://ci/" not in str(changed)  # the link did not fit


# -- Grafana annotations tagged as deploys -------------------------------------------------------------


@pytest.fixture
async def grafana(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[FakeGrafana, GrafanaDeploys]:
    fake = FakeGrafana()
    server = await aiohttp_server(fake.app())
    sink = GrafanaSink.create(str(server.make_url("/")), GRAFANA_TOKEN, 5.0, Guard("grafana"))
    return fake, GrafanaDeploys(sink.api, "deploy", "service")


async def test_grafana_deploy_annotations_become_changes(grafana: tuple[FakeGrafana, GrafanaDeploys]) -> None:
    fake, source = grafana
    ms = int(FAULT * 1000)
    fake.annotations = {
        1: {
            "id": 1,
            "time": ms - 120_000,
            "tags": ["deploy", "service:carts"],
            "text": "<b>v1.4.3</b> rolled out",
        },
        2: {"id": 2, "time": ms - 60_000, "tags": ["deploy"], "text": "orders: v7 &amp; config"},
        3: {"id": 3, "time": ms - 30_000, "tags": ["incident:x"], "text": "carts: an incident, not a deploy"},
        4: {"id": 4, "time": ms - 9_000_000, "tags": ["deploy"], "text": "payment: long ago"},
    }
    found = await source.changes(FAULT - 600, FAULT)
    assert [(c.entity, c.summary, c.at, c.dedup_key) for c in found] == [
        ("carts", "v1.4.3 rolled out", FAULT - 120, "grafana:1"),
        ("orders", "orders: v7 & config", FAULT - 60, "grafana:2"),
    ]
    assert all(c.source == "grafana" and c.kind == "deploy" for c in found)
    assert fake.searches[-1]["tags"] == "deploy" and fake.searches[-1]["type"] == "annotation"


def test_the_annotation_entity_comes_from_a_tag_else_the_text() -> None:
    keys = ("service", "app")
    assert annotation_entity({"tags": ["app:carts"], "text": "orders"}, keys) == "carts"
    assert annotation_entity({"tags": [], "text": "  carts-v2 deployed"}, keys) == "carts-v2"
    assert annotation_entity({"tags": [], "text": "<p>…</p>"}, keys) is None


# -- kube-state-metrics: names -------------------------------------------------------------------------


def test_a_pods_workload_from_its_name() -> None:
    assert pod_workload_by_name("shop", "carts-7d9f8b6c5-x2x4q").name == "carts"
    assert pod_workload_by_name("shop", "carts-7d9f8b6c5-x2x4q").kind == "deployment"
    assert (pod_workload_by_name("db", "postgres-0").kind, pod_workload_by_name("db", "postgres-0").name) == (
        "statefulset",
        "postgres",
    )
    assert pod_workload_by_name("mon", "node-exporter-x7k2p").kind == "daemonset"
    assert pod_workload_by_name("mon", "node-exporter-x7k2p").name == "node-exporter"


def test_image_text_and_entity_mapping() -> None:
    assert image_text("reg/shop/carts:v1.4.2", "reg/shop/carts:v1.4.3") == "image v1.4.2 → v1.4.3"
    assert image_text("reg:5000/carts:v1", "other/carts:v2") == "image reg:5000/carts:v1 → other/carts:v2"
    assert image_text("carts@sha256:" + "a" * 64, "carts@sha256:" + "b" * 64) == (
        "image sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb"
    )
    order = ("label_app_kubernetes_io_name", "label_app", "deployment", "workload")
    assert entity_for({"deployment": "carts-v2", "label_app": "carts"}, order) == "carts"
    assert entity_for({"workload": "x", "label_app": ""}, order) == "x"
    assert entity_for({}, order) is None


# -- the poller ----------------------------------------------------------------------------------------


class _Source:
    def __init__(self, name: str, found: list[Change], fail: bool = False) -> None:
        self.name, self.found, self.fail = name, found, fail
        self.windows: list[tuple[float, float]] = []

    async def changes(self, start: float, end: float) -> list[Change]:
        self.windows.append((start, end))
        if self.fail:
            raise OSError("Prometheus unreachable")
        return self.found


async def test_a_failing_source_is_counted_and_retries_its_window(store: SqliteStore) -> None:
    metrics = Metrics()
    good = _Source("ksm", [change("carts", 100.0, key="k1")])
    bad = _Source("grafana", [], fail=True)
    poller = ChangePoller([bad, good], cast(Store, store), metrics, interval=60.0, lookback=1800.0)
    assert await poller.poll_once(now=10_000.0) == 1
    assert metrics.snapshot()['agentic_obs_errors_total{component="changes"}'] == 1
    assert good.windows == [(8_200.0, 10_000.0)]  # the first poll looks back change_window
    assert await poller.poll_once(now=10_060.0) == 0  # the same change again: stored once
    assert good.windows[-1] == (10_000.0 - 120.0, 10_060.0)  # from the last poll, less the overlap
    assert bad.windows[-1] == (10_060.0 - 1800.0, 10_060.0)  # the failed source: its whole window again
