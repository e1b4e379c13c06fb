"""Replicas on one PostgreSQL (issue 17): three ``agentic-obs serve`` processes share one database
while alerts arrive round-robin across them at a steady rate; one replica is SIGKILLed a third of the
way in and another SIGTERMed at two thirds, neither restarted. Then throughput at full speed, side by
side: the SQLite single process, one replica on PostgreSQL, three replicas on PostgreSQL.

    nice .venv/bin/python bench/replicas.py [--seconds 45] [--rate 200] [--lease 6] [--groups 100]
        [--resolve-every 4] [--throughput-seconds 10] [--concurrency 32] [--drain-limit 120]
    nice .venv/bin/python bench/replicas.py --quick      # a short smoke run

PostgreSQL is a throwaway cluster as the tests start it (tests/pg.py: loopback, fsync off); PagerDuty
and Grafana are the fakes of tests/fakes.py, which count what they receive and reject a request the
real API would; Prometheus is a closed port (no evidence, fast failures: the rules reasoner still
reports). Each body holds 10 alerts of one group; groups cycle over ``--groups`` keys. Every fourth
group (``--resolve-every``; 0: none) also resolves: it fires in even cycles and resolves that firing's
alerts in the next (only once the firing was 202'd; else it fires again), so resolve jobs exist and
the group opens a new incident after each resolve. A post that fails (refused,
disconnected, 503) is retried on the next replica, as Alertmanager behind a Service would; an alert
counts as 202'd only on a 202. Six watches (``above`` on any query) give six named leases
``watch:<name>`` beside ``changes`` and ``retention``. Replica 0 starts first, so it holds every named
lease when it is SIGKILLed; at two thirds the live replica holding the most leases is SIGTERMed.

Checks (exit 1, with a ``FAILED:`` line, when one is missed):
* no alert 202'd and lost: every firing alert 202'd is in an incident, every resolve 202'd (after its
  firing was) is applied;
* every incident got its PagerDuty trigger and its Grafana annotation, every resolved incident its
  PagerDuty resolve; no annotation made twice (a PagerDuty event sent again under its dedup_key, in
  the SIGKILL window between the receiver's answer and the commit that records it, is folded by
  PagerDuty into the alert it names: printed apart, not a failure); no request the fakes reject;
* the SIGKILLed replica's named leases and unfinished jobs are held by live replicas within two leases
  and one beat (a third of a lease) of the kill, and so are the SIGTERMed replica's;
* all work drained within 300 s of the load stopping (each throughput run: within ``--drain-limit``);
  a drain that makes no progress for 30 s is wedged and is not waited for further.

"lost" is an alert 202'd and in no incident at the end; the report says how many of those are still in
the inbox, never ingested (wedged), rather than gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.*
from tests.fakes import GRAFANA_TOKEN, PD_ROUTING_KEY, FakeGrafana, FakePagerDuty
from tests.pg import PostgresServer, start_server

from crash_safety import start_fakes as start_crash_fakes
from webhook_load import TOKEN, free_port, start_service, wait_http

ALERTS_PER_BODY = 10
RESOLVING_EVERY = 4  # --resolve-every: every fourth group fires in even cycles, resolves in odd ones
WATCHES = 6
BEATS_PER_LEASE = 3  # service/replica.py: leases renewed every third of server.lease
SINGLETONS = ("changes", "retention")  # service/app.py: CHANGES_LEASE, RETENTION_LEASE
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
DRAIN_LIMIT_FAILOVER = 300.0
STALL = 30.0  # a drain with no progress for this long is wedged: stop waiting
STARTED: list[subprocess.Popen[bytes]] = []  # every service process, ended on the way out


# -- the load (own process) ------------------------------------------------------------------------------


def fingerprints(serial: int) -> list[str]:
    return [f"{serial:012x}{i:04x}" for i in range(ALERTS_PER_BODY)]


def body(group: int, serial: int, resolves: int | None) -> bytes:
    """Serial ``serial``'s body: firing alerts of its own, or the resolve of body ``resolves``'s."""
    name = f"ReplicaGroup{group}"
    status = "resolved" if resolves is not None else "firing"
    ends = datetime.now(UTC).isoformat().replace("+00:00", "Z") if resolves is not None else None
    alerts = [
        {
            "status": status,
            "labels": {"alertname": name, "service": f"svc-{group % 20}", "severity": "critical", "n": fp},
            "annotations": {"summary": "replicas bench"},
            "startsAt": "2026-11-27T00:00:00Z",
            "endsAt": ends or "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": fp,
        }
        for fp in fingerprints(serial if resolves is None else resolves)
    ]
    payload = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "status": status,
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": alerts,
    }
    return json.dumps(payload).encode()


@dataclass
class Load:
    """What one load process posted and what was 202'd."""

    urls: list[str]
    groups: int
    resolve_every: int
    fired: set[int] = field(default_factory=set)  # serials of firing bodies 202'd
    resolved: list[int] = field(default_factory=list)  # serials whose firing a 202'd resolve resolves
    bodies: int = 0
    by_replica: Counter[int] = field(default_factory=Counter)  # 202s per replica index
    attempts: Counter[str] = field(default_factory=Counter)  # every try, by status
    unanswered: int = 0  # bodies no replica 202'd
    latencies: list[float] = field(default_factory=list)

    def next_body(self, serial: int) -> tuple[bytes, int | None]:
        group, cycle = serial % self.groups, serial // self.groups
        earlier = serial - self.groups
        resolving = self.resolve_every > 0 and group % self.resolve_every == 0
        if resolving and cycle % 2 == 1 and earlier in self.fired:
            return body(group, serial, earlier), earlier
        return body(group, serial, None), None

    async def post(self, http: aiohttp.ClientSession, serial: int) -> None:
        """Round-robin: replica ``serial % n`` first, the next one after a failure."""
        data, resolves = self.next_body(serial)
        self.bodies += 1
        started = time.perf_counter()
        for k in range(len(self.urls)):
            index = (serial + k) % len(self.urls)
            try:
                async with http.post(self.urls[index], data=data, headers=HEADERS) as response:
                    await response.read()
                    self.attempts[str(response.status)] += 1
                    if response.status != 202:
                        continue
            except (aiohttp.ClientError, TimeoutError):
                self.attempts["no answer"] += 1
                continue
            self.latencies.append(time.perf_counter() - started)
            self.by_replica[index] += 1
            if resolves is None:
                self.fired.add(serial)
            else:
                self.resolved.append(resolves)
            return
        self.unanswered += 1

    def summary(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        quantiles = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
        return {
            "elapsed": elapsed,
            "bodies": self.bodies,
            "fired": sorted(self.fired),
            "resolved": self.resolved,
            "by_replica": dict(self.by_replica),
            "attempts": dict(self.attempts),
            "unanswered": self.unanswered,
            "p50_ms": quantiles[49] * 1000,
            "p99_ms": quantiles[98] * 1000,
        }


async def _steady(urls: list[str], seconds: float, rate: float, shape: tuple[int, int]) -> dict[str, Any]:
    """``rate`` alerts/s, a body every ALERTS_PER_BODY / rate seconds, each post its own task."""
    load = Load(urls, *shape)
    interval = ALERTS_PER_BODY / rate
    started = time.perf_counter()
    serial = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        tasks = []
        while time.perf_counter() - started < seconds:
            tasks.append(asyncio.create_task(load.post(http, serial)))
            serial += 1
            await asyncio.sleep(max(0.0, started + serial * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    return load.summary(time.perf_counter() - started)


async def _flat_out(
    urls: list[str], seconds: float, concurrency: int, shape: tuple[int, int]
) -> dict[str, Any]:
    """``concurrency`` posters, each posting its next body as soon as the last one is answered."""
    load = Load(urls, *shape)
    serials = iter(range(10_000_000))
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    async def poster(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            await load.post(http, next(serials))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(poster(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return load.summary(elapsed)


def load_worker(
    urls: list[str], seconds: float, rate: float, concurrency: int, shape: tuple[int, int], out: Any
) -> None:
    if rate > 0:
        out.put(asyncio.run(_steady(urls, seconds, rate, shape)))
    else:
        out.put(asyncio.run(_flat_out(urls, seconds, concurrency, shape)))


def start_load(
    urls: list[str], seconds: float, rate: float, concurrency: int, shape: tuple[int, int]
) -> tuple[Any, Any]:
    context = mp.get_context("spawn")
    queue: Any = context.Queue()
    process = context.Process(target=load_worker, args=(urls, seconds, rate, concurrency, shape, queue))
    process.start()
    return process, queue


# -- the services and fakes ------------------------------------------------------------------------------


async def start_fakes() -> tuple[FakePagerDuty, FakeGrafana, list[web.AppRunner], int, int]:
    """The counting fakes, as bench/crash_safety.py starts them."""
    pagerduty, grafana, pd_runner, grafana_runner, pd_port, grafana_port = await start_crash_fakes()
    return pagerduty, grafana, [pd_runner, grafana_runner], pd_port, grafana_port


@dataclass
class Service:
    """One ``agentic-obs serve`` process."""

    index: int
    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    id: str = ""
    fate: str = "ran to the end"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook(self) -> str:
        return f"{self.base}/api/v1/webhook/alertmanager"


def shape(args: argparse.Namespace) -> tuple[int, int]:
    return args.groups, args.resolve_every


def watch_names() -> list[str]:
    return [f"w{i}" for i in range(WATCHES)]


def lease_names() -> list[str]:
    return [f"watch:{w}" for w in watch_names()] + list(SINGLETONS)


def launch(
    workdir: Path,
    index: int,
    pd_port: int,
    grafana_port: int,
    lease: float,
    pg_url: str | None,
    password: str,
) -> Service:
    """Start one service and wait until it answers its health check."""
    workdir.mkdir(parents=True, exist_ok=True)
    watches = ", ".join(
        f"{{name: {w}, query: 'rate(bench_{w}_total[5m])', interval: 5s, above: 1}}" for w in watch_names()
    )
    extra = (
        f"actions: {{pagerduty: {{events_url: 'http://127.0.0.1:{pd_port}/v2/enqueue'}}, "
        f"grafana: {{url: 'http://127.0.0.1:{grafana_port}'}}, first_retry: 0.2s}}\n"
        f"watches: [{watches}]\n"
    )
    env = {
        "PAGERDUTY_ROUTING_KEY": PD_ROUTING_KEY,
        "GRAFANA_TOKEN": GRAFANA_TOKEN,
        "AGENTIC_OBS_LOG_LEVEL": "INFO",  # the replicas' leases and takeovers, in service.log
    }
    storage = ""
    if pg_url is not None:
        storage = f", backend: postgres, postgres: {{url: '{pg_url}'}}"
        env["POSTGRES_PASSWORD"] = password
    port = free_port()
    process = start_service(
        workdir, port, extra, env, storage_yaml=storage, server_yaml=f", lease: {lease:g}s"
    )
    STARTED.append(process)
    service = Service(index, workdir, port, process)
    wait_http(f"{service.base}/api/v1/health", timeout=60)
    service.id = replica_id(service)
    return service


def replica_id(service: Service) -> str:
    with urllib.request.urlopen(f"{service.base}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^agentic_obs_replica\{id="([^"]+)"\} 1', text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"replica {service.index}: no agentic_obs_replica{{id=...}} on /metrics")
    return found.group(1)


def stop(service: Service) -> None:
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


async def pending_work(base: str) -> int:
    """Store-wide: inbox, jobs and outbox rows not done yet (the queue-depth gauges)."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/metrics") as response:
        metrics = (await response.json())["metrics"]
    return int(sum(v for k, v in metrics.items() if k.startswith("agentic_obs_queue_depth")))


async def drain(base: str, limit: float) -> tuple[int, int, float, bool]:
    """The backlog when the load stopped, what was left when the wait ended, the seconds waited, and
    whether it ended early because nothing moved for STALL seconds (the work is wedged)."""
    started = last_progress = time.perf_counter()
    first = left = lowest = await pending_work(base)
    while left and time.perf_counter() - started < limit:
        if time.perf_counter() - last_progress > STALL:
            return first, left, time.perf_counter() - started, True
        await asyncio.sleep(0.5)
        left = await pending_work(base)
        if left < lowest:
            lowest, last_progress = left, time.perf_counter()
    return first, left, time.perf_counter() - started, False


# -- takeover: the database polled every 0.1 s --------------------------------------------------------

TAKEOVER_STATE = """
WITH now AS (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS t)
SELECT
  (SELECT COUNT(*) FROM leases, now WHERE owner = %(gone)s AND until > now.t),
  (SELECT COUNT(*) FROM leases, now WHERE owner = ANY(%(live)s) AND until > now.t AND name = ANY(%(names)s)),
  (SELECT COUNT(*) FROM jobs WHERE claimed_by = %(gone)s AND done_at IS NULL),
  (SELECT COUNT(*) FROM outbox WHERE claimed_by = %(gone)s AND state = 'pending')
"""


@dataclass
class Takeover:
    how: str  # SIGKILL or SIGTERM
    service: Service
    at: float  # seconds into the load
    held: tuple[int, int, int] = (0, 0, 0)  # named leases, jobs, outbox rows it held at the signal
    leases_after: float | None = None
    jobs_after: float | None = None
    outbox_after: float | None = None


async def measure_takeover(
    url: str, password: str, takeover: Takeover, live: list[str], signalled: float, limit: float
) -> Takeover:
    """Seconds from the signal until nothing is leased to the gone replica: no named lease of its
    unexpired and every name held by a live replica; no unfinished job (outbox row) claimed by it."""
    names = lease_names()
    params = {"gone": takeover.service.id, "live": live, "names": names}
    async with await psycopg.AsyncConnection.connect(url, password=password, autocommit=True) as conn:
        first = True
        while time.perf_counter() - signalled < limit:
            row = await (await conn.execute(TAKEOVER_STATE, params)).fetchone()
            assert row is not None
            gone_leases, live_leases, jobs, outbox = (int(v) for v in row)
            elapsed = time.perf_counter() - signalled
            if first:
                takeover.held = (gone_leases, jobs, outbox)
                first = False
            if takeover.leases_after is None and gone_leases == 0 and live_leases == len(names):
                takeover.leases_after = elapsed
            if takeover.jobs_after is None and jobs == 0:
                takeover.jobs_after = elapsed
            if takeover.outbox_after is None and outbox == 0:
                takeover.outbox_after = elapsed
            if None not in (takeover.leases_after, takeover.jobs_after, takeover.outbox_after):
                break
            await asyncio.sleep(0.1)
    return takeover


async def held_leases(url: str, password: str, owner: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, password=password, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT COUNT(*) FROM leases WHERE owner = %s "
                "AND until > EXTRACT(EPOCH FROM clock_timestamp())::float8",
                (owner,),
            )
        ).fetchone()
    return int(row[0]) if row else 0


# -- what the store and the fakes hold at the end --------------------------------------------------------


@dataclass
class Stored:
    install: str
    incidents: list[tuple[str, str, bool]]  # id, status, has a report
    alerts: dict[str, str]  # fingerprint -> status, in incident_alerts
    unprocessed: set[tuple[str, str]]  # (fingerprint, status) of inbox rows never ingested


def stored_postgres(url: str, password: str) -> Stored:
    with psycopg.connect(url, password=password, autocommit=True) as conn:
        install = conn.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()
        incidents = conn.execute("SELECT id, status, report IS NOT NULL FROM incidents").fetchall()
        alerts = conn.execute("SELECT fingerprint, status FROM incident_alerts").fetchall()
        inbox = conn.execute(
            "SELECT body::json->'alert'->>'fingerprint', body::json->'alert'->>'status' FROM inbox "
            "WHERE processed_at IS NULL"
        ).fetchall()
    return as_stored(install, incidents, alerts, inbox)


def as_stored(install: Any, incidents: list[Any], alerts: list[Any], inbox: list[Any]) -> Stored:
    """The rows either backend's queries return, as one ``Stored``."""
    return Stored(
        str(install[0]) if install else "",
        [(str(i), str(s), bool(r)) for i, s, r in incidents],
        {str(f): str(s) for f, s in alerts},
        {(str(f), str(s)) for f, s in inbox},
    )


def stored_sqlite(workdir: Path) -> Stored:
    with sqlite3.connect(workdir / "state" / "agentic-obs.sqlite3") as db:
        install = db.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()
        incidents = db.execute("SELECT id, status, report IS NOT NULL FROM incidents").fetchall()
        alerts = db.execute("SELECT fingerprint, status FROM incident_alerts").fetchall()
        inbox = db.execute(
            "SELECT json_extract(body, '$.alert.fingerprint'), json_extract(body, '$.alert.status') "
            "FROM inbox WHERE processed_at IS NULL"
        ).fetchall()
    return as_stored(install, incidents, alerts, inbox)


@dataclass
class Verdict:
    lost_firing: int  # 202'd, in no incident
    lost_resolves: int  # 202'd after its firing was, not applied
    in_inbox: int  # of those, still in the inbox: never ingested
    incidents: int
    reported: int
    resolved: int
    triggers: int
    resolves: int
    annotations: int
    missing: int
    duplicates: int
    resent: int  # PagerDuty events sent again under their dedup key (a SIGKILL between send and record)
    shape_errors: list[str]


def judge(result: dict[str, Any], stored: Stored, pagerduty: FakePagerDuty, grafana: FakeGrafana) -> Verdict:
    fired = {fp for serial in result["fired"] for fp in fingerprints(serial)}
    resolved = {fp for serial in result["resolved"] for fp in fingerprints(serial)}
    lost_firing = fired - set(stored.alerts)
    lost_resolves = {fp for fp in resolved if stored.alerts.get(fp) != "resolved"}
    in_inbox = sum(1 for fp in lost_firing if (fp, "firing") in stored.unprocessed) + sum(
        1 for fp in lost_resolves if (fp, "resolved") in stored.unprocessed
    )
    triggers = Counter(e["dedup_key"] for e in pagerduty.events("trigger"))
    resolves = Counter(e["dedup_key"] for e in pagerduty.events("resolve"))
    annotations = Counter(
        t for a in grafana.annotations.values() for t in a["tags"] if t.startswith("incident:")
    )
    ids = [i for i, _, _ in stored.incidents]
    closed = [i for i, status, _ in stored.incidents if status == "resolved"]
    expected_pd = {f"agentic-obs-{stored.install}-{i}" for i in ids}
    expected_resolves = {f"agentic-obs-{stored.install}-{i}" for i in closed}
    expected_grafana = {f"incident:{stored.install}-{i}" for i in ids}
    missing = (
        len(expected_pd - set(triggers))
        + len(expected_grafana - set(annotations))
        + len(expected_resolves - set(resolves))
    )
    # A second annotation is a second mark on the dashboards: a duplicate. A PagerDuty event sent again
    # under the same dedup_key (the SIGKILL window between the receiver's answer and the commit that
    # records it) is folded by PagerDuty into the alert it names, no second page: counted apart.
    duplicates = sum(n - 1 for n in annotations.values())
    resent = sum(n - 1 for counts in (triggers, resolves) for n in counts.values())
    return Verdict(
        len(lost_firing),
        len(lost_resolves),
        in_inbox,
        len(ids),
        sum(1 for _, _, reported in stored.incidents if reported),
        len(closed),
        sum(triggers.values()),
        sum(resolves.values()),
        sum(annotations.values()),
        missing,
        duplicates,
        resent,
        pagerduty.errors + grafana.errors,
    )


def verdict_failures(name: str, v: Verdict) -> list[str]:
    failed = []
    if v.lost_firing or v.lost_resolves:
        failed.append(
            f"{name}: {v.lost_firing} firing alerts 202'd but in no incident, {v.lost_resolves} resolves "
            f"202'd (after their firing) but not applied; {v.in_inbox} of them still in the inbox, "
            f"never ingested"
        )
    if v.missing:
        failed.append(f"{name}: {v.missing} actions missing (trigger, annotation or resolve of an incident)")
    if v.duplicates:
        failed.append(f"{name}: {v.duplicates} duplicate actions (a Grafana annotation made twice)")
    if v.shape_errors:
        failed.append(
            f"{name}: {len(v.shape_errors)} requests the fakes rejected (first: {v.shape_errors[0]})"
        )
    return failed


# -- the failover run -------------------------------------------------------------------------------------


async def failover(args: argparse.Namespace, server: PostgresServer, root: Path) -> list[str]:
    pagerduty, grafana, runners, pd_port, grafana_port = await start_fakes()
    url = server.create_database()
    beat = args.lease / BEATS_PER_LEASE
    bound = 2 * args.lease + beat
    print(
        f"## failover: 3 replicas on one PostgreSQL, {args.rate:g} alerts/s round-robin "
        f"for {args.seconds:g}s, "
        f"server.lease {args.lease:g}s (renewed every {beat:.1f}s), {len(lease_names())} named leases",
        flush=True,
    )

    def start(i: int) -> Service:
        return launch(root / f"failover-r{i}", i, pd_port, grafana_port, args.lease, url, server.password)

    services = [await asyncio.to_thread(start, 0)]  # first: it holds every named lease
    services += await asyncio.gather(*(asyncio.to_thread(start, i) for i in (1, 2)))
    failed: list[str] = []
    try:
        for s in services:
            print(f"replica {s.index}: id {s.id}, port {s.port}, log {s.workdir / 'service.log'}", flush=True)
        process, queue = start_load([s.webhook for s in services], args.seconds, args.rate, 0, shape(args))
        began = time.perf_counter()
        limit = bound + args.lease

        # SIGKILL replica 0 at a third
        await asyncio.sleep(max(0.0, began + args.seconds / 3 - time.perf_counter()))
        killed = services[0]
        kill = Takeover("SIGKILL", killed, time.perf_counter() - began)
        killed.process.send_signal(signal.SIGKILL)
        signalled = time.perf_counter()
        killed.process.wait()
        killed.fate = f"SIGKILLed at {kill.at:.1f}s"
        live = [s.id for s in services[1:]]
        await measure_takeover(url, server.password, kill, live, signalled, limit)
        print(takeover_line(kill, args.lease, bound), flush=True)

        # SIGTERM at two thirds: the live replica holding the most named leases
        await asyncio.sleep(max(0.0, began + 2 * args.seconds / 3 - time.perf_counter()))
        counts = [await held_leases(url, server.password, s.id) for s in services[1:]]
        termed = services[1 + counts.index(max(counts))]
        survivor = services[2 if termed is services[1] else 1]
        term = Takeover("SIGTERM", termed, time.perf_counter() - began)
        termed.process.send_signal(signal.SIGTERM)
        signalled = time.perf_counter()
        measured = asyncio.create_task(
            measure_takeover(url, server.password, term, [survivor.id], signalled, limit)
        )
        exited = await asyncio.to_thread(termed.process.wait, 60)
        termed.fate = (
            f"SIGTERMed at {term.at:.1f}s (exit {exited} after {time.perf_counter() - signalled:.1f}s)"
        )
        await measured
        print(takeover_line(term, args.lease, bound), flush=True)
        survivor.fate = "survived"

        result = await asyncio.to_thread(queue.get, True, args.seconds + 120)
        await asyncio.to_thread(process.join)
        backlog, left, waited, stalled = await drain(survivor.base, DRAIN_LIMIT_FAILOVER)
        stop(survivor)
    finally:
        for s in services:
            stop(s)
        for runner in runners:
            await runner.cleanup()

    stored = await asyncio.to_thread(stored_postgres, url, server.password)
    v = judge(result, stored, pagerduty, grafana)
    fired_alerts = len(result["fired"]) * ALERTS_PER_BODY
    resolved_alerts = len(result["resolved"]) * ALERTS_PER_BODY
    print(
        f"alerts posted: {result['bodies'] * ALERTS_PER_BODY} in {result['bodies']} bodies; "
        f"tries by answer: {result['attempts']}"
    )
    print(
        f"alerts 202'd: {fired_alerts + resolved_alerts} "
        f"({fired_alerts} firing, {resolved_alerts} resolved); "
        f"bodies no replica 202'd: {result['unanswered']}"
    )
    for s in services:
        print(
            f"  replica {s.index}: {result['by_replica'].get(s.index, 0) * ALERTS_PER_BODY} alerts 202'd, "
            f"{s.fate}"
        )
    print(
        f"lost: {v.lost_firing} firing alerts in no incident, {v.lost_resolves} resolves not applied "
        f"({v.in_inbox} of them still in the inbox, never ingested)"
    )
    print(
        f"incidents: {v.incidents} ({v.reported} reported, {v.resolved} resolved); PagerDuty triggers "
        f"{v.triggers}, resolves {v.resolves}; Grafana annotations {v.annotations}; "
        f"missing actions: {v.missing}"
    )
    print(
        f"duplicate actions: {v.duplicates}; PagerDuty events re-sent under their dedup_key (folded by "
        f"PagerDuty into one alert, no second page): {v.resent}; fake receivers' shape errors: "
        f"{len(v.shape_errors)}"
    )
    for t in (kill, term):
        failed += takeover_failures(t, bound)
    if left:
        why = f"no progress for {STALL:g}s" if stalled else "the limit"
        print(
            f"NOT all work drained: {left} left {waited:.0f}s after the load stopped ({why}; "
            f"backlog {backlog})"
        )
        failed.append(f"failover: work still queued {waited:.0f}s after the load stopped ({why}): {left}")
    else:
        print(f"all work drained {waited:.1f}s after the load stopped (backlog then: {backlog})")
    failed += verdict_failures("failover", v)
    return failed


def _secs(value: float | None) -> str:
    return "NOT within the wait" if value is None else f"{value:.1f}s"


def takeover_line(t: Takeover, lease: float, bound: float) -> str:
    leases, jobs, outbox = t.held
    return (
        f"{t.how} replica {t.service.index} at {t.at:.1f}s, holding {leases} named leases, {jobs} unfinished "
        f"jobs, {outbox} outbox rows: leases held by live replicas after {_secs(t.leases_after)}, jobs after "
        f"{_secs(t.jobs_after)}, outbox rows after {_secs(t.outbox_after)} "
        f"(lease {lease:g}s; bound 2 leases + 1 beat = {bound:.1f}s)"
    )


def takeover_failures(t: Takeover, bound: float) -> list[str]:
    failed = []
    for what, after in (
        ("named leases", t.leases_after),
        ("jobs", t.jobs_after),
        ("outbox rows", t.outbox_after),
    ):
        if after is None or after > bound:
            failed.append(
                f"{t.how}: replica {t.service.index}'s {what} not taken over within {bound:.1f}s "
                f"(2 leases + 1 beat): {_secs(after)}"
            )
    return failed


# -- the throughput runs ----------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    result: dict[str, Any]
    backlog: int
    left: int
    waited: float
    stalled: bool
    verdict: Verdict


async def throughput(
    args: argparse.Namespace, server: PostgresServer, root: Path
) -> tuple[list[Row], list[str]]:
    print(
        f"\n## throughput: {args.throughput_seconds:g}s flat out, {args.concurrency} concurrent posters "
        f"(round-robin over the replicas), then the drain of the analysis backlog",
        flush=True,
    )
    print(TABLE_HEAD, flush=True)
    rows, failed = [], []
    for name, replicas in (
        ("SQLite, 1 process", 0),
        ("PostgreSQL, 1 replica", 1),
        ("PostgreSQL, 3 replicas", 3),
    ):
        pagerduty, grafana, runners, pd_port, grafana_port = await start_fakes()
        url = None if replicas == 0 else server.create_database()
        tag = "sqlite" if replicas == 0 else f"pg{replicas}"

        def start(
            i: int, url: str | None = url, tag: str = tag, pd: int = pd_port, gf: int = grafana_port
        ) -> Service:
            return launch(root / f"{tag}-r{i}", i, pd, gf, args.lease, url, server.password)

        services = list(await asyncio.gather(*(asyncio.to_thread(start, i) for i in range(max(1, replicas)))))
        try:
            await asyncio.sleep(0.5)
            process, queue = start_load(
                [s.webhook for s in services], args.throughput_seconds, 0, args.concurrency, shape(args)
            )
            result = await asyncio.to_thread(queue.get, True, args.throughput_seconds + 120)
            await asyncio.to_thread(process.join)
            backlog, left, waited, stalled = await drain(services[0].base, args.drain_limit)
        finally:
            for s in services:
                stop(s)
            for runner in runners:
                await runner.cleanup()
        if url is None:
            stored = await asyncio.to_thread(stored_sqlite, services[0].workdir)
        else:
            stored = await asyncio.to_thread(stored_postgres, url, server.password)
        v = judge(result, stored, pagerduty, grafana)
        row = Row(name, result, backlog, left, waited, stalled, v)
        rows.append(row)
        print(table_line(row), flush=True)
        failed += verdict_failures(name, v)
        if left:
            why = f"no progress for {STALL:g}s" if stalled else "--drain-limit"
            failed.append(f"{name}: analysis did not catch up: {left} left after {waited:.0f}s ({why})")
    return rows, failed


def table_line(row: Row) -> str:
    r, v = row.result, row.verdict
    accepted = (len(r["fired"]) + len(r["resolved"])) * ALERTS_PER_BODY
    drained = f"{row.waited:5.1f}s"
    if row.left:
        drained = f"{'STALLED' if row.stalled else 'NOT'}: {row.left} left"
    return (
        f"{row.name:<24} {accepted / r['elapsed']:>7.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
        f"{row.backlog:>8} {drained:>19} {v.incidents:>9} {v.lost_firing + v.lost_resolves:>5} "
        f"{v.duplicates:>5}"
    )


TABLE_HEAD = (
    f"{'run':<24} {'alerts/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'backlog':>8} {'drained after':>19} "
    f"{'incidents':>9} {'lost':>5} {'dups':>5}"
)


# -- main ---------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    print(
        f"# {os.cpu_count()} cores for PostgreSQL, the replicas, the fakes and the load generator together; "
        f"workdirs under {root}",
        flush=True,
    )
    try:
        server = await asyncio.to_thread(start_server)
    except BaseException as exc:  # tests/pg.py skips (pytest) without the binaries
        print(f"FAILED: cannot start PostgreSQL (tests/pg.py): {exc}")
        return 1
    try:
        failed = await failover(args, server, root)
        rows, more = await throughput(args, server, root)
        failed += more
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait()
        await asyncio.to_thread(server.stop)
    if len(rows) == 3 and rows[0].result["elapsed"]:
        sqlite, one, three = (
            (len(r.result["fired"]) + len(r.result["resolved"])) * ALERTS_PER_BODY / r.result["elapsed"]
            for r in rows
        )
        print(
            f"PostgreSQL 1 replica / SQLite: {one / sqlite:.2f}x; "
            f"3 replicas / 1 replica: {three / one:.2f}x. "
            f"Not a scaling figure: all {os.cpu_count()} cores are shared by PostgreSQL (fsync off, as "
            "tests/pg.py runs it), every replica, the fakes and the load generator, so 3 replicas mostly "
            "split the same CPU; SQLite commits with synchronous=NORMAL (WAL)."
        )
    print(
        f"reproduce: nice .venv/bin/python bench/replicas.py --seconds {args.seconds:g} --rate {args.rate:g} "
        f"--lease {args.lease:g} --groups {args.groups} --resolve-every {args.resolve_every} "
        f"--throughput-seconds {args.throughput_seconds:g} "
        f"--concurrency {args.concurrency} --drain-limit {args.drain_limit:g}"
    )
    for check in failed:
        print(f"FAILED: {check}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=45.0, help="failover run: seconds of load")
    parser.add_argument("--rate", type=float, default=200.0, help="failover run: alerts per second")
    parser.add_argument("--lease", type=float, default=6.0, help="server.lease, seconds (min 1)")
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument(
        "--resolve-every",
        type=int,
        default=RESOLVING_EVERY,
        help="every n-th group fires and resolves in turn (0: no group resolves)",
    )
    parser.add_argument("--throughput-seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--drain-limit", type=float, default=120.0, help="throughput runs: seconds")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (overrides the above)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rate, args.lease, args.groups = 15.0, 100.0, 2.0, 20
        args.throughput_seconds, args.concurrency, args.drain_limit = 3.0, 8, 60.0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
