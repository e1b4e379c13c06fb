"""Root-cause ranking with and without change and log evidence, side by side on the same cases (issue 18).

The datasets carry no change events and no logs, so each case is ranked as ``backtest rca`` ranks it
(the metrics alone), then with evidence beside the metrics, applied as the service applies it
(``investigation.rank.with_evidence``, after the metric ranking):

* a change on the true root cause (a rollout just before the fault), and on a bystander (each other
  ranked service in turn: a rollout that has nothing to do with the fault, the case that must not hurt);
* error log lines that rise at the fault on the true cause, and on a bystander (each other service
  of the top 5 ranked in turn, the ones whose logs the service reads: a victim logging its callee's
  failure at the same moment, the worst case for the logs). The log counts are synthetic, and said
  so: every service logs error-like lines at ``--log-base`` a minute (Poisson); the one that logs
  the fault adds ``--log-rise`` a minute from the fault time on. They are scored by the service's
  own code (``pipeline.logs.score_errors``, then ``risen``, which checks the rise is sustained and
  began with the entity's metric change);
* both a change and error lines on the true cause.

The plain column is ``backtest rca``'s ranking (the same ``rank_case``). Check (exit 1, with a
``FAILED:`` line): evidence on the true cause never ranks it lower.

    python bench/rca_evidence.py ../shared/datasets/sockshop ../shared/datasets/nezha_ob [--shift 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agentic_observability.config import InvestigationConfig
from agentic_observability.investigation import Candidate
from agentic_observability.investigation.rank import with_evidence
from agentic_observability.offline.rca import accuracy, case_dirs, case_inputs, rank_case
from agentic_observability.pipeline.logs import ErrorCounts, error_window, risen, score_errors

COLUMNS = ("metrics only", "change: cause", "change: other", "logs: cause", "logs: other", "both: cause")


def position(ranking: list[Candidate], truth: str) -> int:
    names = [c.entity for c in ranking]
    return names.index(truth) + 1 if truth in names else 0


def truth_of(case: Path) -> str:
    cause = json.loads((case / "case.json").read_text()).get("root_cause")
    return str(cause.get("service", "")) if isinstance(cause, dict) else ""


def log_signals(
    ranking: list[Candidate], noisy: str, fault: float, onset: float, args: argparse.Namespace, seed: int
) -> list[dict[str, Any]]:
    """Synthetic error-line counts of the ranked entities, as the service reads them around ``onset``:
    ``noisy`` logs ``log_rise`` more a minute from ``fault`` on."""
    settings = InvestigationConfig()
    window = error_window(onset, settings.baseline, settings.after, onset + settings.after)
    assert window is not None
    rng = np.random.default_rng(seed)
    per_step = window.step / 60.0
    starts = window.times() - window.step  # each count covers the step before its time
    signals = []
    for candidate in ranking[:5]:  # logs.max_entities
        rate = np.full(starts.size, args.log_base * per_step)
        if candidate.entity == noisy:
            rate += args.log_rise * per_step * np.clip((window.times() - fault) / window.step, 0.0, 1.0)
        counted = ErrorCounts(candidate.entity, "", rng.poisson(rate).astype(float))
        signals.append(score_errors(counted, window, None))
    return signals


def lifted(ranking: list[Candidate], supported: Mapping[str, int], truth: str) -> int:
    return position(with_evidence(ranking, supported), truth)


def rank_with_evidence(
    case: Path, args: argparse.Namespace, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """The true cause's position in each column (bystander columns: one per other ranked service)."""
    truth = truth_of(case)
    fault, _ = case_inputs(case)
    ranking = rank_case(case, args.shift)
    others = [c.entity for c in ranking if c.entity != truth]
    read_at = ranking[0].onset or fault + args.shift  # as the service reads Loki: the top suspect's change
    logged_cause = risen(log_signals(ranking, truth, fault, read_at, args, seed), ranking)
    cause = {
        "metrics only": lifted(ranking, {}, truth),
        "change: cause": lifted(ranking, {truth: 1}, truth),
        "logs: cause": lifted(ranking, dict.fromkeys(logged_cause, 1), truth),
        "both: cause": lifted(ranking, {e: 1 + (e == truth) for e in {truth, *logged_cause}}, truth),
    }
    changed_other = [lifted(ranking, {o: 1}, truth) for o in others]
    logged_other = [
        lifted(
            ranking,
            dict.fromkeys(risen(log_signals(ranking, o, fault, read_at, args, seed), ranking), 1),
            truth,
        )
        for o in others[:4]  # the logs of the top 5 are read (logs.max_entities)
    ]
    return (
        [cause[c] for c in ("metrics only", "change: cause", "logs: cause", "both: cause")],
        changed_other,
        logged_other,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument(
        "--shift", type=float, default=0.0, help="the alert this many seconds after the fault"
    )
    parser.add_argument("--log-base", type=float, default=2.0, help="error lines a minute, every service")
    parser.add_argument("--log-rise", type=float, default=20.0, help="more a minute from the fault on")
    args = parser.parse_args()
    failed = []
    print(
        f"root-cause ranking with change and log evidence, alert {args.shift:g}s after the fault; "
        f"synthetic error lines: {args.log_base:g}/min everywhere, "
        f"+{args.log_rise:g}/min on the one that logs"
    )
    print(
        "each column Avg@5/AC@1; 'other': each other ranked service in turn "
        "(for the logs, of the top 5 ranked: the ones whose logs are read)"
    )
    print(f"{'dataset':<12}{'cases':>6}" + "".join(f"{c:>16}" for c in COLUMNS))
    for directory in args.datasets:
        columns: dict[str, list[int]] = {c: [] for c in COLUMNS}
        lowered = 0
        for seed, case in enumerate(case_dirs(directory)):
            plain, change, logs, both = (cause := rank_with_evidence(case, args, seed))[0]
            columns["metrics only"].append(plain)
            columns["change: cause"].append(change)
            columns["logs: cause"].append(logs)
            columns["both: cause"].append(both)
            columns["change: other"] += cause[1]
            columns["logs: other"] += cause[2]
            lowered += any(p == 0 or p > plain for p in (change, logs, both)) and plain > 0
        figures = [accuracy(columns[c]) for c in COLUMNS]
        shown = "".join(f"{f['Avg@5']:>10.3f}/{f['AC@1']:.3f}" for f in figures)
        others = f"({len(columns['change: other'])} and {len(columns['logs: other'])} bystanders)"
        print(f"{directory.name:<12}{len(columns['metrics only']):>6}{shown}  {others}")
        if lowered:
            failed.append(f"{directory.name}: evidence on the true cause ranked it lower in {lowered} cases")
    for line in failed:
        print(f"FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
