"""A real sock-shop fault, replayed through a real Prometheus, diagnosed from a webhook alert.

The case's samples are written as OpenMetrics, turned into TSDB blocks with ``promtool tsdb
create-blocks-from openmetrics`` (timestamps shifted into the retention window), and served by a
real Prometheus. An alert on the shop's latency is posted at the fault time; the incident's report
must rank the true root-cause service first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.offline.metrics_csv import read_metrics_csv
from agentic_observability.service import init_app
from tests.conftest import SHARED, fixture_body, prometheus_with_history
from tests.test_webhook import incidents, post, wait_for

CASE = SHARED / "datasets" / "sockshop" / "carts-cpu-1"
SIGNALS = ["cpu", "memory", "load", "latency_p90"]


def _openmetrics(case: Path, new_fault: float) -> str:
    """The case as OpenMetrics: the normal capture re-timed to end 1 s before the fault (the two
    captures were recorded apart), everything shifted so the fault lands at ``new_fault``."""
    meta = json.loads((case / "case.json").read_text())
    table = read_metrics_csv(case / "metrics.csv")
    fault = float(meta["fault_time"])
    normal = table.timestamps < fault
    times = table.timestamps.copy()
    times[normal] = fault - np.arange(normal.sum(), 0, -1)
    times = times - fault + new_fault
    families: dict[str, list[str]] = {}
    for index, column in enumerate(table.columns):
        labels = ",".join(f'{k}="{v}"' for k, v in column.labels.items())
        lines = families.setdefault(column.name, [])
        lines += [
            f"{column.name}{{{labels}}} {float(v)!r} {t:.3f}"
            for t, v in zip(times, table.values[:, index], strict=True)
            if np.isfinite(v)
        ]
    out = []
    for name, lines in families.items():
        out += [f"# TYPE {name} gauge", *lines]
    return "\n".join([*out, "# EOF"]) + "\n"


@pytest.fixture
def sockshop_prometheus(tmp_path: Path) -> Iterator[tuple[ManagedProcess, float]]:
    if not CASE.is_dir():
        pytest.skip(f"sock-shop data not found at {CASE}")
    fault = float(int(time.time()) - 1800)  # well inside retention, clear of the head block
    proc = prometheus_with_history(tmp_path, _openmetrics(CASE, fault))
    yield proc, fault
    proc.stop()


@pytest.mark.slow
async def test_latency_alert_is_traced_to_the_true_root_cause(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    config_factory: Callable[..., Any],
    sockshop_prometheus: tuple[ManagedProcess, float],
) -> None:
    prometheus, fault = sockshop_prometheus
    investigation = {
        "baseline": "4m",
        "after": "4m",
        "signals": [{"name": s, "query": s} for s in SIGNALS],  # every container kept apart
    }
    config = config_factory(prometheus={"url": prometheus.url, "timeout": "10s"}, investigation=investigation)
    client = await aiohttp_client(init_app(config))

    body = fixture_body("am-0.25-firing.json")
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": "ShopLatencyHigh", "service": "front-end", "severity": "critical"}
    alert["startsAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fault))
    alert["generatorURL"] = (
        f"{prometheus.url}/graph?g0.expr=latency_p90%7Bservice%3D%22front-end%22%7D+%3E+0.5"
    )
    body["groupKey"] = '{}:{alertname="ShopLatencyHigh"}'
    assert (await post(client, body)).status == 202

    report: dict[str, Any] = {}

    async def analysed() -> bool:
        found = await incidents(client)
        if found and found[0]["report"]:
            report.update(found[0]["report"])
        return bool(report)

    await wait_for(analysed, within=30)
    hypotheses = report["hypotheses"]
    truth = json.loads((CASE / "case.json").read_text())["root_cause"]["service"]
    assert hypotheses, report["summary"]
    assert hypotheses[0]["entity"] == truth, json.dumps(hypotheses, indent=1)
    top = hypotheses[0]["evidence"][0]
    assert top["signal"] == "cpu" and top["incident"] > 10 * top["baseline"]
    assert f'service="{truth}"' in top["promql"]
    assert top["explore_url"].startswith(prometheus.url)
    assert f"Most likely cause: service {truth}" in report["summary"]
