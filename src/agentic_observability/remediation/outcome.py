"""What running (or dry-running) one action gave: one value, never an exception (``executor.Outcome``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # one human line for the thread and the audit log
    dry_run: bool
    already: bool = False  # found done before acting (look-before-acting)
    changes: dict[str, Any] = field(default_factory=dict)  # {"replicas": [2, 3]}, {"restartedAt": "…"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "detail": self.detail,
            "dry_run": self.dry_run,
            "already": self.already,
            "changes": dict(self.changes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            ok=bool(data["ok"]),
            detail=str(data["detail"]),
            dry_run=bool(data["dry_run"]),
            already=bool(data.get("already", False)),
            changes=dict(data.get("changes") or {}),
        )
