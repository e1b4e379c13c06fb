"""The embedded default sink: each action as one JSON line in a local file (``actions.jsonl``), for
teams without Grafana, Slack or PagerDuty configured yet, and to see what would have been sent.

The file rotates like a log: once the next line would take it past ``max_bytes`` it becomes
``actions.jsonl.1`` (``.1`` becomes ``.2`` and so on up to ``backups``; the oldest is dropped)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

from agentic_observability.errors import DeliveryError
from agentic_observability.models import OutboxItem


class FileSink:
    name = "file"

    def __init__(self, path: str | Path, max_bytes: int | None = None, backups: int = 3) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes  # None: never rotate
        self.backups = backups
        # Deliveries append from worker threads: a rotation must not interleave with another append.
        self._lock = threading.Lock()

    async def deliver(self, item: OutboxItem) -> str | None:
        line = json.dumps(
            {
                "ts": round(time.time(), 3),
                "incident_id": item.incident_id,
                "action": item.action,
                **item.payload,
            }
        )
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            raise DeliveryError(f"file sink {self.path}: {exc}") from exc
        return None

    def _append(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._would_overflow(len(data)):
                self._rotate()
            with self.path.open("ab") as out:
                out.write(data)

    def _would_overflow(self, size: int) -> bool:
        if self.max_bytes is None:
            return False
        try:
            current = self.path.stat().st_size
        except FileNotFoundError:
            return False
        return current > 0 and current + size > self.max_bytes  # a line longer than the cap still goes

    def _rotate(self) -> None:
        """actions.jsonl.(n-1) -> .n, ..., actions.jsonl -> .1; os.replace drops what was at .backups."""
        if self.backups == 0:
            self.path.unlink()
            return
        for index in range(self.backups - 1, 0, -1):
            older = self._backup(index)
            if older.exists():
                os.replace(older, self._backup(index + 1))
        os.replace(self.path, self._backup(1))

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")
