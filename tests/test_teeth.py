"""Features that were once deleted without a single test failing, each with a test that now fails when
it goes: the outbox dedup key (a job completed twice queues its actions once) and secret scrubbing
in the logging ``agentic-obs serve`` sets up. (One memory action per feedback is in test_api.py.)"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.demo.stack import free_port
from agentic_observability.errors import StoreError
from agentic_observability.models import AcceptedAlert, Alert
from agentic_observability.outbox.plan import ActSettings, plan_actions
from agentic_observability.pipeline.reason import rules_report
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.store import SqliteStore
from tests.conftest import TOKEN, auth_headers, fixture_body, make_config
from tests.fakes import GRAFANA_TOKEN, MODEL_TOKEN, PD_ROUTING_KEY, SLACK_TOKEN, FakePagerDuty
from tests.test_restart import _start_service, _wait_up
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]

# -- the outbox dedup key ------------------------------------------------------------------------


def _alert() -> AcceptedAlert:
    alert = Alert(
        "firing", {"alertname": "HighLatency", "service": "carts"}, {}, 1_700_000_000.0, None, "", "fp"
    )
    return AcceptedAlert(group_key="g", source="alertmanager", alert=alert)


async def test_a_job_completed_twice_queues_its_actions_once(tmp_path: Path) -> None:
    """The same job's report planned and committed twice (each time with a fresh report, as a retry
    would write it) leaves one outbox row per action: the second commit adds nothing."""
    store = await SqliteStore.open(tmp_path / "state")
    try:
        await store.accept([_alert()])
        (job,), _ = await store.ingest_pending()
        incident = await store.get_incident(job.incident_id)
        assert incident is not None
        settings = ActSettings(enabled=frozenset({"slack", "pagerduty", "file"}))
        for attempt in range(2):
            report = rules_report(incident, (), (), [], time.time() + attempt).to_dict()
            actions = plan_actions(incident, report, job.kind, settings)
            await store.complete_job(job.id, incident.id, report, actions)
            rows = await store.outbox_rows()
            assert len(rows) == len(actions) == 4, (attempt, rows)  # slack parent + reply, page, file
    finally:
        await store.close()


async def test_a_retried_job_is_delivered_once(aiohttp_client: Client, tmp_path: Path) -> None:
    """The store commits a job's report and actions, then the call fails (a lost answer from the
    writer): the worker runs the job again and commits again. Every receiver still hears once."""
    pagerduty = FakePagerDuty()
    server = TestServer(pagerduty.app(), host="127.0.0.1")
    await server.start_server()
    config = make_config(
        tmp_path,
        secrets={"pagerduty_routing_key": PD_ROUTING_KEY},
        actions={"pagerduty": {"events_url": str(server.make_url("/v2/enqueue"))}},
    )
    try:
        client = await aiohttp_client(init_app(config))
        store = client.app[STORE]
        commits: list[int] = []
        commit = store.complete_job

        async def committed_then_lost(*args: Any, **kwargs: Any) -> None:
            await commit(*args, **kwargs)
            commits.append(len(await store.outbox_rows()))
            if len(commits) == 1:
                raise StoreError("the writer's answer was lost after the commit")

        store.complete_job = committed_then_lost
        assert (await post(client, fixture_body("am-0.25-firing.json"))).status == 202

        async def committed_twice() -> bool:
            return len(commits) == 2

        await wait_for(committed_twice, within=20)

        async def delivered() -> bool:
            rows = await store.outbox_rows()
            return bool(rows) and all(r["state"] == "delivered" for r in rows)

        await wait_for(delivered)
    finally:
        await server.close()
    assert commits[1] == commits[0] == 2, commits  # the page and the file line, queued once
    assert len(pagerduty.events("trigger")) == 1 and pagerduty.errors == []
    assert len((tmp_path / "state" / "actions.jsonl").read_text().splitlines()) == 1


# -- secret scrubbing in the running service -----------------------------------------------------

SECRET_ENV = {
    "AGENTIC_OBS_WEBHOOK_TOKEN": TOKEN,
    "PAGERDUTY_ROUTING_KEY": PD_ROUTING_KEY,
    "SLACK_BOT_TOKEN": SLACK_TOKEN,
    "GRAFANA_TOKEN": GRAFANA_TOKEN,
    "HUGGINGFACE_TOKEN": MODEL_TOKEN,
}
PROMETHEUS_URL_PASSWORD = "prom-url-pw-in-config"


async def test_serve_scrubs_secrets_that_a_downstream_echoes(tmp_path: Path) -> None:
    """``agentic-obs serve`` as a process, every secret in its environment, and a PagerDuty whose
    rejection quotes secrets back, which the service logs. The sink stars out its own routing key;
    the Slack token stands for any secret that reaches a log line by a path nobody foresaw, which only
    the scrubbing ``serve`` sets up (not a test's own formatter) can catch."""
    pagerduty = FakePagerDuty()
    echo = {"status": "invalid event", "message": "Event object is invalid"}
    quoted = f"routing_key {PD_ROUTING_KEY} is disabled; token {SLACK_TOKEN} is not an integration key"
    pagerduty.script = [(400, {}, {**echo, "errors": [quoted]})]
    server = TestServer(pagerduty.app(), host="127.0.0.1")
    await server.start_server()
    port = free_port()
    extra = f"actions: {{pagerduty: {{events_url: '{server.make_url('/v2/enqueue')}'}}}}\n"
    service = _start_service(tmp_path, port, extra, SECRET_ENV)
    log = tmp_path / "service.log"
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            await _wait_up(http, base)
            url = f"{base}/api/v1/webhook/alertmanager"
            async with http.post(url, json=fixture_body("am-0.25-firing.json"), headers=auth_headers()) as r:
                assert r.status == 202
            deadline = time.monotonic() + 20
            while "PagerDuty rejected the event" not in log.read_text():  # the line that quotes the key
                assert time.monotonic() < deadline, "PagerDuty's rejection was never logged"
                await asyncio.sleep(0.1)
        service.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.wait, 15) == 0
    finally:
        if service.poll() is None:
            service.kill()
        await server.close()
    written = log.read_text()
    [rejected] = [json.loads(line) for line in written.splitlines() if "PagerDuty rejected" in line]
    assert "routing_key *** is disabled; token *** is not" in rejected["msg"], rejected
    for name, secret in SECRET_ENV.items():
        assert secret not in written, f"{name} leaked into the service's log"
    assert pagerduty.received == 1


@pytest.mark.parametrize("secret", [PD_ROUTING_KEY, SLACK_TOKEN])
def test_the_logging_serve_sets_up_scrubs_the_root_logger(
    secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same path in process: ``serve``'s own config loading and ``setup_logging`` (cli.py), then
    any logger's line, with a secret in it and in a URL's userinfo, reaches stderr starred out."""
    import logging

    from agentic_observability.config import load_config
    from agentic_observability.telemetry import setup_logging

    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"storage: {{path: '{tmp_path / 'state'}'}}\n")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(load_config(str(config_file)).secrets.values())
        logging.getLogger("agentic_observability.anything").error(
            "downstream said %s; retrying http://bot:%s@example.com/x", secret, PROMETHEUS_URL_PASSWORD
        )
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["msg"] == "downstream said ***; retrying http://example.com/x"
    assert secret not in line and PROMETHEUS_URL_PASSWORD not in line
