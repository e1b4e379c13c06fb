"""``agentic-obs rca CASE_DIR`` and ``agentic-obs backtest rca DIR``.

A case directory holds ``metrics.csv`` and ``case.json``. Ranking reads only ``fault_time`` and
``entity_label`` from case.json; the labels (``root_cause``, ``fault``) are read by the backtest
scorer alone, after ranking.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
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
                "weight": round(e.weight, 3),
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


def case_dirs(directory: Path) -> list[Path]:
    """The labelled cases of one dataset directory (each with case.json and metrics.csv)."""
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a directory of cases", field="DIR")
    cases = sorted(
        p for p in directory.iterdir() if (p / "case.json").is_file() and (p / "metrics.csv").is_file()
    )
    if not cases:
        raise BadInputError(
            f"{directory}: no case directories (with case.json and metrics.csv) found", field="DIR"
        )
    return cases


def backtest_rca(
    directories: Sequence[Path],
    shift: float = 0.0,
    out: TextIO | None = None,
    progress: Callable[[int, int, float, TextIO], None] = show_progress,
) -> dict[str, dict[str, dict[str, float]]]:
    """AC@1, AC@3, Avg@5 per dataset directory and per fault type, with the fault time given
    ``shift`` seconds late. Every directory is checked before the first case is ranked."""
    datasets = {str(d): case_dirs(d) for d in directories}
    total = sum(len(cases) for cases in datasets.values())
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    done = 0
    for name, cases in datasets.items():
        by_fault: dict[str, list[int]] = {}
        for case in cases:
            fault, position = _score_case(case, shift)
            by_fault.setdefault(fault, []).append(position)
            done += 1
            progress(done, total, started, sys.stderr)
        results[name] = {fault: accuracy(p) for fault, p in sorted(by_fault.items())}
        results[name]["all"] = accuracy([p for ps in by_fault.values() for p in ps])
    _print_tables(results, shift, total / max(time.perf_counter() - started, 1e-9), out or sys.stdout)
    return results


def _score_case(case: Path, shift: float) -> tuple[str, int]:
    """(fault type, 1-based rank of the true cause or 0): labels are read only after ranking."""
    ranking = [c.entity for c in rank_case(case, shift)]
    truth = _read_json(case / "case.json")
    cause = truth.get("root_cause")
    service = str(cause.get("service", "")) if isinstance(cause, dict) else ""
    position = ranking.index(service) + 1 if service in ranking else 0
    return str(truth.get("fault", "unknown")), position


def _print_tables(
    results: dict[str, dict[str, dict[str, float]]], shift: float, rate: float, out: TextIO
) -> None:
    out.write(f"root-cause ranking, service level, fault time shifted by {shift:g}s\n")
    width = max((len(fault) for table in results.values() for fault in table), default=3) + 2
    for name, table in results.items():
        out.write(f"\n{name} ({int(table['all']['cases'])} cases)\n")
        out.write(f"{'fault':<{width}}{'cases':>6}{'AC@1':>8}{'AC@3':>8}{'Avg@5':>8}\n")
        for fault, r in table.items():
            out.write(
                f"{fault:<{width}}{int(r['cases']):>6}{r['AC@1']:>8.3f}{r['AC@3']:>8.3f}{r['Avg@5']:>8.3f}\n"
            )
    cases = sum(int(table["all"]["cases"]) for table in results.values())
    out.write(f"\n{len(results)} dataset(s), {cases} cases, {rate:.1f} cases/s\n")
