"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` from the Debian ``postgresql``
package, on a free loopback port, with its data and sockets in a temp dir, fsync off; run as the
``postgres`` OS user when the tests run as root (PostgreSQL refuses to run as root). One cluster per
test session; a fresh database per test (``create_database``).

The superuser gets a random password and TCP connections need it (scram-sha-256), so the store's
POSTGRES_PASSWORD path is what every test exercises. Without the binaries, tests that need the
cluster fail when CI=true (CI must run them) and are skipped otherwise, naming the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from agentic_observability.demo.stack import free_port

BACKEND_ENV = "AGENTIC_OBS_TEST_STORE"  # "postgres": make_config's apps store in PostgreSQL
RUN_AS = "postgres"


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def unavailable(reason: str) -> None:
    """Fail under CI (the PostgreSQL tests must run there), else skip with the reason."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@dataclass
class PostgresServer:
    root: Path
    bin_dir: Path
    port: int
    password: str
    user: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; its ``storage.postgres.url``."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url("postgres"), password=self.password, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        _run(self, ["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else command


def _run(server: PostgresServer, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    full = [str(server.bin_dir / command[0]), *command[1:]]
    done = subprocess.run(_as_user(full), capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done


def start_server() -> PostgresServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("initdb/pg_ctl not found (install the Debian package postgresql)")
        raise AssertionError("unreachable")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(RUN_AS)
        except KeyError:
            unavailable(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as")
            raise
    root = Path(tempfile.mkdtemp(prefix="agentic-obs-pg-"))  # under /tmp: the postgres user can reach it
    server = PostgresServer(root, bin_dir, free_port(), uuid.uuid4().hex)
    (root / "pwfile").write_text(server.password + "\n")
    if os.geteuid() == 0:
        for path in (root, root / "pwfile"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    initdb = ["initdb", "-D", str(server.data), "-U", server.user, "--pwfile", str(root / "pwfile")]
    _run(server, [*initdb, "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"])
    options = (
        f"-c listen_addresses={server.host} -p {server.port} -k {root} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    _run(server, ["pg_ctl", "-D", str(server.data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    return server


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The session's cluster, started on first use (by the fixture or by make_config)."""
    global _shared
    if _shared is None:
        _shared = start_server()
    return _shared


def stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


def server_fixture() -> Iterator[PostgresServer]:
    yield shared_server()


def wanted() -> bool:
    """Whether make_config should configure PostgreSQL (AGENTIC_OBS_TEST_STORE=postgres)."""
    return os.environ.get(BACKEND_ENV, "sqlite") == "postgres"
