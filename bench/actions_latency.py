"""From webhook 202 to the Slack parent message: how fast the on-call engineer hears of an incident.

The service runs as ``agentic-obs serve`` in its own process (rules reasoner, incident memory on,
Slack configured against a local fake Slack that checks each request's shape and records when it
arrived). This process posts one alert per incident, one at a time at a steady pace, and prints p50/p99
of (Slack parent arrival − 202 received) next to the webhook's own latency (post → 202) in the same run.

Incidents arrive one per ``--interval`` seconds (default 1 s): Slack takes about one message per second
per channel, and the service keeps to that, so a faster stream into one channel queues by design.

    python bench/actions_latency.py [--incidents 200] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.fakes
from tests.fakes import SLACK_TOKEN, FakeSlack

from webhook_load import TOKEN, free_port, start_service, wait_http


class TimedSlack(FakeSlack):
    """The fake Slack, also noting when each incident's parent message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.parent_arrival: dict[str, float] = {}

    async def post_message(self, request: web.Request) -> web.Response:
        response = await super().post_message(request)
        body = self.requests[-1][1] if self.requests else {}
        if response.status == 200 and not body.get("thread_ts"):
            header = body["blocks"][0]["text"]["text"]
            self.parent_arrival.setdefault(header.split()[-1], time.perf_counter())
        return response


def alert_body(n: int) -> dict[str, object]:
    name = f"BenchIncident{n}"
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "status": "firing",
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "service": "carts", "severity": "page"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, "service": "carts", "severity": "page"},
                "annotations": {"summary": "bench"},
                "startsAt": "2026-11-27T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": f"{n:016x}",
            }
        ],
    }


async def run(incidents: int, interval: float) -> None:
    slack = TimedSlack()
    runner = web.AppRunner(slack.app())
    await runner.setup()
    slack_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", slack_port).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-actions-"))
    port = free_port()
    extra = f"actions: {{slack: {{api_url: 'http://127.0.0.1:{slack_port}/api', channel: '#bench'}}}}\n"
    service = start_service(workdir, port, extra, {"SLACK_BOT_TOKEN": SLACK_TOKEN})
    accepted: dict[str, float] = {}
    webhook_ms: list[float] = []
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/api/v1/health")
        url = f"http://127.0.0.1:{port}/api/v1/webhook/alertmanager"
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http:
            for n in range(incidents):
                data = json.dumps(alert_body(n))
                started = time.perf_counter()
                async with http.post(url, data=data, headers=headers) as response:
                    assert response.status == 202, await response.text()
                done = time.perf_counter()
                webhook_ms.append((done - started) * 1000)
                accepted[f"BenchIncident{n}"] = done
                await asyncio.sleep(interval)
        deadline = time.perf_counter() + 60
        while len(slack.parent_arrival) < incidents and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        service.terminate()
        service.wait(timeout=30)
        await runner.cleanup()
    report(accepted, slack, webhook_ms, incidents, interval)


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def row(name: str, values: list[float]) -> str:
    p50, p99 = quantile(values, 50), quantile(values, 99)
    return f"| {name} | {len(values)} | {p50:.1f} | {p99:.1f} | {max(values):.1f} |"


def report(
    accepted: dict[str, float], slack: TimedSlack, webhook_ms: list[float], incidents: int, interval: float
) -> None:
    to_slack = [
        (slack.parent_arrival[name] - t) * 1000
        for name, t in accepted.items()
        if name in slack.parent_arrival
    ]
    print(f"python bench/actions_latency.py --incidents {incidents} --interval {interval}")
    print("| measured | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(row("webhook post -> 202", webhook_ms))
    if len(to_slack) >= 2:
        print(row("202 -> Slack parent", to_slack))
    print(
        f"parent messages: {len(slack.parents())} for {incidents} incidents; "
        f"shape errors: {len(slack.errors)}"
    )
    if len(to_slack) < incidents or slack.errors:
        raise SystemExit("FAILED: not every incident reached Slack exactly once with a valid request")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between incidents")
    args = parser.parse_args()
    asyncio.run(run(args.incidents, args.interval))


if __name__ == "__main__":
    main()
