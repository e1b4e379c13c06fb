"""Incident memory: one suite, run against every backend (Qdrant Edge always; qdrant-client's local mode
always; a real Qdrant server when QDRANT_URL is set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentic_observability.errors import EmbedderMismatchError
from agentic_observability.memory import EdgeBackend, HashingEmbedder, IncidentMemory, QdrantServerBackend
from agentic_observability.memory.backend import VectorBackend
from agentic_observability.models import PastIncident

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
