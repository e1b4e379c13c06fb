"""The correlation rules (pipeline/correlate.py), pure: which open incident a new alert group joins,
and why, in words a test can check."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agentic_observability.config import CallEdge, CorrelationConfig
from agentic_observability.models import Alert, Incident, Member
from agentic_observability.pipeline.correlate import alert_cause, decide, timeline

CALLS = (
    CallEdge(caller="front-end", callee="orders"),
    CallEdge(caller="orders", callee="carts"),
    CallEdge(caller="front-end", callee="catalogue"),
)
SETTINGS = CorrelationConfig()
T0 = 1_800_000_000.0


def incident(
    id_: str,
    service: str,
    at: float,
    ranked: list[str] | None,
    name: str = "Alert",
    **labels: str,
) -> Incident:
    alert = Alert("firing", {"alertname": name, "service": service, **labels}, {}, at, None, "", f"fp{id_}")
    report: dict[str, Any] | None = None
    if ranked is not None:
        report = {"hypotheses": [{"entity": e} for e in ranked]}
    return Incident(
        id_, f"g{id_}", "alertmanager", "firing", name, {"alertname": name}, at, None, (alert,), report
    )


def test_same_root_cause_within_the_window_joins_and_says_why() -> None:
    first = incident("1", "carts", T0, ["carts", "orders"], "CartsCpu")
    new = incident("2", "front-end", T0 + 40, None, "FrontEndSlow")
    decision = decide(new, {"hypotheses": [{"entity": "carts"}]}, [first], SETTINGS, CALLS)
    assert decision.root == "1"
    assert decision.reason == "started 40 s after incident 1 (CartsCpu); the same root cause (carts)"


def test_a_caller_and_its_callee_are_one_fault() -> None:
    first = incident("1", "orders", T0, ["orders"])
    new = incident("2", "carts", T0 + 5, None)
    decision = decide(new, {"hypotheses": [{"entity": "carts"}]}, [first], SETTINGS, CALLS)
    assert decision.root == "1" and "orders calls carts" in decision.reason


def test_unrelated_causes_stay_apart_even_at_the_same_moment() -> None:
    first = incident("1", "carts", T0, ["carts"])
    new = incident("2", "catalogue", T0, None)
    decision = decide(new, {"hypotheses": [{"entity": "catalogue"}]}, [first], SETTINGS, CALLS)
    assert decision.root is None and decision.wait_for is None


def test_each_alert_sees_the_cause_it_can_reach() -> None:
    """Two faults at once: both rankings name carts and catalogue. The catalogue alert's cause is
    catalogue (it does not call carts), so it does not join the carts incident."""
    both = {"hypotheses": [{"entity": "carts"}, {"entity": "catalogue"}]}
    carts = incident("1", "carts", T0, ["carts", "catalogue"])
    catalogue = incident("2", "catalogue", T0 + 3, None)
    assert alert_cause(catalogue, both, CALLS, "service") == "catalogue"
    assert alert_cause(incident("3", "front-end", T0, None), both, CALLS, "service") == "carts"
    assert alert_cause(catalogue, both, (), "service") == "carts"  # no call graph: the overall top
    assert decide(catalogue, both, [carts], SETTINGS, CALLS).root is None
    assert decide(incident("3", "front-end", T0 + 9, None), both, [carts], SETTINGS, CALLS).root == "1"


def test_outside_the_window_stays_apart() -> None:
    first = incident("1", "carts", T0, ["carts"])
    new = incident("2", "carts", T0 + SETTINGS.window + 1, None)
    assert decide(new, {"hypotheses": [{"entity": "carts"}]}, [first], SETTINGS, CALLS).root is None


def test_two_clusters_never_merge() -> None:
    first = incident("1", "carts", T0, ["carts"], cluster="eu-1")
    same = incident("2", "carts", T0 + 5, None, cluster="eu-1")
    other = incident("3", "carts", T0 + 5, None, cluster="us-1")
    unlabelled = incident("4", "carts", T0 + 5, None)
    cause = {"hypotheses": [{"entity": "carts"}]}
    assert decide(same, cause, [first], SETTINGS, CALLS).root == "1"
    assert decide(other, cause, [first], SETTINGS, CALLS).root is None
    assert decide(unlabelled, cause, [first], SETTINGS, CALLS).root == "1"  # only labels both carry


def test_without_a_ranked_cause_nothing_merges() -> None:
    first = incident("1", "carts", T0, ["carts"])
    new = incident("2", "carts", T0 + 5, None)
    assert decide(new, {"hypotheses": []}, [first], SETTINGS, CALLS).root is None
    assert (
        decide(new, {"hypotheses": [{"entity": "carts"}]}, [incident("1", "carts", T0, [])], SETTINGS).root
        is None
    )


def test_an_earlier_incident_still_being_analysed_is_waited_for_a_later_one_is_not() -> None:
    cause = {"hypotheses": [{"entity": "carts"}]}
    earlier = incident("1", "carts", T0, None)  # no report yet
    new = incident("2", "front-end", T0 + 10, None)
    assert decide(new, cause, [earlier], SETTINGS, CALLS).wait_for == "1"
    later = incident("3", "front-end", T0 + 20, None)
    assert decide(new, cause, [later], SETTINGS, CALLS).wait_for is None
    tie = incident("1", "carts", T0 + 10, None)  # the same second: the lower id goes first
    assert decide(new, cause, [tie], SETTINGS, CALLS).wait_for == "1"
    assert decide(incident("0", "carts", T0 + 10, None), cause, [new], SETTINGS, CALLS).wait_for is None


def test_the_oldest_matching_incident_is_joined() -> None:
    cause = {"hypotheses": [{"entity": "carts"}]}
    older, newer = incident("1", "carts", T0, ["carts"]), incident("2", "orders", T0 + 60, ["carts"])
    new = incident("3", "front-end", T0 + 90, None)
    assert decide(new, cause, [older, newer], SETTINGS, CALLS).root == "1"


def test_a_group_split_by_hand_never_rejoins_that_incident() -> None:
    first = incident("1", "carts", T0, ["carts"])
    split = incident("2", "carts", T0 + 5, None)
    split = Incident(**{**split.__dict__, "correlation": {"split_from": "1", "by": "hand"}})
    assert decide(split, {"hypotheses": [{"entity": "carts"}]}, [first], SETTINGS, CALLS).root is None


def test_the_timeline_names_the_alerts_in_the_order_they_fired() -> None:
    root = incident("1", "carts", T0, ["carts"], "CartsCpuSaturated")
    member = incident("2", "front-end", T0 + 10, None, "ShopFrontEndSlow")
    fault = Incident(
        **{
            **root.__dict__,
            "members": (Member("2", "x", "alertmanager", "g2", "firing", T0 + 10, None, {}, member.alerts),),
        }
    )
    assert timeline(fault) == (
        "Alerts of this fault in order: CartsCpuSaturated at 08:00:00, then ShopFrontEndSlow (+10 s)."
    )
    assert timeline(root) == ""


def test_memory_remembers_a_fault_with_every_alert_it_fired() -> None:
    from agentic_observability.outbox.plan import remember_action

    root = incident("1", "carts", T0, ["carts"], "CartsCpuSaturated")
    member = incident("2", "front-end", T0 + 10, None, "ShopFrontEndSlow")
    fault = Incident(
        **{
            **root.__dict__,
            "members": (Member("2", "x", "alertmanager", "g2", "firing", T0 + 10, None, {}, member.alerts),),
        }
    )
    report = {"hypotheses": [{"entity": "carts", "evidence": []}]}
    payload = remember_action(fault, report, "service", "remember").payload
    assert payload["alertnames"] == ["CartsCpuSaturated", "ShopFrontEndSlow"]
    assert payload["cause"] == "carts"


# -- the worker side: waiting for an earlier group's analysis ------------------------------------


class CandidatesOnly:
    """Just enough of a Store for the correlator's decision: the open incidents it is shown."""

    def __init__(self, candidates: list[Incident]) -> None:
        self.candidates = candidates

    @contextlib.asynccontextmanager
    async def mutex(self, name: str) -> AsyncIterator[None]:
        yield

    async def correlation_candidates(
        self, incident_id: str, earliest: float, latest: float
    ) -> list[Incident]:
        return [c for c in self.candidates if earliest <= c.started_at <= latest]


async def test_a_group_waits_for_an_earlier_analysis_then_decides_without_it() -> None:
    from typing import cast

    from agentic_observability.pipeline.ports import PipelineDeps
    from agentic_observability.service.correlation import Correlator
    from agentic_observability.store import Job, Store

    pending = incident("1", "carts", T0, None)  # still being analysed
    store = CandidatesOnly([pending])
    deps = PipelineDeps(metrics=cast(Any, None))
    new = incident("2", "front-end", T0 + 10, None)
    cause = {"hypotheses": [{"entity": "carts"}]}
    job = Job(7, "2", "analyze", 0)

    patient = Correlator(cast(Store, store), deps, CorrelationConfig(wait=60), CALLS)
    first = await patient.try_join(job, new, cause)
    assert first.wait_for == "1" and patient.waiting(job)  # type: ignore[union-attr]

    hasty = Correlator(cast(Store, store), deps, CorrelationConfig(wait=0), CALLS)
    gave_up = await hasty.try_join(job, new, cause)  # waited its 0 s: decides without incident 1
    assert gave_up.root is None and gave_up.wait_for is None  # type: ignore[union-attr]
    assert not hasty.waiting(job)
    patient.forget(job)  # taken over by another replica: its wait (and held report) goes
    assert not patient.waiting(job) and patient.held_report(job) is None
