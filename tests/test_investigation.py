"""Root-cause ranking on synthetic cases where the answer is known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agentic_observability.cli import main
from agentic_observability.errors import BadInputError
from agentic_observability.investigation import RankConfig, SignalSeries, rank_entities
from agentic_observability.offline.metrics_csv import parse_selector, read_metrics_csv
from agentic_observability.offline.rca import accuracy

FAULT = 1_000_000.0
TS = np.arange(FAULT - 600, FAULT + 300, 5.0)


def series(entity: str, values: np.ndarray, signal: str = "latency") -> SignalSeries:
    return SignalSeries(entity, signal, {"service": entity}, TS, values)


def step(level: float, jump: float, at: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + rng.normal(0, noise, TS.size) + np.where(at <= TS, jump, 0.0)


def test_cause_that_propagates_with_lag_to_its_callers_ranks_first() -> None:
    # db fails first; orders feels it 30 s later and front-end 60 s later, and louder (fan-in)
    data = [
        series("db", step(0.05, 0.5, FAULT, 0.01, 1)),
        series("orders", step(0.10, 0.8, FAULT + 30, 0.01, 2)),
        series("front-end", step(0.20, 1.5, FAULT + 60, 0.01, 3)),
    ]
    ranking = rank_entities(data, FAULT + 120)  # the alert fires late, on the front-end
    assert ranking[0].entity == "db"
    assert ranking[0].onset is not None and abs(ranking[0].onset - FAULT) <= 10


def test_noisy_but_innocent_service_does_not_rank_first() -> None:
    rng = np.random.default_rng(4)
    noisy = 1.0 + rng.normal(0, 0.4, TS.size)  # wild, but the same before and after
    data = [series("noisy", noisy, "cpu"), series("cause", step(0.3, 0.3, FAULT, 0.01, 5), "cpu")]
    ranking = rank_entities(data, FAULT)
    assert ranking[0].entity == "cause"
    assert ranking[0].score > 2 * ranking[1].score


def test_flat_baseline_with_a_tiny_wiggle_cannot_win() -> None:
    flat = np.full(TS.size, 3.0e8)
    flat[TS >= FAULT] += 4096.0  # one page of memory: IQR is 0, plain BARO would call this infinite
    data = [series("flat", flat, "memory"), series("cause", step(1.0, 90.0, FAULT, 0.1, 6), "cpu")]
    assert rank_entities(data, FAULT)[0].entity == "cause"


@pytest.mark.parametrize("late", [0, 60, 180])
def test_a_late_incident_time_is_corrected_by_the_onset_estimate(late: float) -> None:
    # the victim follows 45 s later and louder; the alert arrives up to 3 minutes late
    data = [
        series("cause", step(0.5, 1.0, FAULT, 0.02, 7), "cpu"),
        series("victim", step(0.2, 2.0, FAULT + 45, 0.02, 8)),
    ]
    ranking = rank_entities(data, FAULT + late)
    assert ranking[0].entity == "cause"
    assert ranking[0].onset is not None and abs(ranking[0].onset - FAULT) <= 10


def test_dependency_graph_prefers_the_callee() -> None:
    data = [series("api", step(0.1, 1.0, FAULT, 0.01, 8)), series("db", step(0.1, 1.0, FAULT, 0.01, 9))]
    calls = RankConfig(calls=(("api", "db"),))
    assert rank_entities(data, FAULT, calls)[0].entity == "db"
    reverse = RankConfig(calls=(("db", "api"),))
    assert rank_entities(data, FAULT, reverse)[0].entity == "api"


def test_evidence_names_the_strongest_signals() -> None:
    data = [
        series("svc", step(0.5, 10.0, FAULT, 0.05, 10), "cpu"),
        series("svc", step(100.0, 1.0, FAULT, 1.0, 11), "memory"),
    ]
    [candidate] = rank_entities(data, FAULT)
    assert [e.signal for e in candidate.evidence] == ["cpu", "memory"]
    top = candidate.evidence[0]
    assert top.baseline == pytest.approx(0.5, abs=0.05) and top.incident == pytest.approx(10.5, abs=0.3)


def test_accuracy_metrics() -> None:
    scores = accuracy([1, 2, 0, 5])
    assert scores["AC@1"] == 0.25 and scores["AC@3"] == 0.5
    assert scores["Avg@5"] == pytest.approx((0.25 + 0.5 + 0.5 + 0.5 + 0.75) / 5)


def _write_case(path: Path, with_labels: bool) -> None:
    path.mkdir()
    cause = step(1.0, 50.0, FAULT, 0.1, 12)
    other = step(1.0, 0.0, FAULT, 0.1, 13)
    lines = ['timestamp,"cpu{service=""carts""}","cpu{service=""orders"",component=""orders-db""}",up']
    lines += [f"{t:.0f},{a:.4f},{b:.4f},1" for t, a, b in zip(TS, cause, other, strict=True)]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    meta: dict[str, object] = {"fault_time": FAULT, "entity_label": "service"}
    if with_labels:
        meta.update(root_cause={"service": "carts"}, fault="cpu")
    (path / "case.json").write_text(json.dumps(meta))


def test_rca_cli_writes_the_contract_without_reading_labels(tmp_path: Path) -> None:
    _write_case(tmp_path / "case", with_labels=False)
    out = tmp_path / "out.json"
    assert main(["rca", str(tmp_path / "case"), "--output", str(out)]) == 0
    ranking = json.loads(out.read_text())["ranking"]
    assert [r["service"] for r in ranking] == ["carts", "orders"]
    assert ranking[0]["score"] > ranking[1]["score"]
    assert ranking[0]["evidence"][0]["signal"] == "cpu"


def test_backtest_cli_prints_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cases").mkdir()
    _write_case(tmp_path / "cases" / "one", with_labels=True)
    assert main(["backtest", "rca", str(tmp_path / "cases")]) == 0
    out = capsys.readouterr().out
    assert "cpu" in out and "1.000" in out, out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("timestamp,x\n1,1\n1,2\n", "ascending"),
        ("timestamp,x\n1,abc\n", "row 2, column 'x'"),
        ("time,x\n1,1\n", "first column"),
        ('timestamp,"x{a=b}"\n1,1\n', "cannot parse labels"),
        ("timestamp,x\n1,1,2\n", "row 2 has 3 cells"),
    ],
)
def test_bad_csv_is_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(BadInputError, match=problem):
        read_metrics_csv(path)


def test_selector_parsing() -> None:
    assert parse_selector('cpu{service="carts",component="carts-db"}').labels == {
        "service": "carts",
        "component": "carts-db",
    }
    assert parse_selector("up").labels == {}
    assert parse_selector(r'x{a="q\"uote"}').labels == {"a": 'q"uote'}


def test_missing_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "rca", str(tmp_path / "nope")]) == 2
    assert main(["rca", str(tmp_path), "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "not a directory of cases" in err and "case.json: cannot read" in err
