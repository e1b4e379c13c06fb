"""Incident memory: one suite, run against every backend (Qdrant Edge always; qdrant-client's local mode
always; a real Qdrant server when QDRANT_URL is set)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from agentic_observability.errors import EmbedderMismatchError, MemoryUnavailableError
from agentic_observability.memory import (
    EdgeBackend,
    HashingEmbedder,
    IncidentMemory,
    QdrantServerBackend,
    open_memory,
)
from agentic_observability.memory import edge as edge_module
from agentic_observability.memory.backend import VectorBackend
from agentic_observability.models import PastIncident
from agentic_observability.service import init_app
from tests.conftest import auth_headers, make_config

BACKENDS = ["edge", "qdrant-local", "qdrant-server"]


def make_backend(kind: str, path: Path) -> VectorBackend:
    if kind == "edge":
        return EdgeBackend(path / "edge")
    if kind == "qdrant-local":
        return QdrantServerBackend.local(str(path / "local"))
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set: the Qdrant server run of this suite is skipped")
    backend = QdrantServerBackend.connect(url, os.environ.get("QDRANT_API_KEY"), 5.0)
    backend._collection = f"test_{path.name}"  # one collection per test
    return backend


@pytest.fixture(params=BACKENDS)
async def memory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IncidentMemory]:
    opened = await IncidentMemory.open(make_backend(request.param, tmp_path), HashingEmbedder())
    yield opened
    await opened.close()


def past(
    incident_id: int,
    cause: str,
    signal: str,
    alertname: str = "HighLatency",
    resolution: str = "",
    confirmed: bool = False,
) -> PastIncident:
    return PastIncident(
        incident_id=str(incident_id),
        title=f"{alertname} on front-end",
        alertname=alertname,
        service="front-end",
        labels={"alertname": alertname, "service": "front-end", "severity": "page"},
        started_at=1_700_000_000.0 + incident_id,
        cause=cause,
        signals=(f"{cause}:{signal}", f"{cause}:latency_p90"),
        resolution=resolution,
        confirmed=confirmed,
    )


async def test_recall_prefers_same_cause_and_signal(memory: IncidentMemory) -> None:
    await memory.remember(past(1, "carts", "cpu", resolution="scaled carts"))
    await memory.remember(past(2, "orders", "memory", resolution="restarted orders"))
    await memory.remember(past(3, "carts", "memory"))
    recalled = await memory.recall(past(10, "carts", "cpu"))
    assert [r.id for r in recalled][:1] == ["1"]
    assert recalled[0].root_cause == "carts" and recalled[0].resolution == "scaled carts"
    assert await memory.count() == 3


async def test_recall_never_returns_the_query_itself(memory: IncidentMemory) -> None:
    await memory.remember(past(1, "carts", "cpu"))
    assert await memory.recall(past(1, "carts", "cpu")) == []


async def test_unrelated_incidents_are_not_called_seen_before(memory: IncidentMemory) -> None:
    await memory.remember(past(1, "carts", "cpu", alertname="DiskFull"))
    query = PastIncident("9", "x", "CertificateExpiry", "ingress", {"alertname": "CertificateExpiry"}, 0.0)
    assert await memory.recall(query) == []


async def test_remembering_again_replaces_the_record(memory: IncidentMemory) -> None:
    await memory.remember(past(1, "carts", "cpu"))
    await memory.remember(past(1, "orders", "cpu", resolution="rolled back orders", confirmed=True))
    recalled = await memory.recall(past(2, "orders", "cpu"))
    assert (recalled[0].id, recalled[0].root_cause, recalled[0].confirmed) == ("1", "orders", True)
    assert await memory.count() == 1


async def test_memory_persists_across_reopen(tmp_path: Path) -> None:
    first = await IncidentMemory.open(EdgeBackend(tmp_path / "edge"), HashingEmbedder())
    await first.remember(past(1, "carts", "cpu"))
    await first.close()
    again = await IncidentMemory.open(EdgeBackend(tmp_path / "edge"), HashingEmbedder())
    assert [r.id for r in await again.recall(past(2, "carts", "cpu"))] == ["1"]
    await again.close()


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
async def test_another_embedder_is_refused(tmp_path: Path, kind: str) -> None:
    first = await IncidentMemory.open(make_backend(kind, tmp_path), HashingEmbedder(256))
    await first.remember(past(1, "carts", "cpu"))
    await first.close()

    class Renamed(HashingEmbedder):
        def __init__(self) -> None:
            super().__init__(256)
            self.name = "some-other-model"

    with pytest.raises(EmbedderMismatchError, match="some-other-model"):
        await IncidentMemory.open(make_backend(kind, tmp_path), Renamed())


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
async def test_another_dimension_is_refused(tmp_path: Path, kind: str) -> None:
    first = await IncidentMemory.open(make_backend(kind, tmp_path), HashingEmbedder(256))
    await first.close()
    with pytest.raises(Exception, match="dimension 128"):
        await IncidentMemory.open(make_backend(kind, tmp_path), HashingEmbedder(128))


# -- memory.max_points ---------------------------------------------------------------------------


async def stored_ids(memory: IncidentMemory) -> list[int]:
    page, _ = await memory.backend.scan(None, 1000, ())
    return [point_id for point_id, _ in page]


async def test_past_the_cap_the_oldest_unconfirmed_go_first(
    memory: IncidentMemory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentic_observability.memory")
    memory.max_points = 5
    for n in range(1, 10):
        await memory.remember(past(n, "carts", "cpu", confirmed=n in (2, 4)))
    assert await stored_ids(memory) == [2, 4, 7, 8, 9]
    for n in range(10, 13):
        await memory.remember(past(n, "carts", "cpu", confirmed=True))
    assert await stored_ids(memory) == [2, 4, 10, 11, 12]  # all confirmed now

    await memory.remember(past(13, "carts", "cpu", confirmed=True))
    assert await stored_ids(memory) == [4, 10, 11, 12, 13]  # then the oldest confirmed goes
    assert "forgot the 1 oldest incidents (1 confirmed)" in caplog.messages[-1]
    await memory.remember(past(14, "carts", "cpu"))
    assert await stored_ids(memory) == [10, 11, 12, 13, 14]  # and the newest always stays
    await memory.remember(past(12, "orders", "cpu", confirmed=True))  # replacing adds nothing
    assert await stored_ids(memory) == [10, 11, 12, 13, 14]


async def test_remember_many_keeps_to_the_cap(memory: IncidentMemory) -> None:
    memory.max_points = 10
    await memory.remember_many([past(n, "carts", "cpu", confirmed=n == 1) for n in range(1, 16)])
    assert await stored_ids(memory) == [1, *range(7, 16)]


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
async def test_the_cap_counts_the_memory_rarely(tmp_path: Path, kind: str) -> None:
    memory = await IncidentMemory.open(make_backend(kind, tmp_path), HashingEmbedder(), max_points=200)
    count = memory.backend.count
    calls = 0

    async def counting() -> int:
        nonlocal calls
        calls += 1
        return await count()

    memory.backend.count = counting  # type: ignore[method-assign]
    for n in range(1, 301):
        await memory.remember(past(n, "carts", "cpu"))
    assert 190 <= await count() <= 200
    # once at first; past the cap, once per 3 remembers (each count forgets 1% of 200 ahead), not each time
    assert calls <= 35, calls
    await memory.close()


async def test_edge_vacuums_what_the_cap_deleted(tmp_path: Path) -> None:
    """Qdrant Edge keeps deleted points in its segment until optimized: a capped memory under a steady
    stream of incidents must rebuild it now and then, and recall the same incidents afterwards."""
    backend = EdgeBackend(tmp_path / "edge")
    memory = await IncidentMemory.open(backend, HashingEmbedder(), max_points=300)
    for n in range(1, 1001):
        await memory.remember(past(n, "carts", "cpu"))
    assert backend.vacuums == 0  # 700 deleted: under the floor of VACUUM_MIN_DELETED
    for n in range(1001, 1601):
        await memory.remember(past(n, "orders" if n == 1600 else "carts", "cpu"))
    assert backend.vacuums == 1
    ids = await stored_ids(memory)
    assert len(ids) <= 300 and ids[-1] == 1600 and min(ids) > 1000
    hits = await memory.recall(past(1601, "orders", "cpu"))
    assert hits[0].id == "1600"
    await memory.close()


async def test_open_memory_applies_the_configured_cap(tmp_path: Path) -> None:
    config = make_config(tmp_path, memory={"max_points": 7})
    memory = await open_memory(config, str(tmp_path / "memory"))
    assert memory.max_points == 7
    await memory.close()


# -- Qdrant Edge on a full disk ------------------------------------------------------------------------


def fill_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = shutil.disk_usage

    def nearly_full(path: str | os.PathLike[str]) -> object:
        return real(path)._replace(free=free)

    monkeypatch.setattr(edge_module.shutil, "disk_usage", nearly_full)


async def test_edge_is_not_opened_on_a_nearly_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk(monkeypatch, 1_000_000)
    folder = tmp_path / "edge"
    with pytest.raises(MemoryUnavailableError, match="has 1000000 bytes free") as raised:
        await IncidentMemory.open(EdgeBackend(folder), HashingEmbedder())
    assert str(folder) in str(raised.value)
    assert not any(folder.iterdir())  # no shard was created


async def test_edge_stops_writing_when_the_disk_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await IncidentMemory.open(EdgeBackend(tmp_path / "edge"), HashingEmbedder())
    await memory.remember(past(1, "carts", "cpu"))
    fill_disk(monkeypatch, edge_module.MIN_FREE_BYTES - 1)
    with pytest.raises(MemoryUnavailableError, match="bytes free"):
        await memory.remember(past(2, "carts", "cpu"))  # the outbox retries it later
    monkeypatch.undo()
    await memory.remember(past(2, "carts", "cpu"))
    assert await memory.count() == 2
    await memory.close()


async def test_the_service_starts_without_memory_on_a_full_disk(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk(monkeypatch, 0)
    client = await aiohttp_client(init_app(make_config(tmp_path)))
    response = await client.get("/api/v1/health/ready", headers=auth_headers())
    memory = (await response.json())["checks"]["memory"]
    assert memory["status"] == "down" and "0 bytes free" in memory["detail"]
