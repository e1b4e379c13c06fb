"""The webhook receiver against the real app and a real SQLite store (Prometheus deliberately absent)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.cli import http_options
from agentic_observability.errors import BadInputError, StoreUnavailableError
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.service.routes.openapi import SCHEMAS
from agentic_observability.service.routes.webhook import clip_text, parse_webhook
from tests.conftest import FIXTURES, TOKEN, auth_headers, fixture_body

URL = "/api/v1/webhook/alertmanager"
Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: Client, config_factory: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(init_app(config_factory(server={"max_body_bytes": 20_000})))


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def incidents(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/incidents", params=params, headers=auth_headers())
    assert response.status == 200
    return list((await response.json())["incidents"])


async def post(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return await client.post(URL, data=data, headers=auth_headers() if headers is None else headers)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
async def test_recorded_bodies_are_accepted(client: TestClient, name: str) -> None:
    response = await post(client, fixture_body(name))
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["accepted"] == len(fixture_body(name)["alerts"])


async def test_firing_then_resolved_is_one_incident(client: TestClient) -> None:
    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202
    await wait_for(lambda: _has(client, status="firing"))
    [incident] = await incidents(client)
    assert incident["status"] == "firing"
    assert incident["title"] == "HighCheckoutLatency: checkout p99 latency above 2s"
    assert incident["labels"] == {"alertname": "HighCheckoutLatency", "service": "checkout"}
    assert incident["started_at"] == "2026-11-27T20:38:00.189000Z"
    assert set(SCHEMAS["Incident"]["required"]) <= set(incident)  # the documented contract holds
    assert (await post(client, fixture_body("am-0.25-resolved.json"))).status == 202
    await wait_for(lambda: _has(client, status="resolved"))
    [incident] = await incidents(client)
    assert incident["resolved_at"] == "2026-11-27T20:38:20.189000Z"


async def _has(client: TestClient, **params: str) -> bool:
    return bool(await incidents(client, **params))


async def _count(client: TestClient, expected: int) -> bool:
    return len(await incidents(client)) == expected


async def test_report_is_written_even_when_prometheus_is_down(client: TestClient) -> None:
    await post(client, fixture_body("am-0.25-firing.json"))

    async def reported() -> bool:
        found = await incidents(client)
        return bool(found) and found[0]["report"] is not None

    await wait_for(reported)
    [summary] = await incidents(client)
    detail = await (await client.get(f"/api/v1/incidents/{summary['id']}", headers=auth_headers())).json()
    report = detail["report"]
    assert report["reasoner"] == "rules"
    assert report["facts"]["runbook_url"] == "https://runbooks.example.com/checkout-latency"
    assert report["evidence"][0]["query"] == "vector(1) and on () (vector(time() % 40) < 20)"
    assert report["evidence"][0]["error_kind"] == "unavailable"
    assert "could not be checked" in report["summary"]
    assert detail["alerts"][0]["fingerprint"] == "a5bc72580bdc516d"


async def test_retries_and_repeats_create_nothing_new(client: TestClient) -> None:
    body = fixture_body("legacy-firing-3-alerts.json")
    first = await (await post(client, body)).json()
    assert first == {"accepted": 3, "duplicates": 0}
    await wait_for(lambda: _has(client))
    for _ in range(3):  # Alertmanager retry + repeat_interval resend
        again = await (await post(client, body)).json()
        assert again == {"accepted": 0, "duplicates": 3}
    marker = fixture_body("am-0.25-firing.json")  # another group, accepted after the repeats
    await post(client, marker)
    await wait_for(lambda: _count(client, 2))  # intake has come past the repeats
    [repeated] = [i for i in await incidents(client) if i["group_key"] == body["groupKey"]]
    detail = await (await client.get(f"/api/v1/incidents/{repeated['id']}", headers=auth_headers())).json()
    assert len(detail["alerts"]) == 3


async def test_group_resolves_only_when_every_alert_has(client: TestClient) -> None:
    body = fixture_body("legacy-firing-3-alerts.json")
    await post(client, body)
    await wait_for(lambda: _has(client))
    partly = copy.deepcopy(body)
    partly["alerts"][0]["status"] = "resolved"
    partly["alerts"][0]["endsAt"] = "2019-09-27T16:40:00Z"
    await post(client, partly)

    async def partly_resolved() -> bool:  # the partial resolve has been taken in
        [incident] = await incidents(client)
        detail = await client.get(f"/api/v1/incidents/{incident['id']}", headers=auth_headers())
        return sum(a["status"] == "resolved" for a in (await detail.json())["alerts"]) == 1

    await wait_for(partly_resolved)
    assert (await incidents(client))[0]["status"] == "firing"
    for alert in body["alerts"]:
        alert["status"], alert["endsAt"] = "resolved", "2019-09-27T16:45:00Z"
    body["status"] = "resolved"
    await post(client, body)
    await wait_for(lambda: _has(client, status="resolved"))
    assert len(await incidents(client)) == 1


async def test_refiring_after_resolve_opens_a_new_incident(client: TestClient) -> None:
    await post(client, fixture_body("am-0.25-firing.json"))
    await post(client, fixture_body("am-0.25-resolved.json"))
    await wait_for(lambda: _has(client, status="resolved"))
    again = fixture_body("am-0.25-firing.json")
    again["alerts"][0]["startsAt"] = "2026-11-27T21:00:00Z"
    await post(client, again)
    await wait_for(lambda: _has(client, status="firing"))
    assert len(await incidents(client)) == 2


async def test_unknown_keys_from_newer_alertmanager_are_ignored(client: TestClient) -> None:
    body = fixture_body("am-0.25-firing.json")
    body["notification_reason"] = "new_alerts"
    body["routeLabels"] = {"team": "payments"}
    body["alerts"][0]["someFutureField"] = {"x": 1}
    assert (await post(client, body)).status == 202


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("groupKey"), "groupKey"),
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b.update(alerts=[]), "alerts"),
        (lambda b: b["alerts"][0].pop("startsAt"), "alerts[0].startsAt"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts[0].status"),
        (lambda b: b["alerts"][0]["labels"].update(severity=3), "alerts[0].labels.severity"),
    ],
)
async def test_malformed_bodies_get_400_naming_the_field(client: TestClient, mutate: Any, field: str) -> None:
    body = fixture_body("am-0.25-firing.json")
    mutate(body)
    response = await post(client, body)
    assert response.status == 400
    error = await response.json()
    assert error["field"] == field
    assert field.split(".")[0].split("[")[0] in error["detail"]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b'{"version": "4"'])
async def test_non_object_bodies_get_400(client: TestClient, raw: bytes) -> None:
    response = await post(client, raw)
    assert response.status == 400
    assert (await response.json())["field"] == "(body)"


async def test_oversized_body_gets_413(client: TestClient) -> None:
    body = fixture_body("am-0.25-firing.json")
    body["alerts"][0]["annotations"]["description"] = "x" * 30_000
    response = await post(client, body)
    assert response.status == 413
    assert "20000 bytes" in (await response.json())["detail"]


async def test_oversized_chunked_body_gets_413(client: TestClient) -> None:
    async def chunks() -> Any:
        for _ in range(30):
            yield b"x" * 1000

    response = await client.post(URL, data=chunks(), headers=auth_headers())
    assert response.status == 413


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic !!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()},
        {"Authorization": TOKEN},
    ],
)
async def test_missing_or_bad_credentials_get_401(client: TestClient, headers: dict[str, str]) -> None:
    response = await post(client, fixture_body("am-0.25-firing.json"), headers=headers)
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers
    assert await incidents(client) == []
    assert (await client.get("/api/v1/incidents", headers=headers)).status == 401


async def test_basic_auth_is_accepted(client: TestClient) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()}
    assert (await post(client, fixture_body("am-0.25-firing.json"), headers=basic)).status == 202


async def test_auth_can_be_turned_off(aiohttp_client: Client, config_factory: Callable[..., Any]) -> None:
    client = await aiohttp_client(init_app(config_factory(token=None)))
    assert (await post(client, fixture_body("am-0.25-firing.json"), headers={})).status == 202


async def test_store_failure_answers_503_so_alertmanager_retries(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(alerts: Any) -> Any:
        raise StoreUnavailableError("disk full")

    monkeypatch.setattr(client.app[STORE], "accept", broken)
    response = await post(client, fixture_body("am-0.25-firing.json"))
    assert response.status == 503
    assert (await response.json())["error"] == "store unavailable"


async def test_concurrent_deliveries_are_all_committed(client: TestClient) -> None:
    bodies = []
    for n in range(50):
        body = fixture_body("am-0.25-firing.json")
        body["groupKey"] = f"group-{n}"
        bodies.append(body)
    responses = await asyncio.gather(*(post(client, b) for b in bodies))
    assert [r.status for r in responses] == [202] * 50

    async def all_there() -> bool:
        return len(await incidents(client, limit="100")) == 50

    await wait_for(all_there)


# -- intake caps: each a 400 that names the field and the limit ------------------------------------------

CAPS = {
    "max_alerts_per_body": 2,
    "max_labels_per_alert": 4,  # the recorded body sits exactly at these: at the limit is accepted
    "max_annotations_per_alert": 3,
    "max_label_value_bytes": 32,
    "max_annotation_bytes": 200,
}


@pytest.fixture
async def capped(aiohttp_client: Client, config_factory: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(init_app(config_factory(server=CAPS)))


async def test_a_body_at_every_cap_is_accepted(capped: TestClient) -> None:
    body = fixture_body("am-0.25-firing.json")
    body["alerts"].append({**body["alerts"][0], "fingerprint": "b5bc72580bdc516d"})
    assert (await post(capped, body)).status == 202


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for key in parents:
            target = target["alerts"][0] if key == "alert" else target[key]
        target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "field", "detail"),
    [
        (
            lambda b: b.update(alerts=b["alerts"] * 3),
            "alerts",
            "3 alerts in one body, the limit is 2 (server.max_alerts_per_body)",
        ),
        (
            _set("alert.labels.extra", "x"),
            "alerts[0].labels",
            "5 labels, the limit is 4 (server.max_labels_per_alert)",
        ),
        (
            _set("alert.labels.service", "é" * 17),  # 17 characters, 34 bytes: bytes are what is stored
            "alerts[0].labels.service",
            "34 bytes, the limit is 32 (server.max_label_value_bytes)",
        ),
        (
            lambda b: (
                b["alerts"][0]["labels"].update({"n" * 33: "x"}) or b["alerts"][0]["labels"].pop("team")
            ),
            "alerts[0].labels",
            "a label name of 33 bytes, the limit is 32 (server.max_label_value_bytes)",
        ),
        (
            _set("alert.annotations.extra", "x"),
            "alerts[0].annotations",
            "4 annotations, the limit is 3 (server.max_annotations_per_alert)",
        ),
        (_set("groupLabels.service", "x" * 33), "groupLabels.service", "(server.max_label_value_bytes)"),
        (_set("commonAnnotations.extra", "x"), "commonAnnotations", "(server.max_annotations_per_alert)"),
        (
            _set("groupKey", "k" * 201),
            "groupKey",
            "201 bytes, the limit is 200 (server.max_annotation_bytes)",
        ),
        (
            _set("alert.generatorURL", "http://p/" + "x" * 200),
            "alerts[0].generatorURL",
            "max_annotation_bytes",
        ),
    ],
)
async def test_a_body_over_a_cap_gets_400_naming_the_limit(
    capped: TestClient, mutate: Callable[[dict[str, Any]], None], field: str, detail: str
) -> None:
    body = fixture_body("am-0.25-firing.json")
    mutate(body)
    response = await post(capped, body)
    assert response.status == 400, await response.text()
    error = await response.json()
    assert error["field"] == field
    assert error["detail"].startswith(f"{field}: ") and detail in error["detail"]
    assert await incidents(capped) == []


async def test_an_annotation_over_its_cap_is_clipped_not_refused(capped: TestClient) -> None:
    """Alertmanager does not retry a 400: refusing a long description would lose the group's page."""
    body = fixture_body("am-0.25-firing.json")
    body["alerts"][0]["annotations"]["description"] = "é" * 150  # 300 bytes, the cap is 200
    assert (await post(capped, body)).status == 202
    await wait_for(lambda: _has(capped, status="firing"))
    [incident] = await incidents(capped)
    detail = await (await capped.get(f"/api/v1/incidents/{incident['id']}", headers=auth_headers())).json()
    [alert] = detail["alerts"]
    description = alert["annotations"]["description"]
    assert len(description.encode()) <= 200
    assert description.startswith("é" * 10) and description.endswith("[cut from 300 bytes]")


def test_clip_text_keeps_whole_characters_within_the_limit() -> None:
    assert clip_text("short", 200) == "short"
    for limit in range(1, 60):
        clipped = clip_text("日本語" * 20, limit)
        assert len(clipped.encode()) <= limit
        clipped.encode().decode()  # whole characters only


def test_default_caps_apply_when_no_config_is_given() -> None:
    """replay parses without a config: the config's defaults apply."""
    body = fixture_body("am-0.25-firing.json")
    body["alerts"] = body["alerts"] * 1500
    with pytest.raises(BadInputError) as caught:
        parse_webhook(json.dumps(body).encode())
    assert (
        str(caught.value) == "alerts: 1500 alerts in one body, the limit is 1000 (server.max_alerts_per_body)"
    )
    assert caught.value.field == "alerts"


# -- times the rest of the service could not show ----------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("startsAt", "9999-12-31T23:59:59-14:00"),  # 10000-01-01 in UTC
        ("endsAt", "9999-12-31T23:59:59-14:00"),
        ("startsAt", "9999-12-31T23:59:59.9999999Z"),  # rounds up to 10000-01-01 as unix seconds
    ],
)
async def test_a_time_past_year_9999_in_utc_gets_400(client: TestClient, key: str, value: str) -> None:
    body = fixture_body("am-0.25-firing.json")
    body["alerts"][0][key] = value
    response = await post(client, body)
    assert response.status == 400, await response.text()
    error = await response.json()
    assert error["field"] == f"alerts[0].{key}" and "9999-12-31" in error["detail"]
    assert await incidents(client) == []  # and the list still answers


async def test_the_latest_representable_time_is_stored_and_listed(client: TestClient) -> None:
    body = fixture_body("am-0.25-firing.json")
    body["alerts"][0]["startsAt"] = "9999-12-31T23:59:59+14:00"
    assert (await post(client, body)).status == 202
    await wait_for(lambda: _has(client))
    [incident] = await incidents(client)
    assert incident["started_at"] == "9999-12-31T09:59:59Z"


def test_a_time_without_an_offset_is_utc_not_local(monkeypatch: pytest.MonkeyPatch) -> None:
    body = fixture_body("am-0.25-firing.json")
    body["alerts"][0]["startsAt"] = "2026-11-27T20:38:00"
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        [accepted] = parse_webhook(json.dumps(body).encode())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert accepted.alert.starts_at == 1_795_811_880.0  # 2026-11-27T20:38:00Z


# -- raw HTTP: bytes no client library would send, and clients that stall ------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, await reader.readexactly(int(headers["content-length"]))


async def raw_request(
    server: TestServer, data: bytes, within: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` byte for byte and read one response (no client library to re-encode headers)."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            return await _read_response(reader)
    finally:
        writer.close()


async def test_non_utf8_authorization_gets_401(client: TestClient) -> None:
    request = (
        b"GET /api/v1/incidents HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer \xff\xfe\xe9t\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = await raw_request(client.server, request)
    assert status == 401, body
    assert "www-authenticate" in headers and json.loads(body)["error"] == "unauthorized"


@pytest.mark.parametrize(
    "path",
    [URL, "/api/v1/analyze", "/api/v1/incidents/1/feedback"],  # every route that reads a body
)
async def test_a_body_that_stalls_gets_408(
    aiohttp_client: Client, config_factory: Callable[..., Any], path: str
) -> None:
    client = await aiohttp_client(init_app(config_factory(server={"body_timeout": 0.3})))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    started = time.perf_counter()
    status, _, body = await raw_request(client.server, head.encode() + b'{"version": "4", ')  # then nothing
    assert status == 408, body
    assert time.perf_counter() - started < 3.0
    error = json.loads(body)
    assert "server.body_timeout" in error["detail"] and error["error"]


async def _closed_within(server: TestServer, data: bytes, seconds: float) -> bool:
    assert server.port is not None
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(seconds):
            return await reader.read() == b""  # EOF: the server hung up
    except TimeoutError:
        return False
    finally:
        writer.close()


@pytest.mark.parametrize(
    "sent", [b"", b"POST /api/v1/webhook/alertmanager HTTP/1.1\r\nHost: t\r\nContent-Le"]
)
async def test_headers_that_never_finish_are_cut_off(
    aiohttp_server: Callable[..., Awaitable[TestServer]], config_factory: Callable[..., Any], sent: bytes
) -> None:
    config = config_factory(server={"header_timeout": 0.3})
    server = await aiohttp_server(init_app(config), **http_options(config.file.server))  # as `serve` runs it
    assert await _closed_within(server, sent, seconds=3.0)
