"""Does the root-cause ranking hold at other steps? Each case is resampled to a coarser step and
ranked again, next to plain BARO and NSigma on the same rows (the README's reference methods).

Resampling mimics what Prometheus returns at a coarser ``step``: the row at ``t`` covers
``(t - step, t]``, as the mean of its samples (``rate``/``avg_over_time``; ``--how mean``) or its
last sample (an instant gauge; ``--how last``). ``--drop REGEX`` leaves out the signals whose name
matches, to see how much one kind of signal carries; ``--set KEY=VALUE`` changes a RankConfig field
for "ours" (an ablation: ``--set sustained=1`` ranks by the peak change instead of the held one).

Check (exit 1, with a ``FAILED:`` line, when it is missed): on every row "ours" scores an Avg@5 at
least that of the better of BARO and NSigma.

    python bench/rca_generalise.py ../shared/datasets/nezha_ob --steps 60 300 --shift 0 60
    python bench/rca_generalise.py ../shared/datasets/sockshop --steps 0 30 60 --shift 0 60
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agentic_observability.investigation import RankConfig, SignalSeries, rank_entities
from agentic_observability.offline.metrics_csv import MetricsTable, read_metrics_csv
from agentic_observability.offline.rca import accuracy, case_dirs, case_inputs, table_series

Ranker = Callable[[list[SignalSeries], float], list[str]]


def resample(table: MetricsTable, step: float, how: str) -> MetricsTable:
    """Rows at multiples of ``step``, each covering the ``step`` seconds up to it."""
    if step <= 0:
        return table
    buckets = np.ceil(table.timestamps / step)
    ends = np.unique(buckets)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-gap bucket is a gap
        for end in ends:
            block = table.values[buckets == end]
            if how == "last":
                filled = np.where(np.isfinite(block), np.arange(block.shape[0])[:, None], -1)
                last = filled.max(axis=0)
                rows.append(
                    np.where(last >= 0, block[np.maximum(last, 0), np.arange(block.shape[1])], np.nan)
                )
            else:
                rows.append(np.nanmean(block, axis=0))
    return MetricsTable(ends * step, table.columns, np.vstack(rows))


def ours(config: RankConfig) -> Ranker:
    return lambda series, t: [c.entity for c in rank_entities(series, t, config)]


def _plain(
    series: list[SignalSeries], t: float, scale: Callable[[np.ndarray], tuple[float, float]]
) -> list[str]:
    best: dict[str, float] = {}
    for s in series:
        finite = np.isfinite(s.values)
        before, after = s.values[finite & (s.timestamps < t)], s.values[finite & (s.timestamps >= t)]
        if before.size < 2 or after.size == 0:
            continue
        centre, spread = scale(before)
        score = float(np.max(np.abs(after - centre))) / (spread if spread > 0 else 1.0)
        best[s.entity] = max(best.get(s.entity, -1.0), score)
    return sorted(best, key=lambda e: (-best[e], e))


def baro(series: list[SignalSeries], t: float) -> list[str]:
    """Median and IQR of the normal part (an IQR of 0 counts as 1, as sklearn's RobustScaler does)."""
    return _plain(series, t, lambda b: (float(np.median(b)), float(np.subtract(*np.percentile(b, [75, 25])))))


def nsigma(series: list[SignalSeries], t: float) -> list[str]:
    return _plain(series, t, lambda b: (float(np.mean(b)), float(np.std(b))))


def score(
    methods: dict[str, Ranker], directory: Path, step: float, shift: float, how: str, drop: str | None
) -> dict[str, dict[str, float]]:
    """Per method, Avg@5 over all cases (and AC@1) at this step and shift."""
    positions: dict[str, list[int]] = {m: [] for m in methods}
    for case in case_dirs(directory):
        fault_time, label = case_inputs(case)
        table = resample(read_metrics_csv(case / "metrics.csv"), step, how)
        series = [s for s in table_series(table, label) if not (drop and re.search(drop, s.signal))]
        cause = json.loads((case / "case.json").read_text())["root_cause"]["service"]  # after ranking
        for method, rank in methods.items():
            ranking = rank(series, fault_time + shift)
            positions[method].append(ranking.index(cause) + 1 if cause in ranking else 0)
    return {m: accuracy(p) for m, p in positions.items()}


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="dataset directories (as for backtest rca)")
    parser.add_argument(
        "--steps", nargs="+", type=float, default=[0, 60, 300], help="seconds; 0 = as recorded"
    )
    parser.add_argument("--shift", nargs="+", type=float, default=[0, 60], help="fault time given late (s)")
    parser.add_argument("--how", choices=["mean", "last"], default="mean")
    parser.add_argument("--drop", help="leave out signals whose name matches this regex")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RankConfig field")
    args = parser.parse_args()
    overrides = {key: _number(value) for key, _, value in (item.partition("=") for item in args.set)}
    config = dataclasses.replace(RankConfig(), **overrides)  # type: ignore[arg-type]
    methods = {"ours": ours(config), "BARO": baro, "NSigma": nsigma}
    print(
        f"{'dataset':<12}{'step':>6}{'shift':>6}" + "".join(f"{m + ' Avg@5':>14}{'AC@1':>6}" for m in methods)
    )
    behind = []
    for directory in args.dirs:
        for step in args.steps:
            for shift in args.shift:
                result = score(methods, directory, step, shift, args.how, args.drop)
                cells = "".join(f"{r['Avg@5']:>14.3f}{r['AC@1']:>6.2f}" for r in result.values())
                print(f"{directory.name:<12}{step:>6g}{shift:>6g}{cells}", flush=True)
                if result["ours"]["Avg@5"] < max(result["BARO"]["Avg@5"], result["NSigma"]["Avg@5"]):
                    behind.append(f"{directory.name} step {step:g} shift {shift:g}")
    steps = " ".join(f"{s:g}" for s in args.steps)
    shifts = " ".join(f"{s:g}" for s in args.shift)
    extra = f" --how {args.how}" + (f" --drop '{args.drop}'" if args.drop else "")
    extra += "".join(f" --set {item}" for item in args.set)
    dirs = " ".join(map(str, args.dirs))
    print(f"reproduce: python bench/rca_generalise.py {dirs} --steps {steps} --shift {shifts}{extra}")
    if behind:
        print(f"FAILED: below the better of BARO and NSigma at {', '.join(behind)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
