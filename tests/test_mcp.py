"""The MCP server (issue 19): the service's evidence for other agents, through the official SDK's own
client, over stdio (``agentic-obs mcp``, a bridge to the running service) and over streamable HTTP at
``/mcp`` behind the bearer token. The service runs for real: the demo shop's history in a real
Prometheus, incidents from posted alerts, incident memory in Qdrant Edge. Every answer stays within
the cap, a huge report included."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agentic_observability.config import Config
from agentic_observability.demo.shop import CALLS, ShopCollector, history_openmetrics
from agentic_observability.demo.stack import ManagedProcess, free_port
from agentic_observability.models import Alert, Incident
from agentic_observability.service import init_app
from agentic_observability.service import mcp_output as out
from agentic_observability.service.keys import ANALYZE_SLOTS, CONFIG, STORE
from agentic_observability.service.mcp import IncidentServer
from tests.conftest import TOKEN, auth_headers, make_config, prometheus_with_history
from tests.test_correlation import alert
from tests.test_webhook import incidents, post, wait_for

Client_ = Callable[..., Awaitable[TestClient]]
SIGNALS = [
    {"name": "latency", "query": "max by (service) (shop_request_latency_seconds)"},
    {"name": "cpu", "query": "max by (service) (shop_cpu_usage_ratio)"},
]
FIRST, SECOND = 2400.0, 4200.0  # seconds after the history starts: two CPU hogs on carts
TOOLS = {
    "list_incidents",
    "get_incident",
    "rank_root_cause",
    "query_evidence",
    "similar_incidents",
    "submit_feedback",
}


class ToolFailed(Exception):
    pass


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, float]]:
    now = float(int(time.time()))
    started = now - 5400
    collector = ShopCollector([(FIRST, 600.0), (SECOND, 600.0)], started=started)
    workdir = tmp_path_factory.mktemp("shop")
    proc = prometheus_with_history(workdir, history_openmetrics(collector, started, now - 60, 10.0))
    yield proc, started
    proc.stop()


def shop_config(tmp_path: Path, prometheus: ManagedProcess) -> Config:
    return make_config(
        tmp_path,
        prometheus={"url": prometheus.url, "timeout": "5s", "retries": 1},
        correlation={"enabled": False},  # two incidents, kept apart
        investigation={"signals": SIGNALS, "calls": [{"caller": a, "callee": b} for a, b in CALLS]},
        memory={"enabled": True, "backend": "edge"},  # Qdrant Edge under the temp storage.path
    )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def settled(client: TestClient, count: int) -> bool:
    """``count`` incidents analysed and nothing left to deliver."""
    store = client.app[STORE]
    found = await incidents(client)
    rows = await store.outbox_rows()
    pending = (await store.counts())["jobs_pending"]
    return (
        sum(1 for i in found if i["report"]) >= count
        and pending == 0
        and all(r["state"] == "delivered" for r in rows)
    )


async def two_incidents(client: TestClient, started: float) -> tuple[str, str]:
    """The first carts hog (``CartsCpuSaturated``) and the second (``CartsSlow``): ids, oldest first."""
    assert (await post(client, alert("CartsCpuSaturated", "carts", started + FIRST + 5))).status == 202
    await wait_for(lambda: settled(client, 1), within=60)
    assert (await post(client, alert("CartsSlow", "carts", started + SECOND + 5))).status == 202
    await wait_for(lambda: settled(client, 2), within=60)
    second, first = (i["id"] for i in await incidents(client))
    return first, second


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """A tool's answer as JSON; a tool error raises ToolFailed with its text. Never past the cap."""
    result = await client.call_tool(tool, arguments)
    [content] = result.content
    text = content.text  # type: ignore[union-attr]
    assert len(text) <= out.OUTPUT_CAP, (tool, len(text))
    if result.is_error:
        raise ToolFailed(text)
    return json.loads(text)


@asynccontextmanager
async def over_stdio(service: TestClient | TestServer) -> AsyncIterator[Client]:
    """``agentic-obs mcp`` in a process of its own, bridged to the running service."""
    base = str(service.make_url(""))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentic_observability", "mcp", "--url", base],
        env={"AGENTIC_OBS_WEBHOOK_TOKEN": TOKEN},
    )
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


@asynccontextmanager
async def over_http(service: TestClient, token: str = TOKEN) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers=auth_headers(token)) as http:
        transport = streamable_http_client(str(service.make_url("/mcp")), http_client=http)
        async with Client(transport, read_timeout_seconds=60) as client:
            yield client


@pytest.mark.slow
@pytest.mark.parametrize("transport", [over_stdio, over_http], ids=["stdio", "http"])
async def test_an_agent_lists_reads_ranks_recalls_and_gives_feedback(
    aiohttp_client: Client_,
    tmp_path: Path,
    shop: tuple[ManagedProcess, float],
    transport: Callable[[TestClient], Any],
) -> None:
    prometheus, started = shop
    service = await aiohttp_client(init_app(shop_config(tmp_path, prometheus)))
    first, second = await two_incidents(service, started)

    async with transport(service) as agent:
        assert {t.name for t in (await agent.list_tools()).tools} == TOOLS
        listed = (await call(agent, "list_incidents", status="firing"))["incidents"]
        assert [r["id"] for r in listed] == [second, first]
        assert listed[1]["service"] == "carts" and listed[1]["top_cause"].startswith("carts (score ")

        report = await call(agent, "get_incident", incident_id=first)
        top = report["hypotheses"][0]
        assert top["entity"] == "carts" and report["summary"]
        assert {e["signal"] for e in top["evidence"]} == {"cpu", "latency"}
        for piece in top["evidence"]:
            assert {"baseline", "incident", "unit", "deviation", "promql"} <= set(piece)
            assert 'service="carts"' in piece["promql"]
        assert report["resource"] == f"incident://{first}"
        with pytest.raises(ToolFailed, match="no incident with id '424242'"):
            await call(agent, "get_incident", incident_id="424242")

        rollout = {
            "service": "carts",
            "kind": "image",
            "summary": "image v1 → v2",
            "at": iso(started + FIRST - 60),
        }
        posted = await service.post("/api/v1/changes", json=rollout, headers=auth_headers())
        assert posted.status == 202, await posted.text()
        ranked = await call(agent, "rank_root_cause", at=iso(started + FIRST + 5))
        assert ranked["ranking"][0]["entity"] == "carts" and ranked["entity_label"] == "service"
        [change] = ranked["ranking"][0]["changes"]  # the ad-hoc ranking weighs change events too
        assert change["summary"] == "image v1 → v2" and change["kind"] == "image"
        assert all(e["promql"] for h in ranked["ranking"] for e in h["evidence"])

        cpu = SIGNALS[1]["query"]
        evidence = await call(
            agent, "query_evidence", query=cpu, start=started + FIRST - 600, end=started + FIRST + 600
        )
        assert evidence["promql"] == cpu and any('service="carts"' in s["labels"] for s in evidence["series"])
        with pytest.raises(ToolFailed, match="invalid PromQL"):
            await call(agent, "query_evidence", query="max by (", start=started)

        before = await call(agent, "similar_incidents", incident_id=second)
        assert before["memory"] == "on" and first not in [s["id"] for s in before["similar"]]

        given = await call(
            agent, "submit_feedback", incident_id=first, root_cause="carts", resolution="killed the batch job"
        )
        assert given["remembered"] is True and given["feedback"]["by"] == "mcp"
        await wait_for(lambda: settled(service, 2), within=30)  # the dispatcher delivered the memory action
        after = (await call(agent, "similar_incidents", incident_id=second))["similar"]
        [recalled] = [s for s in after if s["id"] == first]
        assert recalled["confirmed"] is True and recalled["root_cause"] == "carts"
        assert recalled["resolution"] == "killed the batch job"

        resources = (await agent.list_resources()).resources
        assert f"incident://{first}" in [str(r.uri) for r in resources]
        [text] = (await agent.read_resource(f"incident://{first}")).contents
        body = text.text  # type: ignore[union-attr]
        assert body.startswith("# CartsCpuSaturated") and "carts" in body and "`max by (service)" in body
        assert "killed the batch job" in body and len(body) <= out.OUTPUT_CAP
        with pytest.raises(MCPError, match="no incident with id '424242'"):
            await agent.read_resource("incident://424242")


# -- without Prometheus: auth, errors, limits ------------------------------------------------------


@pytest.fixture
async def bare(aiohttp_client: Client_, tmp_path: Path) -> TestClient:
    """The service with nothing behind it (Prometheus down, memory off)."""
    return await aiohttp_client(init_app(make_config(tmp_path, memory={"enabled": False})))


async def test_mcp_needs_the_token(bare: TestClient) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert (await bare.post("/mcp", json=ping)).status == 401
    assert (await bare.post("/mcp", json=ping, headers=auth_headers("wrong"))).status == 401
    assert (await bare.get("/mcp", headers=auth_headers())).status == 405  # stateless: no stream to open
    with pytest.raises(BaseExceptionGroup) as refused:  # the SDK's task groups wrap what it raised
        async with over_http(bare, token="wrong") as agent:
            await agent.list_tools()
    cause: BaseException = refused.value
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    assert isinstance(cause, MCPError) and "error response" in str(cause)
    async with over_http(bare) as agent:
        assert (await call(agent, "list_incidents"))["incidents"] == []


async def test_inputs_are_checked_with_clear_errors(bare: TestClient) -> None:
    assert (await post(bare, alert("CartsCpuSaturated", "carts", time.time() - 60))).status == 202
    await wait_for(lambda: settled(bare, 1), within=30)
    [incident] = await incidents(bare)
    async with over_http(bare) as agent:
        memory = await call(agent, "similar_incidents", incident_id=incident["id"])
        assert memory["memory"] == "off" and "memory.enabled: false" in memory["note"]
        with pytest.raises(ToolFailed, match="less than or equal to 50"):
            await call(agent, "list_incidents", limit=500)
        with pytest.raises(ToolFailed, match="start: 'yesterday' is neither unix seconds nor an RFC 3339"):
            await call(agent, "query_evidence", query="up", start="yesterday")
        with pytest.raises(ToolFailed, match="limited to 31 days"):
            await call(agent, "query_evidence", query="up", start=0, end=86400 * 40)
        with pytest.raises(ToolFailed, match="Prometheus unavailable"):
            await call(agent, "query_evidence", query="up")
        with pytest.raises(ToolFailed, match=r"investigation\.signals is empty"):
            await call(agent, "rank_root_cause")
        with pytest.raises(ToolFailed, match="in the future"):
            await call(agent, "rank_root_cause", at=time.time() + 86400)
        with pytest.raises(ToolFailed, match="give at least one of root_cause, resolution, correct"):
            await call(agent, "submit_feedback", incident_id=incident["id"])
        with pytest.raises(ToolFailed, match="no incident with id '99'"):
            await call(agent, "submit_feedback", incident_id="99", correct=True)


async def test_ad_hoc_queries_share_the_analyze_slots(bare: TestClient) -> None:
    slots = bare.app[ANALYZE_SLOTS]
    limit = bare.app[CONFIG].file.server.analyze_concurrency
    for _ in range(limit):
        await slots.acquire()
    try:
        async with over_http(bare) as agent:
            with pytest.raises(ToolFailed, match=rf"busy: {limit} ad-hoc queries are already running"):
                await call(agent, "query_evidence", query="up")
            response = await bare.post("/api/v1/analyze", json={"query": "up"}, headers=auth_headers())
            assert response.status == 429
    finally:
        for _ in range(limit):
            slots.release()


# -- the cap, with a huge report -----------------------------------------------------------------------

HUGE = "x" * 5000
PROMQL = (
    "max by (service) (shop_cpu_usage_ratio)"
    ' and on(service) label_replace(vector(1), "service", "carts", "", "")'
)


def huge_incident(incident_id: str = "7") -> Incident:
    evidence = {
        "signal": "cpu" + HUGE,
        "promql": PROMQL,
        "labels": {f"l{n}": HUGE for n in range(50)},
        "baseline": 0.2,
        "incident": 0.9,
        "unit": "ratio",
        "deviation": 12.5,
        "onset": iso(1_700_000_000),
    }
    hypotheses = [
        {"rank": n, "entity": f"carts{n}" + HUGE, "score": 0.9, "onset": iso(0), "evidence": [evidence] * 40}
        for n in range(1, 200)
    ]
    series = {
        "labels": {f"l{n}": HUGE for n in range(30)},
        "minimum": 0,
        "maximum": 1,
        "last": 1,
        "peak_at": 0,
    }
    report = {
        "summary": "s" * 100_000,
        "hypotheses": hypotheses,
        "evidence": [{"query": "up" + HUGE, "start": 0, "end": 1, "series": [series] * 100}] * 50,
        "similar_incidents": [{"id": "3", "score": 0.9, "title": HUGE, "root_cause": HUGE}] * 100,
        "next_steps": [HUGE] * 100,
    }
    labels = {"alertname": "A" + HUGE, "service": "carts" + HUGE}
    alert = Alert("firing", labels, {}, 1_700_000_000.0, None, "", "f")
    return Incident(
        incident_id,
        "g",
        "alertmanager",
        "firing",
        "T" + HUGE,
        labels,
        1_700_000_000.0,
        None,
        (alert,),
        report=report,
        feedback={"root_cause": HUGE, "by": "mcp"},
    )


class HugeStore:
    async def get_incident(self, incident_id: str) -> Incident | None:
        return huge_incident(incident_id) if incident_id == "7" else None

    async def list_incidents(self, status: str | None = None, limit: int = 100) -> list[Incident]:
        return [huge_incident(str(n)) for n in range(limit)]


async def test_answers_stay_under_the_cap_with_a_huge_report(tmp_path: Path) -> None:
    app = web.Application()
    app[CONFIG] = make_config(tmp_path)
    app[STORE] = HugeStore()  # type: ignore[assignment]
    async with Client(IncidentServer(app)) as agent:  # in process: the same tools, no transport
        report = await call(agent, "get_incident", incident_id="7")
        assert "cut to fit 4000 characters" in report["truncated"]
        assert report["id"] == "7" and report["hypotheses"][0]["evidence"][0]["promql"].endswith('"", "")')
        rows = await call(agent, "list_incidents", limit=50)
        assert rows["count"] == 50 and len(rows["incidents"]) < 50 and "more" in rows["incidents"][-1]
        [text] = (await agent.read_resource("incident://7")).contents
        body = text.text  # type: ignore[union-attr]
        assert len(body) <= out.OUTPUT_CAP and body.endswith("the full report: GET /api/v1/incidents/7")
        listed = (await agent.list_resources()).resources
        assert len(listed) == 20


def test_bounded_keeps_small_answers_whole_and_always_fits() -> None:
    small = {"id": "1", "promql": "up", "list": [1, 2, 3]}
    assert json.loads(out.bounded(small)) == small
    many_queries = {"items": [{"promql": "q" * 999} for _ in range(100)]}
    assert len(out.bounded(many_queries)) <= out.OUTPUT_CAP
    assert len(out.bounded({"promql": "q" * 50_000})) <= out.OUTPUT_CAP
    assert out.bounded_text("line\n" * 2000, 100).endswith("cut to 100 characters")


# -- the stdio bridge without a service ------------------------------------------------------------


def run_bridge(url: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"AGENTIC_OBS_WEBHOOK_TOKEN": token} if token else {})}
    command = [sys.executable, "-m", "agentic_observability", "mcp", "--url", url]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_the_bridge_says_when_the_service_cannot_be_reached() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_bridge(url)
    assert done.returncode == 2 and done.stdout == ""  # stdout is the protocol's: nothing else on it
    assert f"cannot reach the agentic-observability service at {url}/mcp" in done.stderr


async def test_the_bridge_says_when_the_token_is_refused(bare: TestClient) -> None:
    base = str(bare.make_url(""))
    done = await asyncio.to_thread(run_bridge, base, None)  # the loop keeps serving the app meanwhile
    assert done.returncode == 2 and "refused the credentials (set AGENTIC_OBS_WEBHOOK_TOKEN" in done.stderr


async def test_the_bridge_names_a_service_that_went_away_and_reconnects(tmp_path: Path) -> None:
    config = make_config(tmp_path, memory={"enabled": False})
    first = TestServer(init_app(config))
    await first.start_server()
    port = first.port
    async with over_stdio(first) as agent:
        assert (await call(agent, "list_incidents"))["incidents"] == []
        await first.close()
        with pytest.raises(MCPError, match="could not answer tools/call list_incidents: ConnectError"):
            await agent.call_tool("list_incidents", {})
        again = TestServer(init_app(config), port=port)  # the service restarts where it was
        await again.start_server()
        try:
            assert (await call(agent, "list_incidents"))["incidents"] == []
        finally:
            await again.close()


def test_the_service_url_comes_from_the_flag_or_the_config(tmp_path: Path) -> None:
    from agentic_observability.service.mcp_bridge import service_url

    config = make_config(tmp_path)
    assert service_url(config, "http://obs:8000/") == "http://obs:8000/mcp"
    assert service_url(config, "http://obs:8000/mcp") == "http://obs:8000/mcp"
    assert service_url(config, None) == f"http://127.0.0.1:{config.file.server.port}/mcp"
    public = make_config(tmp_path, server={"public_url": "https://obs.example.com/"})
    assert service_url(public, None) == "https://obs.example.com/mcp"
