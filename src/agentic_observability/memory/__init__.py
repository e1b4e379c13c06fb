"""Incident memory: past incidents as vectors in Qdrant (Edge in process, or a server), recalled by
similarity with boosts for the same alert and the same service.

One class, ``IncidentMemory``, holds the behaviour; the two backends (``edge.py``, ``server.py``) only
store and search vectors, so both behave the same and pass the same tests. That includes the cap
(``memory.max_points``): past it, the oldest incidents nobody confirmed are forgotten first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agentic_observability.config import Config
from agentic_observability.errors import ConfigError, EmbedderMismatchError, MemoryUnavailableError
from agentic_observability.memory.backend import Hit, VectorBackend
from agentic_observability.memory.edge import EdgeBackend
from agentic_observability.memory.embed import Embedder, HashingEmbedder, make_embedder
from agentic_observability.memory.server import QdrantServerBackend
from agentic_observability.models import PastIncident, SimilarIncident

__all__ = [
    "EdgeBackend",
    "Embedder",
    "HashingEmbedder",
    "IncidentMemory",
    "QdrantServerBackend",
    "ReconnectingMemory",
    "VectorBackend",
    "open_memory",
]

# score = 0.8 x cosine similarity + 0.1 for the same alert + 0.1 for the same service: stays in [0, 1]
SIMILARITY_WEIGHT = 0.8
SAME_ALERT_BOOST = 0.1
SAME_SERVICE_BOOST = 0.1
MIN_SCORE = 0.4  # below this, a past incident is not "seen before", only vaguely alike
EMBEDDER_KEY = "_embedder"
# At the cap, forget this share of max_points more than strictly needed, so the next remembers (that
# many) need no count; and scan and delete in pages of this many points.
CAP_SLACK = 0.01
SCAN_PAGE = 1000

log = logging.getLogger(__name__)
Point = tuple[int, Sequence[float], Mapping[str, Any]]


class IncidentMemory:
    def __init__(self, backend: VectorBackend, embedder: Embedder, max_points: int | None = None) -> None:
        self.backend = backend
        self.embedder = embedder
        self.max_points = max_points  # None: unbounded
        # An upper bound on the points stored (a replaced point counts twice), so remembering counts
        # the collection only when the bound says it may be past the cap. None until first counted.
        self._size_bound: int | None = None
        self._cap_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, backend: VectorBackend, embedder: Embedder, max_points: int | None = None
    ) -> IncidentMemory:
        try:
            await backend.open(embedder.dimension)
            sample = await backend.sample_payload()
        except BaseException:
            await backend.close()  # release its thread or connection pool; a retry opens a new one
            raise
        stored = sample.get(EMBEDDER_KEY) if sample else None
        if stored is not None and stored != embedder.name:
            await backend.close()
            raise EmbedderMismatchError(
                f"the incident memory ({backend.name}) was written with embedder {stored!r}, "
                f"but memory.embedder is {embedder.name!r}; mixing them makes recall meaningless. "
                "Set memory.embedder back, or point storage.path (or the collection) somewhere new"
            )
        return cls(backend, embedder, max_points)

    async def remember(self, incident: PastIncident) -> None:
        """Insert or replace what memory keeps of one incident (idempotent: keyed by incident id)."""
        vector = (await self.embedder.embed([incident]))[0]
        payload = {**incident.to_payload(), EMBEDDER_KEY: self.embedder.name}
        await self._store([(int(incident.incident_id), vector, payload)])

    async def remember_many(self, incidents: list[PastIncident]) -> None:
        vectors = await self.embedder.embed(incidents)
        points = [
            (int(i.incident_id), v, {**i.to_payload(), EMBEDDER_KEY: self.embedder.name})
            for i, v in zip(incidents, vectors, strict=True)
        ]
        await self._store(points)

    async def _store(self, points: Sequence[Point]) -> None:
        if self.max_points is None:
            await self.backend.upsert_many(points)
            return
        async with self._cap_lock:  # two remembers must not both evict for the same excess
            await self.backend.upsert_many(points)
            self._size_bound = await self._enforce_cap(self.max_points, points)

    async def _enforce_cap(self, cap: int, written: Sequence[Point]) -> int:
        """Forget the oldest points while past ``cap``; returns the new bound on points stored. Runs
        after the upsert, so a replaced point does not count as one more."""
        if self._size_bound is not None and self._size_bound + len(written) <= cap:
            return self._size_bound + len(written)
        size = await self.backend.count()
        if size <= cap:
            return size
        fresh = {point_id for point_id, _, _ in written}
        return size - await self._forget_oldest(size - cap + int(cap * CAP_SLACK), fresh)

    async def _forget_oldest(self, n: int, fresh: set[int]) -> int:
        """Delete ``n`` points: the oldest unconfirmed first (oldest: lowest incident id, as ids only
        grow), then the oldest confirmed; the points just written (``fresh``) only when a bulk load
        alone passes the cap."""
        buckets = await self._oldest(n, fresh)
        victims = [point_id for bucket in buckets for point_id in bucket][:n]
        for start in range(0, len(victims), SCAN_PAGE):
            await self.backend.delete(victims[start : start + SCAN_PAGE])
        confirmed = len(set(victims) & {*buckets[1], *buckets[3]})
        log.info(
            "incident memory reached memory.max_points (%s): forgot the %d oldest incidents (%d confirmed)",
            self.max_points,
            len(victims),
            confirmed,
        )
        return len(victims)

    async def _oldest(self, n: int, fresh: set[int]) -> list[list[int]]:
        """Up to ``n`` point ids of each kind, oldest first: old unconfirmed, old confirmed, fresh
        unconfirmed, fresh confirmed; the scan (in id order) stops once there are ``n`` of the first.
        The split happens here, not in a backend filter: Qdrant Edge turns a boolean match value into
        the integer 1, which matches no stored ``true``."""
        buckets: list[list[int]] = [[], [], [], []]
        offset: int | None = None
        while True:
            page, offset = await self.backend.scan(offset, SCAN_PAGE, ("confirmed",))
            for point_id, payload in page:
                bucket = buckets[2 * (point_id in fresh) + bool(payload.get("confirmed"))]
                if len(bucket) < n:
                    bucket.append(point_id)
            if len(buckets[0]) >= n or offset is None:
                return buckets

    async def recall(self, query: PastIncident, limit: int = 3) -> list[SimilarIncident]:
        """The most similar past incidents, best first, excluding the query's own incident."""
        vector = (await self.embedder.embed([query]))[0]
        # Besides the nearest overall, a filtered search guarantees same-alert/same-service candidates
        # in a large memory; both go in one round trip. The query's own incident is dropped here rather
        # than by a filter: an id filter on the unfiltered search costs more than the extra point.
        related = {"alertname": query.alertname, "service": query.service, "cause": query.cause}
        near, same = await self.backend.search(vector, limit * 3 + 1, None, (None, related))
        own = int(query.incident_id) if query.incident_id.isascii() and query.incident_id.isdigit() else None
        # Equal scores (incidents with the same signature) go newest first: deterministic, and the
        # latest fix is the likeliest to still apply.
        ranked = sorted(
            ((self._boosted(hit, query), hit) for hit in _unique(near + same) if hit.point_id != own),
            key=lambda pair: (round(pair[0], 6), float(pair[1].payload.get("started_at") or 0.0)),
            reverse=True,
        )
        return [_similar(hit, score) for score, hit in ranked[:limit] if score >= MIN_SCORE]

    @staticmethod
    def _boosted(hit: Hit, query: PastIncident) -> float:
        score = SIMILARITY_WEIGHT * max(hit.score, 0.0)
        if query.alertname and hit.payload.get("alertname") == query.alertname:
            score += SAME_ALERT_BOOST
        if query.cause and query.cause in (hit.payload.get("cause"), hit.payload.get("service")):
            score += SAME_SERVICE_BOOST
        return score

    async def count(self) -> int:
        return await self.backend.count()

    async def ping(self) -> None:
        await self.backend.count()

    async def close(self) -> None:
        await self.backend.close()


def _unique(hits: list[Hit]) -> list[Hit]:
    seen: dict[int, Hit] = {}
    for hit in hits:
        seen.setdefault(hit.point_id, hit)
    return list(seen.values())


def _similar(hit: Hit, score: float) -> SimilarIncident:
    past = PastIncident.from_payload(hit.payload)
    return SimilarIncident(
        id=str(hit.point_id),
        score=score,
        root_cause=past.cause,
        resolution=past.resolution,
        confirmed=past.confirmed,
        title=past.title,
        started_at=past.started_at,
    )


class ReconnectingMemory:
    """Incident memory that may be down: opens lazily and retries the connection at most every
    ``retry_every`` seconds, so the service starts and runs while Qdrant is away (recall reports it,
    remembering waits in the outbox) and catches up when it returns."""

    def __init__(self, opener: Callable[[], Awaitable[IncidentMemory]], retry_every: float = 5.0) -> None:
        self._opener = opener
        self._retry_every = retry_every
        self._memory: IncidentMemory | None = None
        self._last_try = -float("inf")
        self._lock = asyncio.Lock()
        self.problem = "not connected yet"

    async def connect(self) -> IncidentMemory:
        if self._memory is not None:
            return self._memory
        async with self._lock:
            if self._memory is None:
                if time.monotonic() - self._last_try < self._retry_every:
                    raise MemoryUnavailableError(f"incident memory unavailable: {self.problem}")
                self._last_try = time.monotonic()
                try:
                    self._memory = await self._opener()
                except MemoryUnavailableError as exc:
                    self.problem = str(exc)
                    raise
                self.problem = ""
        return self._memory

    async def remember(self, incident: PastIncident) -> None:
        await (await self.connect()).remember(incident)

    async def recall(self, query: PastIncident, limit: int = 3) -> list[SimilarIncident]:
        return await (await self.connect()).recall(query, limit)

    async def ping(self) -> None:
        await (await self.connect()).ping()

    async def close(self) -> None:
        if self._memory is not None:
            await self._memory.close()


async def open_memory(
    config: Config, path: str, hf_client_factory: Callable[[], Any] | None = None
) -> IncidentMemory:
    """The memory the config asks for: Qdrant Edge under ``path``, or a Qdrant server at memory.url."""
    settings = config.file.memory
    embedder = await make_embedder(settings.embedder, hf_client_factory)
    backend: VectorBackend
    if settings.backend == "edge":
        backend = EdgeBackend(path)
    else:
        if settings.url is None:
            raise ConfigError(f"{config.source}: memory.backend is qdrant but memory.url is not set")
        key = config.secrets.qdrant_api_key
        backend = QdrantServerBackend.connect(
            settings.url, key.get_secret_value() if key else None, settings.timeout
        )
    return await IncidentMemory.open(backend, embedder, settings.max_points)
