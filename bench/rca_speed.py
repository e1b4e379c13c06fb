"""Root-cause ranking speed: sock-shop cases per second, and one large synthetic incident.

The large incident is 500 entities x 20 signals x 1 hour at a 15 s step (240 points a series, 10,000
series). It is timed next to a plain numpy baseline on the same array in the same run (BARO's core:
median and IQR of the baseline, max robust deviation after), so machine noise cancels out.

Checks (exit 1, with a ``FAILED:`` line, when one is missed): the cases directory holds cases, and
the large incident's planted cause (``svc-7``) is ranked first.

    python bench/rca_speed.py [--cases ../shared/datasets/sockshop] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from agentic_observability.investigation import SignalSeries, rank_entities
from agentic_observability.offline.rca import rank_case

ENTITIES, SIGNALS, POINTS, STEP = 500, 20, 240, 15.0


def synthetic(seed: int = 1) -> tuple[list[SignalSeries], np.ndarray, float]:
    rng = np.random.default_rng(seed)
    ts = 1_000_000.0 + np.arange(POINTS) * STEP
    fault = float(ts[POINTS * 2 // 3])
    values = rng.normal(100.0, 5.0, (ENTITIES * SIGNALS, POINTS))
    values[7 * SIGNALS + 3, ts >= fault] += 80.0  # entity 7 is the cause
    series = [
        SignalSeries(
            f"svc-{i // SIGNALS}", f"signal-{i % SIGNALS}", {"service": f"svc-{i // SIGNALS}"}, ts, values[i]
        )
        for i in range(ENTITIES * SIGNALS)
    ]
    return series, values, fault


def numpy_baseline(values: np.ndarray, split: int) -> np.ndarray:
    baseline = values[:, :split]
    median = np.median(baseline, axis=1, keepdims=True)
    q1, q3 = np.percentile(baseline, [25, 75], axis=1, keepdims=True)
    return np.max(np.abs(values[:, split:] - median) / np.maximum(q3 - q1, 1e-9), axis=1)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/sockshop")
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    cases = sorted(p for p in Path(args.cases).iterdir() if (p / "case.json").is_file())
    if not cases:
        print(f"FAILED: no cases (directories with a case.json) in {args.cases}")
        return 1
    started = time.perf_counter()
    for case in cases:
        rank_case(case)
    elapsed = time.perf_counter() - started
    print(
        f"sock-shop: {len(cases)} cases in {elapsed:.2f}s = {len(cases) / elapsed:.1f} cases/s "
        "(CSV parsing included)"
    )

    series, values, fault = synthetic()
    split = int(np.searchsorted(series[0].timestamps, fault))
    ours = timed(lambda: rank_entities(series, fault), args.repeat)
    base = timed(lambda: numpy_baseline(values, split), args.repeat)
    top = rank_entities(series, fault)[0].entity
    print(
        f"{ENTITIES} entities x {SIGNALS} signals x {POINTS} points: rank_entities {ours:.3f}s "
        f"(top: {top}), plain numpy BARO core {base:.3f}s, ratio {ours / base:.1f}x "
        f"(median of {args.repeat})"
    )
    print(f"reproduce: python bench/rca_speed.py --repeat {args.repeat}")
    if top != "svc-7":
        print(f"FAILED: the planted cause svc-7 is not ranked first (top: {top})")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
