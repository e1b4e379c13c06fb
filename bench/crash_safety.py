"""Crash safety: alerts at a steady rate from a second process while the service is SIGKILLed at random
points and restarted; then every alert that got a 202 must be in an incident, and every incident's
actions must have gone out exactly once.

Checks (exit 1, with a ``FAILED:`` line, when one is missed): no alert 202'd and lost; no incident
without its PagerDuty trigger and Grafana annotation, none of them twice; all work drained within
300 s of the load stopping; no request the fakes reject as the real APIs would.

The service runs as ``agentic-obs serve`` with PagerDuty and Grafana pointed at local fakes that
count what they receive (Slack is left out: its one-message-per-second-per-channel limit would make
the run last as many seconds as there are incidents). Each body holds 10 alerts of one group; groups
cycle over ``--groups`` keys, so each group is one incident that stays open.

    python bench/crash_safety.py [--seconds 30] [--rate 1000] [--kills 5] [--groups 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.fakes
from tests.fakes import GRAFANA_TOKEN, PD_ROUTING_KEY, FakeGrafana, FakePagerDuty

from webhook_load import TOKEN, free_port, start_service, wait_http

ALERTS_PER_BODY = 10


def body(group: int, serial: int) -> tuple[bytes, list[str]]:
    name = f"CrashGroup{group}"
    fingerprints = [f"{serial:012x}{i:04x}" for i in range(ALERTS_PER_BODY)]
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": name, "service": f"svc-{group % 20}", "severity": "critical", "n": fp},
            "annotations": {"summary": "crash bench"},
            "startsAt": "2026-11-27T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": fp,
        }
        for fp in fingerprints
    ]
    payload = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "status": "firing",
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": alerts,
    }
    return json.dumps(payload).encode(), fingerprints


async def _post_steadily(url: str, seconds: float, rate: float, groups: int) -> dict[str, Any]:
    """Posts at ``rate`` alerts/s; a refused or failed post (the service is down) is simply not 202'd,
    as Alertmanager would retry it later."""
    accepted: list[str] = []
    outcomes: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    interval = ALERTS_PER_BODY / rate
    started = time.perf_counter()
    serial = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def one(n: int) -> None:
            data, fingerprints = body(n % groups, n)
            try:
                async with http.post(url, data=data, headers=headers) as response:
                    outcomes[str(response.status)] += 1
                    if response.status == 202:
                        accepted.extend(fingerprints)
            except (aiohttp.ClientError, TimeoutError):
                outcomes["no answer"] += 1

        tasks = []
        while time.perf_counter() - started < seconds:
            tasks.append(asyncio.create_task(one(serial)))
            serial += 1
            await asyncio.sleep(max(0.0, started + serial * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    return {"accepted": accepted, "outcomes": dict(outcomes), "posted": serial * ALERTS_PER_BODY}


def load_worker(url: str, seconds: float, rate: float, groups: int, out: Any) -> None:
    out.put(asyncio.run(_post_steadily(url, seconds, rate, groups)))


async def start_fakes() -> tuple[FakePagerDuty, FakeGrafana, web.AppRunner, web.AppRunner, int, int]:
    pagerduty, grafana = FakePagerDuty(), FakeGrafana()
    runners, ports = [], []
    for fake in (pagerduty, grafana):
        runner = web.AppRunner(fake.app())
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        ports.append(port)
    return pagerduty, grafana, runners[0], runners[1], ports[0], ports[1]


async def pending_work(base: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/metrics") as response:
        metrics = (await response.json())["metrics"]
    return int(sum(v for k, v in metrics.items() if k.startswith("agentic_obs_queue_depth")))


async def run(args: argparse.Namespace) -> int:
    pagerduty, grafana, pd_runner, grafana_runner, pd_port, grafana_port = await start_fakes()
    workdir = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    port = free_port()
    extra = (
        f"actions: {{pagerduty: {{events_url: 'http://127.0.0.1:{pd_port}/v2/enqueue'}}, "
        f"grafana: {{url: 'http://127.0.0.1:{grafana_port}'}}, first_retry: 0.2s}}\n"
    )
    env = {"PAGERDUTY_ROUTING_KEY": PD_ROUTING_KEY, "GRAFANA_TOKEN": GRAFANA_TOKEN}
    base = f"http://127.0.0.1:{port}"

    def launch() -> Any:
        service = start_service(workdir, port, extra, env)
        wait_http(f"{base}/api/v1/health", timeout=30)
        return service

    service = await asyncio.to_thread(launch)
    queue: Any = mp.get_context("spawn").Queue()
    loader = mp.get_context("spawn").Process(
        target=load_worker,
        args=(f"{base}/api/v1/webhook/alertmanager", args.seconds, args.rate, args.groups, queue),
    )
    loader.start()
    rng = random.Random(args.seed)
    kill_at = sorted(rng.uniform(0.1, 0.9) * args.seconds for _ in range(args.kills))
    began = time.perf_counter()
    downtime = 0.0
    for moment in kill_at:
        await asyncio.sleep(max(0.0, began + moment - time.perf_counter()))
        os.kill(service.pid, signal.SIGKILL)
        service.wait()
        stopped = time.perf_counter()
        service = await asyncio.to_thread(launch)
        downtime += time.perf_counter() - stopped
        print(
            f"killed with SIGKILL at {moment:5.1f}s, back after {time.perf_counter() - stopped:.1f}s",
            flush=True,
        )
    result = await asyncio.to_thread(queue.get, True, args.seconds + 120)
    loader.join()
    drain_started = time.perf_counter()
    still_pending = await pending_work(base)
    while still_pending and time.perf_counter() - drain_started < 300:
        await asyncio.sleep(0.5)
        still_pending = await pending_work(base)
    drained = time.perf_counter() - drain_started
    service.send_signal(signal.SIGTERM)
    service.wait(timeout=60)
    await pd_runner.cleanup()
    await grafana_runner.cleanup()
    return report(args, result, workdir, pagerduty, grafana, downtime, drained, still_pending)


def report(
    args: argparse.Namespace,
    result: dict[str, Any],
    workdir: Path,
    pagerduty: FakePagerDuty,
    grafana: FakeGrafana,
    downtime: float,
    drained: float,
    still_pending: int,
) -> int:
    with sqlite3.connect(workdir / "state" / "agentic-obs.sqlite3") as db:
        stored = {str(r[0]) for r in db.execute("SELECT fingerprint FROM incident_alerts")}
        incidents = [str(r[0]) for r in db.execute("SELECT id FROM incidents")]
        install = db.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()[0]
    accepted = set(result["accepted"])
    lost = accepted - stored
    triggers = Counter(e["dedup_key"] for e in pagerduty.events("trigger"))
    annotations = Counter(
        t for a in grafana.annotations.values() for t in a["tags"] if t.startswith("incident:")
    )
    expected_pd = {f"agentic-obs-{install}-{i}" for i in incidents}
    expected_grafana = {f"incident:{install}-{i}" for i in incidents}
    duplicates = sum(n - 1 for n in triggers.values()) + sum(n - 1 for n in annotations.values())
    missing = len(expected_pd - set(triggers)) + len(expected_grafana - set(annotations))
    print(
        f"\npython bench/crash_safety.py --seconds {args.seconds:g} --rate {args.rate:g} "
        f"--kills {args.kills} --groups {args.groups} --seed {args.seed}"
    )
    print(
        f"alerts posted: {result['posted']}  outcomes: {result['outcomes']}  "
        f"service down {downtime:.1f}s in all"
    )
    print(f"alerts 202'd: {len(accepted)}")
    print(f"alerts processed (in an incident): {len(accepted & stored)}")
    print(f"lost: {len(lost)}")
    print(
        f"incidents: {len(incidents)}; PagerDuty triggers {sum(triggers.values())}, Grafana annotations "
        f"{sum(annotations.values())}; missing actions: {missing}"
    )
    print(f"duplicate actions: {duplicates}")
    shape_errors = pagerduty.errors + grafana.errors
    drain = (
        f"NOT all work drained: {still_pending} left {drained:.0f} s after the load stopped"
        if still_pending
        else f"all work drained {drained:.1f}s after the load stopped"
    )
    print(f"{drain}; fake receivers' shape errors: {len(shape_errors)}")
    failed = []
    if lost:
        failed.append(f"{len(lost)} alerts 202'd but in no incident")
    if missing:
        failed.append(f"{missing} actions missing (an incident without its PagerDuty trigger or annotation)")
    if duplicates:
        failed.append(f"{duplicates} duplicate actions (a PagerDuty trigger or annotation sent twice)")
    if still_pending:
        failed.append(f"work still queued {drained:.0f} s after the load stopped: {still_pending}")
    if shape_errors:
        failed.append(f"{len(shape_errors)} requests the fakes rejected (first: {shape_errors[0]})")
    for check in failed:
        print(f"FAILED: {check}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="alerts per second")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
