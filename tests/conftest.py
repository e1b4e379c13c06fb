"""Shared fixtures: configs, the app under test, and real Prometheus/Alertmanager processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from agentic_observability.config import Config, FileConfig, PostgresConfig, Secrets
from agentic_observability.demo.stack import (
    ManagedProcess,
    find_binary,
    free_port,
    start_alertmanager,
    start_prometheus,
)
from agentic_observability.store import SqliteStore, Store
from tests import pg

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
    postgres: dict[str, str] = {}
    if pg.wanted():  # AGENTIC_OBS_TEST_STORE=postgres: a fresh database on the session's cluster
        server = pg.shared_server()
        data["storage"] |= {"backend": "postgres", "postgres": {"url": server.create_database()}}
        postgres = {"postgres_password": server.password}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    values = {**({"webhook_token": token} if token else {}), **postgres, **(secrets or {})}
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.PostgresServer]:
    """The session's throwaway PostgreSQL cluster (tests/pg.py); stopped when the session ends."""
    yield from pg.server_fixture()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pg.stop_shared()


class Replicas(Protocol):
    def __call__(self, count: int, **postgres: Any) -> Awaitable[list[Store]]: ...


@pytest.fixture(params=["sqlite", "postgres"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    """n store objects on one database, per backend: on PostgreSQL n stores (n replicas of the service);
    on SQLite, where one file has one process, the same store n times (two owners still).
    ``postgres``: PostgresConfig fields for these stores (``statement_timeout=1``); SQLite ignores them."""
    opened: list[Store] = []
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        url = server.create_database()

    async def make(count: int, **postgres: Any) -> list[Store]:
        if request.param == "sqlite":
            if not opened:
                opened.append(await SqliteStore.open(tmp_path / "state"))
            return [opened[0]] * count
        from agentic_observability.store.postgres.store import PostgresStore

        config = PostgresConfig(**{"url": url, "pool_max": 6, "statement_timeout": 20, **postgres})
        stores: list[Store] = [await PostgresStore.open(config, server.password) for _ in range(count)]
        opened.extend(stores)
        return stores

    yield make
    for store in opened:
        await store.close()
