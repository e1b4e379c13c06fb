"""Imports point one way (DESIGN.md): webhook/cli -> pipeline -> detectors, investigation, memory,
integrations (siblings that never import each other) -> config, errors, models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "agentic_observability"
FOUNDATION = {"config", "errors", "models"}
LEAVES = {"detectors", "investigation", "memory", "integrations"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        )
        for name in names:
            if name.startswith("agentic_observability."):
                found.add(name.split(".")[1])
    return found


ALLOWED = {
    **{name: set() for name in FOUNDATION - {"models"}},
    "models": set(),
    "config": {"errors"},
    **{leaf: FOUNDATION | {leaf} for leaf in LEAVES},
    "pipeline": FOUNDATION | LEAVES | {"pipeline", "outbox"},
    "outbox": FOUNDATION | LEAVES | {"outbox", "store", "telemetry"},
    "store": FOUNDATION | {"store"},
    "telemetry": FOUNDATION,
    "watch": FOUNDATION | {"watch", "detectors", "integrations", "store", "telemetry"},
}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    layer = _layer(path)
    if layer not in ALLOWED:
        return  # composition roots (webhook, cli, demo, replay) may import anything
    imported = _imports(path) - {layer}
    assert imported <= ALLOWED[layer], f"{layer} must not import {sorted(imported - ALLOWED[layer])}"
