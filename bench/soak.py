"""Soak: mixed webhook traffic and PromQL watches against a real Prometheus for a long stretch; prints
latency, memory (RSS) at start and end, queue depth and errors, minute by minute.

Traffic: ``--rate`` alerts/s in bodies of 5, over a rotating set of groups that fire and resolve (so
incidents open, get analysed, resolve and are remembered all along), plus three watches polling a
real Prometheus every 5 s (a threshold watch and two detector watches on Prometheus's own metrics).
RSS growth is judged after warm-up: the first minute fills caches, arenas and the memory index.

    python bench/soak.py [--minutes 10] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from agentic_observability.demo.stack import start_prometheus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_load import TOKEN, free_port, start_service, wait_http

GROUPS = 50
WATCHES = """watches:
  - {name: scrape-duration, query: 'max(scrape_duration_seconds)', interval: 5s, lookback: 10m}
  - name: http-requests
    query: 'sum by (handler) (rate(prometheus_http_requests_total[1m]))'
    interval: 5s
    lookback: 10m
  - {name: goroutines, query: 'go_goroutines', interval: 5s, above: 100000}
"""


def body(n: int) -> bytes:
    group = n % GROUPS
    resolving = (n // GROUPS) % 2 == 1  # each group alternates firing / resolved rounds
    name = f"SoakGroup{group}"
    status = "resolved" if resolving else "firing"
    # every round of a group gets its own start time, so no round repeats an earlier one (which
    # Alertmanager's dedup keys would rightly treat as a retry)
    started = datetime(2026, 11, 27, tzinfo=UTC) + timedelta(hours=n // (2 * GROUPS))
    round_start = started.isoformat().replace("+00:00", "Z")
    round_end = (started + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    alerts = [
        {
            "status": status,
            "labels": {"alertname": name, "service": f"svc-{group % 10}", "severity": "warning", "i": str(i)},
            "annotations": {"summary": "soak"},
            "startsAt": round_start,
            "endsAt": round_end if resolving else "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": f"{group:04x}{i:04x}",
        }
        for i in range(5)
    ]
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "status": status,
            "receiver": "agentic-obs",
            "groupLabels": {"alertname": name},
            "commonLabels": {"alertname": name},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "truncatedAlerts": 0,
            "alerts": alerts,
        }
    ).encode()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/api/v1/metrics") as response:
        return dict((await response.json())["metrics"])


def total(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


async def run(minutes: float, rate: float, base: str, pid: int) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = f"{base}/api/v1/webhook/alertmanager"
    rows: list[dict[str, Any]] = []
    serial = 0
    interval = 5 / rate
    async with aiohttp.ClientSession() as http:
        for minute in range(int(minutes)):
            latencies: list[float] = []
            failures = 0
            max_queue = 0.0
            started = time.perf_counter()
            while time.perf_counter() - started < 60:
                t0 = time.perf_counter()
                async with http.post(url, data=body(serial), headers=headers) as response:
                    await response.read()
                    failures += response.status != 202
                latencies.append((time.perf_counter() - t0) * 1000)
                serial += 1
                if serial % 100 == 0:
                    max_queue = max(max_queue, total(await metrics(http, base), "agentic_obs_queue_depth"))
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))
            snapshot = await metrics(http, base)
            row = {
                "minute": minute + 1,
                "p50": statistics.median(latencies),
                "p99": statistics.quantiles(latencies, n=100)[98],
                "posts": len(latencies),
                "non_202": failures,
                "rss": rss_mib(pid),
                "max_queue": max_queue,
                "errors": total(snapshot, "agentic_obs_errors_total"),
                "polls": total(snapshot, "agentic_obs_watch_evaluations_total"),
                "incidents": total(snapshot, "agentic_obs_incidents_opened_total"),
            }
            rows.append(row)
            print(
                f"| {row['minute']} | {row['posts']} | {row['p50']:.1f} | {row['p99']:.1f} | "
                f"{row['non_202']} | "
                f"{row['rss']:.0f} | {row['max_queue']:.0f} | {row['errors']:.0f} | {row['polls']:.0f} | "
                f"{row['incidents']:.0f} |",
                flush=True,
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="alerts per second")
    parser.add_argument(
        "--no-memory", action="store_true", help="control run: incident memory off (does RSS still grow?)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    prometheus = start_prometheus(workdir / "prometheus")
    port = free_port()
    extra = WATCHES + ("memory: {enabled: false}\n" if args.no_memory else "")
    service = start_service(workdir, port, extra, None, prometheus.url)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/v1/health")
        start_rss = rss_mib(service.pid)
        flags = " --no-memory" if args.no_memory else ""
        print(f"python bench/soak.py --minutes {args.minutes:g} --rate {args.rate:g}{flags}")
        print(f"RSS at start: {start_rss:.0f} MiB")
        print(
            "| minute | posts | p50 ms | p99 ms | non-202 | RSS MiB | max queue | errors | watch polls "
            "| incidents |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        rows = asyncio.run(run(args.minutes, args.rate, base, service.pid))
    finally:
        service.terminate()
        service.wait(timeout=60)
        prometheus.stop()
    after_warmup = rows[0]["rss"] if rows else start_rss
    end = rows[-1]["rss"] if rows else start_rss
    print(
        f"RSS: start {start_rss:.0f} MiB, after minute 1 {after_warmup:.0f} MiB, end {end:.0f} MiB "
        f"(growth after warm-up {end - after_warmup:+.0f} MiB); "
        f"non-202 in all: {sum(r['non_202'] for r in rows)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
