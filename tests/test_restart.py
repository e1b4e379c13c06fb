"""Alerts that got a 202 before a hard kill (SIGKILL) are processed after the restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentic_observability.demo.stack import free_port
from tests.conftest import TOKEN, auth_headers, fixture_body

GROUPS = 300


def _start_service(
    tmp_path: Path, port: int, extra_yaml: str = "", extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, workers: 1, shutdown_timeout: 8s}}\n"
        f"storage: {{path: {tmp_path / 'state'}}}\n"
        f"prometheus: {{url: 'http://127.0.0.1:{free_port()}', timeout: 1s, retries: 0}}\n{extra_yaml}"
    )
    env = {**os.environ, "AGENTIC_OBS_WEBHOOK_TOKEN": TOKEN, **(extra_env or {})}
    log = (tmp_path / "service.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "agentic_observability", "serve", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=log,
    )


async def _wait_up(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{base}/api/v1/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("service did not start")


def _body(n: int) -> dict[str, Any]:
    body = fixture_body("am-0.25-firing.json")
    body["groupKey"] = f"restart-{n}"
    body["alerts"][0]["labels"]["instance"] = f"host-{n}"
    body["alerts"][0]["fingerprint"] = f"fp-{n}"
    return body


@pytest.mark.slow
async def test_accepted_alerts_survive_sigkill(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = _start_service(tmp_path, port)
    accepted = 0
    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        await _wait_up(http, base)
        url = f"{base}/api/v1/webhook/alertmanager"
        responses = await asyncio.gather(*(http.post(url, json=_body(n)) for n in range(GROUPS)))
        accepted = sum(r.status == 202 for r in responses)
        service.send_signal(signal.SIGKILL)  # no chance to finish anything
        service.wait()

        pending = _unprocessed(tmp_path)
        assert accepted == GROUPS
        assert pending["inbox"] + pending["jobs"] > 0, "the kill came too late to test resuming"
        service = _start_service(tmp_path, port)
        try:
            await _wait_up(http, base)
            deadline = time.monotonic() + 60
            done: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                async with http.get(f"{base}/api/v1/incidents", params={"limit": "500"}) as response:
                    done = [i for i in (await response.json())["incidents"] if i["report"]]
                if len(done) == GROUPS:
                    break
                await asyncio.sleep(0.2)
        finally:
            service.terminate()
            assert service.wait(15) == 0  # SIGTERM: graceful, exit 0
    assert len(done) == GROUPS, f"{GROUPS - len(done)} accepted alerts lost ({pending} were pending at kill)"
    assert len({i["labels"]["alertname"] for i in done}) == 1
    print(f"work pending at SIGKILL: {json.dumps(pending)}")


def _unprocessed(tmp_path: Path) -> dict[str, int]:
    """What the killed process left undone, read straight from the SQLite file."""
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        inbox = db.execute("SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL").fetchone()[0]
        jobs = db.execute("SELECT COUNT(*) FROM jobs WHERE done_at IS NULL").fetchone()[0]
        total = db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
    assert total == GROUPS  # every 202 is in the file
    return {"inbox": inbox, "jobs": jobs}


async def test_sigterm_lets_an_in_flight_delivery_finish_and_exits_0(tmp_path: Path) -> None:
    """A Slack post in flight at SIGTERM completes and is recorded (cut off, it could be sent twice)."""
    from aiohttp.test_utils import TestServer

    from tests.fakes import SLACK_TOKEN, FakeSlack

    slack = FakeSlack(delay=2.0)
    server = TestServer(slack.app(), host="127.0.0.1")
    await server.start_server()
    port = free_port()
    api = server.make_url("/api")
    slack_config = f"actions: {{slack: {{api_url: '{api}', channel: '#ops'}}, file: {{enabled: false}}}}\n"
    service = _start_service(tmp_path, port, slack_config, {"SLACK_BOT_TOKEN": SLACK_TOKEN})
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await _wait_up(http, base)
            url = f"{base}/api/v1/webhook/alertmanager"
            async with http.post(url, json=fixture_body("am-0.25-firing.json"), headers=auth_headers()) as r:
                assert r.status == 202
            for _ in range(100):
                if slack.arrived:
                    break
                await asyncio.sleep(0.05)
            assert slack.arrived == 1, "the delivery never started"
        service.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.wait, 15) == 0
    finally:
        if service.poll() is None:
            service.kill()
        await server.close()
    assert len(slack.parents()) == 1
    with sqlite3.connect(tmp_path / "state" / "agentic-obs.sqlite3") as db:
        states = db.execute("SELECT action, state FROM outbox WHERE sink = 'slack' ORDER BY id").fetchall()
    # the parent was in flight and finished; the thread reply had not started and waits for the restart
    assert states == [("open", "delivered"), ("reply:investigation", "pending")]
