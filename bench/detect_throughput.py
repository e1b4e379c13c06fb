"""Detection throughput at cluster scale: the default detector per sample and in bulk, side by side.

Two blocks of synthetic one-minute series (a daily shape, noise, a few spikes):
- warm-up: ``--series`` (10,000) x 1,440 points, a day of history for every series of a watch;
- buffers full: ``--full-series`` (50; the issue's 1,000 is extrapolated) x ``--full-points``
  (20,000), past the discord's 3,000 windows and the likelihood's 4,000 scores;
and for each: a plain numpy pass over the block (a cumulative sum: the floor, in the same run so
machine noise cancels), today's per-sample ``default`` ensemble (on ``--per-sample-series`` of the
series, extrapolated: it says so), and the bulk ensemble (detectors/bulk.py; its scores equal the
per-sample ones, tests/test_detect_bulk.py), with samples/s, max RSS and state per series.
Then one poll of a watch (one new sample per series, one bulk call), in ms: of the warmed series, and
with full buffers for the per-sample detectors (a subset) and the bulk one (``--poll-measured`` rows
copied from 100 warmed series), each scaled linearly to ``--poll-series`` (100,000) series. BLAS is
held to one thread: the figures are one core's.

Targets (printed as met or missed, not checked: speed depends on the machine): warm-up within 60 s,
a 100,000-series poll within 2 s, state at most 32 KiB per series. The check (exit 1, ``FAILED:``)
is the chart's: at most ``--max-state-kib`` (256) KiB per series.

    python bench/detect_throughput.py [--series 10000] [--full-series 1000] [--full-points 20000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from agentic_observability.detectors import Detector, create
from agentic_observability.detectors.bulk import COARSE, BulkEnsemble, _each_array

THRESHOLD, GAP, INTERVAL = 0.7, 200, 60.0


def synthetic(series: int, points: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(points)
    daily = 20 * np.sin(2 * np.pi * t / 1440)
    values = 100 + daily + rng.normal(0, 3, (series, points))
    values[
        rng.integers(0, series, series // 100 + 1), rng.integers(points // 2, points, series // 100 + 1)
    ] += 60
    return values


def measured(run: Callable[[], object]) -> tuple[float, float]:
    """(seconds, the process's max RSS in MiB after it): untraced, as tracemalloc slows numpy."""
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def per_sample(values: np.ndarray) -> list[Detector]:
    detectors = [create("default", interval=INTERVAL) for _ in values]
    for detector, row in zip(detectors, values, strict=True):
        detector.score(row)
    return detectors


def line(name: str, samples: int, seconds: float, peak: float, state: str, note: str = "") -> None:
    print(f"  {name:<34}{samples / seconds:>14,.0f}{seconds:>10.1f}{peak:>12,.0f}   {state:<14}{note}")


def compare(title: str, values: np.ndarray, subset: int, scale_to: int) -> BulkEnsemble:
    series, points = values.shape
    print(f"\n{title}: {series:,} series x {points:,} points ({values.nbytes / 2**20:,.0f} MiB float64)")
    print(f"  {'':<34}{'samples/s':>14}{'s':>10}{'max RSS MiB':>12}   {'state/series':<14}")
    seconds, peak = measured(lambda: np.cumsum(values, axis=1))
    line("plain numpy pass (cumsum)", values.size, seconds, peak, "-")
    part = values[:subset]
    kept: list[Detector] = []
    seconds, peak = measured(lambda: kept.extend(per_sample(part)))
    state = _state_per_sample(part[:2]) / 1024
    line(
        "per-sample ensemble (today)",
        part.size,
        seconds,
        peak,
        f"{state:,.0f} KiB",
        f"on {subset} series; all {series:,}: ~{seconds * series / subset:,.0f} s (extrapolated)",
    )
    bulk = BulkEnsemble(series, THRESHOLD, GAP, INTERVAL)
    seconds, peak = measured(lambda: (bulk.score(values), bulk.prepare()))  # prepare: as a watch does
    note = (
        ""
        if series >= scale_to
        else f"{scale_to:,} series: ~{seconds * scale_to / series:,.0f} s (extrapolated)"
    )
    line("bulk ensemble", values.size, seconds, peak, f"{bulk.nbytes / series / 1024:,.1f} KiB", note)
    return bulk


def _state_per_sample(values: np.ndarray) -> float:
    """Bytes a warmed per-sample detector holds (tracemalloc over a few series)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = per_sample(values)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(kept)


POLLS = 8  # one in four also completes a coarse block for every series (they move in step here)
SPLIT: dict[str, list[float]] = {"ordinary": [], "coarse": []}  # each poll's ms, by kind


def poll(bulk: BulkEnsemble, upcoming: np.ndarray, scale_to: int) -> tuple[float, float]:
    """(mean, max) milliseconds of consecutive polls, one per column of ``upcoming`` (the series'
    next samples, one call each), scaled linearly to ``scale_to`` series. Each poll also refreshes
    1/32 of the series' profiles (poll_profiles.py). ``SPLIT`` gets the times of ordinary polls and
    of those on which every series completes a coarse block (their discord's second scale)."""
    times = []
    SPLIT["ordinary"].clear()
    SPLIT["coarse"].clear()
    for column in upcoming.T:
        coarse = bool(bulk._pending_count[0] == COARSE - 1)
        started = time.perf_counter()
        bulk.score(column[:, None])
        times.append((time.perf_counter() - started) * 1e3 * scale_to / bulk.series)
        SPLIT["coarse" if coarse else "ordinary"].append(times[-1])
    return float(np.mean(times)), float(np.max(times))


def split() -> str:
    return "; ".join(
        f"{kind} polls {np.mean(ms):,.0f} ms mean, {np.max(ms):,.0f} slowest ({len(ms)})"
        for kind, ms in SPLIT.items()
        if ms
    )


def poll_per_sample(detectors: list[Detector], upcoming: np.ndarray, scale_to: int) -> float:
    """Mean milliseconds of one poll of per-sample detectors (one ``score`` call per series, as the
    watch made them), scaled linearly to ``scale_to`` series."""
    started = time.perf_counter()
    for column in upcoming.T:
        for detector, value in zip(detectors, column, strict=False):
            detector.score(np.array([value]))
    return (time.perf_counter() - started) * 1e3 / upcoming.shape[1] * scale_to / len(detectors)


def polls(
    measured_series: int, scale_to: int, per_sample_series: int, points: int = 4000
) -> tuple[float, float]:
    """One poll of a watch whose buffers are full (``points`` of history, past the discord's 3,032
    values): the per-sample detectors on a subset, the bulk one on ``measured_series`` rows copied
    from 100 warmed series (the state is per row, so a copy costs a poll what a series does)."""
    history = synthetic(100, points + POLLS, seed=4)
    upcoming = history[:, points:]  # each series' own next samples: a healthy watch's polls
    print(f"\none poll of a watch, buffers full ({points:,} points of history), for {scale_to:,} series:")
    detectors = per_sample(history[:per_sample_series, :points])
    before = poll_per_sample(detectors, upcoming[:per_sample_series], scale_to)
    print(f"  per-sample ensemble (today)  ~{before:>9,.0f} ms   (on {per_sample_series} series, scaled)")
    bulk = BulkEnsemble(100, THRESHOLD, GAP, INTERVAL)
    bulk.score(history[:, :points])
    bulk.prepare()
    copies = measured_series // 100
    _each_array(bulk, bulk, lambda mine, _: np.concatenate([mine] * copies))
    mean, worst = poll(bulk, np.tile(upcoming, (copies, 1)), scale_to)
    print(
        f"  bulk ensemble                ~{mean:>9,.0f} ms   (mean of {POLLS} polls; slowest "
        f"{worst:,.0f} ms; measured on {bulk.series:,} series, scaled)"
    )
    print(f"    {split()}")
    worst_normal = worst
    # then every series off its daily shape at once (20 above it): each one's discord reaches the
    # threshold, so each runs the episode look-back (bulk.py) -- a cluster-wide incident's polls
    shifted = 100 + np.random.default_rng(2).normal(0, 3, (bulk.series, POLLS))
    mean_all, worst_all = poll(bulk, shifted, scale_to)
    print(
        f"  bulk, every series anomalous ~{mean_all:>9,.0f} ms   (mean of {POLLS} polls; slowest "
        f"{worst_all:,.0f} ms)"
    )
    print(f"    {split()}")
    return mean, worst_normal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000, help="warm-up block: series (x 1,440)")
    parser.add_argument(
        "--full-series", type=int, default=50, help="buffers-full block (the issue's is 1,000: ~25 min)"
    )
    parser.add_argument("--full-points", type=int, default=20_000)
    parser.add_argument("--per-sample-series", type=int, default=10)
    parser.add_argument("--poll-series", type=int, default=100_000)
    parser.add_argument("--poll-measured", type=int, default=10_000, help="rows a poll is timed on")
    parser.add_argument("--max-state-kib", type=float, default=256.0)
    args = parser.parse_args()
    with threadpool_limits(1):
        day = synthetic(args.series, 1440 + POLLS)
        warm = compare("warm-up", day[:, :1440], args.per_sample_series, 10_000)
        after_warm_up, slowest = poll(warm, day[:, 1440:], warm.series)
        scaled = after_warm_up * args.poll_series / warm.series
        print(
            f"\none poll of the {warm.series:,} warmed series (a day of history): ~{after_warm_up:,.0f} ms "
            f"(mean of {POLLS}; slowest {slowest:,.0f}); {args.poll_series:,} series: ~{scaled:,.0f} ms"
        )
        poll_ms, poll_worst = polls(args.poll_measured, args.poll_series, args.per_sample_series)
        full = synthetic(args.full_series, args.full_points, seed=3)
        compare("buffers full", full, max(1, args.per_sample_series // 5), 1_000)
    state = warm.nbytes / warm.series / 1024
    print(
        f"\ntargets: warm-up of 10,000 x 1,440 within 60 s; poll of 100,000 within 2 s "
        f"(~{poll_ms:,.0f} ms mean, {poll_worst:,.0f} slowest); "
        f"state <= 32 KiB per series ({state:,.1f} KiB)"
    )
    print("reproduce: python bench/detect_throughput.py " + " ".join(sys.argv[1:]))
    if state > args.max_state_kib:
        print(f"FAILED: the bulk detector holds {state:.0f} KiB per series (at most {args.max_state_kib:g})")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
