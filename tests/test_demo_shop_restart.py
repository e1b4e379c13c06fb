"""The demo shop's rollout restart (issue 22): ``POST /restart/{service}`` is what the demo's ``http``
remediation action calls. A restart ends the restarted service's current fault window at that moment
(its callers recover ``HOP_SECONDS`` later per hop), replaces its pods, and is recorded once per
``Idempotency-Key``. Values stay a function of time and the recorded restarts, so the history
rendered for promtool shows the restart at its moment and not before. The last tests run the demo's
catalogue entry against the endpoint and check the demo's simulated Approve press is a correctly
signed Slack payload."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from slack_sdk.signature import SignatureVerifier

from agentic_observability.demo.run import ON_CALL, REMEDIATION, approve_press, demo_config, slack_headers
from agentic_observability.demo.shop import (
    BASE_LATENCY,
    HOP_SECONDS,
    SERVICES,
    Cluster,
    ShopCollector,
    history_openmetrics,
    shop_app,
)
from agentic_observability.models import Alert, Incident
from agentic_observability.outbox import messages
from agentic_observability.remediation.catalogue import propose
from agentic_observability.remediation.executor import Executor
from agentic_observability.service.slack_interactions import BlockActions

Client = Callable[..., Awaitable[TestClient]]
FAULT_AT, FAULT_FOR = 90.0, 600.0  # a long carts fault: only a restart ends it within the test


def in_fault(cluster: Cluster | None = None) -> ShopCollector:
    """A shop whose carts fault began 30 s ago (fully ramped) and would last ten more minutes."""
    return ShopCollector([(FAULT_AT, FAULT_FOR)], started=time.time() - FAULT_AT - 30.0, cluster=cluster)


def latency(shop: ShopCollector, service: str, now: float) -> float:
    [family] = [f for f in shop.families(now) if f.name == "shop_request_latency_seconds"]
    [value] = [s.value for s in family.samples if s.labels["service"] == service]
    return float(value)


def pod_names(shop: ShopCollector, service: str, now: float) -> set[str]:
    return {p.name for p in shop.pods(service, now)}


async def test_restart_ends_the_fault_and_callers_recover_a_hop_later(aiohttp_client: Client) -> None:
    shop = in_fault()
    client = await aiohttp_client(shop_app(shop))
    before = time.time()
    assert shop.fault_level("carts", before) == 1.0 and shop.hog("carts", before) == 1.0
    assert latency(shop, "carts", before) > BASE_LATENCY["carts"] * 1.1 + 1.0

    response = await client.post(
        "/restart/carts",
        json={"incident": "42", "title": "carts CPU saturated", "cause": "carts", "extra": {"x": 1}},
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["restarted"] == "carts"
    at = datetime.fromisoformat(answer["at"]).timestamp()
    assert before <= at <= time.time() + 0.01
    [record] = shop.restarts
    assert record.service == "carts" and record.key is None

    just_after = at + 0.5
    assert shop.fault_level("carts", just_after) == 0.0 and shop.hog("carts", just_after) == 0.0
    assert latency(shop, "carts", just_after) < BASE_LATENCY["carts"] * 1.2
    # its callers still feel it until the fault's end reaches them, a hop (orders) or two (front-end) later
    assert shop.fault_level("orders", just_after) == 1.0
    assert shop.fault_level("front-end", at + HOP_SECONDS + 0.5) == 1.0
    assert shop.fault_level("orders", at + HOP_SECONDS + 0.5) == 0.0
    assert shop.fault_level("front-end", at + 2 * HOP_SECONDS + 0.5) == 0.0
    # the restart counts from its moment: before it, the fault is as it was
    assert shop.fault_level("carts", at - 1.0) == 1.0
    # services the fault never reached, and their own faults, are untouched
    assert shop.fault_level("catalogue", just_after) == 0.0


async def test_restart_replaces_the_pods(aiohttp_client: Client) -> None:
    shop = in_fault()
    client = await aiohttp_client(shop_app(shop))
    now = time.time()
    old = pod_names(shop, "carts", now)
    untouched = pod_names(shop, "orders", now)
    assert (await client.post("/restart/carts")).status == 200  # no body at all is fine too
    later = time.time() + 1.0
    new = pod_names(shop, "carts", later)
    assert len(new) == len(old) == shop.cluster.pods and not new & old
    assert all(p.age <= 1.1 for p in shop.pods("carts", later))  # as old as the restart
    assert pod_names(shop, "orders", later) == untouched
    scraped = await (await client.get("/metrics")).text()
    for name in new:
        assert f'pod="{name}"' in scraped
    for name in old:
        assert f'pod="{name}"' not in scraped
    # a second restart: new pods again
    assert (await client.post("/restart/carts", json={})).status == 200
    assert not pod_names(shop, "carts", time.time() + 1.0) & (new | old)


def test_restart_renames_churning_pods_too() -> None:
    shop = in_fault(Cluster(pods=3, churn_every=120.0, drain=10.0))
    now = time.time()
    old = pod_names(shop, "carts", now)
    shop.restart("carts", now=now)
    new = pod_names(shop, "carts", now + 1.0)
    assert len(new) == 3 and not new & old
    assert all(p.age <= 1.0 + 1e-6 for p in shop.pods("carts", now + 1.0))


async def test_a_repeated_idempotency_key_does_nothing_more(aiohttp_client: Client) -> None:
    shop = in_fault()
    client = await aiohttp_client(shop_app(shop))
    headers = {"Idempotency-Key": "incident-42:shop-restart"}
    first = await client.post("/restart/carts", json={"incident": "42"}, headers=headers)
    assert first.status == 200
    answer = await first.json()
    names = pod_names(shop, "carts", time.time() + 0.1)
    again = await client.post("/restart/carts", json={"incident": "42"}, headers=headers)
    assert again.status == 200 and await again.json() == answer
    assert len(shop.restarts) == 1 and shop.restarts[0].key == "incident-42:shop-restart"
    assert pod_names(shop, "carts", time.time() + 0.1) == names
    other = await client.post("/restart/carts", headers={"Idempotency-Key": "incident-43:shop-restart"})
    assert other.status == 200 and len(shop.restarts) == 2


async def test_unknown_service_is_a_404_naming_it(aiohttp_client: Client) -> None:
    shop = in_fault()
    client = await aiohttp_client(shop_app(shop))
    response = await client.post("/restart/checkout", json={"cause": "checkout"})
    assert response.status == 404
    body = await response.json()
    assert body["service"] == "checkout" and "checkout" in body["error"]
    assert shop.restarts == []
    with pytest.raises(KeyError):
        shop.restart("checkout")


async def test_a_body_that_is_not_a_json_object_is_refused(aiohttp_client: Client) -> None:
    shop = in_fault()
    client = await aiohttp_client(shop_app(shop))
    for body in ("not json", "[1, 2]"):
        response = await client.post("/restart/carts", data=body)
        assert response.status == 400 and "JSON object" in (await response.json())["error"]
    assert shop.restarts == []


def test_history_shows_the_restart_at_its_moment() -> None:
    started = 1_700_000_000.0
    shop = ShopCollector([(60.0, 600.0)], started=started)
    restart = started + 120.0
    shop.restart("carts", now=restart)
    text = history_openmetrics(shop, restart - 2.0, restart + 12.0, 1.0)

    def value(service: str, moment: float) -> float:
        prefix = f'shop_request_latency_seconds{{service="{service}"}} '
        [line] = [x for x in text.splitlines() if x.startswith(prefix) and x.endswith(f" {moment:.3f}")]
        return float(line.split()[1])

    assert value("carts", restart - 1.0) > 1.0 and value("carts", restart + 1.0) < 0.1
    assert value("orders", restart + HOP_SECONDS - 1.0) > 1.0
    assert value("orders", restart + HOP_SECONDS + 1.0) < 0.2
    assert value("front-end", restart + 2 * HOP_SECONDS + 1.0) < 0.3
    assert 'pod="carts-0"' in text and 'pod="carts-r1-0"' in text


def test_every_service_can_be_restarted() -> None:
    shop = ShopCollector([])
    for service in SERVICES:
        assert shop.restart(service).service == service
    assert [r.service for r in shop.restarts] == list(SERVICES)


# -- the demo's remediation: its catalogue entry runs against this endpoint; its press is Slack's -------


def _carts_incident() -> tuple[Incident, dict[str, Any]]:
    labels = {"alertname": "CartsCpuSaturated", "service": "carts", "severity": "warning"}
    alert = Alert("firing", labels, {}, time.time() - 20, None, "", "f00d")
    incident = Incident(
        "7", "watch", "watch", "firing", "CartsCpuSaturated", labels, time.time() - 20, None, (alert,)
    )
    report = {"hypotheses": [{"rank": 1, "entity": "carts", "evidence": [{"signal": "cpu"}]}]}
    return incident, report


async def test_the_demo_action_restarts_carts_through_the_endpoint_once(tmp_path: Path) -> None:
    shop = in_fault()
    server = TestServer(shop_app(shop))
    await server.start_server()
    try:
        config = demo_config(tmp_path, "http://127.0.0.1:9", 1, "token", shop_port=server.port)
        incident, report = _carts_incident()
        [proposal] = propose(incident, report, config.file.remediation, "service")
        assert proposal.action == REMEDIATION and proposal.approvers == (ON_CALL["id"],)
        assert proposal.target == {"url": f"http://127.0.0.1:{server.port}/restart/carts"}
        assert proposal.params["body"]["incident"] == "7" and proposal.params["body"]["cause"] == "carts"
        assert config.file.remediation.follow_up == 45.0
        async with aiohttp.ClientSession() as session:
            executor = Executor(config.file.remediation, config.secrets, session)
            dry = await executor.dry_run(proposal, "approved:7:shop-restart:abc", time.time())
            assert dry.ok and shop.restarts == []  # an http dry run sends nothing
            for _ in range(2):  # a retried delivery carries the same key: one restart
                ran = await executor.run(proposal, "approved:7:shop-restart:abc", time.time())
                assert ran.ok and "HTTP 200" in ran.detail
        [record] = shop.restarts
        assert record.service == "carts" and record.key == "approved:7:shop-restart:abc"
        assert shop.fault_level("carts", time.time() + 0.1) == 0.0
        # another incident's cause is not carts: the entry is not proposed
        other, other_report = _carts_incident()
        other_report["hypotheses"][0]["entity"] = "catalogue"
        assert propose(other, other_report, config.file.remediation, "service") == []
    finally:
        await server.close()


def test_the_demo_press_is_a_signed_block_actions_payload() -> None:
    secret = "0123456789abcdef0123456789abcdef"
    target = {"url": "http://127.0.0.1:2/restart/carts"}
    incident = {"id": "7", "report": {"remediation": [{"action": REMEDIATION, "target": target}]}}
    body = approve_press("a1b2c3d4", incident, "http://127.0.0.1:1/actions/1")
    headers = slack_headers(secret, body)
    verifier = SignatureVerifier(secret)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert not SignatureVerifier("another-secret").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    [(field, raw)] = parse_qsl(body)
    press = BlockActions.model_validate(json.loads(raw))
    assert field == "payload" and press.user.id == ON_CALL["id"]
    assert messages.parse_action_id(press.actions[0].action_id) == (f"approve.{REMEDIATION}", "a1b2c3d4", "7")
    assert press.response_url == "http://127.0.0.1:1/actions/1"
    assert press.actions[0].value == messages.proposal_value({"target": target})  # what the parent shows


def test_the_demo_config_keeps_the_signing_secret_out_of_the_file(tmp_path: Path) -> None:
    config = demo_config(
        tmp_path, "http://127.0.0.1:9", 1, "token", 2, "s3cret-signing", "http://127.0.0.1:3"
    )
    assert config.secrets.slack_signing_secret is not None
    assert config.secrets.slack_signing_secret.get_secret_value() == "s3cret-signing"
    assert "s3cret-signing" not in config.file.model_dump_json()
    assert str(config.file.actions.slack.api_url).startswith("http://127.0.0.1:3")
    assert demo_config(tmp_path, "http://127.0.0.1:9", 1, "token").file.remediation.enabled is False
