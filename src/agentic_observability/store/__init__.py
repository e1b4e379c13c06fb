"""Durable state behind one protocol (``base.Store``); ``open_store`` picks the backend.

``intake.py`` holds the pure rules that turn accepted alerts into incidents and jobs; each backend
applies them in one transaction. ``sqlite/`` is the embedded default (one replica); ``postgres/``
serves several replicas of the service. ``rows.py`` turns either backend's rows into records.
"""

from __future__ import annotations

from pathlib import Path

from agentic_observability.config import StorageConfig
from agentic_observability.store.base import AcceptResult, Job, Store
from agentic_observability.store.sqlite.store import SqliteStore

__all__ = ["AcceptResult", "Job", "SqliteStore", "Store", "open_store"]


async def open_store(
    storage: StorageConfig | str | Path, password: str | None = None, *, take_over: bool = False
) -> Store:
    """The store ``storage`` configures: ``storage.backend: postgres`` connects to
    ``storage.postgres.url`` (``password``: POSTGRES_PASSWORD, when set); otherwise a SQLite file
    under ``storage.path`` (a bare path means that), created on first use. ``take_over`` (the
    service, not tools such as ``agentic-obs replay``): on SQLite, free every claim an earlier process
    left (one service process per file); PostgreSQL ignores it (claims there run out by lease)."""
    if not isinstance(storage, StorageConfig):
        return await SqliteStore.open(storage, take_over=take_over)
    if storage.backend == "postgres":
        from agentic_observability.store.postgres.store import PostgresStore  # psycopg only when used

        return await PostgresStore.open(storage.postgres, password)
    return await SqliteStore.open(storage.path, take_over=take_over)
