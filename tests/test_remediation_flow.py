"""Remediation with a person in the loop, end to end: the report proposes a catalogue action, the Slack
parent offers Approve and Dry run, a signed press by a permitted person runs a server-side dry run and
then the action against a fake Kubernetes API (which checks every request's shape), once, whatever is
pressed again or fails on the way; the thread, the audit log and /metrics say what happened; an auto
action keeps to its guardrails.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from agentic_observability.errors import StoreError
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.models import Sample
from agentic_observability.outbox import messages
from agentic_observability.remediation.sink import recovery
from agentic_observability.service.keys import STORE
from tests.conftest import auth_headers
from tests.fake_kube import RESTARTED_AT, FakeKube, write_kubeconfig
from tests.fakes import FakeSlack
from tests.test_correlation import alert
from tests.test_slack_interactions import (
    Client,
    Service,
    _answered,
    _buttons,
    _settled,
    block_actions,
    ranked,  # noqa: F401 (autouse: the ranking names carts)
    reply_texts,
    start,
)
from tests.test_webhook import post, wait_for

APPROVER = "U0123ABCD"  # the user test_slack_interactions presses as


@pytest.fixture
async def slack() -> Any:
    fake = FakeSlack()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


@pytest.fixture
async def kube() -> Any:
    fake = FakeKube()
    fake.add("Deployment", "shop", "carts", replicas=2)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


def catalogue(tmp_path: Path, kube_server: TestServer, follow_up: str = "1s", **entry: Any) -> dict[str, Any]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kube_server.make_url("")).rstrip("/"))
    action = {
        "name": "carts-restart",
        "kind": "kubernetes.rollout_restart",
        "cause": "carts|orders",
        "namespaces": ["shop"],
        "approvers": [APPROVER],
        **entry,
    }
    return {
        "enabled": True,
        "actions": [action],
        "kubernetes": {"kubeconfig": str(kubeconfig)},
        "follow_up": follow_up,
    }


async def started(
    aiohttp_client: Client,
    tmp_path: Path,
    slack: tuple[FakeSlack, TestServer],
    kube_server: TestServer,
    follow_up: str = "1s",
    at: float | None = None,
    **entry: Any,
) -> Service:
    """The service with one incident open (its alert started ``at``, default 2 min ago)."""
    at = time.time() - 120 if at is None else at
    service = await start(
        aiohttp_client,
        tmp_path,
        slack,
        remediation=catalogue(tmp_path, kube_server, follow_up, **entry),
        correlation={"enabled": False},
    )
    assert (await post(service.client, alert("CartsLatency", "carts", at))).status == 202
    await wait_for(lambda: _settled(service))
    return service


async def press(service: Service, verb: str, user: str = APPROVER) -> str:
    key, url = service.response_url()
    parent = service.parent()
    button = next(e for e in _buttons(parent) if e["action_id"].startswith(f"agentic_obs:{verb}."))
    action = {
        "action_id": button["action_id"],
        "block_id": "b",
        "type": "button",
        "value": button["value"],  # the target the person saw
        "action_ts": "1",
    }
    body = block_actions(parent, action, url, id=user, username="ops", name="ops")
    response = await service.send(body)
    assert response.status == 200
    return key


async def audit(service: Service, incident_id: str = "1") -> list[dict[str, Any]]:
    response = await service.client.get(f"/api/v1/incidents/{incident_id}", headers=auth_headers())
    return list((await response.json()).get("remediation") or [])


async def events(service: Service) -> list[str]:
    return [e["event"] for e in await audit(service)]


async def test_the_report_and_the_parent_propose_the_catalogue_action(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    incident = await service.client.app[STORE].get_incident("1")
    assert incident is not None and incident.report is not None
    (proposal,) = incident.report["remediation"]
    assert proposal["action"] == "carts-restart" and proposal["target"]["workload"] == "carts"
    assert "Proposed remediation" in incident.report["summary"]
    labels = [e["text"]["text"] for e in _buttons(service.parent()) if e["type"] == "button"]
    assert "Approve: carts-restart" in labels and "Dry run: carts-restart" in labels
    assert kube[0].requests == []  # proposing touches nothing
    assert service.fake.errors == []


async def test_an_approval_dry_runs_then_runs_once_and_the_thread_audit_and_metrics_say_so(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    fake_kube = kube[0]
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    await press(service, messages.APPROVE)
    await wait_for(lambda: _has(service, "ran"))
    writes = fake_kube.writes("PATCH")
    assert [w.query.get("dryRun") for w in writes] == ["All", None]  # the server-side dry run first
    stamp = fake_kube.workload("Deployment", "shop", "carts")["spec"]["template"]["metadata"]["annotations"]
    assert RESTARTED_AT in stamp
    again = await press(service, messages.APPROVE)  # a second press: told, nothing queued
    await wait_for(lambda: _answered(service, again))
    assert "approved already" in service.fake.answers(again)[0]["text"]
    await wait_for(lambda: _settled(service))
    replies = reply_texts(service)
    assert any(t.startswith(f":white_check_mark: <@{APPROVER}> approved") for t in replies)
    assert any(t.startswith(":white_check_mark: *Done:*") for t in replies)
    assert len(fake_kube.writes("PATCH")) == 2  # still one dry run and one run
    assert (await events(service))[:3] == ["approved", "dry-run", "ran"]
    metrics = await (await service.client.get("/metrics")).text()
    assert 'agentic_obs_remediations_total{action="carts-restart",event="ran"} 1.0' in metrics
    assert fake_kube.errors == [] and service.fake.errors == []


async def _has(service: Service, event: str) -> bool:
    return event in await events(service)


async def test_an_unpermitted_person_is_refused_and_nothing_runs(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    key = await press(service, messages.APPROVE, user="U0STRANGER")
    await wait_for(lambda: _answered(service, key))
    (answer,) = service.fake.answers(key)
    assert answer["response_type"] == "ephemeral" and "You may not approve" in answer["text"]
    assert await events(service) == ["refused"]
    assert kube[0].requests == []


async def test_a_dry_run_press_changes_nothing_and_answers_the_person(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    key = await press(service, messages.DRY_RUN, user="U0ANYONE")  # anyone may ask what it would do
    await wait_for(lambda: _answered(service, key))
    assert "*Dry run*" in service.fake.answers(key)[0]["text"]
    assert [w.query.get("dryRun") for w in kube[0].writes()] == ["All"]
    assert RESTARTED_AT not in str(kube[0].workload("Deployment", "shop", "carts"))
    assert await events(service) == ["dry-run"]


async def test_a_run_whose_record_failed_is_not_repeated_when_the_outbox_retries(
    slack: tuple[FakeSlack, TestServer],
    kube: Any,
    aiohttp_client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The action went out, then the store failed to record it (a full disk, a crash): the outbox
    delivers the run again, which reuses the recorded dry run's stamp and finds it done."""
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    store = service.client.app[STORE]
    real = store.record_audit
    failed: list[bool] = []

    async def fail_the_first_result(incident_id: str, entries: Any, *args: Any, **kwargs: Any) -> bool:
        if not failed and entries and entries[0].event == "ran":
            failed.append(True)
            raise StoreError("disk full")
        return await real(incident_id, entries, *args, **kwargs)

    monkeypatch.setattr(store, "record_audit", fail_the_first_result)
    await press(service, messages.APPROVE)
    await wait_for(lambda: _has(service, "ran"), within=15)
    real_patches = [w for w in kube[0].writes("PATCH") if w.query.get("dryRun") is None]
    assert failed == [True] and len(real_patches) == 1
    ran = next(e for e in await audit(service) if e["event"] == "ran")
    assert ran["detail"]["already"] is True  # the second delivery looked and found it done


async def test_an_auto_action_keeps_to_its_interval_across_incidents(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await started(
        aiohttp_client, tmp_path, slack, kube[1], auto=True, auto_severities=["critical"], min_interval="1h"
    )
    await wait_for(lambda: _has(service, "ran"))
    second = alert("CartsErrors", "carts", time.time() - 60)
    assert (await post(service.client, second)).status == 202
    await wait_for(lambda: _audited(service, "2", "refused"))
    (refused,) = [e for e in await audit(service, "2") if e["event"] == "refused"]
    assert "min_interval" in refused["detail"]["text"] and refused["by"] == "auto"
    assert len([w for w in kube[0].writes("PATCH") if w.query.get("dryRun") is None]) == 1


async def _audited(service: Service, incident_id: str, event: str) -> bool:
    return event in [e["event"] for e in await audit(service, incident_id)]


async def test_the_follow_up_reads_the_signal_again_and_says_whether_it_recovered(
    slack: tuple[FakeSlack, TestServer],
    kube: Any,
    aiohttp_client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prometheus answers the top hypothesis' PromQL with carts' cpu back near its baseline."""
    asked: list[tuple[str, float]] = []

    async def cpu_now(self: PrometheusClient, expr: str, at: float | None = None) -> list[Sample]:
        asked.append((expr, at or 0.0))
        return [Sample({"service": "carts"}, at or time.time(), 0.21)]

    monkeypatch.setattr(PrometheusClient, "query", cpu_now)
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    await press(service, messages.APPROVE)
    await wait_for(lambda: _has(service, "ran"))
    await wait_for(lambda: _has(service, "recovered"), within=20)
    await wait_for(lambda: _settled(service))
    (said,) = [t for t in reply_texts(service) if t.startswith(":stethoscope: *Follow-up*")]
    assert "cpu is 0.21 (baseline 0.2, 0.9 during the incident): recovered" in said
    assert 'rate(cpu_seconds_total{service="carts"}[1m])' in [e for e, _ in asked]  # the hypothesis' PromQL


async def test_a_follow_up_on_an_incident_that_resolved_says_so(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    at = time.time() - 120  # the resolved alert is the same alert (its fingerprint carries the start)
    service = await started(aiohttp_client, tmp_path, slack, kube[1], follow_up="4s", at=at)
    await press(service, messages.APPROVE)
    await wait_for(lambda: _has(service, "ran"))
    resolved = alert("CartsLatency", "carts", at, status="resolved")
    assert (await post(service.client, resolved)).status == 202
    await wait_for(lambda: _has(service, "recovered"), within=30)
    (entry,) = [e for e in await audit(service) if e["event"] == "recovered"]
    assert "resolved" in entry["detail"]["text"]


def test_recovery_compares_the_signal_now_with_its_baseline_and_the_incident() -> None:
    evidence = {"signal": "cpu", "baseline": 0.2, "incident": 0.9, "unit": "ratio"}
    assert recovery(evidence, [0.25])[0] == "recovered"
    assert recovery(evidence, [0.7])[0] == "not-recovered"
    assert recovery(evidence, [0.25, 0.8])[0] == "not-recovered"  # the worst series counts
    assert recovery(evidence, [])[0] == "not-recovered"
    assert "baseline" in recovery(evidence, [0.25])[1]


async def test_two_incidents_racing_for_one_auto_action_run_it_once(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    """The guardrail check and the run's record happen under one lock: the second incident's run
    sees the first one's, however their deliveries overlap (the fake API answers slowly)."""
    kube[0].delay = 0.3
    service = await start(
        aiohttp_client,
        tmp_path,
        slack,
        remediation=catalogue(tmp_path, kube[1], auto=True, auto_severities=["critical"], max_per_hour=1),
        correlation={"enabled": False},
    )
    now = time.time()
    for name in ("CartsLatency", "CartsErrors"):
        assert (await post(service.client, alert(name, "carts", now - 60))).status == 202
    await wait_for(lambda: _both_decided(service), within=20)
    real = [w for w in kube[0].writes("PATCH") if w.query.get("dryRun") is None]
    assert len(real) == 1


async def _both_decided(service: Service) -> bool:
    decided = [
        e["event"] for i in ("1", "2") for e in await audit(service, i) if e["event"] in ("ran", "refused")
    ]
    return sorted(decided) == ["ran", "refused"]


async def test_a_failed_run_may_be_approved_again(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    kube[0].fail_next.append(("PATCH", 409))  # the dry run is refused once (someone else changed it)
    await press(service, messages.APPROVE)
    await wait_for(lambda: _has(service, "failed"))
    await press(service, messages.APPROVE)
    await wait_for(lambda: _has(service, "ran"))
    assert (await events(service)).count("approved") == 2


async def test_an_approval_of_a_proposal_that_changed_since_runs_nothing(
    slack: tuple[FakeSlack, TestServer], kube: Any, aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await started(aiohttp_client, tmp_path, slack, kube[1])
    key, url = service.response_url()
    parent = service.parent()
    button = next(e for e in _buttons(parent) if e["action_id"].startswith("agentic_obs:approve."))
    seen = json.dumps({"namespace": "shop", "workload": "orders", "workload_kind": "Deployment"})
    action = {"action_id": button["action_id"], "block_id": "b", "type": "button", "value": seen}
    assert (await service.send(block_actions(parent, action, url, id=APPROVER, name="ops"))).status == 200
    await wait_for(lambda: _answered(service, key))
    assert "changed since that message was drawn" in service.fake.answers(key)[0]["text"]
    assert kube[0].requests == [] and await events(service) == []


async def test_feedback_on_a_member_of_a_fault_goes_to_the_roots_thread_not_a_new_parent(
    slack: tuple[FakeSlack, TestServer], aiohttp_client: Client, tmp_path: Path
) -> None:
    service = await start(aiohttp_client, tmp_path, slack)
    now = time.time()
    assert (await post(service.client, alert("CartsLatency", "carts", now - 120))).status == 202
    await wait_for(lambda: _settled(service))
    assert (await post(service.client, alert("OrdersErrors", "orders", now - 100))).status == 202
    await wait_for(lambda: _joined(service), within=20)
    await wait_for(lambda: _settled(service))
    body = {"root_cause": "orders", "correct": False, "by": "sam"}
    response = await service.client.post("/api/v1/incidents/2/feedback", json=body, headers=auth_headers())
    assert response.status == 200
    await wait_for(lambda: _replied_about(service, "(incident 2): Feedback from sam"))
    await wait_for(lambda: _settled(service))
    assert len(service.fake.parents()) == 1 and service.fake.errors == []


async def _joined(service: Service) -> bool:
    response = await service.client.get("/api/v1/incidents/2", headers=auth_headers())
    return response.status == 200 and (await response.json()).get("parent_id") == "1"


async def _replied_about(service: Service, text: str) -> bool:
    return any(text in t for t in reply_texts(service))
