"""Qdrant server backend through qdrant-client's async client: a Qdrant server or cluster (``url`` plus
``QDRANT_API_KEY``), or qdrant-client's own local mode (``path``), which the benchmark compares against."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from qdrant_client import AsyncQdrantClient, models

from agentic_observability.errors import MemoryUnavailableError
from agentic_observability.memory.backend import INDEXED_FIELDS, VECTOR_NAME, Hit

COLLECTION = "agentic_obs_incidents"
T = TypeVar("T")


class QdrantServerBackend:
    def __init__(
        self, client: AsyncQdrantClient, where: str, collection: str = COLLECTION, indexes: bool = True
    ) -> None:
        self.name = "qdrant"
        self._indexes = indexes  # local mode ignores payload indexes (and warns about them)
        self._client = client
        self._where = where
        self._collection = collection

    @classmethod
    def connect(cls, url: str, api_key: str | None, timeout: float) -> QdrantServerBackend:
        client = AsyncQdrantClient(url=url, api_key=api_key, timeout=max(int(timeout), 1))
        return cls(client, url)

    @classmethod
    def local(cls, path: str) -> QdrantServerBackend:
        return cls(AsyncQdrantClient(path=path), f"local:{path}", indexes=False)

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except Exception as exc:  # httpx, grpc and qdrant errors all mean "memory unavailable"
            raise MemoryUnavailableError(f"qdrant at {self._where}: {exc}") from exc

    async def open(self, dimension: int) -> None:
        if await self._call(self._client.collection_exists(self._collection)):
            info = await self._call(self._client.get_collection(self._collection))
            vectors = info.config.params.vectors
            size = vectors[VECTOR_NAME].size if isinstance(vectors, dict) and VECTOR_NAME in vectors else None
            if size != dimension:
                raise MemoryUnavailableError(
                    f"collection {self._collection} at {self._where} holds vectors of size {size}; "
                    f"this embedder has dimension {dimension}"
                )
            return
        params = {VECTOR_NAME: models.VectorParams(size=dimension, distance=models.Distance.COSINE)}
        await self._call(self._client.create_collection(self._collection, vectors_config=params))
        for field in INDEXED_FIELDS if self._indexes else ():
            await self._call(
                self._client.create_payload_index(
                    self._collection, field, field_schema=models.PayloadSchemaType.KEYWORD
                )
            )

    async def upsert(self, point_id: int, vector: Sequence[float], payload: Mapping[str, Any]) -> None:
        await self.upsert_many([(point_id, vector, payload)])

    async def upsert_many(self, points: Sequence[tuple[int, Sequence[float], Mapping[str, Any]]]) -> None:
        batch = [
            models.PointStruct(id=i, vector={VECTOR_NAME: list(v)}, payload=dict(p)) for i, v, p in points
        ]
        await self._call(self._client.upsert(self._collection, batch, wait=True))

    async def search(
        self,
        vector: Sequence[float],
        limit: int,
        exclude: int | None = None,
        filters: Sequence[Mapping[str, str] | None] = (None,),
    ) -> list[list[Hit]]:
        requests = [
            models.QueryRequest(
                query=list(vector),
                using=VECTOR_NAME,
                filter=_filter(exclude, f),
                limit=limit,
                with_payload=True,
            )
            for f in filters
        ]
        responses = await self._call(self._client.query_batch_points(self._collection, requests))
        return [[Hit(int(p.id), float(p.score), p.payload or {}) for p in r.points] for r in responses]

    async def sample_payload(self) -> dict[str, Any] | None:
        records, _ = await self._call(self._client.scroll(self._collection, limit=1, with_payload=True))
        return dict(records[0].payload or {}) if records else None

    async def count(self) -> int:
        result = await self._call(self._client.count(self._collection, exact=True))
        return int(result.count)

    async def scan(
        self, offset: int | None, limit: int, fields: Sequence[str]
    ) -> tuple[list[tuple[int, Mapping[str, Any]]], int | None]:
        records, next_offset = await self._call(
            self._client.scroll(
                self._collection, limit=limit, offset=offset, with_payload=list(fields), with_vectors=False
            )
        )
        page: list[tuple[int, Mapping[str, Any]]] = [(int(r.id), dict(r.payload or {})) for r in records]
        return page, None if next_offset is None else int(next_offset)

    async def delete(self, point_ids: Sequence[int]) -> None:
        selector = models.PointIdsList(points=list(point_ids))
        await self._call(self._client.delete(self._collection, points_selector=selector, wait=True))

    async def close(self) -> None:
        await self._client.close()


def _filter(exclude: int | None, any_of: Mapping[str, str] | None) -> models.Filter | None:
    must_not: list[Any] = [models.HasIdCondition(has_id=[exclude])] if exclude is not None else []
    should: list[Any] = [
        models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in (any_of or {}).items() if v
    ]
    if not must_not and not should:
        return None
    return models.Filter(must_not=must_not or None, should=should or None)
