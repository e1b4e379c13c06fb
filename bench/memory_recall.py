"""Incident memory: recall latency at 10k and 100k stored incidents, and retrieval quality.

Latency: the full ``IncidentMemory.recall`` (embed the query, a nearest search plus a same-alert/
same-service filtered search, boosts) on Qdrant Edge (payloads on disk, the default, and in RAM),
next to qdrant-client's local mode holding the same incidents, in the same run. Synthetic incidents:
60 alert names, 40 services, 8 signal kinds.

Quality: leave-one-out over the 50 sock-shop cases. Each case is ranked by the product's own
investigator; the other 49 are stored as past incidents with their confirmed root cause (as feedback
would record it); the held-out one is the query, described only by what the product knows at alert
time (its top hypothesis and evidence signature). A hit is a recalled incident with the same root-cause
service *and* the same fault (cpu or mem). Printed next to a control that recalls from alert facts only.

Checks (exit 1, with a ``FAILED:`` line, when one is missed): each backend holds every incident it
was given, and the evidence-signature query beats the control on both recall@1 and recall@3.

    python bench/memory_recall.py [--sizes 10000 100000] [--queries 300] [--cases ../shared/datasets/sockshop]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from agentic_observability.memory import EdgeBackend, HashingEmbedder, IncidentMemory, QdrantServerBackend
from agentic_observability.memory.records import evidence_signature
from agentic_observability.models import PastIncident
from agentic_observability.offline.rca import rank_case

KINDS = ("cpu", "memory", "latency_p90", "load", "errors", "disk", "gc_pause", "connections")
BATCH = 2000


def synthetic(count: int, seed: int) -> list[PastIncident]:
    rng = random.Random(seed)
    services = [f"svc-{i}" for i in range(40)]
    alerts = [f"Alert{i}" for i in range(60)]
    out = []
    for n in range(1, count + 1):
        cause, kind = rng.choice(services), rng.choice(KINDS)
        service = rng.choice(services)
        out.append(
            PastIncident(
                incident_id=str(n),
                title=f"{rng.choice(alerts)} on {service}",
                alertname=rng.choice(alerts),
                service=service,
                labels={"service": service, "severity": rng.choice(["page", "warning"]), "team": f"t{n % 7}"},
                started_at=1.7e9 + n * 60,
                cause=cause,
                signals=(f"{cause}:{kind}", f"{cause}:{rng.choice(KINDS)}"),
                resolution="restarted" if n % 3 == 0 else "",
                confirmed=n % 2 == 0,
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def timed_recalls(memory: IncidentMemory, queries: list[PastIncident]) -> list[float]:
    for query in queries[:20]:  # warm-up
        await memory.recall(query)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        await memory.recall(query)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def latency_row(
    name: str, memory: IncidentMemory, incidents: list[PastIncident], queries: list[PastIncident]
) -> tuple[str, int]:
    """The table row, and how many incidents the backend holds after loading."""
    started = time.perf_counter()
    for start in range(0, len(incidents), BATCH):
        await memory.remember_many(incidents[start : start + BATCH])
    if isinstance(memory.backend, EdgeBackend):
        await memory.backend.optimize()  # build the HNSW index, as the shard's optimizer would
    load = time.perf_counter() - started
    # The 100k synthetic incidents are the benchmark's own, not the service's: free them so that
    # collecting them does not land in the timings as garbage-collector pauses.
    incidents.clear()
    gc.collect()
    latencies = await timed_recalls(memory, queries)
    count = await memory.count()
    row = (
        f"| {name} | {count} | {statistics.median(latencies):.2f} | {percentile(latencies, 0.99):.2f} | "
        f"{load:.1f} |"
    )
    return row, count


async def latency(sizes: list[int], queries: int, local_queries: int) -> list[str]:
    """Prints the latency table; returns the failed checks (a backend holding fewer than it was given)."""
    failed = []
    print("| backend | stored | recall p50 ms | recall p99 ms | load s |")
    print("|---|---|---|---|---|")
    for size in sizes:
        probes = [
            PastIncident(**{**q.to_payload(), "incident_id": str(size + 1 + i)})
            for i, q in enumerate(synthetic(queries, 7))
        ]
        with tempfile.TemporaryDirectory() as folder:
            for name, backend in (
                ("Qdrant Edge", EdgeBackend(Path(folder) / "edge")),
                ("Qdrant Edge, payloads in RAM", EdgeBackend(Path(folder) / "ram", payload_in_ram=True)),
                ("qdrant-client local", QdrantServerBackend.local(str(Path(folder) / "local"))),
            ):
                memory = await IncidentMemory.open(backend, HashingEmbedder())
                asked = probes if isinstance(backend, EdgeBackend) else probes[:local_queries]
                row, count = await latency_row(name, memory, synthetic(size, seed=size), asked)
                print(row, flush=True)
                await memory.close()
                if count != size:
                    failed.append(f"{name} holds {count} incidents after loading {size}")
    return failed


def case_incident(case: Path, number: int, with_evidence: bool) -> tuple[PastIncident, PastIncident, str]:
    """(stored record with the confirmed cause, alert-time query, true label 'service:fault')."""
    meta = json.loads((case / "case.json").read_text())
    truth = f"{meta['root_cause']['service']}:{meta['fault']}"
    ranking = rank_case(case)
    top = ranking[0]
    evidence = [
        {"signal": e.signal, "labels": dict(e.labels), "deviation": e.deviation} for e in top.evidence
    ]
    signals = evidence_signature(top.entity, evidence, "service") if with_evidence else ()
    base = PastIncident(
        incident_id=str(number),
        title="SockShopSLO on front-end",
        alertname="SockShopSLO",
        service="front-end",
        labels={"service": "front-end", "severity": "page"},
        started_at=float(meta["fault_time"]),
        signals=signals,
    )
    query = replace(base, cause=top.entity if with_evidence else "")
    stored = replace(base, cause=meta["root_cause"]["service"], confirmed=True)
    return stored, query, truth


async def quality(cases: list[Path]) -> list[str]:
    """Prints the quality table; returns the failed checks (the evidence signature not beating the
    control)."""
    if not cases:
        return ["no sock-shop cases (directories with a case.json) found"]
    scores: dict[bool, tuple[float, float]] = {}
    print(f"\nleave-one-out over {len(cases)} sock-shop cases")
    print("| query describes | recall@1 | recall@3 |")
    print("|---|---|---|")
    for label, with_evidence in (
        ("hypotheses + evidence signature", True),
        ("alert facts only (control)", False),
    ):
        rows = [case_incident(case, n + 1, with_evidence) for n, case in enumerate(cases)]
        hits1 = hits3 = 0
        for held_out, (_, query, truth) in enumerate(rows):
            with tempfile.TemporaryDirectory() as folder:
                memory = await IncidentMemory.open(EdgeBackend(folder), HashingEmbedder())
                await memory.remember_many([stored for i, (stored, _, _) in enumerate(rows) if i != held_out])
                recalled = await memory.recall(query, limit=3)
                await memory.close()
            labels = [rows[int(r.id) - 1][2] for r in recalled]
            hits1 += bool(labels[:1] == [truth])
            hits3 += truth in labels
        print(f"| {label} | {hits1 / len(rows):.3f} | {hits3 / len(rows):.3f} |", flush=True)
        scores[with_evidence] = (hits1 / len(rows), hits3 / len(rows))
    (ours1, ours3), (control1, control3) = scores[True], scores[False]
    if ours1 <= control1 or ours3 <= control3:
        return [
            f"the evidence signature does not beat the alert-facts control (recall@1 {ours1:.3f} vs "
            f"{control1:.3f}, recall@3 {ours3:.3f} vs {control3:.3f})"
        ]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--local-queries", type=int, default=50, help="fewer for the slow local mode")
    parser.add_argument(
        "--cases", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/sockshop"
    )
    args = parser.parse_args()
    sizes = " ".join(map(str, args.sizes))
    flags = f"--sizes {sizes} --queries {args.queries} --local-queries {args.local_queries}"
    print(f"python bench/memory_recall.py {flags}")
    print("(qdrant-client local mode answers only the first --local-queries queries: it is slow)\n")
    failed = asyncio.run(latency(args.sizes, args.queries, args.local_queries))
    cases = sorted(p for p in args.cases.iterdir() if (p / "case.json").exists())
    failed += asyncio.run(quality(cases))
    for check in failed:
        print(f"FAILED: {check}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
