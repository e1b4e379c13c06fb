"""Qdrant Edge backend: an in-process shard on local disk (the embedded default).

qdrant-edge-py is synchronous; every call runs on one dedicated thread, so the event loop never
blocks and the shard is never touched from two threads at once.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import qdrant_edge as qe

from agentic_observability.errors import MemoryUnavailableError
from agentic_observability.memory.backend import INDEXED_FIELDS, VECTOR_NAME, Hit

T = TypeVar("T")
# Measured on 100k synthetic incidents (top 9): ef 128 finds 96.6% of the exact neighbours (many are
# ties) against 94.7% at the default beam, for about 0.05 ms more per search.
_SEARCH = qe.SearchParams(hnsw_ef=128)
# Qdrant Edge maps its files into memory: on a full disk a write through the mapping faults (SIGBUS)
# and kills the whole service instead of raising. Below this much free space it is not opened or
# written to; the service runs without memory until space is freed (the opener retries).
MIN_FREE_BYTES = 64 * 1_048_576
# Qdrant Edge runs no background optimizer: a deleted point stays in its segment, in RAM and on disk,
# until the shard is optimized. At memory.max_points every new incident deletes an old one, so the
# segment (and RSS, which counts its mapped pages) grew without end under a steady stream of
# incidents. Once as many points were deleted as remain (and at least this many), rebuild and flush.
VACUUM_MIN_DELETED = 1000


class EdgeBackend:
    name = "edge"

    def __init__(self, path: str | Path, *, payload_in_ram: bool = False) -> None:
        self._path = Path(path)
        self._payload_in_ram = payload_in_ram
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._shard: qe.EdgeShard | None = None
        self._deleted = 0  # points deleted since the last vacuum
        self.vacuums = 0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (OSError, RuntimeError, ValueError) as exc:
            raise MemoryUnavailableError(f"qdrant edge at {self._path}: {exc}") from exc

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise MemoryUnavailableError("qdrant edge shard is not open")
        return self._shard

    async def open(self, dimension: int) -> None:
        self._shard = await self._run(self._open_sync, dimension)

    def _open_sync(self, dimension: int) -> qe.EdgeShard:
        # Payloads on disk by default: in RAM, Edge's payload storage kept growing under the
        # delete-and-insert churn of memory.max_points (anonymous RSS +1.5 MiB a minute in the churn
        # soak, which the vacuum does not give back; flat on disk). Reading payloads from disk makes
        # a recall slower at 100k incidents: bench/memory_recall.py prints both, side by side.
        config = qe.EdgeConfig(
            vectors={VECTOR_NAME: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            on_disk_payload=not self._payload_in_ram,
        )
        self._path.mkdir(parents=True, exist_ok=True)
        self._check_free_space()
        if (self._path / "edge_config.json").exists() or any(self._path.glob("segments*")):
            try:
                shard = qe.EdgeShard.load(str(self._path), config)
            except Exception as exc:  # the binding raises plain Exception on an incompatible config
                raise MemoryUnavailableError(
                    f"the incident memory at {self._path} was created with other vector settings "
                    f"(this embedder has dimension {dimension}): {exc}"
                ) from exc
            return shard
        shard = qe.EdgeShard.create(str(self._path), config)
        for field in INDEXED_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        return shard

    def _check_free_space(self) -> None:
        free = shutil.disk_usage(self._path).free
        if free < MIN_FREE_BYTES:
            raise MemoryUnavailableError(
                f"the disk holding the incident memory at {self._path} has {free} bytes free; Qdrant Edge "
                f"needs at least {MIN_FREE_BYTES} bytes ({MIN_FREE_BYTES // 1_048_576} MiB), as a full "
                "disk would crash the process: free some space or move storage.path"
            )

    def _update(self, operation: qe.UpdateOperation) -> None:
        self._check_free_space()  # a statvfs call: microseconds, against a crash
        self.shard.update(operation)

    async def upsert(self, point_id: int, vector: Sequence[float], payload: Mapping[str, Any]) -> None:
        await self.upsert_many([(point_id, vector, payload)])

    async def upsert_many(self, points: Sequence[tuple[int, Sequence[float], Mapping[str, Any]]]) -> None:
        batch = [qe.Point(id=i, vector={VECTOR_NAME: list(v)}, payload=dict(p)) for i, v, p in points]
        await self._run(self._update, qe.UpdateOperation.upsert_points(batch))

    async def search(
        self,
        vector: Sequence[float],
        limit: int,
        exclude: int | None = None,
        filters: Sequence[Mapping[str, str] | None] = (None,),
    ) -> list[list[Hit]]:
        query = qe.Query.Nearest(list(vector), using=VECTOR_NAME)
        batch = qe.QueryBatchRequest(
            [
                qe.QueryRequest(
                    limit=limit, query=query, with_payload=True, filter=_filter(exclude, f), params=_SEARCH
                )
                for f in filters
            ]
        )
        results = await self._run(self.shard.query_batch, batch)
        return [[Hit(int(p.id), float(p.score), p.payload or {}) for p in points] for points in results]

    async def sample_payload(self) -> dict[str, Any] | None:
        records, _ = await self._run(self.shard.scroll, qe.ScrollRequest(limit=1, with_payload=True))
        return dict(records[0].payload or {}) if records else None

    async def count(self) -> int:
        return int(await self._run(self.shard.count, qe.CountRequest()))

    async def scan(
        self, offset: int | None, limit: int, fields: Sequence[str]
    ) -> tuple[list[tuple[int, Mapping[str, Any]]], int | None]:
        request = qe.ScrollRequest(offset=offset, limit=limit, with_payload=list(fields), with_vector=False)
        records, next_offset = await self._run(self.shard.scroll, request)
        page: list[tuple[int, Mapping[str, Any]]] = [(int(r.id), dict(r.payload or {})) for r in records]
        return page, None if next_offset is None else int(next_offset)

    async def delete(self, point_ids: Sequence[int]) -> None:
        await self._run(self._delete_sync, list(point_ids))

    def _delete_sync(self, point_ids: list[int]) -> None:
        self._update(qe.UpdateOperation.delete_points(list[int | UUID | str](point_ids)))
        self._deleted += len(point_ids)
        if self._deleted >= max(VACUUM_MIN_DELETED, self.shard.count(qe.CountRequest())):
            self._vacuum_sync()

    def _vacuum_sync(self) -> None:
        """Rebuild the segments without their deleted points and flush, so the old files go."""
        self._check_free_space()  # the rebuild writes a new segment beside the old one
        self.shard.optimize()
        self.shard.flush()
        self._deleted = 0
        self.vacuums += 1

    async def optimize(self) -> None:
        await self._run(self._vacuum_sync)

    async def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            await self._run(shard.close)
        self._executor.shutdown(wait=True)


def _filter(exclude: int | None, any_of: Mapping[str, str] | None) -> qe.Filter | None:
    must_not: list[Any] | None = [qe.HasIdCondition({exclude})] if exclude is not None else None
    should: list[Any] = [
        qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in (any_of or {}).items() if v
    ]
    if not must_not and not should:
        return None
    return qe.Filter(must_not=must_not, should=should or None)
