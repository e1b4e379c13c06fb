"""One incident per fault: a labelled stream of faults replayed through the real service, once with the
correlation stage off and once on, in the same run.

The synthetic shop cluster's history (``demo/shop.py``, a 10 s step, long enough for every fault's
baseline and aftermath) is loaded into a real Prometheus. Faults hit carts, catalogue, payment or
orders at random times (fixed seed); some pairs overlap in time on services with no direct call
between them (carts and catalogue, say). Each fault fires 1 to 8 alert groups over a few minutes: the
hit service's own CPU alert first, then latency, error-ratio and SLO alerts on it and on the callers
that feel the fault (``CALLS``), each ``startsAt`` at its time in the history. An alert already
firing (a caller both overlapping faults reach) fires once, as in Alertmanager. A group on a service
that felt two faults when it started (the front-end, under carts and catalogue at once) is shared:
its signals cannot tell the faults apart, so it may join either. When the fault's effect on a service
ends, its alerts resolve. Everything is posted in time order, the history replayed ``--speedup``
times faster; a resolve is posted only once every group posted before it has been analysed, so
compressing time never lets a fault resolve before its own late groups are looked at (the replay
clock pauses meanwhile).

The service runs in-process (as in ``tests/test_correlation.py``) with Slack, Grafana and PagerDuty
as the tests' strict fakes; investigation signals are latency and CPU by service, calls = ``CALLS``.

Printed: pages per fault (PagerDuty triggers / faults), faults wrongly merged (a fault whose own,
unshared alert groups share an incident with another fault's), faults split across incidents (missed
merges, informative), and the latency the stage adds: per alert group, the time from its 202 to the
group being analysed in ``GET /api/v1/incidents`` (a root with a report, or a member of a root),
p50/p99 with correlation off and on, and the difference.

Checks (exit 1, with a ``FAILED:`` line, when one is missed): pages per fault <= 1.1 with correlation
on; no fault wrongly merged; no incident paged twice; every group analysed and every PagerDuty event
delivered within ``--drain`` seconds (Slack, paced at about a message a second, is not waited for); no
request the fakes reject.

    python bench/correlation.py [--faults 14] [--pairs 3] [--seed 1] [--speedup 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.*
from tests.conftest import auth_headers, prometheus_with_history
from tests.test_actions import Sinks

from agentic_observability.config import Config
from agentic_observability.demo.shop import (
    CALLS,
    HOP_SECONDS,
    ShopCollector,
    call_distance,
    history_openmetrics,
)
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.models import iso_time
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE

SIGNALS = [
    {"name": "latency", "query": "max by (service) (shop_request_latency_seconds)"},
    {"name": "cpu", "query": "max by (service) (shop_cpu_usage_ratio)"},
]
FAULT_SERVICES = ("carts", "catalogue", "payment", "orders")
CHECKOUT = ("carts", "payment", "orders")  # faults on the checkout path burn the front-end's SLO
FIRST_FAULT = 2000.0  # seconds into the history: the first fault's baseline (30 min) is all there
AFTERMATH = 700.0  # history kept after the last alert resolves (the investigation looks 600 s on)
STEP = 10.0
PAGES_PER_FAULT_TARGET = 1.1


@dataclass(frozen=True)
class Fault:
    index: int
    service: str
    at: float  # seconds into the history
    duration: float


@dataclass
class Group:
    """One alert group: one alert of one fault, firing from ``starts`` to ``ends`` (history seconds)."""

    fault: int  # the fault that fired it
    name: str
    service: str
    starts: float
    ends: float = 0.0
    causes: tuple[int, ...] = ()  # every fault the service felt when it started; >1: shared

    @property
    def shared(self) -> bool:
        return len(self.causes) > 1

    @property
    def group_key(self) -> str:
        return f'{{}}:{{alertname="{self.name}"}}'


@dataclass
class Run:
    enabled: bool
    latencies: list[float] = field(default_factory=list)
    incident_of: dict[int, str] = field(default_factory=dict)  # group index -> root incident id
    incidents: list[dict[str, Any]] = field(default_factory=list)
    triggers: int = 0
    trigger_keys: Counter[str] = field(default_factory=Counter)
    resolves: int = 0
    unanalysed: int = 0
    stalls: int = 0  # resolves that waited for the analysis of earlier groups
    stalled: float = 0.0
    drained: bool = True
    slack_parents: int = 0
    slack_pending: int = 0
    errors: list[str] = field(default_factory=list)


# -- the labelled stream ----------------------------------------------------------------------------


def camel(service: str) -> str:
    return "".join(part.capitalize() for part in service.split("-"))


def lag(service: str, hit: str) -> float | None:
    hops = call_distance(service, hit)
    return None if hops is None else hops * HOP_SECONDS


def felt(fault: Fault, service: str, cpu: bool) -> tuple[float, float] | None:
    """When ``service`` feels ``fault`` (its CPU only on the service hit; latency and errors also on
    the callers, a hop later each)."""
    if cpu:
        return (fault.at, fault.at + fault.duration) if fault.service == service else None
    delay = lag(service, fault.service)
    return None if delay is None else (fault.at + delay, fault.at + fault.duration + delay)


def place_faults(rng: random.Random, count: int, pairs: int) -> list[Fault]:
    """Events one after another (a gap after the previous one's alerts resolved); ``pairs`` of them
    are two faults overlapping in time on services with no direct call between them."""
    unrelated = [
        (a, b)
        for i, a in enumerate(FAULT_SERVICES)
        for b in FAULT_SERVICES[i + 1 :]
        if (a, b) not in CALLS and (b, a) not in CALLS
    ]
    pairs = min(pairs, count // 2)
    events: list[tuple[str, ...]] = [rng.choice(unrelated) for _ in range(pairs)]
    events += [(rng.choice(FAULT_SERVICES),) for _ in range(count - 2 * pairs)]
    rng.shuffle(events)
    faults: list[Fault] = []
    moment = FIRST_FAULT
    for services in events:
        start = moment
        for n, service in enumerate(services):
            at = start + (rng.uniform(30, 200) if n else 0.0)
            faults.append(Fault(len(faults), service, round(at), round(rng.uniform(300, 600))))
        end = max(f.at + f.duration for f in faults[-len(services) :])
        moment = end + 2 * HOP_SECONDS + 90 + rng.uniform(30, 450)  # the last resolve, then a gap
    return faults


def fire_groups(rng: random.Random, faults: list[Fault]) -> list[Group]:
    """Each fault's alert groups, time-ordered; an alert already firing is not fired again."""
    wanted: list[Group] = []
    for fault in faults:
        hit = fault.service
        pool = [(f"{camel(hit)}{kind}", hit) for kind in ("CpuSaturated", "LatencyHigh", "ErrorRatioHigh")]
        callers = sorted(
            (s for s in ("orders", "front-end") if s != hit and lag(s, hit) is not None),
            key=lambda s: lag(s, hit) or 0.0,
        )
        pool += [(f"{camel(c)}{kind}", c) for c in callers for kind in ("LatencyHigh", "ErrorRatioHigh")]
        if hit in CHECKOUT:
            pool.append(("CheckoutSloBurn", "front-end"))
        chosen = [pool[0], *rng.sample(pool[1:], rng.randint(1, min(8, len(pool))) - 1)]
        for name, service in chosen:
            if name.endswith("CpuSaturated"):
                starts = fault.at + rng.uniform(5, 25)
            else:
                starts = fault.at + (lag(service, hit) or 0.0) + rng.uniform(30, 240)
            wanted.append(Group(fault.index, name, service, round(starts)))
    groups: list[Group] = []
    for group in sorted(wanted, key=lambda g: g.starts):
        if any(g.name == group.name and g.starts <= group.starts < g.ends for g in groups):
            continue  # the same alert is already firing (another fault's): one alert, one group
        # shared: the service felt more than one fault then (its signals cannot tell them apart)
        cpu = group.name.endswith("CpuSaturated")
        windows = [(f.index, felt(f, group.service, cpu)) for f in faults]
        spans = [(i, w) for i, w in windows if w is not None]
        group.causes = tuple(i for i, (a, b) in spans if a <= group.starts <= b)
        group.ends = round(busy_until(group.starts, [w for _, w in spans]) + rng.uniform(30, 90))
        groups.append(group)
    return groups


def busy_until(moment: float, windows: list[tuple[float, float]]) -> float:
    """The end of the run of overlapping windows that holds ``moment``."""
    end = moment
    for a, b in sorted(windows):
        if a <= end <= b:
            end = b
    return end


# -- one replay through the service -----------------------------------------------------------------


def service_config(workdir: Path, sinks: Sinks, prometheus: ManagedProcess, enabled: bool) -> Config:
    made = sinks.config(workdir)
    data = made.file.model_dump(mode="json")
    data["prometheus"] = {"url": prometheus.url, "timeout": "5s", "retries": 1}
    data["memory"] = {"enabled": False}
    data["investigation"] = {"signals": SIGNALS, "calls": [{"caller": a, "callee": b} for a, b in CALLS]}
    data["correlation"] = {"enabled": enabled}
    return made.model_copy(update={"file": type(made.file).model_validate(data)})


def webhook(group: Group, started: float, status: str) -> dict[str, Any]:
    labels = {"alertname": group.name, "service": group.service, "severity": "critical", "namespace": "shop"}
    body = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{group.service} is unwell"},
        "startsAt": iso_time(started + group.starts),
        "endsAt": iso_time(started + group.ends) if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"{group.name}-{int(started + group.starts)}",
    }
    return {
        "version": "4",
        "groupKey": group.group_key,
        "status": status,
        "receiver": "agentic-obs",
        "groupLabels": {"alertname": group.name},
        "commonLabels": labels,
        "commonAnnotations": body["annotations"],
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": [body],
    }


async def list_incidents(client: TestClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/incidents", params={"limit": "500"}, headers=auth_headers())
    if response.status != 200:
        raise RuntimeError(f"GET /api/v1/incidents answered {response.status}: {await response.text()}")
    return list((await response.json())["incidents"])


def analysed_groups(found: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(group key, started at) of every analysed group -> the id of the incident it is in."""
    seen: dict[tuple[str, str], str] = {}
    for incident in found:
        if incident["report"]:
            seen[(incident["group_key"], incident["started_at"])] = incident["id"]
        for member in incident["members"]:
            seen[(member["group_key"], member["started_at"])] = incident["id"]
    return seen


async def replay(
    enabled: bool, prometheus: ManagedProcess, started: float, groups: list[Group], args: argparse.Namespace
) -> Run:
    run = Run(enabled)
    sinks = Sinks()
    await sinks.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-correlation-"))
    client = TestClient(TestServer(init_app(service_config(workdir, sinks, prometheus, enabled))))
    await client.start_server()
    loop = asyncio.get_running_loop()
    keys = {(g.group_key, iso_time(started + g.starts) or ""): i for i, g in enumerate(groups)}
    accepted: dict[int, float] = {}  # group index -> when its 202 came back
    seen: dict[int, float] = {}  # group index -> when it was first seen analysed
    posted: set[int] = set()
    caught_up = asyncio.Event()  # every group posted so far has been seen analysed

    async def poll() -> None:
        while True:
            found = await list_incidents(client)
            now = loop.time()
            for key in analysed_groups(found):
                index = keys.get(key)
                if index is not None and index not in seen:
                    seen[index] = now
            if not posted - set(seen):
                caught_up.set()
            await asyncio.sleep(args.poll)

    async def post(body: dict[str, Any]) -> None:
        response = await client.post("/api/v1/webhook/alertmanager", json=body, headers=auth_headers())
        if response.status != 202:
            raise RuntimeError(f"the webhook answered {response.status}: {await response.text()}")

    events = [(g.starts, 1, i) for i, g in enumerate(groups)] + [(g.ends, 0, i) for i, g in enumerate(groups)]
    events.sort()  # a resolve before a firing at the same moment: the group key is free again
    poller = asyncio.create_task(poll())
    try:
        origin, first = loop.time(), events[0][0]
        for moment, firing, index in events:
            await asyncio.sleep(max(0.0, origin + (moment - first) / args.speedup - loop.time()))
            if firing:
                caught_up.clear()
                posted.add(index)
                await post(webhook(groups[index], started, "firing"))
                accepted[index] = loop.time()
                continue
            paused = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(caught_up.wait(), args.barrier)
            if loop.time() - paused > 0.05:
                run.stalls += 1
                run.stalled += loop.time() - paused
                origin += loop.time() - paused  # the replay clock stood still meanwhile
            await post(webhook(groups[index], started, "resolved"))
        run.drained = await settled(client, lambda: len(seen) == len(groups), args.drain)
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    found = await list_incidents(client)
    run.incidents = found
    run.incident_of = {keys[k]: root for k, root in analysed_groups(found).items() if k in keys}
    run.latencies = [seen[i] - accepted[i] for i in sorted(seen) if i in accepted]
    run.unanalysed = len(groups) - len(seen)
    rows = await client.app[STORE].outbox_rows()
    run.slack_pending = sum(1 for r in rows if r["sink"] == "slack" and r["state"] != "delivered")
    run.triggers = len(sinks.pagerduty.events("trigger"))
    run.trigger_keys = Counter(str(e["dedup_key"]) for e in sinks.pagerduty.events("trigger"))
    run.resolves = len(sinks.pagerduty.events("resolve"))
    run.slack_parents = len(sinks.slack.parents())
    run.errors = sinks.errors()
    await client.close()
    for server in sinks.servers:
        await server.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return run


async def settled(client: TestClient, all_seen: Any, limit: float) -> bool:
    """Every group analysed, no job left, every PagerDuty event delivered (Slack, paced at about one
    message a second, is not waited for)."""
    store = client.app[STORE]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rows = await store.outbox_rows()
        pagerduty = all(r["state"] == "delivered" for r in rows if r["sink"] == "pagerduty")
        counts = await store.counts()
        idle = counts["inbox_pending"] == 0 and counts["jobs_pending"] == 0
        if all_seen() and idle and pagerduty:
            return True
        await asyncio.sleep(0.2)
    return False


async def warm_up(prometheus: ManagedProcess, started: float, end: float) -> None:
    """One query over the whole history first, so the first run does not pay for a cold TSDB."""
    params = {"query": SIGNALS[0]["query"], "start": str(started), "end": str(end), "step": "60"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{prometheus.url}/api/v1/query_range", params=params) as response,
    ):
        await response.read()


# -- the figures ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def judge(run: Run, groups: list[Group]) -> tuple[set[int], dict[int, set[str]], list[str]]:
    """Faults wrongly merged, each fault's incidents (its own unshared groups), and the incidents
    that hold more than one fault."""
    by_incident: dict[str, set[int]] = defaultdict(set)
    incidents_of: dict[int, set[str]] = defaultdict(set)
    for index, group in enumerate(groups):
        root = run.incident_of.get(index)
        if root is None or group.shared:
            continue
        by_incident[root].add(group.fault)
        incidents_of[group.fault].add(root)
    mixed = sorted((root for root, owners in by_incident.items() if len(owners) > 1), key=int)
    wrong = {fault for root in mixed for fault in by_incident[root]}
    return wrong, incidents_of, mixed


def describe(incident: dict[str, Any], groups: list[Group], run: Run) -> list[str]:
    """An incident's groups (which fault fired each), why each member joined, what its report ranks."""
    mine = [(i, g) for i, g in enumerate(groups) if run.incident_of.get(i) == incident["id"]]
    lines = [f"    incident {incident['id']} ({incident['title']}):"]
    for _, g in mine:
        share = f", shared with faults {list(g.causes)}" if g.shared else ""
        lines.append(f"      {g.name} on {g.service} at {g.starts:.0f} s, fault {g.fault}{share}")
    for member in incident["members"]:
        lines.append(f"      member {member['id']} {member['alertnames']}: {member['joined'].get('reason')}")
    ranked = [
        f"{h['entity']} ({h.get('score', 0):.2f})" for h in (incident["report"] or {}).get("hypotheses", [])
    ]
    lines.append(f"      report ranks: {', '.join(ranked[:4]) or 'nothing'}")
    return lines


def listed(faults: list[int]) -> str:
    return f" (faults {', '.join(map(str, faults))})" if faults else ""


def latency_line(run: Run) -> str:
    p50, p99 = percentile(run.latencies, 50), percentile(run.latencies, 99)
    return f"p50 {p50:.2f} s, p99 {p99:.2f} s (n={len(run.latencies)})"


def report(args: argparse.Namespace, faults: list[Fault], groups: list[Group], off: Run, on: Run) -> int:
    counts = Counter(g.fault for g in groups)
    print("\nfaults (seconds into the history; groups fired, shared ones in brackets):")
    for fault in faults:
        shared = sum(1 for g in groups if g.fault == fault.index and g.shared)
        overlaps = [
            f.index
            for f in faults
            if f.index != fault.index and f.at < fault.at + fault.duration and fault.at < f.at + f.duration
        ]
        with_ = f", overlaps fault {overlaps}" if overlaps else ""
        print(
            f"  fault {fault.index:2d}: {fault.service:9s} at {fault.at:5.0f} s for {fault.duration:3.0f} s, "
            f"{counts[fault.index]} groups ({shared}){with_}"
        )
    print(f"alert groups: {len(groups)} ({sum(g.shared for g in groups)} shared by two faults)")
    for run in (off, on):
        name = "on " if run.enabled else "off"
        print(
            f"correlation {name}: {len(run.incidents)} incidents, PagerDuty triggers {run.triggers} "
            f"({run.triggers / len(faults):.2f} per fault), resolves {run.resolves}; Slack parents "
            f"{run.slack_parents} ({run.slack_pending} Slack messages still paced at the end); "
            f"202 -> analysed {latency_line(run)}; resolves held for analysis {run.stalls} "
            f"({run.stalled:.1f} s in all)"
        )
    wrong, incidents_of, mixed = judge(on, groups)
    split = sorted(f for f, roots in incidents_of.items() if len(roots) > 1)
    pages = on.triggers / len(faults)
    print(f"\npages per fault: {pages:.2f} (target <= {PAGES_PER_FAULT_TARGET})")
    print(f"faults wrongly merged with another: {len(wrong)}{listed(sorted(wrong))} (target 0)")
    print(f"faults split across more than one incident (missed merges): {len(split)}{listed(split)}")
    d50 = percentile(on.latencies, 50) - percentile(off.latencies, 50)
    d99 = percentile(on.latencies, 99) - percentile(off.latencies, 99)
    print(f"added latency of the correlation stage: p50 {d50:+.2f} s, p99 {d99:+.2f} s")
    by_id = {i["id"]: i for i in on.incidents}
    if mixed:
        print("\nincidents holding more than one fault:")
        for root in mixed:
            print("\n".join(describe(by_id[root], groups, on)))
    if split:
        print("\nfaults split across incidents:")
        for index in split:
            print(f"  fault {index} ({faults[index].service}):")
            for root in sorted(incidents_of[index], key=int):
                print("\n".join(describe(by_id[root], groups, on)))
    twice = [key for key, n in on.trigger_keys.items() if n > 1]
    failed = []
    if pages > PAGES_PER_FAULT_TARGET:
        failed.append(f"pages per fault {pages:.2f} > {PAGES_PER_FAULT_TARGET}")
    if wrong:
        failed.append(f"{len(wrong)} faults wrongly merged with another (faults {sorted(wrong)})")
    if twice:
        failed.append(f"{len(twice)} incidents paged more than once")
    for run in (off, on):
        name = "on" if run.enabled else "off"
        if run.unanalysed or not run.drained:
            failed.append(
                f"correlation {name}: {run.unanalysed} groups never analysed, or work (or PagerDuty "
                f"events) still pending {args.drain:.0f} s after the stream"
            )
        if run.errors:
            failed.append(
                f"correlation {name}: {len(run.errors)} requests the fakes rejected ({run.errors[0]})"
            )
    for check in failed:
        print(f"FAILED: {check}")
    return 1 if failed else 0


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    faults = place_faults(rng, args.faults, args.pairs)
    groups = fire_groups(rng, faults)
    history = max(g.ends for g in groups) + AFTERMATH
    now = float(int(time.time()))
    started = now - history - 60
    print(
        f"python bench/correlation.py --faults {args.faults} --pairs {args.pairs} --seed {args.seed} "
        f"--speedup {args.speedup:g}",
        flush=True,
    )
    print(
        f"history: {history / 3600:.2f} h at a {STEP:g} s step; {len(faults)} faults, {len(groups)} alert "
        f"groups; replayed {args.speedup:g}x faster",
        flush=True,
    )
    collector = ShopCollector([(f.at, f.duration, f.service) for f in faults], started=started)
    workdir = Path(tempfile.mkdtemp(prefix="bench-correlation-prom-"))
    text = await asyncio.to_thread(history_openmetrics, collector, started, started + history, STEP)
    prometheus = await asyncio.to_thread(prometheus_with_history, workdir, text)
    try:
        await warm_up(prometheus, started, started + history)
        runs = []
        for enabled in (False, True):
            began = time.perf_counter()
            runs.append(await replay(enabled, prometheus, started, groups, args))
            took = time.perf_counter() - began
            print(f"replayed with correlation {'on' if enabled else 'off'} in {took:.0f} s", flush=True)
    finally:
        prometheus.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, faults, groups, *runs)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faults", type=int, default=14)
    parser.add_argument("--pairs", type=int, default=3, help="pairs of faults overlapping in time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speedup", type=float, default=100.0, help="history seconds per real second")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between GET /api/v1/incidents")
    parser.add_argument("--barrier", type=float, default=120.0, help="longest a resolve waits, seconds")
    parser.add_argument("--drain", type=float, default=300.0, help="longest wait after the stream, seconds")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
