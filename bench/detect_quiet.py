"""How often each detector fires on series with nothing wrong, the way a watch would use it.

Clean one-minute series of three kinds (Gaussian noise, heavy-tailed noise, a daily shape with
noise), scored per sample like a watch (no episode gap; the watch's EpisodeTracker decides). The
first day is history (a watch warms up on ``lookback: 1d`` before it alerts) and is not counted.
Prints alerting samples and incidents opened per series-day, for ``for: 0`` and ``for: 5m``.

The check (exit 1, with a ``FAILED:`` line, when missed): the default threshold was chosen because it
"silences clean Gaussian and daily series" (``detectors/__init__.py``), so at that threshold the
``default`` detector may open at most ``--max-incidents`` (0.1) incidents per series-day with ``for: 0``
(a watch's default) on the Gaussian and the daily series: one false incident per series in ten days.
At another ``--threshold``, or without ``default`` in ``--detectors``, the check is skipped (and says so).

    python bench/detect_quiet.py [--series 20] [--days 4] [--detectors default robust ...]
    python bench/detect_quiet.py --threshold 0.5 --detectors default
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from agentic_observability.detectors import DEFAULT_THRESHOLD, create
from agentic_observability.detectors.episodes import EpisodeTracker

PER_DAY, STEP = 1440, 60.0


def clean(kind: str, days: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(days * PER_DAY)
    if kind == "gaussian":
        return 100 + rng.normal(0, 3, t.size)
    if kind == "heavy-tailed":
        return 100 + 3 * rng.standard_t(3, t.size)
    shape = 40 * np.clip(np.sin(2 * np.pi * (t % PER_DAY) / PER_DAY - np.pi / 3), 0, None)
    return 100 + shape + rng.normal(0, 3, t.size)


def incidents(scores: np.ndarray, hold: float, threshold: float) -> int:
    tracker = EpisodeTracker(hold_for=hold, resolve_after=3)
    opened = 0
    for i, score in enumerate(scores[PER_DAY:], start=PER_DAY):
        opened += tracker.observe("s", bool(score >= threshold), i * STEP) == "open"
    return opened


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--days", type=int, default=4, help="including the day of history")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--detectors", nargs="+", default=["default", "robust", "discord", "changepoint"])
    parser.add_argument(
        "--max-incidents",
        type=float,
        default=0.1,
        help="the check: incidents per series-day (for: 0) the default detector may open on clean "
        "Gaussian and daily series at the default threshold",
    )
    args = parser.parse_args()
    opened: dict[tuple[str, str], float] = {}  # (detector, kind) -> incidents per series-day, for: 0
    print(f"{args.series} clean series x {args.days} days at 1 min per kind; threshold {args.threshold:g}")
    print(
        f"{'detector':<12}{'series':<14}{'alerting samples/day':>22}{'incidents/day for:0':>21}"
        f"{'incidents/day for:5m':>22}"
    )
    for name in args.detectors:
        for kind in ("gaussian", "heavy-tailed", "daily"):
            rng = np.random.default_rng(1)
            hot = open0 = open5 = 0
            for _ in range(args.series):
                detector = create(name, args.threshold, episode_gap=0, interval=STEP)
                scores = detector.score(clean(kind, args.days, rng))
                hot += int((scores[PER_DAY:] >= args.threshold).sum())
                open0 += incidents(scores, 0.0, args.threshold)
                open5 += incidents(scores, 300.0, args.threshold)
            series_days = args.series * (args.days - 1)
            opened[(name, kind)] = open0 / series_days
            print(
                f"{name:<12}{kind:<14}{hot / series_days:>22.2f}{open0 / series_days:>21.2f}"
                f"{open5 / series_days:>22.2f}"
            )
    print("reproduce: python bench/detect_quiet.py " + " ".join(sys.argv[1:]))
    if args.threshold != DEFAULT_THRESHOLD or "default" not in args.detectors:
        print(f"check skipped: it applies to 'default' at the default threshold {DEFAULT_THRESHOLD:g}")
        return 0
    loud = {kind: opened[("default", kind)] for kind in ("gaussian", "daily")}
    failed = {kind: rate for kind, rate in loud.items() if rate > args.max_incidents}
    for kind, rate in failed.items():
        print(
            f"FAILED: 'default' opens {rate:.2f} incidents per series-day on clean {kind} series "
            f"with for: 0 (at most {args.max_incidents:g})"
        )
    if not failed:
        print(
            f"check passed: 'default' opens at most {args.max_incidents:g} incidents per series-day "
            "on clean Gaussian and daily series with for: 0"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
