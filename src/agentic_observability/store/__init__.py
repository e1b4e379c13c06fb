"""Durable state behind one protocol (``base.Store``); ``open_store`` picks the backend.

``intake.py`` holds the pure rules that turn accepted alerts into incidents and jobs; each backend
applies them in one transaction. ``sqlite/`` is the embedded default.
"""

from __future__ import annotations

from pathlib import Path

from agentic_observability.store.base import AcceptResult, Job, Store
from agentic_observability.store.sqlite.store import SqliteStore

__all__ = ["AcceptResult", "Job", "SqliteStore", "Store", "open_store"]


async def open_store(path: str | Path) -> Store:
    """The store for ``storage.path``: a SQLite file there, created on first use."""
    return await SqliteStore.open(path)
