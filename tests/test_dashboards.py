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
from agentic_observability.service import init_app, open_incidents
from agentic_observability.telemetry import OPEN_INCIDENT_LABELS
from tests.conftest import ROOT_DIR, auth_headers, fixture_body, make_config

sys.path.insert(0, str(ROOT_DIR / "dashboards"))
import build

PUBLIC_URL = "https://obs.example.com"
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


async def test_every_panel_query_runs_against_prometheus_scraping_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(open_incidents, "REFRESH_SECONDS", 0.2)  # the table's rows soon after a change
    monkeypatch.setattr(open_incidents, "MIN_GAP_SECONDS", 0.0)
    # no correlation: the two groups below stay two incidents (and neither waits for the other's analysis)
    config = make_config(tmp_path, server={"public_url": PUBLIC_URL}, correlation={"enabled": False})
    app = init_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    prometheus = start_prometheus(tmp_path / "prometheus", scrape_targets=[f"127.0.0.1:{port}"])
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v1/webhook/alertmanager"
            for fixture in ("am-0.25-firing.json", "legacy-firing-3-alerts.json"):
                async with session.post(url, json=fixture_body(fixture), headers=auth_headers()) as r:
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
            await _open_incidents_table_lists_the_open_incidents(session, port, prometheus.url)
    finally:
        prometheus.stop()
        await runner.cleanup()


async def _open_incidents_table_lists_the_open_incidents(
    session: aiohttp.ClientSession, port: int, prometheus_url: str
) -> None:
    """The table's query, as Grafana sends it (instant), returns one row per open incident with the
    columns the panel shows and the fields its links read: what the API lists, once analysed."""
    [target] = _open_incidents_panel()["targets"]
    assert target["instant"] is True and target["format"] == "table"
    api = f"http://127.0.0.1:{port}/api/v1/incidents"
    expected: list[dict[str, str]] = []
    rows: list[dict[str, str]] = []
    for _ in range(150):
        async with session.get(api, params={"status": "firing"}, headers=auth_headers()) as r:
            listed = (await r.json())["incidents"]
        expected = sorted((_expected_row(i) for i in listed), key=lambda row: row["id"])
        async with session.get(f"{prometheus_url}/api/v1/query", params={"query": target["expr"]}) as r:
            result = (await r.json())["data"]["result"]
        rows = sorted(
            ({k: v for k, v in s["metric"].items() if k in OPEN_INCIDENT_LABELS} for s in result),
            key=lambda row: row["id"],
        )
        analysed = len(listed) == 2 and all(i["report"] for i in listed)
        if analysed and rows == expected:
            break
        await asyncio.sleep(0.2)
    assert rows == expected and len(rows) == 2, f"the table shows {rows}, the API lists {expected}"
    assert rows[0]["severity"] == "critical" and rows[0]["service"] == "checkout"
    assert rows[1]["url"] == f"{PUBLIC_URL}/api/v1/incidents/2"


def _expected_row(incident: dict[str, Any]) -> dict[str, str]:
    severity = incident["labels"].get("severity") or (incident["report"] or {}).get("facts", {}).get(
        "severity"
    )
    row = {
        "id": incident["id"],
        "title": incident["title"][:100],
        "service": incident["labels"].get("service", ""),
        "severity": severity or "",
        "url": f"{PUBLIC_URL}/api/v1/incidents/{incident['id']}",
    }
    return {k: v for k, v in row.items() if v}  # Prometheus keeps no empty label


def _open_incidents_panel() -> dict[str, Any]:
    dashboard = build.dashboards()["agentic-obs-incidents.json"]
    [panel] = [p for p in dashboard["panels"] if p["type"] == "table"]
    return dict(panel)


def test_open_incidents_table_shows_the_metrics_labels_and_links_back() -> None:
    panel = _open_incidents_panel()
    shown = panel["transformations"][0]["options"]["include"]["names"]
    assert shown[:4] == ["id", "title", "service", "severity"] and set(shown) <= set(OPEN_INCIDENT_LABELS)
    text = json.dumps(panel)
    fields = set(re.findall(r"__data\.fields\.(\w+)", text))
    assert fields == {"url", "slack_channel", "slack_ts"} and fields <= set(shown)
    links = [
        link["url"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert "${__data.fields.url}" in links  # the API, from server.public_url
    assert "${slack_url}/archives/${__data.fields.slack_channel}/p${__data.fields.slack_ts}" in links
    variables = {v["name"] for v in build.dashboards()["agentic-obs-incidents.json"]["templating"]["list"]}
    assert "slack_url" in variables
    # newest first: ids grow, so sort by id as a number (as a string, "10" would come before "9")
    kinds = [t["id"] for t in panel["transformations"]]
    assert kinds.index("convertFieldType") < kinds.index("sortBy")
    assert panel["transformations"][kinds.index("sortBy")]["options"]["sort"] == [
        {"field": "id", "desc": True}
    ]


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
