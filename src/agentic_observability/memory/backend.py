"""The vector-store interface both memory backends implement (Qdrant Edge and a Qdrant server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

VECTOR_NAME = "incident"
INDEXED_FIELDS = ("alertname", "service", "cause")  # the fields recall filters on


@dataclass(frozen=True)
class Hit:
    point_id: int
    score: float
    payload: Mapping[str, Any]


class VectorBackend(Protocol):
    name: str

    async def open(self, dimension: int) -> None:
        """Create the collection (cosine, ``dimension``) with payload indexes, or open the existing one;
        refuses an existing collection of another dimension."""
        ...

    async def upsert(self, point_id: int, vector: Sequence[float], payload: Mapping[str, Any]) -> None: ...

    async def upsert_many(self, points: Sequence[tuple[int, Sequence[float], Mapping[str, Any]]]) -> None:
        """Bulk load (backfills, benchmarks): one call per batch instead of one per point."""
        ...

    async def search(
        self,
        vector: Sequence[float],
        limit: int,
        exclude: int | None = None,
        filters: Sequence[Mapping[str, str] | None] = (None,),
    ) -> list[list[Hit]]:
        """Nearest points, once per filter, in one round trip. A filter keeps only points matching at
        least one of its field=value pairs; None means unfiltered."""
        ...

    async def sample_payload(self) -> dict[str, Any] | None:
        """Any one stored payload (to check which embedder wrote the collection)."""
        ...

    async def count(self) -> int: ...

    async def scan(
        self, offset: int | None, limit: int, fields: Sequence[str]
    ) -> tuple[list[tuple[int, Mapping[str, Any]]], int | None]:
        """Up to ``limit`` points in ascending id order from ``offset`` (None: the lowest id), each with
        only ``fields`` of its payload; and the offset of the next page (None after the last)."""
        ...

    async def delete(self, point_ids: Sequence[int]) -> None: ...

    async def close(self) -> None: ...
