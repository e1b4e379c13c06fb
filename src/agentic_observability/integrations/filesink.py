"""The embedded default sink: each action as one JSON line in a local file (``actions.jsonl``), for
teams without Grafana, Slack or PagerDuty configured yet, and to see what would have been sent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from agentic_observability.errors import DeliveryError
from agentic_observability.models import OutboxItem


class FileSink:
    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
