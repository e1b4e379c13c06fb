"""Webhook throughput and latency: durable accepts per second, next to a bare aiohttp 202 handler.

Both servers run in their own process; the load comes from a third process (concurrent aiohttp
posters on loopback), the same client for both, so the ratio compares the servers, not the client.
Every posted body is a new alert group (no dedup shortcuts). After the load it waits for the
analysis backlog to drain (at most ``--drain-limit`` seconds), then counts the SQLite inbox.

Checks (exit 1, with a ``FAILED:`` line, when one is missed): every alert 202'd is in the inbox, and
everything queued was analysed within ``--drain-limit``.

    python bench/webhook_load.py [--seconds 10] [--concurrency 32] [--alerts-per-body 1] [--drain-limit 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

TOKEN = "bench-token-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(n: int, alerts_per_body: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "BenchAlert", "service": f"svc-{n % 50}", "instance": f"i-{n}-{k}"},
            "annotations": {"summary": "benchmark alert"},
            "startsAt": "2026-11-27T20:38:00.189Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
            "fingerprint": f"{n:012x}{k:04x}",
        }
        for k in range(alerts_per_body)
    ]
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "agentic-obs",
            "groupKey": f"bench:{n}",
            "groupLabels": {"alertname": "BenchAlert"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "truncatedAlerts": 0,
            "alerts": alerts,
        }
    ).encode()


# -- the bare baseline ------------------------------------------------------------------------------


def run_bare(port: int) -> None:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"accepted": 1}, status=202)

    app = web.Application()
    app.router.add_post("/api/v1/webhook/alertmanager", accept)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the load generator (own process) -----------------------------------------------------------------


async def _load(
    url: str, seconds: float, concurrency: int, alerts_per_body: int, offset: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(offset, offset + 10_000_000))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bodies = [body(n, alerts_per_body) for n in range(offset, offset + 200_000)]
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def poster(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            started = time.perf_counter()
            async with http.post(url, data=bodies[n - offset], headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(poster(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "statuses": statuses, "elapsed": elapsed}


def load_worker(
    url: str, seconds: float, concurrency: int, alerts_per_body: int, offset: int, out: Any
) -> None:
    out.put(asyncio.run(_load(url, seconds, concurrency, alerts_per_body, offset)))


def measure(url: str, seconds: float, concurrency: int, alerts_per_body: int, offset: int) -> dict[str, Any]:
    queue: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=load_worker, args=(url, seconds, concurrency, alerts_per_body, offset, queue)
    )
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join()
    lat = sorted(result["latencies"])
    ok = result["statuses"].get(202, 0)
    return {
        "requests_202": ok,
        "statuses": result["statuses"],
        "seconds": result["elapsed"],
        "req_per_s": ok / result["elapsed"],
        "alerts_per_s": ok * alerts_per_body / result["elapsed"],
        "p50_ms": statistics.quantiles(lat, n=100)[49] * 1000,
        "p99_ms": statistics.quantiles(lat, n=100)[98] * 1000,
    }


# -- orchestration ---------------------------------------------------------------------------------------


def wait_http(url: str, timeout: float = 20) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def start_service(
    workdir: Path,
    port: int,
    extra_yaml: str = "",
    extra_env: dict[str, str] | None = None,
    prometheus_url: str | None = None,
    storage_yaml: str = "",
    server_yaml: str = "",
) -> subprocess.Popen[bytes]:
    """``agentic-obs serve`` in its own process; without ``prometheus_url``, Prometheus points at a
    closed port (no evidence, fast failures). ``storage_yaml`` and ``server_yaml`` are appended inside
    the ``storage`` and ``server`` mappings (``", lease: 6s"``)."""
    config = workdir / "config.yaml"
    prometheus = prometheus_url or f"http://127.0.0.1:{free_port()}"
    retries = 1 if prometheus_url else 0
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}{server_yaml}}}\n"
        f"storage: {{path: {workdir / 'state'}{storage_yaml}}}\n"
        f"prometheus: {{url: '{prometheus}', timeout: 2s, retries: {retries}}}\n{extra_yaml}"
    )
    env = {
        **os.environ,
        "AGENTIC_OBS_WEBHOOK_TOKEN": TOKEN,
        "AGENTIC_OBS_LOG_LEVEL": "ERROR",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "agentic_observability", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "service.log").open("wb"),
    )


def drain_time(base: str, limit: float = 300) -> tuple[int, int, float]:
    """Intake has priority during a storm; measure how long analysis takes to catch up afterwards.
    Returns the backlog when the load stopped, what was still queued when the wait ended (0 unless
    ``limit`` seconds ran out first) and the seconds waited."""
    import urllib.request

    def pending() -> int:
        with urllib.request.urlopen(f"{base}/api/v1/metrics", timeout=5) as response:
            metrics = json.loads(response.read())["metrics"]
        return int(sum(v for k, v in metrics.items() if k.startswith("agentic_obs_queue_depth")))

    started = time.perf_counter()
    first = left = pending()
    while left and time.perf_counter() - started < limit:
        time.sleep(0.5)
        left = pending()
    return first, left, time.perf_counter() - started


def stored_alerts(workdir: Path) -> int:
    with sqlite3.connect(workdir / "state" / "agentic-obs.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<22} {r['alerts_per_s']:>9.0f} alerts/s {r['req_per_s']:>9.0f} req/s "
        f"p50 {r['p50_ms']:>6.1f} ms  p99 {r['p99_ms']:>6.1f} ms  statuses {r['statuses']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--alerts-per-body", type=int, default=1)
    parser.add_argument(
        "--config-extra",
        default="",
        help="YAML appended to the service's config, e.g. 'memory: {enabled: false}'",
    )
    parser.add_argument(
        "--drain-limit",
        type=float,
        default=300.0,
        help="seconds to wait for analysis to catch up after the load; still queued then: exit 1",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    bare_port, service_port = free_port(), free_port()
    bare = mp.get_context("spawn").Process(target=run_bare, args=(bare_port,), daemon=True)
    bare.start()
    service = start_service(workdir, service_port, args.config_extra + "\n" if args.config_extra else "")
    try:
        wait_http(f"http://127.0.0.1:{service_port}/api/v1/health")
        time.sleep(0.5)
        print(
            f"# {args.seconds:g}s per run, {args.concurrency} concurrent posters, "
            f"{args.alerts_per_body} alert(s) per body, loopback, {os.cpu_count()} cores",
            flush=True,
        )
        results = {}
        for name, port in (("bare aiohttp 202", bare_port), ("agentic-obs (durable)", service_port)):
            url = f"http://127.0.0.1:{port}/api/v1/webhook/alertmanager"
            results[name] = measure(url, args.seconds, args.concurrency, args.alerts_per_body, 0)
            print(line(name, results[name]), flush=True)
        base, svc = results["bare aiohttp 202"], results["agentic-obs (durable)"]
        backlog, left, drain = drain_time(f"http://127.0.0.1:{service_port}", args.drain_limit)
        if left:
            print(
                f"analysis backlog when the load stopped: {backlog} jobs; "
                f"NOT all analysed: {left} left after {drain:.0f} s"
            )
        else:
            print(f"analysis backlog when the load stopped: {backlog} jobs; all analysed {drain:.1f}s later")
    finally:
        service.terminate()
        service.wait(30)
        bare.terminate()
    stored = stored_alerts(workdir)
    acked = svc["requests_202"] * args.alerts_per_body
    print(f"ratio to bare handler: {svc['req_per_s'] / base['req_per_s']:.2f}x")
    print(f"alerts acknowledged (202): {acked}  alerts in the SQLite inbox: {stored}  lost: {acked - stored}")
    print(
        "reproduce: python bench/webhook_load.py "
        f"--seconds {args.seconds:g} --concurrency {args.concurrency} "
        f"--alerts-per-body {args.alerts_per_body}"
        + (f" --config-extra '{args.config_extra}'" if args.config_extra else "")
        + (f" --drain-limit {args.drain_limit:g}" if args.drain_limit != 300 else "")
    )
    failed = []
    if acked > stored:
        failed.append(f"{acked - stored} alerts acknowledged (202) but not in the SQLite inbox")
    if left:
        failed.append(f"analysis did not catch up: {left} jobs left after {drain:.0f} s (--drain-limit)")
    for check in failed:
        print(f"FAILED: {check}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
