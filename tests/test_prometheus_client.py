"""The Prometheus client against a real Prometheus (Debian binary; one requiring basic auth through
``--web.config.file``), against a dead port, and against small local servers for the bearer token and
the response-size cap."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentic_observability.config import Config, FileConfig, Secrets
from agentic_observability.demo.stack import ManagedProcess, find_binary, free_port
from agentic_observability.errors import PrometheusError, PrometheusQueryError, UpstreamUnavailableError
from agentic_observability.integrations import prometheus as prometheus_module
from agentic_observability.integrations.prometheus import PrometheusClient, basic_authorization
from agentic_observability.integrations.resilience import Guard
from agentic_observability.replay import replay_body
from tests.conftest import FIXTURES


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def test_instant_and_range_queries(prometheus: ManagedProcess, session: aiohttp.ClientSession) -> None:
    client = PrometheusClient(prometheus.url, session)
    [sample] = await client.query('label_replace(vector(42), "service", "carts", "", "")')
    assert sample.value == 42 and sample.labels == {"service": "carts"}
    [scalar] = await client.query("scalar(vector(7))")
    assert scalar.value == 7
    now = time.time()
    [series] = await client.query_range("vector(time())", now - 60, now, 15)
    assert len(series.values) == 5
    assert series.values[-1] == pytest.approx(series.timestamps[-1])


async def test_invalid_query_carries_prometheus_message_and_is_not_retried(
    prometheus: ManagedProcess, session: aiohttp.ClientSession
) -> None:
    guard = Guard("prometheus", retries=3, fail_max=1, excluded=(PrometheusQueryError,))
    client = PrometheusClient(prometheus.url, session, guard=guard)
    started = time.monotonic()
    with pytest.raises(PrometheusQueryError, match="parse error"):
        await client.query("sum(rate(x[5m])")
    assert time.monotonic() - started < 1.0  # no backoff: it was not retried
    assert guard.state == "closed"  # a bad query says nothing about Prometheus's health


async def test_unreachable_prometheus_retries_then_opens_the_breaker(session: aiohttp.ClientSession) -> None:
    guard = Guard("prometheus", retries=1, fail_max=2, reset_after=60, max_backoff=0.05)
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", session, timeout=1, guard=guard)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailableError, match="unreachable"):
            await client.query("up")
    assert guard.state == "open"
    with pytest.raises(UpstreamUnavailableError, match="circuit open"):
        await client.query("up")


# -- credentials ------------------------------------------------------------------------------------

PROM_USER = "agent"
PROM_PASSWORD = "prom-password-that-must-not-leak"


def start_secured_prometheus(workdir: Path) -> ManagedProcess:
    """A real Prometheus that requires basic auth on every endpoint (``--web.config.file`` with a
    bcrypt hash), so a request without the right Authorization header gets 401."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    hashed = bcrypt.hashpw(PROM_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (workdir / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {PROM_USER: hashed}}))
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}}))
    argv = [
        find_binary("prometheus", install=True),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={workdir / 'web.yml'}",
    ]
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc = ManagedProcess("prometheus", process, f"http://127.0.0.1:{port}", workdir, log_path)
    _wait_ready_with_auth(proc)
    return proc


def _wait_ready_with_auth(proc: ManagedProcess, timeout: float = 30.0) -> None:
    header = basic_authorization(PROM_USER, PROM_PASSWORD)
    request = urllib.request.Request(proc.url + "/-/ready", headers={"Authorization": header})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proc.stop()
    raise AssertionError(f"secured prometheus not ready:\n{proc.log_tail()}")


@pytest.fixture
def secured_prometheus(tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = start_secured_prometheus(tmp_path / "secured-prometheus")
    yield proc
    proc.stop()


def _config(url: str, **secrets: str) -> Config:
    return Config(
        file=FileConfig.model_validate({"prometheus": {"url": url, "timeout": "5s", "retries": 0}}),
        secrets=Secrets.model_validate(secrets),
    )


async def test_basic_auth_from_the_environment_reaches_a_secured_prometheus(
    secured_prometheus: ManagedProcess, session: aiohttp.ClientSession
) -> None:
    config = _config(secured_prometheus.url, prometheus_username=PROM_USER, prometheus_password=PROM_PASSWORD)
    client = PrometheusClient.from_config(config, session)
    await client.ping()  # the readiness probe carries the header too
    [sample] = await client.query("vector(1)")
    assert sample.value == 1
    anonymous = PrometheusClient(secured_prometheus.url, session, timeout=5)
    with pytest.raises(PrometheusError, match="HTTP 401"):
        await anonymous.ping()
    wrong = _config(secured_prometheus.url, prometheus_username=PROM_USER, prometheus_password="nope")
    with pytest.raises(PrometheusError, match="HTTP 401"):
        await PrometheusClient.from_config(wrong, session).query("vector(1)")


async def test_userinfo_in_the_url_is_used_but_never_shown(
    secured_prometheus: ManagedProcess, session: aiohttp.ClientSession
) -> None:
    with_userinfo = secured_prometheus.url.replace("://", f"://{PROM_USER}:{PROM_PASSWORD}@")
    client = PrometheusClient.from_config(_config(with_userinfo), session)
    await client.ping()
    [sample] = await client.query("vector(2)")
    assert sample.value == 2
    assert client.base_url == secured_prometheus.url
    assert client.explore_url("up", 0, 60).startswith(secured_prometheus.url + "/graph?")


async def test_bearer_token_goes_on_every_request(
    aiohttp_server: Callable[..., Awaitable[TestServer]], session: aiohttp.ClientSession
) -> None:
    seen: list[str | None] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer prom-token":
            return web.Response(status=401, text="Unauthorized")
        return web.json_response({"status": "success", "data": {"resultType": "scalar", "result": [1, "5"]}})

    app = web.Application()
    app.router.add_post("/api/v1/query", query)
    server = await aiohttp_server(app)
    config = _config(str(server.make_url("")), prometheus_bearer_token="prom-token")
    client = PrometheusClient.from_config(config, session)
    await client.ping()
    [sample] = await client.query("scalar(5)")
    assert sample.value == 5 and seen == ["Bearer prom-token"] * 2


# -- response size and parsing ----------------------------------------------------------------------


def _vector_body(padding: int) -> bytes:
    sample = {"metric": {"service": "carts", "pad": "x" * padding}, "value": [1.0, "3"]}
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [sample]}}).encode()


@pytest.fixture
async def big_answers(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[str, list[str]]:
    """A local Prometheus stand-in: /chunked streams 2 MiB without a length, /declared announces it,
    /large answers a valid 512 KiB vector. Returns its URL and the paths it was asked for."""
    asked: list[str] = []
    big = _vector_body(2 * 1_048_576)

    async def chunked(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(big), 65536):
            await response.write(big[start : start + 65536])
        await response.write_eof()
        return response

    async def declared(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=big, content_type="application/json")

    async def large(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=_vector_body(512 * 1024), content_type="application/json")

    app = web.Application()
    for path, handler in (("/chunked", chunked), ("/declared", declared), ("/large", large)):
        app.router.add_post(path + "/api/v1/query", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), asked


@pytest.mark.parametrize("path", ["/chunked", "/declared"])
async def test_answers_over_the_cap_are_refused_naming_it(
    big_answers: tuple[str, list[str]], session: aiohttp.ClientSession, path: str
) -> None:
    url, asked = big_answers
    guard = Guard("prometheus", retries=2, fail_max=1, excluded=(PrometheusQueryError,))
    client = PrometheusClient(url + path, session, guard=guard, max_response_bytes=1_048_576)
    with pytest.raises(PrometheusError, match=r"max_response_bytes \(1048576 bytes\)"):
        await client.query("up")
    assert asked == [path + "/api/v1/query"]  # not retried: the same query would be as large
    assert guard.state == "closed"  # and Prometheus is not broken


async def test_large_answers_are_parsed_off_the_event_loop(
    big_answers: tuple[str, list[str]], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_in: list[bool] = []
    original = prometheus_module._loads

    def recording(body: bytes) -> object:
        parsed_in.append(threading.current_thread() is threading.main_thread())
        return original(body)

    monkeypatch.setattr(prometheus_module, "_loads", recording)
    url, _ = big_answers
    [sample] = await PrometheusClient(url + "/large", session).query("up")
    assert sample.labels["service"] == "carts" and sample.value == 3
    assert parsed_in == [False]  # 512 KiB: parsed in a worker thread


async def test_replay_queries_with_the_credentials_from_the_environment(
    secured_prometheus: ManagedProcess, tmp_path: Path
) -> None:
    raw = (FIXTURES / "am-0.25-firing.json").read_bytes()
    config = _config(secured_prometheus.url, prometheus_username=PROM_USER, prometheus_password=PROM_PASSWORD)
    [report] = await replay_body(raw, config, str(tmp_path / "state"))
    [evidence] = report["evidence"]
    assert evidence["error"] == "" and evidence["series"], evidence  # authorised: the data came back
