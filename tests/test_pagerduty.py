"""PagerDuty Events API v2 against a fake that enforces the documented shape (tests/fakes.py): the
event time is the incident's, optional keys are left out rather than null, and a 429 is retried
minutes later, as PagerDuty advises, with nothing else sent on the key meanwhile."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.pagerduty import PagerDutySink, rate_limit_wait
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import Alert, Incident, IncidentStatus, OutboxItem, iso_time
from agentic_observability.outbox.plan import ActSettings, plan_actions
from agentic_observability.pipeline.reason import rules_report
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from tests.conftest import fixture_body
from tests.fakes import PD_ROUTING_KEY, FakePagerDuty
from tests.test_actions import Sinks, sinks  # noqa: F401  (the fixture)
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
STARTED, RESOLVED = 1_700_000_000.0, 1_700_000_900.0
RATE_LIMITED: tuple[int, dict[str, str], Any] = (
    429,
    {},
    {"status": "throttle exceeded", "message": "Requests are arriving too quickly"},
)


@pytest.fixture
async def pagerduty() -> AsyncIterator[tuple[FakePagerDuty, PagerDutySink]]:
    fake = FakePagerDuty()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        guard = Guard("pagerduty", retries=0, fail_max=2, reset_after=30.0)
        yield fake, PagerDutySink(session, str(server.make_url("/v2/enqueue")), PD_ROUTING_KEY, 5.0, guard)
    await server.close()


def _incident(labels: dict[str, str], resolved: bool) -> Incident:
    alert = Alert("resolved" if resolved else "firing", labels, {}, STARTED, None, "", "fp")
    status: IncidentStatus = "resolved" if resolved else "firing"
    return Incident(
        "9",
        "g",
        "alertmanager",
        status,
        "HighLatency",
        labels,
        STARTED,
        RESOLVED if resolved else None,
        (alert,),
    )


def _events(labels: dict[str, str]) -> list[OutboxItem]:
    """The trigger and the resolve the act stage plans for an incident, as outbox items."""
    settings = ActSettings(enabled=frozenset({"pagerduty"}))
    items: list[OutboxItem] = []
    for kind, resolved in (("analyze", False), ("resolve", True)):
        incident = _incident(labels, resolved)
        report = rules_report(incident, (), (), [], time.time()).to_dict()
        (action,) = plan_actions(incident, report, kind, settings)
        items.append(OutboxItem(len(items) + 1, "9", "pagerduty", action.action, action.payload, 0, 0.0))
    return items


def _nulls(value: Any, where: str = "") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _nulls(v, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize(
    "labels",
    [
        {"alertname": "HighLatency", "service": "carts", "severity": "critical"},
        {"alertname": "HighLatency"},  # no service, no severity: no component, no null
    ],
)
async def test_events_carry_the_incident_times_and_no_nulls(
    pagerduty: tuple[FakePagerDuty, PagerDutySink], labels: dict[str, str]
) -> None:
    fake, sink = pagerduty
    for item in _events(labels):
        assert await sink.deliver(item) == item.payload["dedup_key"]
    assert fake.errors == []
    (trigger,) = fake.events("trigger")
    (resolve,) = fake.events("resolve")
    assert trigger["payload"]["timestamp"] == iso_time(STARTED)  # the onset, not the delivery time
    assert resolve["payload"]["timestamp"] == iso_time(RESOLVED)
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert _nulls(trigger) == [] and _nulls(resolve) == []
    assert ("component" in trigger["payload"]) == ("service" in labels)


async def test_the_chart_goes_as_an_image_pagerduty_takes(
    pagerduty: tuple[FakePagerDuty, PagerDutySink],
) -> None:
    """With a chart and an https public URL the trigger shows the chart (``images``: src over HTTPS,
    href, alt); the fake holds it to the documented shape."""
    fake, sink = pagerduty
    incident = _incident({"alertname": "HighLatency", "service": "carts"}, resolved=False)
    report = {**rules_report(incident, (), (), [], time.time()).to_dict(), "chart": {"series": [1]}}
    settings = ActSettings(enabled=frozenset({"pagerduty"}), public_url="https://obs.example")
    (action,) = plan_actions(incident, report, "analyze", settings)
    item = OutboxItem(1, "9", "pagerduty", action.action, action.payload, 0, 0.0)
    assert await sink.deliver(item) == item.payload["dedup_key"]
    assert fake.errors == []
    (trigger,) = fake.events("trigger")
    chart = "https://obs.example/api/v1/incidents/9/chart.png"
    assert [(i["src"], i["href"]) for i in trigger["images"]] == [(chart, chart)]
    assert trigger["images"][0]["alt"].startswith("HighLatency")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"routing_key": PD_ROUTING_KEY[:31]}, "'routing_key' is incorrect"),
        ({"event_action": "open"}, "'event_action' is invalid"),
        ({"dedup_key": "k" * 256}, "'dedup_key' must be 1 to 255"),
        ({"client": None}, "'client' is null"),
        ({"payload": {"summary": "x" * 1025, "source": "s", "severity": "info"}}, "'payload.summary'"),
        ({"payload": {"summary": "x", "severity": "info"}}, "'payload.source' is missing"),
        ({"payload": {"summary": "x", "source": "s", "severity": "high"}}, "'payload.severity' is invalid"),
        (
            {"payload": {"summary": "x", "source": "s", "severity": "info", "timestamp": "1700000000"}},
            "ISO 8601",
        ),
        (
            {"payload": {"summary": "x", "source": "s", "severity": "info", "group": None}},
            "'payload.group' is null",
        ),
        (
            {"payload": {"summary": "x", "source": "s", "severity": "info", "custom_details": [1]}},
            "an object",
        ),
        ({"links": [{"text": "no href"}]}, "needs 'href'"),
        ({"images": [{"src": "http://plain.example/x.png"}]}, "over HTTPS"),
    ],
)
async def test_the_fake_refuses_what_pagerduty_documents_as_invalid(
    pagerduty: tuple[FakePagerDuty, PagerDutySink], change: dict[str, Any], error: str
) -> None:
    fake, sink = pagerduty
    body = {
        "routing_key": PD_ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "k",
        "payload": {"summary": "x", "source": "s", "severity": "info", "timestamp": iso_time(STARTED)},
        **change,
    }
    async with aiohttp.ClientSession() as http, http.post(str(sink._url), json=body) as response:
        answer = await response.json()
    assert response.status == 400
    assert answer["status"] == "invalid event" and answer["message"] == "Event object is invalid"
    assert len(answer["errors"]) == 1 and error in answer["errors"][0], answer
    assert fake.requests == []


def test_rate_limit_waits_are_minutes_doubling_to_ten() -> None:
    assert [rate_limit_wait(n) for n in range(7)] == [60, 120, 240, 480, 600, 600, 600]


async def test_a_429_holds_the_key_for_minutes_outside_the_breaker(
    pagerduty: tuple[FakePagerDuty, PagerDutySink],
) -> None:
    fake, sink = pagerduty
    fake.script = [RATE_LIMITED] * 3
    trigger, _ = _events({"alertname": "HighLatency", "service": "carts"})
    with pytest.raises(DeliveryError) as first:
        await sink.deliver(trigger)
    assert not first.value.permanent and first.value.retry_after == pytest.approx(60, abs=1)
    other = OutboxItem(7, "10", "pagerduty", "trigger", trigger.payload, 0, 0.0)
    with pytest.raises(DeliveryError) as held:
        await sink.deliver(other)  # another incident, the same routing key: not sent at all
    assert held.value.retry_after is not None and 55 < held.value.retry_after <= 60
    assert "holding" in str(held.value) and fake.received == 1
    assert sink.guard.state == "closed"  # busy is not broken

    sink._quiet_until = 0.0  # the minute has passed
    later = OutboxItem(1, "9", "pagerduty", "trigger", trigger.payload, 3, 0.0)
    with pytest.raises(DeliveryError) as again:
        await sink.deliver(later)
    assert again.value.retry_after == pytest.approx(480, abs=1)  # doubled with the row's attempts
    assert sink.guard.state == "closed"


async def test_retry_after_longer_than_the_backoff_is_honoured(
    pagerduty: tuple[FakePagerDuty, PagerDutySink],
) -> None:
    fake, sink = pagerduty
    fake.script = [(429, {"Retry-After": "900"}, {"message": "slow down"})]
    trigger, _ = _events({"alertname": "HighLatency"})
    with pytest.raises(DeliveryError) as err:
        await sink.deliver(trigger)
    assert err.value.retry_after == pytest.approx(900, abs=1)


async def test_a_429_becomes_a_retry_of_the_outbox_row_a_minute_out(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
) -> None:
    sinks.pagerduty.script = [RATE_LIMITED]
    client = await aiohttp_client(init_app(sinks.config(tmp_path)))
    posted = time.time()
    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202

    async def rate_limited() -> bool:
        rows = await client.app[STORE].outbox_rows()
        return any(r["sink"] == "pagerduty" and r["last_error"] for r in rows)

    await wait_for(rate_limited, within=15)
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        state, attempts, error, retry_at = db.execute(
            "SELECT state, attempts, last_error, next_attempt_at FROM outbox WHERE sink = 'pagerduty'"
        ).fetchone()
    assert state == "pending" and attempts == 1 and "HTTP 429" in error
    assert retry_at - posted >= 59, retry_at - posted  # a minute, not the 0.2 s first retry
    assert sinks.pagerduty.received == 1 and sinks.pagerduty.events() == []
