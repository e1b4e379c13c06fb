"""Detection throughput: the per-sample ensemble and the forecaster, next to a plain numpy pass.

- A plain numpy pass (a cumulative sum along time) over 10,000 series x 1,440 points (a day at one
  minute): the floor any bulk scorer is compared with, in the same run, so machine noise cancels out.
- The per-sample ``default`` ensemble (range breach + subsequence discord) in series/s.
- The statsforecast ``forecast`` detector in series/s (AutoETS refitted every 60 samples; the first
  fit, which compiles numba code, is timed apart).
- Memory: what one warmed ``default`` detector holds
  (a watch keeps one per series), and the process's max RSS.

The check (exit 1, with a ``FAILED:`` line, when missed): the README says the Helm chart's 1 GiB
memory limit fits a few thousand watched series, so 2,000 warmed ``default`` detectors must fit in
half of it: at most ``--max-state-kib`` (256) KiB a series. The speeds are printed, not checked: they
depend on the machine.

    python bench/detect_throughput.py [--series 10000] [--points 1440] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from agentic_observability.detectors import create


def synthetic(series: int, points: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(points)
    daily = 20 * np.sin(2 * np.pi * t / 1440)
    values = 100 + daily + rng.normal(0, 3, (series, points))
    values[rng.integers(0, series, series // 100), rng.integers(points // 2, points, series // 100)] += 60
    return values


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def per_sample_rate(name: str, values: np.ndarray) -> float:
    started = time.perf_counter()
    for row in values:
        create(name, interval=60).score(row)
    return len(values) / (time.perf_counter() - started)


def state_per_series(values: np.ndarray) -> float:
    """Bytes a warmed ``default`` detector holds, measured with tracemalloc over several series."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = []
    for row in values:
        detector = create("default", episode_gap=0, interval=60)
        detector.score(row)
        kept.append(detector)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1440)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ensemble-series", type=int, default=20)
    parser.add_argument("--forecast-series", type=int, default=3)
    parser.add_argument(
        "--max-state-kib",
        type=float,
        default=256.0,
        help="the check: KiB of state a warmed default detector may hold per series",
    )
    args = parser.parse_args()
    values = synthetic(args.series, args.points)
    print(f"{args.series:,} series x {args.points:,} points ({values.nbytes / 2**20:.0f} MiB float64)")

    plain = best_of(args.repeat, lambda: np.cumsum(values, axis=1))
    print(f"plain numpy pass (cumsum)   {plain * 1e3:8.1f} ms ({values.size / plain / 1e6:.0f} M samples/s)")

    ensemble = per_sample_rate("default", values[: args.ensemble_series])
    print(f"default ensemble, per sample {ensemble:8.2f} series/s ({ensemble * args.points:,.0f} samples/s)")
    state_kib = state_per_series(values[: args.ensemble_series]) / 1024
    print(
        f"default ensemble state       {state_kib:8.0f} KiB "
        "per series (after these points; a watch holds one per series)"
    )

    started = time.perf_counter()
    create("forecast", interval=60).score(values[0, :200])
    print(f"forecast first fit (numba compile) {time.perf_counter() - started:.1f} s")
    forecast = per_sample_rate("forecast", values[1 : 1 + args.forecast_series])
    print(f"forecast (AutoETS, refit/60)  {forecast:8.3f} series/s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS {rss:.0f} MiB")
    print("reproduce: python bench/detect_throughput.py " + " ".join(sys.argv[1:]))
    if state_kib > args.max_state_kib:
        print(
            f"FAILED: a warmed default detector holds {state_kib:.0f} KiB per series "
            f"(at most {args.max_state_kib:g} KiB: 2,000 series in half of the chart's 1 GiB)"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
