"""Shared fixtures: configs, the app under test, and real Prometheus/Alertmanager processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_observability.config import Config, FileConfig, Secrets
from agentic_observability.demo.stack import (
    ManagedProcess,
    find_binary,
    free_port,
    start_alertmanager,
    start_prometheus,
)

ROOT_DIR = Path(__file__).resolve().parents[1]
SHARED = ROOT_DIR.parent / "shared"
FIXTURES = ROOT_DIR / "tests" / "data" / "alertmanager"  # copied from ../shared/fixtures
TOKEN = "test-token-not-a-real-secret-1234"


def make_config(
    tmp_path: Path, token: str | None = TOKEN, secrets: dict[str, str] | None = None, **sections: Any
) -> Config:
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "auth": token is not None},
        "prometheus": {"url": f"http://127.0.0.1:{free_port()}", "timeout": "1s", "retries": 0},
        "storage": {"path": str(tmp_path / "state")},
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    values = {**({"webhook_token": token} if token else {}), **(secrets or {})}
    return Config(
        file=FileConfig.model_validate(data), secrets=Secrets.model_validate(values), source="<test>"
    )


def prometheus_with_history(workdir: Path, openmetrics: str) -> ManagedProcess:
    """A real Prometheus serving ``openmetrics`` as TSDB blocks built by ``promtool tsdb
    create-blocks-from openmetrics`` (history a scrape could not produce)."""
    source = workdir / "history.om"
    source.write_text(openmetrics)
    blocks = workdir / "tsdb"
    command = [
        find_binary("promtool", install=True),
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        str(source),
        str(blocks),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return start_prometheus(workdir / "prometheus", storage=blocks)


def fixture_body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def auth_headers(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    return lambda **kw: make_config(tmp_path, **kw)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A bare real Prometheus (no scrape targets) on a free loopback port."""
    proc = start_prometheus(tmp_path / "prometheus")
    yield proc
    proc.stop()


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[ManagedProcess, ManagedProcess]]]:
    """Start a real Alertmanager routed to ``webhook_url`` and a real Prometheus with rules and targets."""
    started: list[ManagedProcess] = []

    def start(
        webhook_url: str, targets: list[str], rules: str, token: str | None = TOKEN
    ) -> tuple[ManagedProcess, ManagedProcess]:
        am = start_alertmanager(tmp_path / "alertmanager", webhook_url, token)
        started.append(am)
        rule_file = tmp_path / "rules.yml"
        rule_file.write_text(rules)
        prom = start_prometheus(tmp_path / "prometheus", targets, [rule_file], am.url)
        started.append(prom)
        return prom, am

    yield start
    for proc in reversed(started):
        proc.stop()
