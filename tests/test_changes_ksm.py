"""Change events from kube-state-metrics on a real Prometheus (issue 18): the demo shop's history,
with its kube-state-metrics-shaped series (generation, ReplicaSets, pod owners, container images),
loaded through ``promtool tsdb create-blocks-from openmetrics``.

Two rounds of the same CPU fault on carts: a new image of carts rolled out two minutes before the
first, of catalogue (which nothing of the fault touches) two minutes before the second. The first
report names the rollout at its top, in Slack's parent and in Grafana's annotation; the second ranks
exactly as it does without change events."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from agentic_observability import pipeline
from agentic_observability.changes import KubeStateMetrics
from agentic_observability.config import DEFAULT_ENTITY_FROM, InvestigationConfig
from agentic_observability.demo.shop import CALLS, ShopCollector, history_openmetrics
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.models import Alert, Incident
from agentic_observability.service import init_app
from agentic_observability.service.app import CHANGE_POLLER
from agentic_observability.store import SqliteStore
from tests.conftest import prometheus_with_history
from tests.test_actions import Sinks, sinks  # noqa: F401 (the fixture)
from tests.test_correlation import SIGNALS, alert, analysed, config
from tests.test_webhook import incidents, post, wait_for

Client = Callable[..., Awaitable[TestClient]]
pytestmark = pytest.mark.slow

FIRST, SECOND = 2400.0, 4200.0  # seconds after the history starts: the two carts faults
NEW_CARTS = "registry.example/shop/carts:v1.4.3"
NEW_CATALOGUE = "registry.example/shop/catalogue:v1.4.3"
LINE = re.compile(
    r"^What changed: carts: image v1\.4\.2 → v1\.4\.3 at \d\d:\d\d:\d\d UTC, "
    r"2 min( \d+ s)? before the onset \(and 2 more changes\)$",
    re.M,
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, float]]:
    now = float(int(time.time()))
    started = now - 5400
    collector = ShopCollector(
        [(FIRST, 600.0), (SECOND, 600.0)],
        started=started,
        deploys=[(FIRST - 120, "carts", NEW_CARTS), (SECOND - 120, "catalogue", NEW_CATALOGUE)],
    )
    workdir = tmp_path_factory.mktemp("shop")
    proc = prometheus_with_history(workdir, history_openmetrics(collector, started, now - 60, 10.0))
    yield proc, started
    proc.stop()


@pytest.fixture
async def prometheus_client(shop: tuple[ManagedProcess, float]) -> AsyncIterator[PrometheusClient]:
    async with aiohttp.ClientSession() as session:
        yield PrometheusClient(shop[0].url, session, timeout=10.0)


async def test_kube_state_metrics_show_the_rollout_of_carts(
    prometheus_client: PrometheusClient, shop: tuple[ManagedProcess, float], tmp_path: Path
) -> None:
    _, started = shop
    deployed = started + FIRST - 120
    source = KubeStateMetrics(prometheus_client, DEFAULT_ENTITY_FROM, step=10.0)
    found = await source.changes(started + FIRST - 600, started + FIRST)
    by_kind = {c.kind: c for c in found}
    assert sorted(by_kind) == ["image", "replicaset", "rollout"] and len(found) == 3, found
    assert {c.entity for c in found} == {"carts"}  # from kube_deployment_labels' label_app_kubernetes_io_name
    image = by_kind["image"]
    assert image.summary == "image v1.4.2 → v1.4.3"
    assert (image.old, image.new) == ("registry.example/shop/carts:v1.4.2", NEW_CARTS)
    assert (image.namespace, image.workload) == (
        "shop",
        "deployment/carts",
    )  # pod -> ReplicaSet -> Deployment
    assert deployed <= image.at <= deployed + 10  # to the query's step
    rollout = by_kind["rollout"]
    assert rollout.summary == "spec changed: generation 1 → 2" and deployed <= rollout.at <= deployed + 10
    assert by_kind["replicaset"].at == deployed  # kube_replicaset_created is the creation time itself

    # a re-poll over an overlapping window finds the same events under the same keys: stored once
    again = await source.changes(started + FIRST - 300, started + FIRST + 300)
    store = await SqliteStore.open(tmp_path / "state")
    try:
        assert await store.record_changes(found) == 3
        assert await store.record_changes(again) == 0
    finally:
        await store.close()

    # the entity is the configured label's: a label no series carries maps nothing
    unmapped = KubeStateMetrics(prometheus_client, ("label_team",), step=10.0)
    assert await unmapped.changes(started + FIRST - 600, started + FIRST) == []
    assert await source.changes(started + FIRST + 600, started + FIRST + 1200) == []  # nothing then


async def test_the_report_names_the_rollout_two_minutes_before_the_fault(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    prometheus, started = shop
    made = config(tmp_path, sinks, prometheus)
    data = made.file.model_dump(mode="json")
    data["changes"] = {"poll_interval": "1h"}  # polled by hand below, at the fault's time
    made = made.model_copy(update={"file": type(made.file).model_validate(data)})
    client = await aiohttp_client(init_app(made))
    assert await client.app[CHANGE_POLLER].poll_once(now=started + FIRST + 60) == 3

    assert (await post(client, alert("ShopFrontEndSlow", "front-end", started + FIRST + 30))).status == 202
    await wait_for(lambda: analysed(client, 1), within=30)
    [incident] = await incidents(client)
    report = incident["report"]
    assert report["hypotheses"][0]["entity"] == "carts", report["summary"]
    assert LINE.search(report["summary"]), report["summary"]
    assert report["summary"].splitlines()[2].startswith("What changed: carts"), report["summary"]
    [image] = [c for c in report["changes"] if c["kind"] == "image"]
    assert image["relation"] == "cause" and 120 <= image["before_onset"] < 180
    assert image["line"] in LINE.search(report["summary"])[0]  # type: ignore[index]
    assert {c["kind"] for c in report["hypotheses"][0]["changes"]} == {"image", "replicaset", "rollout"}

    # Slack's parent and Grafana's annotation say it too
    (parent,) = sinks.slack.parents()
    assert "*Changed before the onset* carts: image v1.4.2 → v1.4.3 at" in str(parent["blocks"])
    (annotation,) = sinks.grafana.annotations.values()
    assert "What changed: carts: image v1.4.2 → v1.4.3 at" in annotation["text"]
    assert sinks.errors() == []


async def test_a_rollout_on_an_unrelated_service_does_not_move_the_ranking(
    prometheus_client: PrometheusClient, shop: tuple[ManagedProcess, float], tmp_path: Path
) -> None:
    _, started = shop
    settings = InvestigationConfig.model_validate(
        {"signals": SIGNALS, "calls": [{"caller": a, "callee": b} for a, b in CALLS]}
    )
    source = KubeStateMetrics(prometheus_client, DEFAULT_ENTITY_FROM, step=10.0)
    found = await source.changes(started + SECOND - 600, started + SECOND)
    assert {(c.entity, c.kind) for c in found} == {
        ("catalogue", "image"),
        ("catalogue", "rollout"),
        ("catalogue", "replicaset"),
    }
    store = await SqliteStore.open(tmp_path / "state")
    try:
        await store.record_changes(found)
        at = started + SECOND + 30
        labels = {"alertname": "ShopFrontEndSlow", "service": "front-end"}
        firing = Alert("firing", labels, {}, at, None, "", "fp")
        incident = Incident(
            "1", "g", "alertmanager", "firing", "ShopFrontEndSlow", labels, at, None, (firing,)
        )
        plain = await pipeline.run(incident, pipeline.PipelineDeps(prometheus_client, settings), at + 120)
        deps = pipeline.PipelineDeps(prometheus_client, settings, changes=store)
        weighed = await pipeline.run(incident, deps, at + 120)
    finally:
        await store.close()

    def ranking(report: Any) -> list[tuple[str, float]]:
        return [(h["entity"], h["score"]) for h in report.hypotheses]

    assert ranking(plain)[0][0] == "carts"
    assert ranking(weighed) == ranking(plain)
    assert {c["entity"] for c in weighed.changes} == {"catalogue"}  # in the report, not at its top
    assert {c["relation"] for c in weighed.changes} <= {"ranked", "nearby"}
    assert "What changed" not in weighed.summary and plain.changes == ()
