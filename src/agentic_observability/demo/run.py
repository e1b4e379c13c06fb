"""``agentic-obs demo``: the main job, end to end on embedded defaults.

Starts a synthetic shop exporter, a real Prometheus scraping it with alert rules, a real Alertmanager
routed to the service, and the service itself (webhook + one PromQL watch, incident memory on Qdrant
Edge, actions to the local ``actions.jsonl``). A CPU hog hits carts after ~30 s; it trips the watch
and the front-end latency alert, which become one incident (the alert joins the watch's incident as
the same fault). The demo prints every report as it arrives and as it resolves, with the incident's
members, then sends feedback on it (confirmed cause and the fix). The same fault returns; the new
report recalls the first incident ("seen before", with the fix). Each incident's chart
(``/api/v1/incidents/{id}/chart.png``) is saved in the demo's work directory and its path printed.
Exit 0 once every incident of both rounds has resolved and each round was one incident; 1 if not
within the time limit, or a round's fault became more than one incident.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agentic_observability.config import Config, FileConfig, Secrets
from agentic_observability.demo.shop import ShopCollector, shop_app
from agentic_observability.demo.stack import ManagedProcess, free_port, start_alertmanager, start_prometheus
from agentic_observability.service import init_app

FAULTS = ((30.0, 45.0), (140.0, 40.0))  # (at, for) seconds after start: the same fault, twice
TIME_LIMIT = 300.0
FEEDBACK = {
    "root_cause": "carts",
    "resolution": "stopped the runaway batch job on carts",
    "correct": True,
}


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def demo_config(workdir: Path, prometheus_url: str, port: int, token: str) -> Config:
    file = FileConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": port},
            "prometheus": {"url": prometheus_url, "timeout": "5s"},
            "storage": {"path": str(workdir / "state")},
            "investigation": {
                "evidence_window": "5m",
                "baseline": "5m",
                "after": "2m",
                "signals": [
                    {"name": "cpu", "query": "max by (service) (shop_cpu_usage_ratio)"},
                    {"name": "latency_p90", "query": "max by (service) (shop_request_latency_seconds)"},
                ],
                "calls": [
                    {"caller": "front-end", "callee": "orders"},
                    {"caller": "front-end", "callee": "catalogue"},
                    {"caller": "orders", "callee": "carts"},
                    {"caller": "orders", "callee": "payment"},
                ],
            },
            "watches": [
                {
                    "name": "CartsCpuSaturated",
                    "query": 'shop_cpu_usage_ratio{service="carts"}',
                    "interval": "2s",
                    "for": "4s",
                    "above": 0.8,
                    "resolve_after": 2,
                }
            ],
        }
    )
    return Config(file=file, secrets=Secrets.model_validate({"webhook_token": token}), source="<demo>")


async def _start_site(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def print_report(incident: dict[str, Any]) -> None:
    report = incident.get("report") or {}
    _say(f"incident {incident['id']} [{incident['status']}] {incident['title']}")
    for member in incident.get("members") or []:
        names = ", ".join(member["alertnames"])
        print(
            f"    + {names} [{member['status']}] since {member['started_at']}: {member['joined']['reason']}"
        )
    for line in str(report.get("summary", "(no report yet)")).splitlines():
        print(f"    {line}", flush=True)


def _shown_as(incident: dict[str, Any]) -> tuple[Any, ...]:
    """What changes a printed incident: its report, its members and their status."""
    generated = (incident.get("report") or {}).get("generated_at")
    return (generated, tuple((m["id"], m["status"]) for m in incident.get("members") or []))


async def _watch_incidents(
    http: aiohttp.ClientSession, api: str, deadline: float, shown: dict[str, Any], more_than: int
) -> list[dict[str, Any]] | None:
    """Print each report as it appears or changes; the incidents once there are more than
    ``more_than`` and every one has resolved, None at the deadline."""
    while time.monotonic() < deadline:
        async with http.get(f"{api}/api/v1/incidents") as response:
            incidents = (await response.json())["incidents"]
        for incident in reversed(incidents):
            now_shown = _shown_as(incident)
            if now_shown[0] and shown.get(incident["id"]) != now_shown:
                shown[incident["id"]] = now_shown
                print_report(incident)
        everyone_done = all((i.get("report") or {}).get("status") == "resolved" for i in incidents)
        if len(incidents) > more_than and everyone_done and len(shown) == len(incidents):
            return list(incidents)
        await asyncio.sleep(1.0)
    return None


async def _save_charts(
    http: aiohttp.ClientSession, api: str, incidents: list[dict[str, Any]], workdir: Path
) -> None:
    """Each incident's chart as the API draws it, saved as ``chart-<id>.png``; or why there is none."""
    for incident in incidents:
        async with http.get(f"{api}/api/v1/incidents/{incident['id']}/chart.png") as response:
            if response.status != 200:
                why = (await response.json(content_type=None) or {}).get("detail", f"HTTP {response.status}")
                _say(f"incident {incident['id']}: no chart ({why})")
                continue
            path = workdir / f"chart-{incident['id']}.png"
            path.write_bytes(await response.read())
        _say(f"incident {incident['id']}: chart saved to {path}")


async def _two_rounds(api: str, token: str, deadline: float, workdir: Path) -> bool:
    shown: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        first = await _watch_incidents(http, api, deadline, shown, 0)
        if first is None:
            return False
        await _save_charts(http, api, first, workdir)
        if not _one_incident(1, first):
            return False
        alerted = first[0]
        async with http.post(f"{api}/api/v1/incidents/{alerted['id']}/feedback", json=FEEDBACK) as response:
            response.raise_for_status()
        _say(f"feedback on incident {alerted['id']}: {FEEDBACK}")
        _say("round 1 done; the same fault returns shortly ...")
        both = await _watch_incidents(http, api, deadline, shown, len(first))
        if both is None:
            return False
        await _save_charts(http, api, both[: len(both) - len(first)], workdir)
        return _one_incident(2, both[: len(both) - len(first)])


def _one_incident(number: int, incidents: list[dict[str, Any]]) -> bool:
    """One incident per fault: the round's watch and Alertmanager alert must be one incident."""
    for incident in incidents:
        members = [", ".join(m["alertnames"]) for m in incident.get("members") or []]
        alerts = "; ".join([incident["title"].split(":")[0], *members])
        _say(f"round {number}: incident {incident['id']} holds {1 + len(members)} alert groups: {alerts}")
    if len(incidents) != 1:
        _say(f"round {number}: one fault became {len(incidents)} incidents (expected one)")
    return len(incidents) == 1


def _summarise_actions(path: Path) -> None:
    """What the file sink (the embedded stand-in for Grafana, Slack, PagerDuty) received."""
    if not path.exists():
        _say("no actions were written")
        return
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = Counter(f"{line['action']}" for line in lines)
    _say(f"{len(lines)} actions in {path}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))


async def run_demo(keep_running: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="agentic-obs-demo-"))
    token = secrets.token_urlsafe(24)
    procs: list[ManagedProcess] = []
    runners: list[web.AppRunner] = []
    try:
        shop_port, service_port = free_port(), free_port()
        runners.append(await _start_site(shop_app(ShopCollector(FAULTS)), shop_port))
        first_fault = FAULTS[0][0]
        _say(f"shop exporter on http://127.0.0.1:{shop_port}/metrics; carts CPU hog in {first_fault:.0f}s")
        service_url = f"http://127.0.0.1:{service_port}"
        am = await asyncio.to_thread(
            start_alertmanager, workdir / "alertmanager", f"{service_url}/api/v1/webhook/alertmanager", token
        )
        procs.append(am)
        rules = workdir / "rules.yml"
        rules.write_text(resources.files("agentic_observability.demo").joinpath("rules.yml").read_text())
        prom = await asyncio.to_thread(
            start_prometheus, workdir / "prometheus", [f"127.0.0.1:{shop_port}"], [rules], am.url
        )
        procs.append(prom)
        _say(f"prometheus {prom.url}  alertmanager {am.url}  (state in {workdir})")
        config = demo_config(workdir, prom.url, service_port, token)
        runners.append(await _start_site(init_app(config), service_port))
        _say(f"agentic-obs on {service_url} (API docs {service_url}/docs); waiting for incidents ...")
        if keep_running:
            return await _keep_running(service_url, token, prom, am)
        done = await _two_rounds(service_url, token, time.monotonic() + TIME_LIMIT, workdir)
        _summarise_actions(workdir / "state" / "actions.jsonl")
        if done:
            _say("all incidents of both rounds resolved; demo finished")
            return 0
        _say(f"incidents did not all resolve within {TIME_LIMIT:.0f}s; logs in {workdir}")
        return 1
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for proc in reversed(procs):
            proc.stop()


async def _keep_running(service_url: str, token: str, prom: ManagedProcess, am: ManagedProcess) -> int:
    _say(f"stack is up: service {service_url}, prometheus {prom.url}, alertmanager {am.url}; Ctrl-C stops it")
    _say(f"try: curl -H 'Authorization: Bearer {token}' {service_url}/api/v1/incidents  (demo-only token)")
    await asyncio.Event().wait()  # until Ctrl-C cancels the run (the CLI turns that into exit 0)
    return 0
