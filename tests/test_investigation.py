"""Root-cause ranking on synthetic cases where the answer is known by construction."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agentic_observability.cli import main
from agentic_observability.demo.shop import Cluster, ShopCollector
from agentic_observability.errors import BadInputError
from agentic_observability.investigation import RankConfig, SignalSeries, rank_entities
from agentic_observability.investigation.series import infer_step
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


def test_an_earlier_episode_that_came_and_went_does_not_date_the_onset() -> None:
    # the same fault ran for a minute five minutes earlier (the demo's first round), then again now
    first_round = (TS >= FAULT - 300) & (TS < FAULT - 240)
    cause = noise(0.5, 7) + np.where(first_round | (TS >= FAULT), 1.0, 0.0)
    victim = noise(0.2, 8) + np.where(TS >= FAULT + 45, 2.0, 0.0)
    ranking = rank_entities([series("cause", cause, "cpu"), series("victim", victim)], FAULT + 60)
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


def pod(entity: str, name: str, signal: str, ts: np.ndarray, values: np.ndarray) -> SignalSeries:
    return SignalSeries(entity, signal, {"service": entity, "pod": name}, ts, values)


def noise(level: float, seed: int, ts: np.ndarray = TS, spread: float = 0.02) -> np.ndarray:
    return level * (1 + np.random.default_rng(seed).normal(0, spread, ts.size))


def test_a_signal_that_moved_everywhere_counts_less_than_one_that_moved_in_one_place() -> None:
    # every service's latency doubles (they all call the slow one); only the cause's cpu moves
    data = [series(f"svc-{i}", noise(0.1, i) * np.where(TS >= FAULT, 2.0, 1.0)) for i in range(6)]
    data += [series(f"svc-{i}", noise(50.0, 10 + i), "cpu") for i in range(1, 6)]
    data.append(series("svc-0", noise(50.0, 20) * np.where(TS >= FAULT, 1.5, 1.0), "cpu"))
    ranking = rank_entities(data, FAULT)
    assert ranking[0].entity == "svc-0"
    assert ranking[0].evidence[0].signal == "cpu"


def test_pods_of_one_service_are_its_evidence() -> None:
    data = [pod("carts", f"carts-{i}", "cpu", TS, noise(40.0, i)) for i in range(3)]
    data[1] = pod("carts", "carts-1", "cpu", TS, noise(40.0, 1) + np.where(TS >= FAULT, 60.0, 0.0))
    data += [
        pod(s, f"{s}-0", "cpu", TS, noise(40.0, 5 + i, spread=0.05)) for i, s in enumerate(["orders", "user"])
    ]
    [first, *_] = rank_entities(data, FAULT)
    assert first.entity == "carts"
    assert first.evidence[0].labels["pod"] == "carts-1"


def test_a_restarted_pod_is_evidence_not_a_gap() -> None:
    # orders-a stops reporting at the fault and orders-b starts a minute later with a fresh heap (a
    # restart): neither has both a baseline and an incident of its own, yet together they are the
    # strongest change
    before, after = TS < FAULT, TS >= FAULT + 60
    data = [
        pod("orders", "orders-a", "memory", TS[before], noise(5e8, 1, TS[before], 0.001)),
        pod("orders", "orders-b", "memory", TS[after], noise(1e8, 2, TS[after], 0.001)),
        pod("orders", "orders-a", "cpu", TS[before], noise(30.0, 3, TS[before])),
        pod("orders", "orders-b", "cpu", TS[after], noise(30.0, 4, TS[after])),
    ]
    for i, name in enumerate(["carts", "user", "payment"]):
        data.append(pod(name, f"{name}-0", "memory", TS, noise(3e8, 10 + i, spread=0.001)))
        jump = np.where(TS >= FAULT + 30, 1.3, 1.0) if name == "carts" else 1.0  # a victim, mildly
        data.append(pod(name, f"{name}-0", "cpu", TS, noise(30.0, 20 + i) * jump))
    ranking = rank_entities(data, FAULT)
    assert ranking[0].entity == "orders"
    top = ranking[0].evidence[0]  # the new pod, against the pod it replaced
    assert top.labels["pod"] == "orders-b" and top.signal == "memory"
    assert top.baseline == pytest.approx(5e8, rel=0.01) and top.incident == pytest.approx(1e8, rel=0.01)


def _rolled(service: str, level: float, every: float, seed: int) -> list[SignalSeries]:
    """Two pods of ``service``, each replaced every ``every`` seconds (staggered), as a rollout does."""
    values = noise(level, seed)
    out = []
    for index in range(2):
        generation = np.floor((TS - TS[0] + every * index / 2) / every)
        out += [
            pod(service, f"{service}-{int(g)}-{index}", "cpu", TS[generation == g], values[generation == g])
            for g in np.unique(generation)
        ]
    return out


def test_routine_pod_replacements_are_not_evidence() -> None:
    # every service's pods are replaced every 4 minutes, all through the window; carts' cpu doubles
    data = [
        s for i, name in enumerate(["front-end", "orders", "payment"]) for s in _rolled(name, 30.0, 240, i)
    ]
    carts = _rolled("carts", 30.0, 240, 9)
    data += [replace(s, values=s.values * np.where(s.timestamps >= FAULT, 2.0, 1.0)) for s in carts]
    ranking = rank_entities(data, FAULT)
    assert ranking[0].entity == "carts"
    assert ranking[0].score > 2 * ranking[1].score


def test_the_chaos_cluster_offline_ranks_the_true_cause() -> None:
    """tests/test_chaos.py's cluster without a Prometheus: pods of every service replaced every 4
    minutes, draining pods' error ratios 0/0; the ranking must still name carts."""
    started, step = 1_000_000.0, 10.0
    shop = ShopCollector([(2700.0, 600.0)], started=started, cluster=Cluster(2, churn_every=240, drain=60))
    alert = started + 2700 + 40
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    for now in np.arange(alert - 1800, alert + 600, step):
        for family in shop.families(float(now)):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples.setdefault(key, []).append((float(now), sample.value))
    data = []
    for (name, labels), points in samples.items():
        tags = dict(labels)
        ts, values = np.array(points).T
        if name in ("shop_request_latency_seconds", "shop_pod_cpu_usage_ratio"):
            signal = "latency" if "pod" not in tags else "pod_cpu"
            data.append(SignalSeries(tags["service"], signal, tags, ts, values))
        elif name == "shop_pod_errors_total":
            served = np.array(samples[("shop_pod_requests_total", labels)]).T[1]
            with np.errstate(divide="ignore", invalid="ignore"):  # a draining pod: 0/0
                ratio = (values[6:] - values[:-6]) / (served[6:] - served[:-6])
            data.append(SignalSeries(tags["service"], "error_ratio", tags, ts[6:], ratio))
    calls = RankConfig(calls=(("front-end", "orders"), ("orders", "carts")))
    assert rank_entities(data, alert, calls)[0].entity == "carts"


@pytest.mark.parametrize(("stops_at", "blamed"), [(FAULT, True), (FAULT - 300, False)])
def test_a_pod_that_stops_unreplaced_is_evidence_when_it_stops_near_the_incident(
    stops_at: float, blamed: bool
) -> None:
    # users-1 stops for good; before the incident's part of the window that is history, not a cause
    alive = stops_at > TS
    data = [
        pod("users", "users-0", "cpu", TS, noise(30.0, 1)),
        pod("users", "users-1", "cpu", TS[alive], noise(30.0, 2)[alive]),
    ]
    data += [
        pod(name, f"{name}-0", "cpu", TS, noise(30.0, 3 + i)) for i, name in enumerate(["orders", "carts"])
    ]
    data.append(pod("carts", "carts-0", "latency", TS, noise(0.1, 6) * np.where(TS >= FAULT + 30, 1.3, 1.0)))
    data += [
        pod(name, f"{name}-0", "latency", TS, noise(0.1, 7 + i)) for i, name in enumerate(["orders", "users"])
    ]
    ranking = rank_entities(data, FAULT)
    assert (ranking[0].entity == "users") is blamed, ranking
    if blamed:
        assert ranking[0].evidence[0].labels["pod"] == "users-1" and ranking[0].evidence[0].incident == 0.0


def test_a_new_replica_like_its_siblings_is_not_blamed() -> None:
    # the autoscaler adds web-2 after the fault; it looks like web-0 and web-1, the db is the cause
    late = TS >= FAULT + 60
    data = [pod("web", f"web-{i}", "cpu", TS, noise(40.0, i)) for i in range(2)]
    data.append(pod("web", "web-2", "cpu", TS[late], noise(40.0, 2, TS[late])))
    data.append(pod("db", "db-0", "cpu", TS, noise(20.0, 3) * np.where(TS >= FAULT, 3.0, 1.0)))
    data.append(pod("cache", "cache-0", "cpu", TS, noise(10.0, 4)))
    assert rank_entities(data, FAULT)[0].entity == "db"


@pytest.mark.parametrize("step_s", [1.0, 60.0, 300.0])
def test_constants_follow_the_data_step(step_s: float) -> None:
    # the cause's change shows one row after a weaker one elsewhere (sampling can do that): at any
    # step the cause stays first, where a lag discount in seconds divided it by 32 at 5-minute rows
    ts = FAULT + step_s * np.arange(-30, 10)
    cause = noise(1.0, 1, ts) * np.where(ts >= FAULT + step_s, 4.0, 1.0)
    early = noise(1.0, 2, ts) * np.where(ts >= FAULT, 1.5, 1.0)
    data = [SignalSeries(n, "cpu", {"service": n}, ts, v) for n, v in [("cause", cause), ("early", early)]]
    data += [
        SignalSeries(f"idle-{i}", "cpu", {"service": f"idle-{i}"}, ts, noise(1.0, 3 + i, ts))
        for i in range(3)
    ]
    assert rank_entities(data, FAULT + step_s)[0].entity == "cause"  # the alert a row late


def test_the_step_is_the_spacing_of_new_samples() -> None:
    ts = np.arange(0.0, 600.0, 3.0)  # queried every 3 s, scraped every 15 s: each sample held 5 times
    held = np.repeat(np.random.default_rng(1).normal(10, 1, ts.size // 5), 5)
    assert infer_step([SignalSeries("a", "cpu", {}, ts, held)]) == pytest.approx(15.0)
    assert infer_step([]) == 1.0


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


def test_backtest_scores_several_datasets_per_fault_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for dataset in ("shop", "boutique"):
        (tmp_path / dataset).mkdir()
        _write_case(tmp_path / dataset / "one", with_labels=True)
    assert main(["backtest", "rca", str(tmp_path / "shop"), str(tmp_path / "boutique"), "--shift", "60"]) == 0
    captured = capsys.readouterr()
    assert "shifted by 60s" in captured.out
    assert (
        f"{tmp_path / 'shop'} (1 cases)" in captured.out
        and f"{tmp_path / 'boutique'} (1 cases)" in captured.out
    )
    assert captured.out.count("cpu ") == 2 and "2 dataset(s), 2 cases" in captured.out
    assert "2/2 cases" in captured.err  # progress goes to stderr
    assert main(["backtest", "rca", str(tmp_path / "shop"), str(tmp_path / "nope")]) == 2
    assert "nope: not a directory of cases" in capsys.readouterr().err


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
