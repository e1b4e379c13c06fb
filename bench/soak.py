"""Soak: mixed webhook traffic and PromQL watches against a real Prometheus for a long stretch; prints
latency, memory (RSS) at start and end, queue depth and errors, minute by minute.

Traffic: ``--rate`` alerts/s in bodies of 5, over a rotating set of groups that fire and resolve (so
incidents open, get analysed, resolve and are remembered all along), plus three watches polling a
real Prometheus every 5 s (a threshold watch and two detector watches on Prometheus's own metrics).
RSS growth is judged after warm-up: the first minute fills caches, arenas and the memory index.

``--churn``: the watches poll the shop cluster (``demo/shop.py``) instead: 200 pods (40 for each
of 5 services), every pod replaced every ``--churn-every`` seconds (series stop, new ones start),
a per-pod watch on the default detector every 5 s, retention set short (2 minutes, pruned every
30 s) and incident memory capped at 3,000 points (incidents resolve at ~700 a minute). Each minute
adds the anonymous RSS (the heap, without mapped files), the incident memory's size on disk, the
score gauges on /metrics, the series the watch tracks, the database's size and its row counts, and
the run ends with each one's growth per minute over its last third. The run fails (exit 1) unless
the last third of the run stays within bounds of the middle third: RSS (in all and anonymous), the
memory's files, gauges, database size and rows must level off, not grow.

Either way the run fails (exit 1, with a ``FAILED:`` line) if any webhook post is answered other than 202.

    python bench/soak.py [--minutes 10] [--rate 50]
    python bench/soak.py --churn --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agentic_observability.demo.shop import Cluster, ShopCollector, shop_app
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
CHURN_CONFIG = """watches:
  - {name: pod-cpu, query: 'max by (service, pod) (shop_pod_cpu_usage_ratio)', interval: 5s, lookback: 10m}
memory: {max_points: 3000}
"""
CHURN_STORAGE = ", retention: 2m, prune_interval: 30s"
TABLES = ("inbox", "incidents", "incident_alerts", "jobs", "outbox")


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


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory from /proc: ``VmRSS`` in all, or ``RssAnon``, the process's own heap (without
    the mapped files, e.g. Qdrant Edge's segments, whose pages the kernel can drop and re-read)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 if folder.exists() else 0.0


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/api/v1/metrics") as response:
        return dict((await response.json())["metrics"])


def total(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


async def score_gauges(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    return sum(1 for line in text.splitlines() if line.startswith("agentic_obs_anomaly_score{"))


def database(state: Path) -> dict[str, float]:
    """The SQLite file's size (with its WAL) and row counts, read on a separate read-only connection."""
    files = [state / "agentic-obs.sqlite3", state / "agentic-obs.sqlite3-wal"]
    size = sum(f.stat().st_size for f in files if f.exists()) / 2**20
    with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True, timeout=10) as conn:
        rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    return {"db_mib": size, **rows}


async def run(minutes: float, rate: float, base: str, pid: int, churn: Churn | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = f"{base}/api/v1/webhook/alertmanager"
    rows: list[dict[str, Any]] = []
    serial = 0
    interval = 5 / rate
    shop = await churn.start_shop() if churn else None
    try:
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
                        max_queue = max(
                            max_queue, total(await metrics(http, base), "agentic_obs_queue_depth")
                        )
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
                if churn:
                    row["anon"] = rss_mib(pid, "RssAnon")
                    row["memory_mib"] = folder_mib(churn.state / "memory")
                    row["gauges"] = await score_gauges(http, base)
                    row["tracked"] = total(snapshot, "agentic_obs_watch_series{")
                    row.update(database(churn.state))
                rows.append(row)
                print_row(row, churn is not None)
    finally:
        if shop is not None:
            await shop.cleanup()
    return rows


class Churn:
    """The shop cluster with pod churn, served on ``port`` for Prometheus to scrape."""

    def __init__(self, state: Path, every: float) -> None:
        self.state = state
        self.port = free_port()
        self.cluster = Cluster(pods=40, churn_every=every, drain=20)

    async def start_shop(self) -> web.AppRunner:
        runner = web.AppRunner(shop_app(ShopCollector([], cluster=self.cluster)), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


COLUMNS = ["minute", "posts", "p50 ms", "p99 ms", "non-202", "RSS MiB", "max queue", "errors", "watch polls"]
CHURN_COLUMNS = ["anon MiB", "memory MiB", "score gauges", "series tracked", "DB MiB", *TABLES]


def print_header(churn: bool) -> None:
    columns = [*COLUMNS, "incidents", *(CHURN_COLUMNS if churn else [])]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns), flush=True)


def print_row(row: dict[str, Any], churn: bool) -> None:
    cells = [
        f"{row['minute']}",
        f"{row['posts']}",
        f"{row['p50']:.1f}",
        f"{row['p99']:.1f}",
        f"{row['non_202']}",
        f"{row['rss']:.0f}",
        f"{row['max_queue']:.0f}",
        f"{row['errors']:.0f}",
        f"{row['polls']:.0f}",
        f"{row['incidents']:.0f}",
    ]
    if churn:
        cells += [
            f"{row['anon']:.0f}",
            f"{row['memory_mib']:.0f}",
            f"{row['gauges']}",
            f"{row['tracked']:.0f}",
            f"{row['db_mib']:.1f}",
        ]
        cells += [f"{row[t]}" for t in TABLES]
    print("| " + " | ".join(cells) + " |", flush=True)


def last_third_slopes(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """Least-squares growth per minute of each quantity over the last third of the run."""
    last = rows[2 * (len(rows) // 3) :]
    minutes = [float(r["minute"]) for r in last]
    return {key: _slope(minutes, [float(r[key]) for r in last]) for key in keys}


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0


def levels_off(rows: list[dict[str, Any]]) -> list[str]:
    """What kept growing: the last third's peak against the middle third's, with room for noise (25%
    and a small absolute margin, since a bounded quantity still moves with the traffic)."""
    third = len(rows) // 3
    if third < 1:
        return ["too short to judge: run at least 3 minutes"]
    middle, last = rows[third : 2 * third], rows[2 * third :]
    margins = {"rss": 64.0, "gauges": 50, "db_mib": 2.0, **{t: 200 for t in TABLES}}
    if "anon" in rows[0]:
        margins |= {"anon": 32.0, "memory_mib": 40.0}
    grew = []
    for key, margin in margins.items():
        before, after = max(r[key] for r in middle), max(r[key] for r in last)
        if after > before * 1.25 + margin:
            grew.append(f"{key}: {before:.0f} -> {after:.0f}")
    return grew


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="alerts per second")
    parser.add_argument(
        "--no-memory", action="store_true", help="control run: incident memory off (does RSS still grow?)"
    )
    parser.add_argument("--churn", action="store_true", help="watch a churning pod fleet; short retention")
    parser.add_argument("--churn-every", type=float, default=120.0, help="seconds a pod lives (--churn)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    churn = Churn(workdir / "state", args.churn_every) if args.churn else None
    targets = [f"127.0.0.1:{churn.port}"] if churn else None
    prometheus = start_prometheus(workdir / "prometheus", targets, interval="5s" if churn else "1s")
    port = free_port()
    extra = (CHURN_CONFIG if churn else WATCHES) + ("memory: {enabled: false}\n" if args.no_memory else "")
    service = start_service(workdir, port, extra, None, prometheus.url, CHURN_STORAGE if churn else "")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/v1/health")
        start_rss = rss_mib(service.pid)
        flags = (" --no-memory" if args.no_memory else "") + (
            f" --churn --churn-every {args.churn_every:g}" if churn else ""
        )
        print(f"python bench/soak.py --minutes {args.minutes:g} --rate {args.rate:g}{flags}")
        print(f"RSS at start: {start_rss:.0f} MiB")
        print_header(churn is not None)
        rows = asyncio.run(run(args.minutes, args.rate, base, service.pid, churn))
    finally:
        service.terminate()
        service.wait(timeout=60)
        prometheus.stop()
    after_warmup = rows[0]["rss"] if rows else start_rss
    end = rows[-1]["rss"] if rows else start_rss
    non_202 = sum(r["non_202"] for r in rows)
    print(
        f"RSS: start {start_rss:.0f} MiB, after minute 1 {after_warmup:.0f} MiB, end {end:.0f} MiB "
        f"(growth after warm-up {end - after_warmup:+.0f} MiB); "
        f"non-202 in all: {non_202}"
    )
    if churn and len(rows) >= 3:
        print(
            "per minute over the last third: "
            + ", ".join(
                f"{key} {slope:+.2f}"
                for key, slope in last_third_slopes(rows, ("rss", "anon", "memory_mib", "db_mib")).items()
            )
        )
    grew = levels_off(rows) if churn else []
    if churn:
        print("levelled off: " + ("yes" if not grew else "NO, still growing: " + "; ".join(grew)))
    if non_202:
        print(f"FAILED: {non_202} webhook posts not answered 202")
    return 1 if grew or non_202 else 0


if __name__ == "__main__":
    sys.exit(main())
