"""Imports point one way (DESIGN.md, README "Architecture"):

    cli, demo, replay -> service -> watch, remediation, pipeline -> outbox
      -> detectors, investigation, memory, integrations, store  (leaves: never each other)
      -> config, errors, models, readable                       (foundation)

Every module of the package belongs to a layer listed here (a new package must be placed), and
every import counts: absolute, ``from agentic_observability import x`` and relative ones. The
pipeline sees adapters only through its Protocols (``pipeline/ports.py``): it may not import
``integrations`` or ``store``, and of ``memory`` only the pure record builder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "agentic_observability"
ROOT = "agentic_observability"
FOUNDATION = {"config", "errors", "models", "readable"}
LEAVES = {"detectors", "investigation", "memory", "integrations", "store"}

ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "errors": set(),
    "readable": set(),  # numbers and times as people read them: pure, for every layer's text
    "config": {"errors"},
    "telemetry": FOUNDATION,
    **{leaf: FOUNDATION for leaf in LEAVES},
    "outbox": FOUNDATION | LEAVES | {"telemetry"},
    "pipeline": FOUNDATION
    | {"detectors", "investigation", "memory.records", "outbox", "remediation.catalogue"},
    # proposing (pure), running through its adapters, and the outbox sinks that run and follow up
    "remediation": FOUNDATION | {"integrations", "store", "telemetry", "outbox"},
    "watch": FOUNDATION | {"detectors", "integrations", "store", "telemetry"},
    "changes": FOUNDATION | {"integrations", "store", "telemetry"},  # polled change events, like watch
    "offline": FOUNDATION | {"detectors", "investigation"},
    "service": FOUNDATION
    | LEAVES
    | {"telemetry", "outbox", "pipeline", "watch", "changes", "remediation", "__version__"},
    "replay": FOUNDATION | {"pipeline", "integrations", "store", "service"},
    "demo": FOUNDATION | {"service"},
    "cli": FOUNDATION
    | {
        "telemetry",
        "service",
        "offline",
        "detectors",
        "demo",
        "replay",
        "integrations",
        "outbox",
        "__version__",
    },
    "__main__": {"cli"},
    "__init__": set(),
}
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join([ROOT, *parts])


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, package: str) -> set[str]:
    """Every ``agentic_observability.*`` module that ``source`` (a module of ``package``) imports, as
    dotted names below the root."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            names = [f"{module}.{a.name}" for a in node.names] if module == ROOT else [module]
        else:
            continue
        found |= {n.removeprefix(f"{ROOT}.") for n in names if n.startswith(f"{ROOT}.")}
    return found


def _package(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _allowed(layer: str, module: str) -> bool:
    if module.split(".")[0] == layer:
        return True
    return any(module == a or module.startswith(f"{a}.") for a in ALLOWED[layer])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{layer} has no place in the layering: add it to ALLOWED (and the README)"
    wrong = sorted(m for m in imported_modules(path.read_text(), _package(path)) if not _allowed(layer, m))
    assert not wrong, f"{layer} must not import {wrong}"


def test_the_check_sees_every_import_form() -> None:
    """The parser above must notice relative and package-level imports, or the rule is toothless."""
    source = (
        "from ..integrations import prometheus\n"
        "from agentic_observability import store\n"
        "import agentic_observability.memory.edge\n"
        "from . import reason\n"
    )
    found = imported_modules(source, f"{ROOT}.pipeline")
    assert found == {"integrations", "store", "memory.edge", "pipeline"}
    assert [m for m in sorted(found) if not _allowed("pipeline", m)] == [
        "integrations",
        "memory.edge",
        "store",
    ]


def test_composition_roots_are_placed() -> None:
    top_level = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    unplaced = sorted(top_level - set(ALLOWED) - {"__pycache__", "dashboards", "py"})
    assert not unplaced, f"not in the layering: {unplaced}"
