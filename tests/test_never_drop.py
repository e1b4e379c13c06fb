"""Nothing accepted is lost: a worker survives a failing store, readiness says when analysis is stuck,
and after a full disk is freed every accepted alert's incident is reported without a restart."""

from __future__ import annotations

import asyncio
import copy
import os
import platform
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agentic_observability import pipeline
from agentic_observability.errors import StoreError
from agentic_observability.models import OutboxItem
from agentic_observability.outbox.dispatcher import Dispatcher
from agentic_observability.service import init_app
from agentic_observability.service.heap import limit_fragmentation
from agentic_observability.service.keys import STORE, WORKERS
from agentic_observability.telemetry import Metrics
from tests.conftest import fixture_body, make_config
from tests.test_webhook import incidents, post, wait_for

Client = Callable[..., Awaitable[TestClient]]


def alert_group(name: str, annotation: str = "") -> dict[str, Any]:
    """A firing group of one alert, unique per ``name`` (its own group key and fingerprint)."""
    body = copy.deepcopy(fixture_body("am-0.25-firing.json"))
    body["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["labels"]["alertname"] = name
    body["alerts"][0]["fingerprint"] = uuid.uuid4().hex[:16]
    body["alerts"][0]["annotations"]["description"] = annotation
    return body


async def reported(client: TestClient, expected: int) -> bool:
    found = await incidents(client)
    return len(found) == expected and all(i["report"] for i in found)


async def test_worker_survives_a_failing_store_and_the_job_is_retried(
    aiohttp_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(init_app(make_config(tmp_path, memory={"enabled": False})))
    store = client.app[STORE]
    real_complete, real_finish = store.complete_job, store.finish_job
    failures = {"left": 3}

    async def flaky_complete(*args: Any, **kwargs: Any) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise StoreError("database or disk is full")
        await real_complete(*args, **kwargs)

    async def failing_finish(*args: Any, **kwargs: Any) -> None:
        if failures["left"] > 0:
            raise StoreError("database or disk is full")
        await real_finish(*args, **kwargs)

    monkeypatch.setattr(store, "complete_job", flaky_complete)
    monkeypatch.setattr(store, "finish_job", failing_finish)
    assert (await post(client, alert_group("First"))).status == 202
    await wait_for(lambda: reported(client, 1), within=20)
    assert client.app[WORKERS].alive
    assert (await post(client, alert_group("Second"))).status == 202  # the loop goes on
    await wait_for(lambda: reported(client, 2), within=10)


async def test_readiness_is_503_when_a_worker_died_or_a_job_waits_too_long(
    aiohttp_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, memory={"enabled": False}, server={"ready_max_job_age": "1s"})
    client = await aiohttp_client(init_app(config))
    ready = await client.get("/api/v1/health/ready")
    assert (await ready.json())["checks"]["workers"]["status"] == "ok"

    release = asyncio.Event()
    real_run = pipeline.run

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await real_run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run", stalled)
    assert (await post(client, alert_group("Stuck"))).status == 202
    await asyncio.sleep(1.3)
    response = await client.get("/api/v1/health/ready")
    body = await response.json()
    assert response.status == 503, body
    assert body["checks"]["workers"]["status"] == "stuck"
    assert "server.ready_max_job_age" in body["checks"]["workers"]["detail"]
    release.set()
    await wait_for(lambda: reported(client, 1))
    assert (await client.get("/api/v1/health/ready")).status == 200

    client.app[WORKERS]._tasks[0].cancel()  # a loop that died, whatever the reason
    await asyncio.sleep(0.05)
    response = await client.get("/api/v1/health/ready")
    assert response.status == 503
    assert (await response.json())["checks"]["workers"]["status"] == "down"


# -- a full disk -------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the disk-full test runs in CI as root)")
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)], check=False)
    if mounted.returncode != 0:
        pytest.skip("this sandbox does not allow mounting a tmpfs")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system with one file; returns it (delete it to free the disk)."""
    ballast = folder / "ballast"
    with ballast.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return ballast


async def test_disk_full_then_freed_loses_nothing(
    aiohttp_client: Client, tmp_path: Path, small_disk: Path
) -> None:
    config = make_config(tmp_path, memory={"enabled": False}, storage={"path": str(small_disk / "state")})
    client = await aiohttp_client(init_app(config))
    assert (await post(client, alert_group("BeforeTheDiskFilled"))).status == 202
    await wait_for(lambda: reported(client, 1))

    ballast = fill(small_disk)
    accepted, refused = 1, 0
    for n in range(200):  # bounded: a full disk refuses a commit within a few large bodies
        status = (await post(client, alert_group(f"WhileFull{n}", "x" * 8000))).status
        assert status in (202, 503), status
        accepted += status == 202
        refused += status == 503
        if refused:
            break
    assert refused, "the store never refused an alert on a full disk"

    ballast.unlink()
    assert (await post(client, alert_group("AfterFreeing"))).status == 202
    accepted += 1
    await wait_for(lambda: reported(client, accepted), within=60)
    assert client.app[WORKERS].alive
    assert (await client.get("/api/v1/health/ready")).status == 200


# -- the outbox while the store cannot record ----------------------------------------------------------


class UnrecordingStore:
    """One pending action; recording its delivery fails ``failures`` times (a full disk)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.item = OutboxItem(1, "7", "file", "analyze", {"x": 1}, 0, time.time())
        self.delivered = False

    async def due_actions(
        self, now: float, limit: int = 200, exclude: Sequence[int] = ()
    ) -> list[OutboxItem]:
        return [] if self.delivered or self.item.id in exclude else [self.item]

    async def action_delivered(self, item: OutboxItem, ref: str | None) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database or disk is full")
        self.delivered = True

    async def action_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> None:
        raise AssertionError(f"a delivery that went out was treated as failed: {error}")


class CountingSink:
    name = "file"

    def __init__(self) -> None:
        self.sent = 0

    async def deliver(self, item: OutboxItem) -> str | None:
        self.sent += 1
        return None


async def test_a_delivery_the_store_could_not_record_is_recorded_not_sent_again() -> None:
    store, sink = UnrecordingStore(failures=2), CountingSink()
    dispatcher = Dispatcher(store, {"file": sink}, Metrics(), timeout=1.0)  # type: ignore[arg-type]
    await dispatcher.start()
    try:

        async def recorded() -> bool:
            return store.delivered

        await wait_for(recorded, within=15)
    finally:
        await dispatcher.stop(deadline=1.0)
    assert sink.sent == 1


def test_the_heap_settings_take_on_glibc() -> None:
    """serve pins glibc's mmap threshold so churned detector buffers go back to the system."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert limit_fragmentation()
