"""Root-cause ranking with and without change evidence, side by side on the same cases (issue 18).

The datasets carry no change events, so each case is ranked as ``backtest rca`` ranks it, then three
ways: no change (the plain ranking), a change on the true root cause (a rollout just before the
fault), and a change on a bystander (each other ranked service in turn: a rollout that has nothing to
do with the fault, the case that must not hurt). The change is applied as the service applies it
(``investigation.rank.with_changes``), after the metric ranking.

The plain column is ``backtest rca``'s ranking (the same ``rank_case``): without change events
nothing moves. Check (exit 1, with a ``FAILED:`` line): a change on the true cause never ranks it
lower.

    python bench/rca_changes.py ../shared/datasets/sockshop ../shared/datasets/nezha_ob [--shift 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentic_observability.investigation import Candidate
from agentic_observability.investigation.rank import with_changes
from agentic_observability.offline.rca import accuracy, case_dirs, rank_case


def position(ranking: list[Candidate], truth: str) -> int:
    names = [c.entity for c in ranking]
    return names.index(truth) + 1 if truth in names else 0


def truth_of(case: Path) -> str:
    cause = json.loads((case / "case.json").read_text()).get("root_cause")
    return str(cause.get("service", "")) if isinstance(cause, dict) else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--shift", type=float, default=0.0, help="the fault time this many seconds late")
    args = parser.parse_args()
    failed = []
    print(f"root-cause ranking with change evidence, fault time shifted by {args.shift:g}s")
    print("each column Avg@5/AC@1")
    print(f"{'dataset':<12}{'cases':>6}{'no change':>16}{'on the cause':>16}{'on a bystander':>16}")
    for directory in args.datasets:
        plain, cause, bystander = [], [], []
        lowered = 0
        for case in case_dirs(directory):
            truth = truth_of(case)
            ranking = rank_case(case, args.shift)
            plain.append(position(ranking, truth))
            cause.append(position(with_changes(ranking, [truth]), truth))
            lowered += cause[-1] > plain[-1] > 0 or (plain[-1] > 0 and cause[-1] == 0)
            for other in (c.entity for c in ranking if c.entity != truth):
                bystander.append(position(with_changes(ranking, [other]), truth))
        figures = [accuracy(p) for p in (plain, cause, bystander)]
        shown = "".join(f"{f['Avg@5']:>10.3f}/{f['AC@1']:.3f}" for f in figures)
        print(f"{directory.name:<12}{len(plain):>6}{shown}  ({len(bystander)} bystander rollouts)")
        if lowered:
            failed.append(f"{directory.name}: a change on the true cause ranked it lower in {lowered} cases")
    for line in failed:
        print(f"FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
