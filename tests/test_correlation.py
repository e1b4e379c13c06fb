"""One incident per fault, end to end: the shop cluster's history in a real Prometheus, alerts in
through the webhook, Slack and PagerDuty as strict fakes. A fault that fires two alert groups is one
incident (one page, one Slack parent, the second group a reply in its thread); two faults at once on
services with no call between them stay two; a restart in the middle of a merge loses and repeats
nothing; a wrong merge is split and a missed one merged by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.demo.shop import CALLS, ShopCollector, history_openmetrics
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.models import Incident
from agentic_observability.pipeline.correlate import Decision
from agentic_observability.service import init_app
from agentic_observability.service.correlation import Correlator
from agentic_observability.service.keys import STORE
from agentic_observability.service.workers import Workers
from agentic_observability.store.base import Job
from tests.conftest import auth_headers, prometheus_with_history
from tests.test_actions import Sinks, sinks  # noqa: F401 (the fixture)
from tests.test_webhook import incidents, post, wait_for

Client = Callable[..., Awaitable[TestClient]]
pytestmark = pytest.mark.slow

SIGNALS = [
    {"name": "latency", "query": "max by (service) (shop_request_latency_seconds)"},
    {"name": "cpu", "query": "max by (service) (shop_cpu_usage_ratio)"},
]
ALONE, TOGETHER = 2400.0, 4200.0  # seconds after the history starts: carts alone; carts and catalogue


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, float]]:
    now = float(int(time.time()))
    started = now - 5400
    faults: list[tuple[float, float] | tuple[float, float, str]] = [
        (ALONE, 600.0),
        (TOGETHER, 600.0, "carts"),
        (TOGETHER, 600.0, "catalogue"),
    ]
    collector = ShopCollector(faults, started=started)
    workdir = tmp_path_factory.mktemp("shop")
    proc = prometheus_with_history(workdir, history_openmetrics(collector, started, now - 60, 10.0))
    yield proc, started
    proc.stop()


def config(tmp_path: Path, fakes: Sinks, prometheus: ManagedProcess) -> Any:
    made = fakes.config(tmp_path)
    data = made.file.model_dump(mode="json")
    data["prometheus"] = {"url": prometheus.url, "timeout": "5s", "retries": 1}
    data["memory"] = {"enabled": False}
    data["investigation"] = {
        "signals": SIGNALS,
        "calls": [{"caller": a, "callee": b} for a, b in CALLS],
    }
    return made.model_copy(update={"file": type(made.file).model_validate(data)})


def alert(name: str, service: str, at: float, status: str = "firing") -> dict[str, Any]:
    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")

    labels = {"alertname": name, "service": service, "severity": "critical", "namespace": "shop"}
    body = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{service} is unwell"},
        "startsAt": iso(at),
        "endsAt": iso(at + 900) if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"{name}-{int(at)}",
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "status": status,
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "commonAnnotations": body["annotations"],
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": [body],
    }


async def analysed(client: TestClient, count: int) -> bool:
    """``count`` alert groups analysed (roots and members) and nothing left to deliver."""
    store = client.app[STORE]
    counts = await store.counts()
    rows = await store.outbox_rows()
    found = await incidents(client)
    groups = sum(1 + len(i["members"]) for i in found if i["report"])
    return groups >= count and counts["jobs_pending"] == 0 and all(r["state"] == "delivered" for r in rows)


def also_firing(fakes: Sinks) -> list[dict[str, Any]]:
    (parent,) = fakes.slack.parents()
    return [r for r in fakes.slack.replies(parent["ts"]) if "Also firing" in str(r.get("blocks"))]


async def test_one_fault_two_alert_groups_is_one_incident(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    prometheus, started = shop
    client = await aiohttp_client(init_app(config(tmp_path, sinks, prometheus)))
    assert (await post(client, alert("CartsCpuSaturated", "carts", started + ALONE + 5))).status == 202
    await wait_for(lambda: analysed(client, 1), within=30)
    assert (await post(client, alert("ShopFrontEndSlow", "front-end", started + ALONE + 40))).status == 202
    await wait_for(lambda: analysed(client, 2), within=30)

    [fault] = await incidents(client)
    assert fault["title"].startswith("CartsCpuSaturated")
    [member] = fault["members"]
    assert member["alertnames"] == ["ShopFrontEndSlow"]
    assert member["joined"]["by"] == "correlation"
    assert "the same root cause (carts)" in member["joined"]["reason"], member["joined"]
    assert "CartsCpuSaturated at" in fault["report"]["summary"]
    assert "then ShopFrontEndSlow (+35 s)" in fault["report"]["summary"]
    assert len(sinks.pagerduty.events("trigger")) == 1
    assert len(sinks.slack.parents()) == 1 and len(also_firing(sinks)) == 1
    assert "ShopFrontEndSlow" in str(sinks.slack.parents()[0]["blocks"])  # the parent lists its members
    assert sinks.errors() == []

    # resolving: the fault resolves (one PagerDuty resolve) only when its last group does
    await post(client, alert("CartsCpuSaturated", "carts", started + ALONE + 5, "resolved"))
    await wait_for(lambda: analysed(client, 2), within=30)
    assert (await incidents(client))[0]["status"] == "firing"
    assert sinks.pagerduty.events("resolve") == []
    await post(client, alert("ShopFrontEndSlow", "front-end", started + ALONE + 40, "resolved"))

    async def resolved() -> bool:
        return len(sinks.pagerduty.events("resolve")) == 1 and await analysed(client, 2)

    await wait_for(resolved, within=30)
    [fault] = await incidents(client)
    assert fault["status"] == "resolved" and fault["report"]["status"] == "resolved"
    assert fault["report"]["summary"].startswith("Alerts of this fault in order: CartsCpuSaturated")
    assert len(sinks.pagerduty.events("trigger")) == 1 and sinks.errors() == []


async def test_two_faults_on_unrelated_services_are_two_incidents(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    prometheus, started = shop
    client = await aiohttp_client(init_app(config(tmp_path, sinks, prometheus)))
    await post(client, alert("CartsCpuSaturated", "carts", started + TOGETHER + 5))
    await post(client, alert("CatalogueSlow", "catalogue", started + TOGETHER + 8))
    await wait_for(lambda: analysed(client, 2), within=40)
    found = await incidents(client)
    assert len(found) == 2 and all(i["members"] == [] for i in found), found
    causes = {i["title"].split(":")[0]: i["report"]["hypotheses"][0]["entity"] for i in found}
    assert set(causes.values()) <= {"carts", "catalogue"}
    assert len(sinks.pagerduty.events("trigger")) == 2 and len(sinks.slack.parents()) == 2


async def test_a_restart_in_the_middle_of_a_merge_loses_and_repeats_nothing(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    prometheus, started = shop
    made = config(tmp_path, sinks, prometheus)
    client = await aiohttp_client(init_app(made))
    await post(client, alert("CartsCpuSaturated", "carts", started + ALONE + 5))
    await wait_for(lambda: analysed(client, 1), within=30)
    sinks.slack.down = True  # the join is committed, its Slack reply and parent update are not sent
    await post(client, alert("ShopFrontEndSlow", "front-end", started + ALONE + 40))

    async def joined() -> bool:
        found = await incidents(client)
        return len(found) == 1 and len(found[0]["members"]) == 1

    await wait_for(joined, within=30)
    rows = await client.app[STORE].outbox_rows()
    pending = [r["action"] for r in rows if r["state"] == "pending" and r["sink"] == "slack"]
    assert pending == ["reply:member:2", "update:member:2"], rows
    await client.close()

    sinks.slack.down = False
    client = await aiohttp_client(init_app(made))
    await wait_for(lambda: analysed(client, 2), within=30)
    assert len(also_firing(sinks)) == 1 and len(sinks.slack.parents()) == 1
    assert len(sinks.pagerduty.events("trigger")) == 1 and sinks.errors() == []


@pytest.mark.parametrize("checks_passed", [1, 2], ids=["during its analysis", "during the root's"])
async def test_a_join_taken_over_during_its_analysis_is_left_to_the_new_owner(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
    monkeypatch: pytest.MonkeyPatch,
    checks_passed: int,
) -> None:
    """With replicas, another one may take a job over while an analysis (a model call) runs: the
    group's own, or the root's that the correlator runs again before it commits the join. The join
    is then the new owner's to commit, not this replica's too."""
    prometheus, started = shop
    client = await aiohttp_client(init_app(config(tmp_path, sinks, prometheus)))
    await post(client, alert("CartsCpuSaturated", "carts", started + ALONE + 5))
    await wait_for(lambda: analysed(client, 1), within=30)
    asked: list[int] = []  # the second group's job, each time its claim is checked

    async def taken_over_meanwhile(self: Workers, job: Job) -> bool:
        asked.append(job.id)
        return len(asked) <= checks_passed  # mine when it starts (and after its analysis), then not

    monkeypatch.setattr(Workers, "_still_mine", taken_over_meanwhile)
    await post(client, alert("ShopFrontEndSlow", "front-end", started + ALONE + 40))

    async def analysis_done() -> bool:
        return len(asked) > checks_passed

    await wait_for(analysis_done, within=30)
    await asyncio.sleep(0.5)  # anything committed by now would show
    counts = await client.app[STORE].counts()
    assert counts["jobs_pending"] == 1  # still the (new) owner's to finish
    assert [i["members"] for i in await incidents(client)] == [[], []]
    assert also_firing(sinks) == [] and len(sinks.pagerduty.events("trigger")) == 1


async def test_a_resolve_waits_behind_its_groups_analysis_while_that_looks_again(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group's analysis that must look again later (an earlier group of the fault still being
    analysed) is not overtaken by the same group's resolve, which arrived meanwhile: an incident's
    jobs run in order, or its trigger would follow its resolve."""
    prometheus, started = shop
    client = await aiohttp_client(init_app(config(tmp_path, sinks, prometheus)))
    await post(client, alert("CartsCpuSaturated", "carts", started + ALONE + 5))
    await wait_for(lambda: analysed(client, 1), within=30)
    ran: list[tuple[str, str]] = []
    complete, try_join = Workers._complete, Correlator.try_join

    async def recorded(self: Workers, job: Job, incident: Incident) -> str:
        outcome = await complete(self, job, incident)
        ran.append((job.kind, outcome))
        return outcome

    async def looks_again_once(self: Correlator, job: Job, incident: Incident, *rest: Any) -> Any:
        if not [kind for kind, _ in ran]:  # the first look: "the earlier group is not analysed yet"
            return Decision(None, "waiting", wait_for="1")
        return await try_join(self, job, incident, *rest)

    monkeypatch.setattr(Workers, "_complete", recorded)
    monkeypatch.setattr(Correlator, "try_join", looks_again_once)
    front_end = alert("ShopFrontEndSlow", "front-end", started + ALONE + 40)
    await post(client, front_end)
    await wait_for(lambda: _true(bool(ran)), within=30)  # its analysis waits to look again
    await post(client, alert("ShopFrontEndSlow", "front-end", started + ALONE + 40, "resolved"))
    await wait_for(lambda: _true(len(ran) >= 3), within=30)
    assert ran == [("analyze", "wait"), ("analyze", "written"), ("resolve", "written")]


async def _true(value: bool) -> bool:
    return value


async def test_a_wrong_merge_is_split_and_a_missed_one_merged_by_hand(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    prometheus, started = shop
    client = await aiohttp_client(init_app(config(tmp_path, sinks, prometheus)))
    await post(client, alert("CartsCpuSaturated", "carts", started + ALONE + 5))
    await wait_for(lambda: analysed(client, 1), within=30)
    await post(client, alert("ShopFrontEndSlow", "front-end", started + ALONE + 40))
    await wait_for(lambda: analysed(client, 2), within=30)
    [fault] = await incidents(client)
    member = fault["members"][0]["id"]

    split = await client.post(
        f"/api/v1/incidents/{fault['id']}/split", json={"member": member}, headers=auth_headers()
    )
    assert split.status == 200, await split.text()
    await wait_for(lambda: analysed(client, 2), within=30)
    assert sorted(len(i["members"]) for i in await incidents(client)) == [0, 0]
    assert len(sinks.pagerduty.events("trigger")) == 2  # the split group pages on its own now
    assert len(sinks.slack.parents()) == 2

    again = await client.post(
        f"/api/v1/incidents/{fault['id']}/split", json={"member": member}, headers=auth_headers()
    )
    assert again.status == 409
    merged = await client.post(
        f"/api/v1/incidents/{fault['id']}/merge", json={"incident": member}, headers=auth_headers()
    )
    assert merged.status == 200, await merged.text()
    await wait_for(lambda: analysed(client, 2), within=30)
    [fault] = await incidents(client)
    assert [m["id"] for m in fault["members"]] == [member]
    assert fault["members"][0]["joined"]["by"] == "hand"
    assert len(sinks.pagerduty.events("resolve")) == 1  # the merged incident's own page is resolved
    bad = await client.post(
        f"/api/v1/incidents/{fault['id']}/merge", json={"incident": fault["id"]}, headers=auth_headers()
    )
    assert bad.status == 409 and "is this incident" in (await bad.json())["detail"]
    assert sinks.errors() == []
