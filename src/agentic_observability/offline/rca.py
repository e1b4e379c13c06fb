"""``agentic-obs rca CASE_DIR`` and ``agentic-obs backtest rca DIR``.

A case directory holds ``metrics.csv`` and ``case.json``. Ranking reads only ``fault_time`` and
``entity_label`` from case.json; the labels (``root_cause``, ``fault``) are read by the backtest
scorer alone, after ranking.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from agentic_observability.errors import BadInputError
from agentic_observability.investigation import Candidate, RankConfig, SignalSeries, rank_entities
from agentic_observability.offline.metrics_csv import MetricsTable, read_metrics_csv
from agentic_observability.offline.progress import show_progress


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read: {exc.strerror or exc}", field=str(path)) from exc
    except ValueError as exc:
        raise BadInputError(f"{path}: not valid JSON: {exc}", field=str(path)) from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: must be a JSON object", field=str(path))
    return data


def case_inputs(case_dir: Path) -> tuple[float, str]:
    """The only two keys ranking may use."""
    meta = _read_json(case_dir / "case.json")
    try:
        return float(meta["fault_time"]), str(meta.get("entity_label", "service"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(
            f"{case_dir / 'case.json'}: needs a numeric 'fault_time'", field="fault_time"
        ) from exc


def table_series(table: MetricsTable, entity_label: str) -> list[SignalSeries]:
    """One SignalSeries per column that carries the entity label (others cannot be attributed)."""
    return [
        SignalSeries(
            column.labels[entity_label], column.name, column.labels, table.timestamps, table.values[:, i]
        )
        for i, column in enumerate(table.columns)
        if entity_label in column.labels
    ]


def rank_case(case_dir: Path, shift: float = 0.0, config: RankConfig | None = None) -> list[Candidate]:
    fault_time, entity_label = case_inputs(case_dir)
    table = read_metrics_csv(case_dir / "metrics.csv")
    series = table_series(table, entity_label)
    if not series:
        raise BadInputError(
            f"{case_dir}: no column carries the entity label {entity_label!r}", field=entity_label
        )
    return rank_entities(series, fault_time + shift, config)


def candidate_json(candidate: Candidate) -> dict[str, Any]:
    return {
        "service": candidate.entity,
        "score": round(candidate.score, 6),
        "onset": candidate.onset,
        "evidence": [
            {
                "signal": e.signal,
                "labels": dict(e.labels),
                "baseline": e.baseline,
                "incident": e.incident,
                "deviation": round(e.deviation, 3),
                "onset": e.onset,
            }
            for e in candidate.evidence
        ],
    }


def run_rca(case_dir: Path, output: Path) -> int:
    ranking = rank_case(case_dir)
    output.write_text(json.dumps({"ranking": [candidate_json(c) for c in ranking]}, indent=2) + "\n")
    return 0


# -- backtest --------------------------------------------------------------------------------------


def accuracy(positions: list[int]) -> dict[str, float]:
    """AC@1, AC@3 and Avg@5 (mean of AC@1..AC@5) from 1-based ranks of the true cause (0 = absent)."""
    ranks = np.array([p if p > 0 else 10**9 for p in positions])
    ac = [float(np.mean(ranks <= k)) for k in range(1, 6)]
    return {"AC@1": ac[0], "AC@3": ac[2], "Avg@5": float(np.mean(ac)), "cases": float(len(positions))}


def backtest_rca(
    directory: Path,
    shift: float = 0.0,
    out: TextIO | None = None,
    progress: Callable[[int, int, float, TextIO], None] = show_progress,
) -> dict[str, dict[str, float]]:
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a directory of cases", field="DIR")
    cases = sorted(
        p for p in directory.iterdir() if (p / "case.json").is_file() and (p / "metrics.csv").is_file()
    )
    if not cases:
        raise BadInputError(
            f"{directory}: no case directories (with case.json and metrics.csv) found", field="DIR"
        )
    by_fault: dict[str, list[int]] = {}
    started = time.perf_counter()
    for done, case in enumerate(cases, start=1):
        ranking = [c.entity for c in rank_case(case, shift)]
        truth = _read_json(case / "case.json")  # labels are read only now, after ranking
        cause = str(truth.get("root_cause", {}).get("service", ""))
        position = ranking.index(cause) + 1 if cause in ranking else 0
        by_fault.setdefault(str(truth.get("fault", "unknown")), []).append(position)
        progress(done, len(cases), started, sys.stderr)
    results = {fault: accuracy(p) for fault, p in sorted(by_fault.items())}
    results["all"] = accuracy([p for ps in by_fault.values() for p in ps])
    _print_table(results, shift, len(cases) / (time.perf_counter() - started), out or sys.stdout)
    return results


def _print_table(results: dict[str, dict[str, float]], shift: float, rate: float, out: TextIO) -> None:
    out.write(f"root-cause ranking, service level, fault time shifted by {shift:g}s\n")
    out.write(f"{'fault':<10}{'cases':>6}{'AC@1':>8}{'AC@3':>8}{'Avg@5':>8}\n")
    for fault, r in results.items():
        out.write(f"{fault:<10}{int(r['cases']):>6}{r['AC@1']:>8.3f}{r['AC@3']:>8.3f}{r['Avg@5']:>8.3f}\n")
    out.write(f"{rate:.1f} cases/s\n")
