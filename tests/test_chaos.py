"""Chaos against a real Prometheus: in the middle of an incident the shop's pods are replaced (their
series stop, new ones start) and error ratios turn 0/0. The incident is still reported, with the
right cause, and its actions go out. Before the ranking learnt to skip such series, the job failed
five times and the incident was never reported."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.demo.shop import Cluster, ShopCollector, history_openmetrics
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.service import init_app
from tests.conftest import make_config, prometheus_with_history
from tests.test_webhook import incidents, post, wait_for

Client = Callable[..., Awaitable[TestClient]]
SIGNALS = [
    {"name": "latency", "query": "max by (service) (shop_request_latency_seconds)"},
    # one series per pod: pods replaced every 4 minutes stop mid-window
    {"name": "pod_cpu", "query": "max by (service, pod) (shop_pod_cpu_usage_ratio)"},
    # a draining pod serves nothing: 0/0
    {
        "name": "error_ratio",
        "query": "sum by (service, pod) (rate(shop_pod_errors_total[1m]))"
        " / sum by (service, pod) (rate(shop_pod_requests_total[1m]))",
    },
    {"name": "always_nan", "query": "max by (service) (shop_request_latency_seconds) * 0 / 0"},
]


@pytest.fixture
def churning_shop(tmp_path: Path) -> Iterator[tuple[ManagedProcess, float]]:
    now = float(int(time.time()))
    started = now - 3600
    fault_at = 2700.0  # 15 minutes ago: the history is complete around it
    shop = ShopCollector(
        [(fault_at, 600.0)], started=started, cluster=Cluster(pods=2, churn_every=240, drain=60)
    )
    proc = prometheus_with_history(tmp_path, history_openmetrics(shop, started, now - 120, 10.0))
    yield proc, started + fault_at
    proc.stop()


def alert_body(fault: float) -> dict[str, Any]:
    starts = datetime.fromtimestamp(fault + 40, UTC).isoformat().replace("+00:00", "Z")
    expr = 'shop_request_latency_seconds{service="front-end"} > 0.5'
    alert = {
        "status": "firing",
        "labels": {"alertname": "ShopFrontEndSlow", "service": "front-end", "severity": "critical"},
        "annotations": {"summary": "front-end p90 latency above 500ms"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus/graph?g0.expr={quote(expr)}",
        "fingerprint": "c0ffee0000000001",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ShopFrontEndSlow"}',
        "status": "firing",
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": "ShopFrontEndSlow"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": [alert],
    }


@pytest.mark.slow
async def test_incident_reported_while_pods_vanish_and_ratios_are_nan(
    aiohttp_client: Client, tmp_path: Path, churning_shop: tuple[ManagedProcess, float]
) -> None:
    prometheus, fault = churning_shop
    config = make_config(
        tmp_path,
        prometheus={"url": prometheus.url, "timeout": "5s", "retries": 1},
        memory={"enabled": False},
        investigation={
            "signals": SIGNALS,
            "calls": [{"caller": "front-end", "callee": "orders"}, {"caller": "orders", "callee": "carts"}],
        },
    )
    client = await aiohttp_client(init_app(config))
    assert (await post(client, alert_body(fault))).status == 202

    async def reported() -> bool:
        found = await incidents(client)
        return bool(found and found[0]["report"])

    await wait_for(reported, within=30)
    [incident] = await incidents(client)
    report = incident["report"]
    assert report["hypotheses"][0]["entity"] == "carts", report["summary"]
    assert "failed" not in report["summary"], report["summary"]
    actions = tmp_path / "state" / "actions.jsonl"
    await wait_for(lambda: _has_line(actions), within=10)
    assert json.loads(actions.read_text().splitlines()[0])["kind"] == "analyze"


async def _has_line(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())  # noqa: ASYNC240 (a small local file)
