"""A chart per incident (issue 21): the series gathered at analysis time and kept in the report, drawn
as a PNG in process, served by the API, and uploaded once into the incident's Slack thread; without
matplotlib the report and every other action still go out."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from agentic_observability import pipeline
from agentic_observability.config import Config, InvestigationConfig
from agentic_observability.demo.shop import CALLS, ShopCollector, history_openmetrics
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.errors import DeliveryError
from agentic_observability.models import Alert, Incident, Series
from agentic_observability.outbox import chart as drawing
from agentic_observability.outbox.messages import chart_signature
from agentic_observability.outbox.plan import ActSettings, plan_actions
from agentic_observability.outbox.sinks import render_chart
from agentic_observability.pipeline import chart as gathering
from agentic_observability.pipeline.ports import PipelineDeps
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from tests.conftest import auth_headers, make_config, prometheus_with_history
from tests.fakes import SLACK_CHANNEL_ID
from tests.test_actions import Sinks, sinks  # noqa: F401  (the fixture)
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTED = 1_700_000_000.0
ALERT_EXPR = 'max by (service) (shop_request_latency_seconds{service="front-end"}) > 0.5'
SIGNALS = [
    {"name": "cpu", "query": "max by (service) (shop_cpu_usage_ratio)"},
    {"name": "latency_p90", "query": "max by (service) (shop_request_latency_seconds)"},
]


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (the first, right after the signature)."""
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


# -- chart data, against the fake MetricsSource the pipeline tests use --------------------------------


class ShopSource:
    """The demo shop as a MetricsSource: carts' CPU hog from a minute before the alert, reaching
    orders and front-end a few seconds later. ``hang`` makes matching queries never answer."""

    def __init__(self, points: int | None = None, hang: str = "") -> None:
        self.points, self.hang = points, hang
        self.queries: list[str] = []

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        self.queries.append(expr)
        if self.hang and self.hang in expr:
            await asyncio.Event().wait()
        ts = np.linspace(start, end, self.points) if self.points else np.arange(start, end, step)
        found = [self._series(service, ts, expr) for service in ("carts", "orders", "front-end", "catalogue")]
        # one service: a matcher, or promql_for_entity's ``and on(service) label_replace(...)``
        only = re.search(r'service="([^"]+)"|"service", "([^"]+)", "", ""', expr)
        return [s for s in found if s.labels["service"] in only.groups()] if only else found

    @staticmethod
    def _series(service: str, ts: np.ndarray, expr: str) -> Series:
        base = {"carts": 0.2, "orders": 0.25, "front-end": 0.12, "catalogue": 0.15}[service]
        hit = {"carts": 0.7, "orders": 0.3, "front-end": 0.6, "catalogue": 0.0}[service]
        lag = {"carts": 0.0, "orders": 8.0, "front-end": 16.0, "catalogue": 0.0}[service]
        noise = np.random.default_rng(len(service)).normal(0, 0.01, len(ts))
        values = base * (1 + 0.05 * np.sin(ts / 70)) + noise + hit * (ts >= STARTED - 60 + lag)
        scale = 1.1 if "latency" in expr else 1.0
        return Series({"service": service}, tuple(ts), tuple(values * scale))

    def explore_url(self, expr: str, start: float, end: float) -> str:
        return "http://prometheus/graph"


def shop_incident(incident_id: str = "12") -> Incident:
    url = "http://prometheus:9090/graph?g0.expr=" + quote(ALERT_EXPR)
    labels = {"alertname": "ShopFrontEndSlow", "service": "front-end", "severity": "critical"}
    alert = Alert(
        "firing", labels, {"summary": "front-end p90 latency above 500ms"}, STARTED, None, url, "f1"
    )
    title = "ShopFrontEndSlow: front-end p90 latency above 500ms"
    return Incident(incident_id, "g", "alertmanager", "firing", title, labels, STARTED, None, (alert,))


def shop_deps(source: Any) -> PipelineDeps:
    calls = [{"caller": a, "callee": b} for a, b in CALLS]
    settings = InvestigationConfig.model_validate({"signals": SIGNALS, "calls": calls})
    return PipelineDeps(metrics=source, investigation=settings)


async def shop_report(source: Any = None) -> dict[str, Any]:
    report = await pipeline.run(shop_incident(), shop_deps(source or ShopSource()), now=STARTED + 900)
    return report.to_dict()


async def test_the_report_keeps_the_alert_and_the_top_two_hypotheses() -> None:
    chart = (await shop_report())["chart"]
    json.dumps(chart, allow_nan=False)  # stored and served as JSON: no NaN, no numpy types
    roles = [(s["role"], s.get("entity"), s.get("signal")) for s in chart["series"]]
    assert roles[0] == ("alert", None, None) and [r[0] for r in roles[1:]] == ["hypothesis"] * 2
    assert roles[1][1] == "carts"  # the top hypothesis, as ranked
    alert = chart["series"][0]
    assert alert["query"] == ALERT_EXPR.split(" > ")[0] and alert["label"] == 'service="front-end"'
    assert chart["threshold"] == {"operator": ">", "value": 0.5} == alert["threshold"]
    assert chart["alert_at"] == STARTED and STARTED - 120 < chart["onset"] <= STARTED
    assert chart["start"] == STARTED - 1800 and chart["end"] == STARTED + 600
    assert all(len(s["timestamps"]) == len(s["values"]) <= gathering.MAX_POINTS for s in chart["series"])
    assert chart["missing"] == []


async def test_chart_data_is_bounded_and_keeps_a_spike() -> None:
    source = ShopSource(points=5000)  # a source answering far more points than asked for
    chart = (await shop_report(source))["chart"]
    assert len(chart["series"]) <= gathering.MAX_SERIES
    assert all(len(s["timestamps"]) <= gathering.MAX_POINTS for s in chart["series"])
    ts = [float(t) for t in range(1000)]
    values = [1.0] * 1000
    values[501] = 50.0
    kept_ts, kept = gathering.downsample(ts, values, 240)
    assert len(kept) <= 240 and 50.0 in kept and kept_ts == sorted(kept_ts)


async def test_a_query_that_does_not_answer_is_left_out_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gathering, "GATHER_SECONDS", 0.3)
    source = ShopSource(hang=ALERT_EXPR.split(" > ")[0])  # the alert's own query hangs
    incident, deps = shop_incident(), shop_deps(source)
    started = time.monotonic()
    hypotheses = await _hypotheses(deps)
    chart = await gathering.chart_data(incident, (), hypotheses, source, deps.investigation, 0)
    assert chart is None and source.queries == []  # ``now`` before the window: nothing to ask
    chart = await gathering.chart_data(incident, (), hypotheses, source, deps.investigation, STARTED + 900)
    assert time.monotonic() - started < 3
    assert chart is not None and {s["role"] for s in chart["series"]} == {"hypothesis"}
    assert len(chart["missing"]) == 1 and "no answer within 0.3s" in chart["missing"][0]


async def _hypotheses(deps: PipelineDeps) -> tuple[dict[str, Any], ...]:
    from agentic_observability.pipeline.investigate import root_cause_hypotheses

    hypotheses, _ = await root_cause_hypotheses(
        shop_incident(), ShopSource(), deps.investigation, STARTED + 900
    )
    return hypotheses


async def test_a_failure_in_chart_gathering_is_named_and_the_report_goes_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: Any) -> None:
        raise KeyError("evidence")

    monkeypatch.setattr(pipeline, "chart_data", broken)
    report = await shop_report()
    assert report["chart"] is None
    assert "Chart data failed (KeyError: 'evidence')" in report["summary"]
    assert report["hypotheses"][0]["entity"] == "carts"


# -- drawing ---------------------------------------------------------------------------------------


async def test_a_demo_like_incident_draws_as_a_slack_sized_png() -> None:
    chart = (await shop_report())["chart"]
    png = await drawing.render_png_async(chart)
    assert png.startswith(PNG_SIGNATURE)
    assert png_size(png) == (drawing.WIDTH_PX, drawing.HEIGHT_PX)
    assert 20_000 < len(png) < 400_000
    assert drawing.render_png(chart) == png  # the same data draws the same bytes


def test_a_chart_without_series_or_matplotlib_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(drawing.ChartUnavailableError, match="no series"):
        drawing.render_png({"series": []})
    garbled = {"series": [{"panel": 0, "timestamps": ["noon"], "values": [1.0]}]}
    with pytest.raises(drawing.ChartUnavailableError, match=r"could not be drawn \(ValueError"):
        drawing.render_png(garbled)
    without_matplotlib(monkeypatch)
    chart = {"series": [{"panel": 0, "role": "alert", "timestamps": [1.0, 2.0], "values": [1.0, 2.0]}]}
    with pytest.raises(drawing.ChartUnavailableError, match=r"matplotlib is not installed .*\[charts\]"):
        drawing.render_png(chart)


def test_alert_text_with_dollars_is_drawn_as_text() -> None:
    """Titles and legends quote alert text: "$\\frac{x$" as mathtext raised and lost the chart."""
    series = {"panel": 0, "role": "alert", "timestamps": [1.0, 2.0], "values": [1.0, 2.0]}
    chart = {
        "title": "Costs $\\frac{x$ over $5 and $10",
        "series": [{**series, "label": 'a="$\\undefined{1}$"'}],
    }
    assert drawing.render_png(chart).startswith(PNG_SIGNATURE)


async def test_a_drawing_that_took_too_long_is_retried_not_given_up() -> None:
    chart = {"series": [{"panel": 0, "role": "alert", "timestamps": [1.0, 2.0], "values": [1.0, 2.0]}]}
    with pytest.raises(drawing.ChartUnavailableError) as slow:
        await drawing.render_png_async(chart, 0.0)
    assert slow.value.retryable  # the sink turns it into a delivery that is retried
    with pytest.raises(DeliveryError) as empty:
        await render_chart({"series": []})
    assert empty.value.permanent


def without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the ``charts`` extra were not installed: every matplotlib import fails."""
    names = [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]
    for name in {"matplotlib", *names}:
        monkeypatch.setitem(sys.modules, name, None)


# -- planning --------------------------------------------------------------------------------------


async def test_the_chart_is_the_last_slack_action_and_old_reports_plan_none() -> None:
    report = await shop_report()
    settings = ActSettings(enabled=frozenset({"slack"}))
    actions = plan_actions(shop_incident(), report, "analyze", settings)
    assert [a.action for a in actions] == ["open", "reply:investigation", "upload:chart"]
    upload = actions[-1].payload
    assert upload["chart"] == report["chart"] and upload["title"].startswith("Incident 12: ShopFrontEndSlow")
    assert "carts latency_p90" in upload["comment"]
    old = {k: v for k, v in report.items() if k != "chart"}  # written before charts existed
    assert [a.action for a in plan_actions(shop_incident(), old, "analyze", settings)][-1] != "upload:chart"
    assert "upload:chart" not in [
        a.action for a in plan_actions(shop_incident(), report, "resolve", settings)
    ]


async def test_chart_links_carry_a_signature_that_opens_only_that_chart(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    """PagerDuty fetches images without credentials and a browser opening a Slack or Grafana link has
    none: the link carries an HMAC of its incident id, which opens that chart and nothing else."""
    report = await shop_report()
    settings = ActSettings(
        enabled=frozenset({"pagerduty", "grafana"}), public_url="https://obs.example.com", link_key="s3cret"
    )
    actions = {a.sink: a.payload for a in plan_actions(shop_incident(), report, "analyze", settings)}
    signed = f"https://obs.example.com/api/v1/incidents/12/chart.png?sig={chart_signature('s3cret', '12')}"
    assert actions["pagerduty"]["images"][0]["src"] == signed
    assert signed in str(actions["grafana"]["text"])

    client = await aiohttp_client(init_app(make_config(tmp_path)))
    token = auth_headers()["Authorization"].split(" ", 1)[1]
    good = chart_signature(token, "12")
    assert (await client.get(f"/api/v1/incidents/12/chart.png?sig={good}")).status == 404  # let in: none yet
    assert (await client.get("/api/v1/incidents/12/chart.png?sig=" + "0" * 32)).status == 401
    assert (await client.get(f"/api/v1/incidents/13/chart.png?sig={good}")).status == 401  # another one
    assert (await client.get(f"/api/v1/incidents/12?sig={good}")).status == 401  # nothing else
    assert (await client.get("/api/v1/incidents/12/chart.png?sig=%FF")).status == 401


def test_a_mention_in_the_labels_cannot_ping_the_channel() -> None:
    series = {"panel": 1, "role": "hypothesis", "entity": "<!channel>", "signal": "cpu", "timestamps": [1]}
    report = {"summary": "s", "chart": {"series": [series]}}
    [*_, upload] = plan_actions(shop_incident(), report, "analyze", ActSettings(enabled=frozenset({"slack"})))
    assert "<!channel>" not in upload.payload["comment"] and "&lt;!channel&gt;" in upload.payload["comment"]


# -- the service: a real Prometheus with the shop's history, Slack as a strict fake -----------------

FAULT_AT = 2400.0  # seconds after the history starts: carts' CPU hog, for 600 s


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, float]]:
    now = float(int(time.time()))
    started = now - 3600
    collector = ShopCollector([(FAULT_AT, 600.0)], started=started)
    workdir = tmp_path_factory.mktemp("shop")
    proc = prometheus_with_history(workdir, history_openmetrics(collector, started, now - 60, 10.0))
    yield proc, started
    proc.stop()


def service_config(tmp_path: Path, fakes: Sinks, prometheus: ManagedProcess, **server: Any) -> Config:
    made = fakes.config(tmp_path, server=server or None)
    data = made.file.model_dump(mode="json")
    data["prometheus"] = {"url": prometheus.url, "timeout": "5s", "retries": 1}
    data["memory"] = {"enabled": False}
    data["investigation"] = {"signals": SIGNALS, "calls": [{"caller": a, "callee": b} for a, b in CALLS]}
    return made.model_copy(update={"file": type(made.file).model_validate(data)})


def carts_alert(at: float) -> dict[str, Any]:
    expr = 'max by (service) (shop_cpu_usage_ratio{service="carts"}) > 0.8'
    labels = {"alertname": "CartsCpuSaturated", "service": "carts", "severity": "critical"}
    starts = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    body = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "carts CPU above 80%"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus:9090/graph?g0.expr={quote(expr)}&g0.tab=1",
        "fingerprint": f"carts-{int(at)}",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="CartsCpuSaturated"}',
        "status": "firing",
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": "CartsCpuSaturated"},
        "commonLabels": labels,
        "commonAnnotations": body["annotations"],
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": [body],
    }


async def settled(client: TestClient, count: int) -> bool:
    """``count`` actions queued and none pending any more."""
    rows = await client.app[STORE].outbox_rows()
    return len(rows) >= count and all(r["state"] != "pending" for r in rows)


async def chart_png(client: TestClient, incident_id: str = "1") -> Any:
    return await client.get(f"/api/v1/incidents/{incident_id}/chart.png", headers=auth_headers())


@pytest.mark.slow
async def test_one_upload_into_the_thread_and_the_api_serves_the_chart(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    prometheus, started = shop
    client = await aiohttp_client(init_app(service_config(tmp_path, sinks, prometheus)))
    assert (await post(client, carts_alert(started + FAULT_AT + 5))).status == 202
    await wait_for(lambda: settled(client, 6), within=30)  # grafana, slack ×3, pagerduty, file

    incident = await (await client.get("/api/v1/incidents/1", headers=auth_headers())).json()
    chart = incident["report"]["chart"]  # gathered from the real Prometheus
    assert chart["threshold"] == {"operator": ">", "value": 0.8}
    assert [s["role"] for s in chart["series"]][:2] == ["alert", "hypothesis"]
    assert chart["series"][1]["entity"] == "carts" and chart["series"][0]["label"] == 'service="carts"'
    assert chart["onset"] is not None and abs(chart["onset"] - (started + FAULT_AT)) < 120

    (parent,) = sinks.slack.parents()
    (upload,) = sinks.slack.uploads_in(parent["ts"])
    assert upload["channel_id"] == SLACK_CHANNEL_ID and upload["content"].startswith(PNG_SIGNATURE)
    assert upload["title"].startswith("Incident 1: CartsCpuSaturated") and "1-" in upload["name"]
    assert "carts" in upload["initial_comment"]
    steps = [m for m, _ in sinks.slack.requests if m not in ("chat.postMessage", "chat.update")]
    assert steps == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    assert sinks.slack.replies(parent["ts"])[-1]["files"][0]["name"] == upload["name"]  # after the words
    assert sinks.errors() == []

    response = await chart_png(client)
    assert response.status == 200 and response.content_type == "image/png"
    assert png_size(await response.read()) == (drawing.WIDTH_PX, drawing.HEIGHT_PX)
    assert (await client.get("/api/v1/incidents/1/chart.png")).status == 401
    assert (await chart_png(client, "99")).status == 404
    listed = await (await client.get("/api/v1/incidents", headers=auth_headers())).json()
    assert listed["incidents"][0]["report"]["chart"] == {"url": "/api/v1/incidents/1/chart.png"}


@pytest.mark.slow
async def test_the_fake_slack_sees_one_upload_per_incident_across_a_restart(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
) -> None:
    """Slack completed the upload but the service died before it could record that: after the
    restart the upload is found in the thread by its file name, not made again."""
    prometheus, started = shop
    sinks.slack.stall_uploads = 1
    config = service_config(tmp_path, sinks, prometheus, shutdown_timeout=0.1)
    first = await aiohttp_client(init_app(config))
    assert (await post(first, carts_alert(started + FAULT_AT + 5))).status == 202

    async def uploaded() -> bool:
        return len(sinks.slack.uploads) == 1

    await wait_for(uploaded, within=30)
    await first.close()  # the upload's delivery is cut off before its outcome is committed
    sinks.slack.release()
    second = await aiohttp_client(init_app(config))
    await wait_for(lambda: settled(second, 6), within=30)
    rows = {r["action"]: r for r in await second.app[STORE].outbox_rows() if r["sink"] == "slack"}
    assert rows["upload:chart"]["state"] == "delivered"
    assert len(sinks.slack.uploads) == 1 and len(sinks.slack.parents()) == 1
    assert ("conversations.replies", SLACK_CHANNEL_ID) in [(m, q["channel"]) for m, q in sinks.slack.lookups]
    assert sinks.errors() == []


@pytest.mark.slow
async def test_without_matplotlib_the_report_and_other_actions_still_go_out(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
    shop: tuple[ManagedProcess, float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_matplotlib(monkeypatch)
    prometheus, started = shop
    client = await aiohttp_client(init_app(service_config(tmp_path, sinks, prometheus)))
    assert (await post(client, carts_alert(started + FAULT_AT + 5))).status == 202
    await wait_for(lambda: settled(client, 6), within=30)

    rows = {(r["sink"], r["action"]): r for r in await client.app[STORE].outbox_rows()}
    upload = rows.pop(("slack", "upload:chart"))
    assert upload["state"] == "failed" and upload["attempts"] == 1  # given up at once, not retried
    assert "matplotlib is not installed" in upload["last_error"]
    assert {r["state"] for r in rows.values()} == {"delivered"}
    assert {sink for sink, _ in rows} == {"grafana", "slack", "pagerduty", "file"}
    (parent,) = sinks.slack.parents()
    assert len(sinks.slack.replies(parent["ts"])) == 1 and sinks.slack.uploads == []
    assert sinks.errors() == []

    response = await chart_png(client)  # the data is kept: only the drawing is missing
    assert response.status == 503 and response.content_type == "application/json"
    assert "matplotlib is not installed" in (await response.json())["detail"]


async def test_an_incident_without_a_chart_is_a_404(aiohttp_client: Client, tmp_path: Path) -> None:
    from tests.conftest import fixture_body

    client = await aiohttp_client(init_app(make_config(tmp_path)))  # Prometheus unreachable
    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202

    async def reported() -> bool:
        incident = await client.app[STORE].get_incident("1")
        return incident is not None and incident.report is not None

    await wait_for(reported)
    response = await chart_png(client)
    assert response.status == 404 and "has no chart" in (await response.json())["detail"]
    # a report written before charts existed has no ``chart`` key at all
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        db.execute("UPDATE incidents SET report = json_remove(report, '$.chart')")
    incident = await (await client.get("/api/v1/incidents/1", headers=auth_headers())).json()
    assert "chart" not in incident["report"]
    assert (await chart_png(client)).status == 404


async def test_an_incoming_webhook_cannot_upload_so_the_chart_is_skipped_once_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agentic_observability.integrations.delivery import sink_guard
    from agentic_observability.integrations.slack import SlackSink
    from agentic_observability.models import OutboxItem

    class Webhook:
        url = "https://hooks.slack.example/T0/B0/secret"

        async def send(self, **body: Any) -> None:
            raise AssertionError("a chart is not a message: nothing goes to the webhook")

    sink = SlackSink(sink_guard("slack", 5, 30.0), webhook=Webhook())
    item = OutboxItem(1, "7", "slack", "upload:chart", {"chart": {"series": []}}, 0, time.time(), "C1|1.0")
    with caplog.at_level("WARNING", logger="agentic_observability.integrations.slack"):
        assert await sink.deliver(item) is None
        assert await sink.deliver(item) is None
    assert [r.getMessage() for r in caplog.records if "charts are not uploaded" in r.getMessage()] != []
    assert len(caplog.records) == 1
