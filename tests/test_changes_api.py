"""``POST /api/v1/changes`` (issue 18): the generic change body (CI/CD, Argo CD notifications, Flux)
and PagerDuty's change event as PagerDuty takes it, with the alert webhook's auth and caps; a retried
delivery stores nothing twice; a bad body is a 400 naming the field."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_observability.errors import BadInputError
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.service.routes.changes import parse_changes
from agentic_observability.service.routes.webhook import DEFAULT_LIMITS
from tests.conftest import auth_headers

Client = Callable[..., Awaitable[TestClient]]
URL = "/api/v1/changes"
AT = 1_900_000_000.0

# PagerDuty's change event, as its Events API v2 documentation shows one (developer.pagerduty.com,
# "Send Change Events to the PagerDuty Events API"), with a service named in custom_details.
PAGERDUTY = {
    "routing_key": "R0UTINGKEYR0UTINGKEYR0UTINGKEY00",
    "payload": {
        "summary": "Build Success: Increase snapshot create timeout to 30 seconds",
        "timestamp": "2030-03-17T08:42:58.315+0000",
        "source": "acme-build-pipeline-tool-default-i-9999",
        "custom_details": {
            "build_state": "passed",
            "build_number": "2",
            "run_time": "1236s",
            "service": "carts",
            "version": "v1.4.3",
        },
    },
    "links": [{"href": "https://acme.pagerduty.dev/build/2", "text": "View more details in Acme!"}],
}


@pytest.fixture
async def client(aiohttp_client: Client, config_factory: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(init_app(config_factory(server={"max_body_bytes": 4096})))


async def send(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return await client.post(URL, data=data, headers=auth_headers() if headers is None else headers)


async def stored(client: TestClient) -> list[Any]:
    return await client.app[STORE].changes_between(0, 4_102_444_800)


async def test_a_generic_change_is_stored_once(client: TestClient) -> None:
    body = {
        "service": "carts",
        "namespace": "shop",
        "workload": "deployment/carts",
        "kind": "image",
        "summary": "image v1.4.2 → v1.4.3",
        "old": "v1.4.2",
        "new": "v1.4.3",
        "at": "2030-03-17T09:41:00Z",
        "link": "https://ci.example/pipelines/812",
        "id": "ci-812",
    }
    response = await send(client, body)
    assert response.status == 202, await response.text()
    assert await response.json() == {"accepted": 1, "duplicates": 0}
    again = await send(client, body)  # the CI system retried
    assert await again.json() == {"accepted": 0, "duplicates": 1}
    [change] = await stored(client)
    assert (change.source, change.entity, change.kind, change.summary) == (
        "webhook",
        "carts",
        "image",
        "image v1.4.2 → v1.4.3",
    )
    assert (change.namespace, change.workload, change.old, change.new) == (
        "shop",
        "deployment/carts",
        "v1.4.2",
        "v1.4.3",
    )
    assert change.at == 1_899_970_860.0 and change.link == "https://ci.example/pipelines/812"


async def test_without_an_id_the_content_and_time_make_the_key(client: TestClient) -> None:
    first = {"entity": "orders", "summary": "deployed orders v7", "at": AT}
    assert await (await send(client, first)).json() == {"accepted": 1, "duplicates": 0}
    assert await (await send(client, first)).json() == {"accepted": 0, "duplicates": 1}
    later = {**first, "at": AT + 3600}  # the same version deployed again an hour later is a new change
    assert await (await send(client, later)).json() == {"accepted": 1, "duplicates": 0}
    [one, two] = await stored(client)
    assert (one.kind, two.kind) == ("deploy", "deploy")  # the default kind
    before = time.time()
    now = await (await send(client, {"service": "payment", "summary": "config reloaded"})).json()
    assert now == {"accepted": 1, "duplicates": 0}
    [latest] = [c for c in await stored(client) if c.entity == "payment"]
    assert before <= latest.at <= time.time()  # no `at`: when it was received


async def test_a_pagerduty_change_event_is_taken_as_it_is(client: TestClient) -> None:
    response = await send(client, PAGERDUTY)
    assert response.status == 202, await response.text()
    assert await response.json() == {"accepted": 1, "duplicates": 0}
    assert await (await send(client, PAGERDUTY)).json() == {"accepted": 0, "duplicates": 1}
    [change] = await stored(client)
    assert change.source == "pagerduty" and change.entity == "carts"  # custom_details.service
    assert change.summary == PAGERDUTY["payload"]["summary"]  # type: ignore[index]
    assert change.link == "https://acme.pagerduty.dev/build/2" and change.new == "v1.4.3"
    assert change.at == pytest.approx(1_899_967_378.315)
    assert "R0UTINGKEY" not in json.dumps(change.to_dict()) + change.dedup_key


async def test_a_pagerduty_event_without_a_service_belongs_to_its_source(client: TestClient) -> None:
    body = json.loads(json.dumps(PAGERDUTY))
    del body["payload"]["custom_details"]["service"]
    assert (await send(client, body)).status == 202
    [change] = await stored(client)
    assert change.entity == "acme-build-pipeline-tool-default-i-9999"


async def test_an_array_of_events(client: TestClient) -> None:
    body = [
        {"service": "carts", "summary": "v1.4.3", "id": "a"},
        PAGERDUTY,
        {"service": "carts", "summary": "v1.4.3", "id": "a"},  # the same event twice in one body
    ]
    assert await (await send(client, body)).json() == {"accepted": 2, "duplicates": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "(body)"),
        ("[]", "(body)"),
        ([1, 2], "(body)"),
        ({"service": "carts"}, "summary"),
        ({"summary": "deployed"}, "service"),
        ({"service": "carts", "summary": "x", "kind": "restart"}, "kind"),
        ({"service": "carts", "summary": "x", "link": "javascript:alert(1)"}, "link"),
        ({"service": "carts", "summary": "x", "at": "yesterday"}, "at"),
        ({"service": "carts", "summary": "x", "at": -5}, "at"),
        ({"service": "carts", "summary": "x", "at": 1e12}, "at"),
        ({"service": "", "summary": "x"}, "service"),
        ([{"service": "carts", "summary": "x"}, {"service": "carts"}], "[1].summary"),
        ({"payload": {"source": "ci"}}, "payload.summary"),
        ({"payload": {"summary": "x", "timestamp": "soon", "source": "ci"}}, "payload.timestamp"),
        ({"payload": {"summary": "x"}}, "payload.source"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(client: TestClient, body: Any, field: str) -> None:
    response = await send(client, body)
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["field"] == field, answer
    assert answer["error"] == "invalid change event"
    assert await stored(client) == []


async def test_the_webhook_caps_hold(aiohttp_client: Client, config_factory: Callable[..., Any]) -> None:
    server = {"max_body_bytes": 4096, "max_label_value_bytes": 16, "max_alerts_per_body": 2}
    client = await aiohttp_client(init_app(config_factory(server=server)))
    response = await send(client, {"service": "a-service-name-that-is-long", "summary": "x"})
    answer = await response.json()
    assert response.status == 400 and answer["field"] == "entity", answer
    assert "server.max_label_value_bytes" in answer["detail"]
    many = [{"service": "carts", "summary": str(i)} for i in range(3)]
    answer = await (await send(client, many)).json()
    assert "server.max_alerts_per_body" in answer["detail"]
    huge = await send(client, {"service": "carts", "summary": "x" * 5000})
    assert huge.status == 413


async def test_a_long_summary_is_clipped_to_one_line(client: TestClient) -> None:
    text = "Deployed carts\n\n" + "release notes " * 100
    assert (await send(client, {"service": "carts", "summary": text, "id": "x"})).status == 202
    [change] = await stored(client)
    assert "\n" not in change.summary and len(change.summary.encode()) <= 300
    assert change.summary.startswith("Deployed carts release notes") and "cut from" in change.summary


async def test_credentials_are_required(client: TestClient) -> None:
    body = {"service": "carts", "summary": "x"}
    assert (await send(client, body, headers={})).status == 401
    assert (await send(client, body, headers={"Authorization": "Bearer wrong"})).status == 401
    assert await stored(client) == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
_KEYS = st.sampled_from(["service", "entity", "summary", "kind", "at", "link", "id", "payload", "links"])
_SHAPED = st.dictionaries(_KEYS, _JSON, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON, _SHAPED, st.lists(_SHAPED, max_size=3)))
def test_any_json_is_a_change_or_a_400_never_a_crash(body: Any) -> None:
    try:
        changes = parse_changes(json.dumps(body).encode(), DEFAULT_LIMITS)
    except BadInputError as exc:
        assert exc.field
        return
    for change in changes:
        assert change.entity and change.summary and 0 <= change.at <= 4_102_444_800
        json.dumps(change.to_dict())
