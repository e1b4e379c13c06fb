"""The remediation engine (issue 22): which catalogue entries an incident gets (propose), whether one
may run now (guardrails), and running it: against a fake Kubernetes API that checks every request
(tests/fake_kube.py) and a local receiver for the http action."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from agentic_observability.config import RemediationAction, RemediationConfig, Secrets, load_config
from agentic_observability.demo.stack import free_port
from agentic_observability.models import Alert, Incident
from agentic_observability.remediation.catalogue import Proposal, consider, propose
from agentic_observability.remediation.executor import Executor, Outcome, restarted_at
from agentic_observability.remediation.guardrails import allowed, target_key
from tests.fake_kube import RESTARTED_AT, FakeKube, write_kubeconfig

AT = 1_760_000_000.0  # the approval time
STAMP = "2025-10-09T08:53:20Z"  # restarted_at(AT)
HOOK_TOKEN = "hook-bearer-token-not-to-be-shown-77"

RESTART: dict[str, Any] = {
    "name": "carts-restart",
    "kind": "kubernetes.rollout_restart",
    "matchers": ['severity=~"critical|warning"'],
    "cause": "carts|orders",
    "namespaces": ["shop", "payments"],
    "approvers": ["U0SRE1"],
}
SCALE: dict[str, Any] = {
    "name": "carts-scale",
    "kind": "kubernetes.scale",
    "namespaces": ["shop"],
    "min_replicas": 1,
    "max_replicas": 5,
}


def _config(*actions: dict[str, Any], enabled: bool = True, **settings: Any) -> RemediationConfig:
    return RemediationConfig.model_validate({"enabled": enabled, "actions": list(actions), **settings})


def _incident(labels: dict[str, str] | None = None, alert: dict[str, str] | None = None) -> Incident:
    first = Alert("firing", alert or {"alertname": "HighLatency"}, {}, AT - 300, None, "", "fp1")
    group = {"namespace": "shop", "severity": "critical"} if labels is None else labels
    return Incident(
        "7", "g", "alertmanager", "firing", "High latency in shop", group, AT - 300, None, (first,)
    )


def _report(entity: str | None = "carts", signal: str = "cpu") -> dict[str, Any]:
    if entity is None:
        return {"hypotheses": []}
    return {"hypotheses": [{"entity": entity, "evidence": [{"signal": signal}, {"signal": "latency"}]}]}


# -- propose: matching and rendering ----------------------------------------------------------------------


def test_nothing_is_proposed_while_remediation_is_off() -> None:
    assert propose(_incident(), _report(), _config(RESTART, enabled=False), "service") == []


def test_a_matching_restart_is_proposed_with_what_it_does() -> None:
    [proposal] = propose(_incident(), _report(), _config(RESTART), "service")
    assert proposal == Proposal(
        action="carts-restart",
        kind="kubernetes.rollout_restart",
        target={"namespace": "shop", "workload": "carts", "workload_kind": "Deployment"},
        does="rollout restart of Deployment carts in namespace shop",
        params={},
        auto=False,
        approvers=("U0SRE1",),
    )


def test_matchers_see_the_first_alerts_labels_under_the_incidents() -> None:
    config = _config({**RESTART, "matchers": ['alertname="HighLatency"', 'team!="db"']})
    assert propose(_incident(), _report(), config, "service")
    other = _incident(alert={"alertname": "DiskFull"})
    [why] = consider(other, _report(), config, "service")
    assert (
        why.proposal is None and why.reason == 'the incident\'s labels do not match alertname="HighLatency"'
    )
    assert not propose(
        _incident(alert={"alertname": "HighLatency", "team": "db"}), _report(), config, "service"
    )
    warning = _incident({"namespace": "shop", "severity": "info"})
    assert not propose(warning, _report(), _config(RESTART), "service")


@pytest.mark.parametrize(
    ("entity", "proposed"),
    [("carts", True), ("orders", True), ("carts-db", False), ("xcarts", False), (None, False)],
)
def test_the_cause_pattern_is_anchored(entity: str | None, proposed: bool) -> None:
    assert bool(propose(_incident(), _report(entity), _config(RESTART), "service")) is proposed


def test_without_a_ranked_cause_the_incidents_own_entity_is_the_cause() -> None:
    incident = _incident({"namespace": "shop", "severity": "critical", "service": "orders"})
    [proposal] = propose(incident, _report(None), _config(RESTART), "service")
    assert proposal.target["workload"] == "orders"
    [why] = consider(_incident(), _report(None), _config(RESTART), "service")
    assert why.reason == "no ranked cause to match its cause pattern"


def test_the_fault_kind_is_the_top_hypothesis_first_signal() -> None:
    config = _config({**RESTART, "signals": ["latency"]})
    [why] = consider(_incident(), _report(signal="cpu"), config, "service")
    assert why.proposal is None and "('cpu') is not one of latency" in why.reason
    assert propose(_incident(), _report(signal="latency"), config, "service")
    assert propose(
        _incident(), _report(signal="cpu"), _config({**RESTART, "signals": ["cpu", "mem"]}), "service"
    )


def test_a_namespace_outside_the_allowlist_is_never_proposed() -> None:
    incident = _incident({"namespace": "kube-system", "severity": "critical"})
    [why] = consider(incident, _report(), _config(RESTART), "service")
    assert why.proposal is None
    assert why.reason == "namespace 'kube-system' is not in its allowlist (shop, payments)"


def test_a_template_without_a_value_drops_the_action() -> None:
    incident = _incident({"severity": "critical"})  # no namespace label
    [why] = consider(incident, _report(), _config(RESTART), "service")
    assert why.proposal is None and why.reason == "{labels.namespace} has no value for this incident"
    fixed = _config({**RESTART, "namespace": "shop"})
    assert propose(incident, _report(), fixed, "service")[0].target["namespace"] == "shop"


@pytest.mark.parametrize("entity", ["Carts", "carts/../../kube-system/x", "carts?dryRun=None", "-carts"])
def test_a_cause_that_is_not_a_kubernetes_name_is_never_a_target(entity: str) -> None:
    config = _config({**RESTART, "cause": None})
    [why] = consider(_incident(), _report(entity), config, "service")
    assert why.proposal is None and "is not a Kubernetes object name" in why.reason


def test_auto_only_for_the_listed_severities() -> None:
    config = _config({**RESTART, "auto": True, "auto_severities": ["critical"]})
    assert propose(_incident(), _report(), config, "service")[0].auto is True
    warning = _incident({"namespace": "shop", "severity": "warning"})
    assert propose(warning, _report(), config, "service")[0].auto is False
    assert propose(_incident(), _report(), _config(RESTART), "service")[0].auto is False


def test_a_scale_proposal_carries_its_bounds() -> None:
    [proposal] = propose(_incident(), _report(), _config({**SCALE, "scale_by": -2}), "service")
    assert proposal.does == "scale Deployment carts in namespace shop by -2 replicas (within 1-5)"
    assert proposal.params == {"scale_by": -2, "min_replicas": 1, "max_replicas": 5}


def test_an_http_proposal_renders_body_and_headers() -> None:
    hook = {
        "name": "rundeck",
        "kind": "http",
        "description": "the restart job",
        "url": "https://rundeck.example/api/41/job/abc/run",
        "body": {
            "options": {"svc": "{cause}", "id": "inc-{incident.id}", "n": 3},
            "tags": ["{labels.namespace}", "{incident.severity}"],
            "title": "{{{incident.title}}}",
        },
        "headers": {"X-By": "agentic-{action}"},
    }
    [proposal] = propose(_incident(), _report(), _config(hook), "service")
    assert proposal.target == {"url": "https://rundeck.example/api/41/job/abc/run"}
    assert proposal.does == "POST to https://rundeck.example/api/41/job/abc/run (the restart job)"
    assert proposal.params == {
        "body": {
            "options": {"svc": "carts", "id": "inc-7", "n": 3},
            "tags": ["shop", "critical"],
            "title": "{High latency in shop}",
        },
        "headers": {"X-By": "agentic-rundeck"},
    }


def test_only_catalogue_entries_in_catalogue_order() -> None:
    config = _config(SCALE, RESTART, {**RESTART, "name": "orders-restart", "cause": "orders"})
    assert [p.action for p in propose(_incident(), _report(), config, "service")] == [
        "carts-scale",
        "carts-restart",
    ]


def test_a_proposal_survives_json() -> None:
    [proposal] = propose(_incident(), _report(), _config(RESTART, SCALE), "service")[1:]
    assert Proposal.from_dict(json.loads(json.dumps(proposal.to_dict()))) == proposal
    outcome = Outcome(True, "scaled", False, changes={"replicas": [2, 3]})
    assert Outcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


# -- guardrails ---------------------------------------------------------------------------------------------


def _entry(**overrides: Any) -> RemediationAction:
    return RemediationAction.model_validate({**RESTART, **overrides})


def _restart_proposal(workload: str = "carts") -> Proposal:
    target = {"namespace": "shop", "workload": workload, "workload_kind": "Deployment"}
    return Proposal("carts-restart", "kubernetes.rollout_restart", target, "", {}, False, ())


def test_target_keys() -> None:
    assert target_key(_restart_proposal()) == "shop/Deployment/carts"
    hook = Proposal("hook", "http", {"url": "https://x.example/run"}, "", {}, False, ())
    assert target_key(hook) == "https://x.example/run"


def test_min_interval_per_workload() -> None:
    now, entry = AT, _entry(min_interval="30m")
    key = "shop/Deployment/carts"
    assert allowed(_restart_proposal(), [], now, entry) is None
    recent = [("carts-restart", key, now - 720)]
    assert allowed(_restart_proposal(), recent, now, entry) == (
        "carts was restarted 12 min ago; min_interval is 30 min"
    )
    assert allowed(_restart_proposal(), [("carts-restart", key, now - 1801)], now, entry) is None
    assert allowed(_restart_proposal("orders"), recent, now, entry) is None  # another workload
    other_action = [("carts-scale", key, now - 60)]
    assert allowed(_restart_proposal(), other_action, now, entry) == (
        "carts was changed by carts-scale 1 min ago; min_interval is 30 min"
    )
    assert allowed(_restart_proposal(), [("carts-restart", key, now + 30)], now, entry) is not None
    assert allowed(_restart_proposal(), recent, now, _entry(min_interval=0)) is None


def test_max_per_hour_per_action_across_incidents() -> None:
    now, entry = AT, _entry(min_interval=0, max_per_hour=3)
    runs = [("carts-restart", f"shop/Deployment/w{i}", now - 600 * (i + 1)) for i in range(3)]
    assert allowed(_restart_proposal(), runs, now, entry) == (
        "carts-restart ran 3 times in the last hour; max_per_hour is 3"
    )
    assert allowed(_restart_proposal(), runs[:2], now, entry) is None
    older = [*runs[:2], ("carts-restart", "shop/Deployment/w9", now - 3601)]
    assert allowed(_restart_proposal(), older, now, entry) is None
    others = [*runs[:2], ("orders-restart", "shop/Deployment/orders", now - 60)]
    assert allowed(_restart_proposal(), others, now, entry) is None
    assert allowed(_restart_proposal(), runs[:1], now, _entry(min_interval=0, max_per_hour=1)) == (
        "carts-restart ran 1 time in the last hour; max_per_hour is 1"
    )


# -- the Kubernetes adapter against the fake API -------------------------------------------------------------


@dataclass
class Cluster:
    fake: FakeKube
    kubeconfig: Path
    session: aiohttp.ClientSession
    executors: list[Executor] = field(default_factory=list)

    def executor(
        self, *actions: dict[str, Any], kubeconfig: Path | None = None, timeout: float = 5.0
    ) -> Executor:
        settings = {"kubernetes": {"kubeconfig": str(kubeconfig or self.kubeconfig)}, "timeout": timeout}
        made = Executor(_config(*actions, **settings), Secrets(), self.session)
        self.executors.append(made)
        return made


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    fake = FakeKube(roles={"shop": {"get", "patch", "update"}, "payments": {"get"}})
    fake.add("Deployment", "shop", "carts", replicas=2)
    fake.add("StatefulSet", "shop", "orders", replicas=5)
    fake.add("Deployment", "payments", "carts", replicas=2)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(server.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as session:
        made = Cluster(fake, kubeconfig, session)
        yield made
        for executor in made.executors:
            await executor.close()
    await server.close()


def _proposal(config: dict[str, Any], namespace: str = "shop", entity: str = "carts") -> Proposal:
    incident = _incident({"namespace": namespace, "severity": "critical"})
    [proposal] = propose(incident, _report(entity), _config({**config, "cause": None}), "service")
    return proposal


def test_the_restart_stamp_is_rfc3339_utc() -> None:
    assert restarted_at(AT) == STAMP


async def test_a_dry_run_restart_is_a_server_side_dry_run_that_changes_nothing(cluster: Cluster) -> None:
    outcome = await cluster.executor(RESTART).dry_run(_proposal(RESTART), "inc-7:carts-restart", AT)
    assert outcome == Outcome(
        True,
        f"dry run accepted: rollout restart of Deployment carts in namespace shop (restartedAt {STAMP})",
        dry_run=True,
        changes={"restartedAt": STAMP},
    )
    [patch] = cluster.fake.writes()
    assert patch.query == {"dryRun": "All", "fieldManager": "agentic-observability"}
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: STAMP}}}}}
    assert (
        RESTARTED_AT
        not in cluster.fake.workload("Deployment", "shop", "carts")["spec"]["template"]["metadata"][
            "annotations"
        ]
    )
    assert cluster.fake.errors == []


async def test_a_restart_is_kubectls_patch_and_running_it_twice_changes_nothing(cluster: Cluster) -> None:
    executor, proposal = cluster.executor(RESTART), _proposal(RESTART)
    first = await executor.run(proposal, "inc-7:carts-restart", AT)
    assert first.ok and not first.dry_run and not first.already
    assert first.detail == f"rollout restart of Deployment carts in namespace shop (restartedAt {STAMP})"
    [patch] = cluster.fake.writes()
    assert "dryRun" not in patch.query and patch.method == "PATCH"
    assert patch.path == "/apis/apps/v1/namespaces/shop/deployments/carts"
    assert patch.body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: STAMP}}}}}
    stored = cluster.fake.workload("Deployment", "shop", "carts")
    assert stored["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: STAMP}
    generation = stored["metadata"]["generation"]

    again = await executor.run(proposal, "inc-7:carts-restart", AT)  # a second press, a replay
    assert again.ok and again.already and again.changes == {"restartedAt": STAMP}
    assert "already restarted" in again.detail
    assert len(cluster.fake.writes()) == 1  # looked, and sent nothing
    assert cluster.fake.workload("Deployment", "shop", "carts")["metadata"]["generation"] == generation

    later = await executor.run(proposal, "inc-9:carts-restart", AT + 3600)  # a new approval restarts again
    assert later.ok and not later.already and len(cluster.fake.writes()) == 2
    assert cluster.fake.errors == []


async def test_a_statefulset_restart_uses_its_own_path(cluster: Cluster) -> None:
    action = {**RESTART, "workload_kind": "StatefulSet"}
    outcome = await cluster.executor(action).run(_proposal(action, entity="orders"), "k", AT)
    assert outcome.ok, outcome.detail
    assert cluster.fake.writes()[0].path == "/apis/apps/v1/namespaces/shop/statefulsets/orders"
    assert cluster.fake.errors == []


async def test_scale_up_puts_the_scale_subresource(cluster: Cluster) -> None:
    outcome = await cluster.executor(SCALE).run(_proposal(SCALE), "k", AT)
    assert outcome == Outcome(
        True,
        "scaled Deployment carts in namespace shop from 2 to 3 replicas",
        False,
        changes={"replicas": [2, 3]},
    )
    [put] = cluster.fake.writes()
    assert put.method == "PUT" and put.path == "/apis/apps/v1/namespaces/shop/deployments/carts/scale"
    assert put.body["apiVersion"] == "autoscaling/v1" and put.body["kind"] == "Scale"
    assert put.body["spec"] == {"replicas": 3} and put.body["metadata"]["resourceVersion"]
    assert cluster.fake.workload("Deployment", "shop", "carts")["spec"]["replicas"] == 3
    assert cluster.fake.errors == []


async def test_a_dry_run_scale_changes_nothing(cluster: Cluster) -> None:
    outcome = await cluster.executor(SCALE).dry_run(_proposal(SCALE), "k", AT)
    assert outcome.ok and outcome.dry_run and outcome.changes == {"replicas": [2, 3]}
    assert outcome.detail == "dry run accepted: scale Deployment carts in namespace shop from 2 to 3 replicas"
    [put] = cluster.fake.writes()
    assert put.query["dryRun"] == "All"
    assert cluster.fake.workload("Deployment", "shop", "carts")["spec"]["replicas"] == 2
    assert cluster.fake.errors == []


async def test_scale_is_clamped_to_the_bounds(cluster: Cluster) -> None:
    action = {**SCALE, "scale_by": 10}
    outcome = await cluster.executor(action).run(_proposal(action), "k", AT)
    assert outcome.ok and outcome.changes == {"replicas": [2, 5]}
    down = {**SCALE, "name": "carts-down", "scale_by": -10, "min_interval": 0}
    outcome = await cluster.executor(down).run(_proposal(down), "k", AT)
    assert outcome.ok and outcome.changes == {"replicas": [5, 1]}
    assert cluster.fake.workload("Deployment", "shop", "carts")["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("replicas", "scale_by", "expected"),
    [
        (5, 1, "already has 5 replicas; max_replicas is 5: not scaled"),
        (7, 1, "already has 7 replicas; max_replicas is 5: not scaled"),  # never down on a scale-up
        (1, -1, "already has 1 replicas; min_replicas is 1: not scaled"),
        (0, -1, "already has 0 replicas; min_replicas is 1: not scaled"),  # never up on a scale-down
    ],
)
async def test_scale_at_a_bound_is_refused_without_a_write(
    cluster: Cluster, replicas: int, scale_by: int, expected: str
) -> None:
    cluster.fake.add("Deployment", "shop", "carts", replicas=replicas)
    action = {**SCALE, "scale_by": scale_by}
    for perform in ("dry_run", "run"):
        outcome = await getattr(cluster.executor(action), perform)(_proposal(action), "k", AT)
        assert not outcome.ok and outcome.detail == f"Deployment carts in namespace shop {expected}"
    assert cluster.fake.writes() == []
    assert cluster.fake.workload("Deployment", "shop", "carts")["spec"]["replicas"] == replicas


async def test_a_scale_to_the_planned_target_runs_once(cluster: Cluster) -> None:
    executor, proposal = cluster.executor(SCALE), _proposal(SCALE)
    dry = await executor.dry_run(proposal, "k", AT)
    first = await executor.run(proposal, "k", AT, planned=dry.changes)
    again = await executor.run(proposal, "k", AT, planned=dry.changes)  # the outbox delivered it again
    assert first.ok and first.changes == {"replicas": [2, 3]} and not first.already
    assert again.ok and again.already and again.changes == {"replicas": [3, 3]}
    assert len(cluster.fake.writes(dry_run=False)) == 1
    assert cluster.fake.workload("Deployment", "shop", "carts")["spec"]["replicas"] == 3
    outside = await executor.run(proposal, "k", AT, planned={"replicas": [2, 9]})
    assert not outside.ok and "outside 1-5" in outside.detail
    assert cluster.fake.errors == []


async def test_outside_the_role_is_forbidden_with_a_clear_reason(cluster: Cluster) -> None:
    """``payments`` is in the action's allowlist but the Role only grants get there."""
    restart = await cluster.executor(RESTART).run(_proposal(RESTART, "payments"), "k", AT)
    assert restart == Outcome(
        False,
        "forbidden: the service account may not patch deployments in payments "
        "(see the chart's remediation RBAC)",
        False,
    )
    scale = {**SCALE, "namespaces": ["payments"]}
    outcome = await cluster.executor(scale).run(_proposal(scale, "payments"), "k", AT)
    assert outcome.detail == (
        "forbidden: the service account may not update deployments/scale in payments "
        "(see the chart's remediation RBAC)"
    )
    assert cluster.fake.workload("Deployment", "payments", "carts")["spec"]["replicas"] == 2
    nowhere = {**RESTART, "namespaces": ["billing"]}
    outcome = await cluster.executor(nowhere).dry_run(_proposal(nowhere, "billing"), "k", AT)
    assert outcome.detail.startswith("forbidden: the service account may not get deployments in billing")


async def test_an_unknown_workload_is_not_found(cluster: Cluster) -> None:
    outcome = await cluster.executor(RESTART).run(_proposal(RESTART, entity="cart"), "k", AT)
    assert outcome == Outcome(False, "not found: Deployment cart in namespace shop", False)


async def test_reads_and_dry_runs_are_retried_real_writes_are_not(cluster: Cluster) -> None:
    executor, proposal = cluster.executor(RESTART), _proposal(RESTART)
    cluster.fake.fail_next = [("GET", 503), ("PATCH", 503)]
    dry = await executor.dry_run(proposal, "k", AT)
    assert dry.ok, dry.detail
    assert len(cluster.fake.writes(dry_run=True)) == 2  # the dry-run PATCH went again after its 503

    cluster.fake.fail_next = [("PATCH", 503)]
    outcome = await executor.run(proposal, "k", AT)
    assert not outcome.ok and "HTTP 503" in outcome.detail
    assert len(cluster.fake.writes(dry_run=False)) == 1  # sent once: the caller looks before trying again
    retried = await executor.run(proposal, "k", AT)
    assert retried.ok and not retried.already


async def test_an_unreachable_api_says_so(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    closed = write_kubeconfig(tmp_path / "closed", f"http://127.0.0.1:{port}")
    outcome = await cluster.executor(RESTART, kubeconfig=closed).run(_proposal(RESTART), "k", AT)
    assert not outcome.ok
    assert outcome.detail.startswith(
        f"cannot reach the Kubernetes API at http://127.0.0.1:{port}: ConnectError"
    )


async def test_a_slow_api_times_out(cluster: Cluster) -> None:
    cluster.fake.delay = 2.0
    executor = Executor(
        _config(RESTART, kubernetes={"kubeconfig": str(cluster.kubeconfig)}, timeout=0.2),
        Secrets(),
        cluster.session,
    )
    cluster.executors.append(executor)
    outcome = await executor.run(_proposal(RESTART), "k", AT)
    assert outcome.detail == "the Kubernetes API did not answer within 0.2s (get deployments in shop)"
    assert cluster.fake.writes() == []


async def test_wrong_credentials_and_a_missing_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    server = json.loads(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    wrong = write_kubeconfig(tmp_path / "wrong", server, token="not-the-token")
    outcome = await cluster.executor(RESTART, kubeconfig=wrong).run(_proposal(RESTART), "k", AT)
    assert outcome.detail == "unauthorized: the Kubernetes API refused the service account's credentials"
    missing = await cluster.executor(RESTART, kubeconfig=tmp_path / "nope").run(_proposal(RESTART), "k", AT)
    assert not missing.ok and missing.detail.startswith("Kubernetes client configuration: ConfigError")
    assert "nope" in missing.detail


async def test_the_context_is_chosen_from_the_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    data = yaml.safe_load(cluster.kubeconfig.read_text())
    data["current-context"] = "elsewhere"
    data["contexts"].append({"name": "elsewhere", "context": {"cluster": "fake", "user": "fake-user"}})
    data["clusters"].append({"name": "other", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}})
    data["contexts"][1]["context"]["cluster"] = "other"
    path = tmp_path / "two-contexts"
    path.write_text(yaml.safe_dump(data))
    settings = {"kubernetes": {"kubeconfig": str(path), "context": "fake"}}
    executor = Executor(_config(RESTART, **settings), Secrets(), cluster.session)
    cluster.executors.append(executor)
    assert (await executor.run(_proposal(RESTART), "k", AT)).ok


async def test_a_proposal_the_catalogue_no_longer_allows_is_not_run(cluster: Cluster) -> None:
    proposal = _proposal(RESTART)
    narrowed = cluster.executor({**RESTART, "namespaces": ["payments"]})
    outcome = await narrowed.run(proposal, "k", AT)
    assert outcome.detail == "carts-restart: not run: namespace 'shop' is not in its allowlist (payments)"
    tampered = Proposal.from_dict({**proposal.to_dict(), "target": {**proposal.target, "workload": "a/b"}})
    outcome = await cluster.executor(RESTART).run(tampered, "k", AT)
    assert outcome.detail == "carts-restart: not run: workload 'a/b' is not a Kubernetes object name"
    gone = await cluster.executor(SCALE).run(proposal, "k", AT)
    assert gone.detail == "carts-restart: not run: the action is no longer in the catalogue"
    off = Executor(_config(RESTART, enabled=False), Secrets(), cluster.session)
    assert (await off.run(proposal, "k", AT)).detail == "carts-restart: not run: remediation is disabled"
    assert cluster.fake.requests == []


# -- the http action against a local receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        found.requests.append((dict(request.headers), await request.json()))
        status, text = found.answers.pop(0) if found.answers else (202, '{"id": 41}')
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/41/job/abc/run", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    found.url = str(server.make_url("/api/41/job/abc/run"))
    yield found
    await server.close()


@pytest.fixture
def hook_config(tmp_path: Path, receiver: Receiver) -> Iterator[Any]:
    action = {
        "name": "rundeck",
        "kind": "http",
        "url": receiver.url,
        "body": {"options": {"service": "{cause}", "incident": "{incident.id}"}},
        "headers": {"X-Requested-By": "agentic-{action}"},
        "token_env": "HOOK_TOKEN",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"remediation": {"enabled": True, "actions": [action], "timeout": "2s"}}))
    yield load_config(path, environ={"HOOK_TOKEN": HOOK_TOKEN})


async def test_the_http_action_posts_the_rendered_body_once_with_its_key_and_token(
    receiver: Receiver, hook_config: Any
) -> None:
    remediation = hook_config.file.remediation
    [proposal] = propose(_incident(), _report(), remediation, "service")
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(remediation, hook_config.secrets, session).run(
            proposal, "inst-7:rundeck", AT
        )
    assert outcome == Outcome(True, f"POST to {receiver.url}: HTTP 202", False, changes={"status": 202})
    [(headers, body)] = receiver.requests
    assert body == {"options": {"service": "carts", "incident": "7"}}
    assert headers["Idempotency-Key"] == "inst-7:rundeck"
    assert headers["Authorization"] == f"Bearer {HOOK_TOKEN}"
    assert headers["X-Requested-By"] == "agentic-rundeck"
    assert headers["Content-Type"] == "application/json"


async def test_a_refusal_is_not_ok_with_its_status_and_an_excerpt_without_the_token(
    receiver: Receiver, hook_config: Any
) -> None:
    receiver.answers = [
        (409, json.dumps({"error": f"job already running; your token {HOOK_TOKEN} " + "x" * 500}))
    ]
    remediation = hook_config.file.remediation
    [proposal] = propose(_incident(), _report(), remediation, "service")
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(remediation, hook_config.secrets, session).run(proposal, "k", AT)
    assert not outcome.ok and outcome.changes == {"status": 409}
    assert outcome.detail.startswith(
        f'POST to {receiver.url}: HTTP 409: {{"error": "job already running; your token ***'
    )
    assert HOOK_TOKEN not in outcome.detail and len(outcome.detail) < len(receiver.url) + 250


async def test_a_server_error_is_not_retried(receiver: Receiver, hook_config: Any) -> None:
    receiver.answers = [(503, "busy"), (503, "busy")]
    remediation = hook_config.file.remediation
    [proposal] = propose(_incident(), _report(), remediation, "service")
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(remediation, hook_config.secrets, session).run(proposal, "k", AT)
    assert not outcome.ok and outcome.detail == f"POST to {receiver.url}: HTTP 503: busy"
    assert len(receiver.requests) == 1


async def test_an_http_dry_run_sends_nothing_and_says_what_would_go(
    receiver: Receiver, hook_config: Any
) -> None:
    remediation = hook_config.file.remediation
    [proposal] = propose(_incident(), _report(), remediation, "service")
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(remediation, hook_config.secrets, session).dry_run(
            proposal, "inst-7:rundeck", AT
        )
    assert outcome.ok and outcome.dry_run
    assert outcome.detail == (
        f"dry run: would POST to {receiver.url} a JSON body with keys options "
        "(Idempotency-Key inst-7:rundeck)"
    )
    assert receiver.requests == []


async def test_without_its_token_the_request_is_not_sent(receiver: Receiver, hook_config: Any) -> None:
    remediation = hook_config.file.remediation
    [proposal] = propose(_incident(), _report(), remediation, "service")
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(remediation, Secrets(), session).run(proposal, "k", AT)
        assert outcome.detail == "rundeck: not run: HOOK_TOKEN is not set"
        secrets = Secrets(remediation_tokens={"HOOK_TOKEN": SecretStr(HOOK_TOKEN)})
        assert (await Executor(remediation, secrets, session).run(proposal, "k", AT)).ok
    assert len(receiver.requests) == 1


async def test_an_unreachable_receiver_says_so(hook_config: Any, receiver: Receiver) -> None:
    remediation = hook_config.file.remediation
    [proposal] = propose(_incident(), _report(), remediation, "service")
    moved = Proposal.from_dict({**proposal.to_dict(), "target": {"url": f"http://127.0.0.1:{free_port()}/x"}})
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(remediation, hook_config.secrets, session).run(moved, "k", AT)
    assert outcome.detail == "rundeck: not run: its url is no longer the catalogue's"  # a stored proposal
    closed = hook_config.file.remediation.actions[0].model_copy(
        update={"url": f"http://127.0.0.1:{free_port()}/x"}
    )
    config = remediation.model_copy(update={"actions": (closed,)})
    [proposal] = propose(_incident(), _report(), config, "service")
    async with aiohttp.ClientSession() as session:
        outcome = await Executor(config, hook_config.secrets, session).run(proposal, "k", AT)
    assert not outcome.ok and "ClientConnectorError" in outcome.detail and HOOK_TOKEN not in outcome.detail
