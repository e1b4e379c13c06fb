"""Dashboards are code: the JSON matches its builder, and every panel's query runs without error
against a real Prometheus that scrapes the running service, naming only metrics the service exports."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agentic_observability.demo.stack import free_port, start_prometheus
from agentic_observability.service import init_app
from tests.conftest import ROOT_DIR, auth_headers, fixture_body, make_config

sys.path.insert(0, str(ROOT_DIR / "dashboards"))
import build

# What Grafana substitutes before a query reaches Prometheus.
VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$watch": ".*"}
FUNCTIONS_AND_KEYWORDS = {
    "histogram_quantile",
    "sum",
    "by",
    "rate",
    "increase",
    "topk",
    "le",
    "without",
    "on",
    "ignoring",
}


def panel_queries() -> Iterator[tuple[str, str, str]]:
    for name, dashboard in build.dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                yield name, panel["title"], target["expr"]


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_dashboard_files_match_their_builder() -> None:
    for name, dashboard in build.dashboards().items():
        assert (ROOT_DIR / "dashboards" / name).read_text() == build.render(dashboard), (
            f"run dashboards/build.py ({name})"
        )


def test_dashboards_are_bundled_in_the_package() -> None:
    from agentic_observability.outbox.sinks import bundled_dashboards

    assert {d["uid"] for d in bundled_dashboards()} == {d["uid"] for d in build.dashboards().values()}


async def test_every_panel_query_runs_against_prometheus_scraping_the_service(tmp_path: Path) -> None:
    app = init_app(make_config(tmp_path))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    prometheus = start_prometheus(tmp_path / "prometheus", scrape_targets=[f"127.0.0.1:{port}"])
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v1/webhook/alertmanager"
            async with session.post(
                url, json=fixture_body("am-0.25-firing.json"), headers=auth_headers()
            ) as r:
                assert r.status == 202
            async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                families = set(re.findall(r"^# TYPE (\S+) ", await r.text(), re.M))
            await _wait_for_scrapes(session, prometheus.url)
            for name, title, expr in panel_queries():
                query = substitute(expr)
                async with session.get(f"{prometheus.url}/api/v1/query", params={"query": query}) as r:
                    body = await r.json()
                assert body["status"] == "success", f"{name} / {title}: {query}: {body.get('error')}"
                for metric in _metric_names(query):
                    family = re.sub(r"_(bucket|total|count|sum)$", "", metric)
                    assert family in families or metric in families, (
                        f"{name} / {title}: {metric} is not exported"
                    )
    finally:
        prometheus.stop()
        await runner.cleanup()


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_groupings))
    return {n for n in names if n.startswith("agentic_obs_") and n not in FUNCTIONS_AND_KEYWORDS}


async def _wait_for_scrapes(session: aiohttp.ClientSession, prometheus_url: str) -> None:
    for _ in range(100):
        params = {"query": "count_over_time(agentic_obs_incidents_open[1m]) > 2"}
        async with session.get(f"{prometheus_url}/api/v1/query", params=params) as r:
            body: dict[str, Any] = await r.json()
        if body["data"]["result"]:
            return
        await asyncio.sleep(0.2)
    pytest.fail("Prometheus never scraped the service")


def test_provisioning_yaml_points_at_the_folder() -> None:
    import yaml

    provider = yaml.safe_load((ROOT_DIR / "dashboards" / "provisioning" / "dashboards.yaml").read_text())[
        "providers"
    ][0]
    from agentic_observability.integrations.grafana import FOLDER_UID

    # the folder the service pushes into is the provider's: switching between the two moves nothing
    assert provider["folderUid"] == FOLDER_UID and provider["type"] == "file"
    assert provider["allowUiUpdates"] is False  # Grafana then refuses API saves of these uids
    assert (
        json.loads((ROOT_DIR / "dashboards" / "agentic-obs-health.json").read_text())["uid"]
        == "agentic-obs-health"
    )
