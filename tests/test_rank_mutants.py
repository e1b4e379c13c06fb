"""Tests that kill what mutmut's survivors showed untested in ``investigation/rank.py``.

Each states an exact rule of the ranking (the robust scale and its floors, the onset search and its
persistence, the baseline cut at the onset, the calibration across entities, the lag and caller
discounts), on data small enough that the right figures can be worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentic_observability.investigation.rank import (
    MAX_DEVIATION,
    Candidate,
    RankConfig,
    SignalEvidence,
    SignalSeries,
    _calibrated,
    _candidate,
    _discount_callers,
    _discount_late,
    _first_persistent,
    _Scored,
    estimate_onset,
    onset_search_start,
    rank_entities,
    robust_scale,
    score_series,
    signal_onset,
)

CFG = RankConfig()


def _series(entity: str, values: list[float], signal: str = "cpu", start: float = 0.0) -> SignalSeries:
    """One sample a second from ``start``."""
    ts = start + np.arange(len(values), dtype=float)
    return SignalSeries(entity, signal, {"service": entity}, ts, np.asarray(values, dtype=float))


# robust_scale ------------------------------------------------------------------------------------


def test_the_scale_is_the_mad_as_a_standard_deviation() -> None:
    median, scale = robust_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), 0.05)
    assert median == 3.0  # the outlier moves neither the median...
    assert scale == pytest.approx(1.4826)  # ...nor the MAD: |x - 3| = 2, 1, 0, 1, 97, median 1


def test_the_scale_is_floored_relative_to_the_level_whatever_its_sign() -> None:
    assert robust_scale(np.full(4, 200.0), 0.05) == (200.0, pytest.approx(10.0))
    assert robust_scale(np.full(4, -200.0), 0.05) == (-200.0, pytest.approx(10.0))
    # a spread above the floor is kept
    assert robust_scale(np.array([90.0, 100.0, 110.0]), 0.05)[1] == pytest.approx(14.826)


def test_the_scale_of_a_flat_zero_series_is_tiny_but_positive() -> None:
    assert robust_scale(np.zeros(5), 0.05) == (0.0, 1e-9)


# _first_persistent -------------------------------------------------------------------------------


def _times(n: int) -> np.ndarray:
    return np.arange(n, dtype=float)


def _above(*flags: int) -> np.ndarray:
    return np.array(flags, dtype=bool)


def test_no_point_above_means_no_onset() -> None:
    assert _first_persistent(_times(4), _above(0, 0, 0, 0), 2.0, 0.0) is None


def test_a_run_must_last_the_span_unless_the_data_ends() -> None:
    # a 2-point run (1 s) is too short for a 2 s span; the 3-point run (exactly 2 s) counts
    assert _first_persistent(_times(9), _above(0, 1, 1, 0, 1, 1, 1, 0, 0), 2.0, 0.0) == 4.0
    # a short run that reaches the end of the data counts: the change may still be going on
    assert _first_persistent(_times(6), _above(0, 0, 0, 0, 0, 1), 2.0, 0.0) == 5.0
    # a short run that ends before the data does not, and then there is none
    assert _first_persistent(_times(6), _above(0, 1, 1, 0, 0, 0), 2.0, 0.0) is None


def test_a_run_that_came_and_went_before_the_given_time_is_an_earlier_episode() -> None:
    above = _above(1, 1, 1, 1, 0, 0, 1, 1, 1, 0)
    # the first run ends at 3 (off from 4 on): before the given time 5 it is history
    assert _first_persistent(_times(10), above, 2.0, 5.0) == 6.0
    # off exactly at the given time is still off by then
    assert _first_persistent(_times(10), above, 2.0, 4.0) == 6.0
    # still on at the given time: it is this incident's
    assert _first_persistent(_times(10), above, 2.0, 3.5) == 0.0
    # an episode that ended one point before the data did is history too
    assert _first_persistent(_times(5), _above(0, 1, 1, 1, 0), 2.0, 4.0) is None


def test_a_run_is_measured_in_the_times_given() -> None:
    times = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    assert _first_persistent(times, _above(0, 1, 1, 0, 0, 0), 10.0, 0.0) == 10.0
    assert _first_persistent(times, _above(0, 1, 1, 0, 0, 0), 20.0, 0.0) is None


# signal_onset ------------------------------------------------------------------------------------


def test_the_onset_is_the_first_persistent_change_after_the_search_start() -> None:
    values = [10.0] * 40 + [20.0] * 20
    assert signal_onset(_series("a", values), 45.0, 30.0, 1.0, CFG) == 40.0


def test_the_onset_is_never_before_the_search_start() -> None:
    # the change began at 25, before the search start 30, and holds: the onset is the search start
    values = [10.0] * 25 + [20.0] * 35
    assert signal_onset(_series("a", values), 45.0, 30.0, 1.0, CFG) == 30.0


def test_a_change_at_the_search_start_dates_from_it() -> None:
    values = [10.0] * 30 + [20.0] * 30
    assert signal_onset(_series("a", values), 45.0, 30.0, 1.0, CFG) == 30.0


def test_a_deviation_of_exactly_the_threshold_is_not_a_change() -> None:
    # baseline 10 flat: scale 0.5 (5% of the level), so 13 is 6 robust units and 13.5 is 7
    assert signal_onset(_series("a", [10.0] * 30 + [13.0] * 30), 45.0, 30.0, 1.0, CFG) is None
    assert signal_onset(_series("a", [10.0] * 30 + [13.5] * 30), 45.0, 30.0, 1.0, CFG) == 30.0


def test_a_change_must_persist_three_steps() -> None:
    # three points above (2 steps) then back, before the data ends: a change; two points are not
    three = [10.0] * 40 + [20.0] * 3 + [10.0] * 17
    two = [10.0] * 40 + [20.0] * 2 + [10.0] * 18
    assert signal_onset(_series("a", three), 35.0, 30.0, 1.0, CFG) == 40.0
    assert signal_onset(_series("a", two), 35.0, 30.0, 1.0, CFG) is None
    # the persistence is in steps of the data
    assert signal_onset(_series("a", three), 35.0, 30.0, 2.0, CFG) is None


def test_a_missing_sample_inside_a_change_does_not_break_it() -> None:
    values = [10.0] * 40 + [20.0, math.nan, 20.0] + [10.0] * 17
    assert signal_onset(_series("a", values), 35.0, 30.0, 1.0, CFG) == 40.0


def test_the_reference_is_before_the_search_start_when_it_has_enough_points() -> None:
    # a change already under way between the search start and the given time: measured against the
    # two points before the search start, it started at the search start
    values = [10.0, 10.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0]
    assert signal_onset(_series("a", values), 5.0, 2.0, 1.0, CFG) == 2.0


def test_with_too_few_points_before_the_search_start_the_reference_is_all_before_the_given_time() -> None:
    # one point before the search start (an outlier) is not a reference; the five before the given
    # time are (not those after it, which would make 20 the norm), and against them the jump to 20
    # at the given time is the onset
    values = [100.0, 10.0, 10.0, 10.0, 10.0] + [20.0] * 10
    assert signal_onset(_series("a", values), 5.0, 1.0, 1.0, CFG) == 5.0


def test_no_onset_without_two_points_before_the_given_time() -> None:
    assert signal_onset(_series("a", [10.0, 20.0, 20.0, 20.0]), 1.0, 0.5, 1.0, CFG) is None
    # the point at the given time is not before it
    assert signal_onset(_series("a", [10.0, 10.0, 100.0, 100.0, 100.0]), 1.0, 0.5, 1.0, CFG) is None
    assert signal_onset(_series("a", [10.0, 10.0, 20.0, 20.0, 20.0]), 2.0, 0.5, 1.0, CFG) == 2.0
    # NaN points do not count towards the reference
    nan_reference = [math.nan, 10.0, math.nan, 20.0, 20.0, 20.0]
    assert signal_onset(_series("a", nan_reference), 3.0, 0.5, 1.0, CFG) is None


# onset_search_start and estimate_onset -----------------------------------------------------------


def test_the_onset_is_searched_in_the_last_third_of_the_history() -> None:
    data = [_series("a", [1.0] * 3, start=600.0), _series("b", [1.0] * 3, start=300.0), _series("c", [])]
    assert onset_search_start(data, 900.0, CFG) == pytest.approx(700.0)
    assert onset_search_start(data, 900.0, RankConfig(onset_window=0.5)) == pytest.approx(600.0)


def test_without_history_the_search_starts_at_the_given_time() -> None:
    assert onset_search_start([], 900.0, CFG) == 900.0
    assert onset_search_start([_series("c", [])], 900.0, CFG) == 900.0
    assert onset_search_start([_series("a", [1.0] * 3, start=1000.0)], 900.0, CFG) == 900.0


def test_the_incident_onset_is_the_median_of_the_earliest_three() -> None:
    assert estimate_onset([5.0, None, 1.0, 9.0, 3.0, 7.0], 10.0) == 3.0
    # onsets after the given time do not count; one at the given time does
    assert estimate_onset([10.0, 1.0, 11.0], 10.0) == 5.5


def test_the_incident_onset_uses_the_earliest_tenth_of_many_signals() -> None:
    assert estimate_onset([float(t) for t in range(40)], 100.0) == 1.5  # median of 0, 1, 2, 3


def test_without_an_onset_the_given_time_stands() -> None:
    assert estimate_onset([], 10.0) == 10.0
    assert estimate_onset([None, None, 12.0], 10.0) == 10.0


# score_series ------------------------------------------------------------------------------------


def test_a_series_is_scored_by_its_sustained_change_after_the_onset() -> None:
    item = _series("a", [10.0, 10.0, 10.0, 10.0, 11.0, 12.0, 10.0, 14.0, math.nan])
    scored = score_series(item, 3.5, 4.0, CFG)
    assert scored is not None
    # baseline 10 flat (scale 0.5); after: deviations 2, 4, 0, 8, the NaN left out
    assert scored.evidence == SignalEvidence("cpu", {"service": "a"}, 10.0, 14.0, 8.0, 3.5)
    assert scored.strength == pytest.approx(5.0)  # the 75% quantile of 0, 2, 4, 8
    assert scored.series is item


def test_the_baseline_ends_at_the_onset() -> None:
    # the incident's points are not in the baseline, however many they are
    scored = score_series(_series("a", [10.0, 10.0, 20.0, 20.0, 20.0]), None, 2.0, CFG)
    assert scored is not None
    assert (scored.evidence.baseline, scored.evidence.deviation, scored.strength) == (10.0, 20.0, 20.0)


def test_the_point_at_the_onset_belongs_to_the_incident() -> None:
    scored = score_series(_series("a", [10.0, 12.0, 20.0, 11.0]), None, 2.0, CFG)
    assert scored is not None and scored.evidence.baseline == 11.0 and scored.evidence.incident == 20.0


def test_a_series_needs_two_baseline_points_and_one_after() -> None:
    assert score_series(_series("a", [10.0, 20.0, 20.0]), None, 1.0, CFG) is None
    assert score_series(_series("a", [math.nan, 10.0, 20.0]), None, 2.0, CFG) is None
    assert score_series(_series("a", [10.0, 10.0, math.nan]), None, 2.0, CFG) is None
    assert score_series(_series("a", [10.0, 10.0, 20.0]), None, 2.0, CFG) is not None


def test_a_deviation_is_capped() -> None:
    scored = score_series(_series("a", [0.0, 0.0, 0.0, 1e6]), None, 3.0, CFG)
    assert scored is not None
    assert scored.evidence.deviation == MAX_DEVIATION and scored.strength == MAX_DEVIATION


# _calibrated -------------------------------------------------------------------------------------


def _scored(entity: str, strength: float, signal: str = "cpu", pod: str = "0") -> _Scored:
    item = SignalSeries(entity, signal, {"pod": pod}, np.zeros(0), np.zeros(0))
    return _Scored(item, SignalEvidence(signal, {"pod": pod}, 0.0, 0.0, strength, None), strength)


def _weights(scored: list[_Scored], cfg: RankConfig = CFG) -> list[float]:
    calibrated = _calibrated(scored, cfg)
    assert [entity for entity, _ in calibrated] == [s.series.entity for s in scored]
    return [evidence.weight for _, evidence in calibrated]


def test_each_change_is_divided_by_the_signals_median_change_across_entities() -> None:
    scored = [_scored("a", 2.0), _scored("b", 4.0), _scored("c", 10.0), _scored("a", 30.0, "memory")]
    assert _weights(scored) == [0.5, 1.0, 2.5, 1.0]


def test_an_entity_counts_once_per_signal_by_its_strongest_series() -> None:
    # a's three pods must not outvote b and c: the typical change is the median of a 8, b 0.2, c 0.4
    scored = [_scored("a", 8.0, pod=p) for p in "xyz"] + [_scored("b", 0.2), _scored("c", 0.4)]
    assert _weights(scored) == pytest.approx([20.0, 20.0, 20.0, 0.5, 1.0])
    # an entity's strongest series sets its figure, whatever the order of its series
    scored = [_scored("a", 1.0, pod="x"), _scored("a", 0.3, pod="y"), _scored("b", 0.5)]
    assert _weights(scored) == pytest.approx([4 / 3, 0.4, 2 / 3])


def test_the_typical_change_is_floored_and_the_weight_capped() -> None:
    assert _weights([_scored("a", 0.001), _scored("b", 0.0)]) == pytest.approx([0.1, 0.0])
    assert _weights([_scored("a", 1e9), _scored("b", 0.0), _scored("c", 0.0)]) == [MAX_DEVIATION, 0.0, 0.0]
    assert _weights([_scored("a", 0.001)], RankConfig(typical_floor=0.1)) == pytest.approx([0.01])


# _candidate --------------------------------------------------------------------------------------


def _evidence(weight: float, onset: float | None, signal: str = "cpu") -> SignalEvidence:
    return SignalEvidence(signal, {}, 0.0, 0.0, weight, onset, weight)


def test_a_candidate_is_scored_by_its_strongest_signal_and_keeps_its_top_three() -> None:
    evidence = [_evidence(1.0, 1.0), _evidence(5.0, None), _evidence(3.0, 7.0), _evidence(2.0, 2.0)]
    candidate = _candidate("a", evidence, CFG)
    assert candidate.entity == "a"
    assert candidate.score == pytest.approx(math.log1p(5.0))
    assert [e.weight for e in candidate.evidence] == [5.0, 3.0, 2.0]
    assert candidate.onset == 7.0  # the strongest signal that has an onset


def test_a_candidate_onset_comes_only_from_its_top_evidence() -> None:
    evidence = [_evidence(4.0, None), _evidence(3.0, None), _evidence(2.0, None), _evidence(1.0, 5.0)]
    assert _candidate("a", evidence, CFG).onset is None
    assert _candidate("a", evidence, RankConfig(evidence_per_candidate=4)).onset == 5.0
    assert len(_candidate("a", evidence, RankConfig(evidence_per_candidate=1)).evidence) == 1


# _discount_late ----------------------------------------------------------------------------------


def _scores(candidates: list[Candidate]) -> dict[str, float]:
    return {c.entity: c.score for c in candidates}


def test_a_later_change_is_halved_every_half_life_beyond_the_tolerance() -> None:
    step = 10.0  # tolerance 1 step: 'first' is 110; half-life 3 steps: 30 s
    candidates = [
        Candidate("first", 2.0, 100.0, ()),
        Candidate("within", 2.0, 110.0, ()),
        Candidate("one", 2.0, 140.0, ()),
        Candidate("two", 2.0, 170.0, ()),
        Candidate("untimed", 2.0, None, ()),
    ]
    result = _discount_late(candidates, step, CFG)
    assert _scores(result) == pytest.approx(
        {"first": 2.0, "within": 2.0, "one": 1.0, "two": 0.5, "untimed": 2.0}
    )
    assert [c.onset for c in result] == [100.0, 110.0, 140.0, 170.0, None]


def test_the_lag_constants_are_taken_from_the_config() -> None:
    candidates = [Candidate("first", 2.0, 0.0, ()), Candidate("late", 2.0, 3.0, ())]
    # tolerance 0, half-life 0.5 step: 3 steps late is six half-lives
    result = _discount_late(candidates, 1.0, RankConfig(delay_tolerance=0.0, delay_half_life=0.5))
    assert _scores(result) == pytest.approx({"first": 2.0, "late": 2.0 / 64})
    # no half-life: no discount (and no division by zero)
    assert _discount_late(candidates, 1.0, RankConfig(delay_half_life=0.0)) == candidates


def test_only_a_strong_change_defines_the_first_one() -> None:
    top = 3.0
    early = Candidate("early", top - math.log(2.0), 0.0, ())  # exactly at the threshold: strong
    late = Candidate("late", top, 10.0, ())
    # 'first' is 0 + 1: the late one is 9 steps late, three half-lives
    assert _scores(_discount_late([early, late], 1.0, CFG))["late"] == pytest.approx(top / 8)
    weak = Candidate("weak", top - math.log(2.0) - 0.01, 0.0, ())  # below it: too weak to date
    assert _scores(_discount_late([weak, late], 1.0, CFG)) == {"weak": weak.score, "late": top}


def test_without_a_timed_strong_change_nothing_is_discounted() -> None:
    candidates = [Candidate("a", 2.0, None, ()), Candidate("b", 0.5, 0.0, ())]
    assert _discount_late(candidates, 1.0, CFG) == candidates
    assert _discount_late([], 1.0, CFG) == []


# _discount_callers -------------------------------------------------------------------------------


def _callers(candidates: list[Candidate], *calls: tuple[str, str]) -> dict[str, float]:
    return _scores(_discount_callers(candidates, RankConfig(calls=calls)))


def test_a_caller_whose_callee_changed_as_much_and_no_later_is_discounted() -> None:
    caller, callee = Candidate("api", 2.0, 100.0, ()), Candidate("db", 1.6, 100.0, ())
    assert _callers([caller, callee], ("api", "db")) == pytest.approx({"api": 1.0, "db": 1.6})
    # the edge's direction matters: with db the caller, api explains it
    assert _callers([caller, callee], ("db", "api")) == pytest.approx({"api": 2.0, "db": 0.8})
    discount = _discount_callers([caller, callee], RankConfig(calls=(("api", "db"),), callee_discount=0.25))
    assert _scores(discount) == pytest.approx({"api": 0.5, "db": 1.6})
    assert discount[0].onset == 100.0


def test_a_weaker_or_later_callee_does_not_explain_its_caller() -> None:
    caller = Candidate("api", 2.0, 100.0, ())
    weaker = Candidate("db", 1.59, 100.0, ())
    later = Candidate("db", 2.0, 101.0, ())
    earlier = Candidate("db", 2.0, 99.0, ())
    assert _callers([caller, weaker], ("api", "db"))["api"] == 2.0
    assert _callers([caller, later], ("api", "db"))["api"] == 2.0
    assert _callers([caller, earlier], ("api", "db"))["api"] == pytest.approx(1.0)


def test_an_untimed_callee_or_caller_is_judged_on_strength_alone() -> None:
    for caller, callee in [
        (Candidate("api", 2.0, 100.0, ()), Candidate("db", 2.0, None, ())),
        (Candidate("api", 2.0, None, ()), Candidate("db", 2.0, 100.0, ())),
    ]:
        assert _callers([caller, callee], ("api", "db"))["api"] == pytest.approx(1.0)


def test_a_callee_that_is_not_a_candidate_explains_nothing() -> None:
    candidates = [Candidate("api", 2.0, 100.0, ()), Candidate("web", 2.0, 100.0, ())]
    assert _callers(candidates, ("api", "db"), ("other", "web")) == {"api": 2.0, "web": 2.0}
    # one callee that explains is enough
    both = [*candidates, Candidate("db", 0.1, 100.0, ())]
    assert _callers(both, ("api", "db"), ("api", "web"))["api"] == pytest.approx(1.0)


# rank_entities -----------------------------------------------------------------------------------


def _sampled(entity: str, levels: list[float]) -> SignalSeries:
    """``levels`` as scraped: every sample new (a wiggle of ±0.01), so the data's step is 1 s."""
    wiggle = np.where(np.arange(len(levels)) % 2 == 0, 0.01, -0.01)
    return _series(entity, list(np.asarray(levels) + wiggle))


def test_a_step_change_is_ranked_with_its_evidence() -> None:
    changed = _sampled("a", [10.0] * 40 + [20.0] * 20)
    ranking = rank_entities([_sampled("c", [10.0] * 60), _sampled("b", [10.0] * 60), changed], 45.0)
    assert [c.entity for c in ranking] == ["a", "b", "c"]  # b and c alike: ties by name
    top = ranking[0]
    assert top.onset == 40.0
    [evidence] = top.evidence
    assert (evidence.signal, evidence.labels, evidence.onset) == ("cpu", {"service": "a"}, 40.0)
    assert evidence.baseline == pytest.approx(10.0)  # scale: 5% of it, 0.5
    assert evidence.incident == pytest.approx(20.01) and evidence.deviation == pytest.approx(20.02)
    # the typical change of cpu is b's and c's wiggle, 0.02 robust units
    assert evidence.weight == pytest.approx(1001.0)
    assert top.score == pytest.approx(math.log1p(1001.0))
    assert ranking[1].score == ranking[2].score == pytest.approx(math.log(2.0))


def test_a_later_change_of_the_same_size_is_discounted_for_its_lag() -> None:
    # b changes 7 s after a, after the alert at 45: the incident's onset is a's, both changes weigh
    # about 1 (the typical change of cpu), and b, 6 steps beyond the tolerance, keeps a quarter
    data = [
        _sampled("a", [10.0] * 40 + [20.0] * 20),
        _sampled("b", [10.0] * 47 + [20.0] * 13),
        _sampled("c", [10.0] * 60),
    ]
    ranking = rank_entities(data, 45.0)
    assert [(c.entity, c.onset) for c in ranking] == [("a", 40.0), ("b", 47.0), ("c", None)]
    assert [c.score for c in ranking[:2]] == pytest.approx([math.log(2.0), math.log(2.0) / 4], rel=0.01)


def test_the_config_given_is_the_one_used() -> None:
    data = [_series("a", [10.0] * 40 + [20.0] * 20), _series("b", [10.0] * 40 + [20.0] * 20)]
    calls = RankConfig(calls=(("a", "b"),))
    assert [c.entity for c in rank_entities(data, 45.0, calls)] == ["b", "a"]
    assert [c.entity for c in rank_entities(data, 45.0)] == ["a", "b"]


def test_unusable_series_are_left_out() -> None:
    data = [
        _series("a", [10.0] * 40 + [20.0] * 20),
        _series("empty", []),
        _series("nan", [math.nan] * 60),
        _series("short", [10.0]),
    ]
    assert [c.entity for c in rank_entities(data, 45.0)] == ["a"]
    assert rank_entities([], 45.0) == []
