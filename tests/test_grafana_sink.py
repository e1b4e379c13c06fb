"""Grafana as the real API would treat the sink: a Grafana under a sub-path, Grafana's tag limits, its
Retry-After, dashboards it already provisions from files, and the tag search before create that
covers the crash window (an annotation created, its id never recorded), bounded in time.

The fake (tests/fakes.py ``FakeGrafana``) answers as Grafana does; each rule there names its source.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.config import Config
from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.delivery import sink_guard
from agentic_observability.integrations.grafana import GrafanaSink, api_url
from agentic_observability.models import OutboxItem
from agentic_observability.outbox import messages
from agentic_observability.outbox.sinks import bundled_dashboards
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from tests.conftest import fixture_body, make_config
from tests.fakes import GRAFANA_TOKEN, FakeGrafana
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
SUB_PATH = "/grafana"
DAY = 86_400.0


class Served:
    """A FakeGrafana on a loopback port, under ``SUB_PATH``; ``url`` is what a user would configure."""

    def __init__(self, fake: FakeGrafana, server: TestServer) -> None:
        self.fake, self.server = fake, server
        self.url = str(server.make_url(SUB_PATH))  # no trailing slash, as people write it

    def sink(self) -> GrafanaSink:
        return GrafanaSink.create(self.url, GRAFANA_TOKEN, 5.0, sink_guard("grafana", 5, 30.0))

    def config(self, tmp_path: Path, **grafana: Any) -> Config:
        return make_config(
            tmp_path,
            secrets={"grafana_token": GRAFANA_TOKEN},
            server={"shutdown_timeout": 0.1},
            actions={"grafana": {"url": self.url, **grafana}, "first_retry": "0.2s"},
        )


@pytest.fixture
async def grafana() -> AsyncIterator[Served]:
    fake = FakeGrafana(prefix=SUB_PATH)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield Served(fake, server)
    fake.release()
    await server.close()


def annotation_item(
    tags: list[str], onset: float, action: str = "open", ref: str | None = None, **extra: Any
) -> OutboxItem:
    payload = {"dashboardUID": None, "panelId": None, "time": int(onset * 1000), "tags": tags, "text": "t"}
    return OutboxItem(1, "1", "grafana", action, {**payload, **extra}, 0, time.time(), ref)


# -- a Grafana under a sub-path ------------------------------------------------------------------------


def test_a_sub_path_keeps_its_slash_for_grafana_client() -> None:
    assert api_url("https://ex.com/grafana") == "https://ex.com/grafana/"
    assert api_url("https://ex.com/grafana/?verify=false") == "https://ex.com/grafana/?verify=false"
    assert api_url("https://ex.com") == "https://ex.com"
    sink = GrafanaSink.create("https://ex.com/grafana", None, 1.0, sink_guard("grafana", 1, 1.0))
    assert sink.api.client.url == "https://ex.com/grafana/api"  # not .../grafanaapi


async def test_every_call_reaches_a_grafana_under_a_sub_path(grafana: Served) -> None:
    sink = grafana.sink()
    saved = await sink.provision("Ops", bundled_dashboards())
    assert sorted(saved) == sorted(grafana.fake.dashboards)
    onset = time.time() - 600
    ref = await sink.deliver(annotation_item(["agentic-obs", "incident:abc-1"], onset))
    assert ref is not None
    resolved = annotation_item(
        ["agentic-obs", "incident:abc-1"], onset, "resolve", ref, timeEnd=int(time.time() * 1000)
    )
    assert await sink.deliver(resolved) == ref
    assert [kind for kind, _ in grafana.fake.requests] == ["add", "patch"]
    assert grafana.fake.errors == []


# -- tags ---------------------------------------------------------------------------------------------


def test_tags_stay_within_grafanas_limits() -> None:
    incident = {"id": "42", "title": "t", "service": "svc-" + "ü" * 3000}
    report = {"facts": {"alertname": "Alert:" + "x" * 5000}}
    tags = messages.grafana_tags(incident, report, "abc123def456")
    assert tags[:2] == ["agentic-obs", "incident:abc123def456-42"]  # never cut: the search needs it
    assert messages.grafana_tags_length(tags) <= messages.GRAFANA_TAGS_LENGTH
    for tag in tags:
        key, _, value = tag.partition(":")
        assert len(key) <= 100 and len(value) <= 100
    assert tags[2].startswith("Alert:xxx") and tags[3].startswith("svc-üü")  # both still say something
    short = messages.grafana_tags(
        {"id": "7", "title": "t", "service": "carts"}, {"facts": {"alertname": "A"}}
    )
    assert short == ["agentic-obs", "incident:7", "A", "carts"]  # short tags go as they are


async def test_long_alert_names_and_services_are_accepted_by_grafana(grafana: Served) -> None:
    incident = {"id": "1", "title": "t", "service": "s" * 700}
    tags = messages.grafana_tags(incident, {"facts": {"alertname": "a" * 900}}, "abc")
    await grafana.sink().deliver(annotation_item(tags, time.time()))
    assert len(grafana.fake.annotations) == 1 and grafana.fake.errors == []


# -- Retry-After --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_grafanas_retry_after_is_read(grafana: Served, status: int) -> None:
    grafana.fake.script = [(status, {"Retry-After": "120"}, {"message": "slow down"})]
    with pytest.raises(DeliveryError) as raised:
        await grafana.sink().deliver(annotation_item(["agentic-obs", "incident:abc-1"], time.time()))
    assert not raised.value.permanent and raised.value.retry_after == 120.0


async def test_a_429_schedules_the_retry_when_grafana_asks(
    aiohttp_client: Client, tmp_path: Path, grafana: Served
) -> None:
    """Through the service: the outbox row waits the 120 s Grafana asked for, not the 0.2 s first retry.
    With provisioning switched off no dashboard is pushed, so the first request is the annotation's."""
    grafana.fake.script = [(429, {"Retry-After": "120"}, {"message": "rate limited"})]
    client = await aiohttp_client(init_app(grafana.config(tmp_path, provision_dashboards=False)))
    before = time.time()
    assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202

    async def tried() -> bool:
        return any(
            r["sink"] == "grafana" and r["attempts"] >= 1 for r in await client.app[STORE].outbox_rows()
        )

    await wait_for(tried)
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        (next_attempt,) = db.execute("SELECT next_attempt_at FROM outbox WHERE sink = 'grafana'").fetchone()
    assert next_attempt >= before + 119
    assert grafana.fake.dashboards == {} and grafana.fake.folders == {}


# -- dashboards Grafana provisions from files ---------------------------------------------------------


async def test_dashboards_provisioned_by_files_are_left_alone(
    grafana: Served, caplog: pytest.LogCaptureFixture
) -> None:
    bundled = bundled_dashboards()
    grafana.fake.provision_from_files(bundled[0])
    with caplog.at_level(logging.INFO, logger="agentic_observability"):
        saved = await grafana.sink().provision("Ops", bundled)
    assert saved == [d["uid"] for d in bundled[1:]]
    notes = [r for r in caplog.records if "provisions these dashboards from files" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO and bundled[0]["uid"] in notes[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert grafana.fake.errors == []


# -- the crash window: search before create -----------------------------------------------------------


async def test_an_annotation_created_before_a_crash_is_not_created_again(
    aiohttp_client: Client, tmp_path: Path, grafana: Served
) -> None:
    """Grafana stores the annotation but its answer never arrives (the service stops, its delivery cut
    off as by a SIGKILL), so the id is not recorded. After the restart the retry finds the annotation by
    its incident tag and updates it: one annotation, never two."""
    grafana.fake.stall_adds = 1
    config = grafana.config(tmp_path)
    first = await aiohttp_client(init_app(config))
    assert (await post(first, fixture_body("am-0.25-firing.json"))).status == 202

    async def created() -> bool:
        return len(grafana.fake.annotations) == 1

    await wait_for(created)
    install = await first.app[STORE].install_id()
    await first.close()
    grafana.fake.release()
    (row,) = [r for r in await _rows(tmp_path) if r[0] == "grafana"]
    assert row[1] == "pending"  # the crash window: Grafana has it, the store does not know

    second = await aiohttp_client(init_app(config))

    async def delivered() -> bool:
        rows = await second.app[STORE].outbox_rows()
        return bool(rows) and all(r["state"] == "delivered" for r in rows)

    await wait_for(delivered, within=20)
    (annotation,) = grafana.fake.annotations.values()
    assert f"incident:{install}-1" in annotation["tags"]
    assert [kind for kind, _ in grafana.fake.requests] == ["add", "patch"]
    assert grafana.fake.errors == []


async def _rows(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        return [(str(s), str(st)) for s, st in db.execute("SELECT sink, state FROM outbox")]


async def test_the_crash_window_search_is_bounded_in_time(grafana: Served) -> None:
    """An old annotation with the same tag (another incident, long ago) is outside the search window:
    a new annotation is created and the old one is left as it was."""
    now = time.time()
    tag = "incident:abc-1"
    grafana.fake.annotations[99] = {
        "id": 99,
        "time": int((now - 30 * DAY) * 1000),
        "timeEnd": int((now - 29 * DAY) * 1000),
        "tags": ["agentic-obs", tag],
        "text": "old",
    }
    onset = now - 600
    ref = await grafana.sink().deliver(annotation_item(["agentic-obs", tag], onset))
    assert ref != "99" and grafana.fake.annotations[99]["text"] == "old"
    (search,) = grafana.fake.searches
    assert search["tags"] == tag and search["type"] == "annotation"
    assert onset - DAY - 1 <= int(search["from"]) / 1000 <= onset - DAY + 1
    assert now <= int(search["to"]) / 1000 <= time.time() + 600


async def test_the_search_finds_the_annotation_of_a_resolve_days_later(grafana: Served) -> None:
    """The window reaches back from the incident's onset, not from when the action was queued: a
    resolve queued days after the open still finds the annotation the open created."""
    onset = time.time() - 5 * DAY
    tags = ["agentic-obs", "incident:abc-1"]
    created = await grafana.sink().deliver(annotation_item(tags, onset))
    resolve = annotation_item(tags, onset, "resolve", timeEnd=int(time.time() * 1000))
    assert await grafana.sink().deliver(resolve) == created
    assert len(grafana.fake.annotations) == 1


# -- the fake answers as Grafana does ----------------------------------------------------------------


async def test_fake_grafana_holds_requests_to_grafanas_rules(grafana: Served) -> None:
    base, auth = grafana.url, {"Authorization": f"Bearer {GRAFANA_TOKEN}"}
    dashboard = {"uid": "d1", "title": "One", "version": 1}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/annotations") as response:
            assert response.status == 401  # no token
        async with http.get(f"{base}api/annotations", headers=auth) as response:
            assert response.status == 404  # .../grafanaapi: the sub-path lost its slash
        annotation = {"time": int(time.time() * 1000), "text": "x", "tags": ["a" * 250, "b" * 250]}
        async with http.post(f"{base}/api/annotations", json=annotation, headers=auth) as response:
            assert response.status == 400
            assert (await response.json())["messageId"] == "annotations.tag-limit-exceeded"
        async with http.post(
            f"{base}/api/folders", json={"title": "F", "uid": "f"}, headers=auth
        ) as response:
            assert response.status == 200
        save = {"dashboard": dashboard, "folderUid": "f", "overwrite": False}
        for status in (200, 200, 412):  # created as version 1; saved over it as 2; then ours is stale
            async with http.post(f"{base}/api/dashboards/db", json=save, headers=auth) as response:
                assert response.status == status
                answer = await response.json()
        assert answer["status"] == "version-mismatch"
        same_title = {**save, "dashboard": {**dashboard, "uid": "d2"}}
        async with http.post(f"{base}/api/dashboards/db", json=same_title, headers=auth) as response:
            assert response.status == 412 and (await response.json())["status"] == "name-exists"
        async with http.post(
            f"{base}/api/dashboards/db", json={**save, "overwrite": True}, headers=auth
        ) as response:
            assert response.status == 200
        grafana.fake.provision_from_files({"uid": "p1", "title": "From files"})
        provisioned = {"dashboard": {"uid": "p1", "title": "P"}, "folderUid": "f", "overwrite": True}
        async with http.post(f"{base}/api/dashboards/db", json=provisioned, headers=auth) as response:
            assert response.status == 400
            assert (await response.json())["message"] == "Cannot save provisioned dashboard"
