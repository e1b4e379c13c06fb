"""Secrets never leave: not in logs (also when every downstream call fails), error responses,
/metrics, the JSON metrics, readiness, the incident API or check-config output. The logs are the
ones ``setup_logging`` (what ``serve`` calls) sets up; tests/test_teeth.py runs ``serve`` itself."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from agentic_observability.config import Config, Secrets
from agentic_observability.demo.stack import ManagedProcess
from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.models import Incident, OutboxItem
from agentic_observability.outbox.plan import ActSettings, plan_actions
from agentic_observability.outbox.sinks import build_sinks
from agentic_observability.pipeline.investigate import with_explore_links
from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.telemetry import JsonFormatter, setup_logging
from tests.conftest import TOKEN, auth_headers, fixture_body, make_config
from tests.fakes import GRAFANA_TOKEN, MODEL_TOKEN, PD_ROUTING_KEY, SLACK_TOKEN, FakeModel
from tests.test_actions import Sinks, sinks  # noqa: F401  (the fixture)
from tests.test_prometheus_client import PROM_PASSWORD, PROM_USER, secured_prometheus  # noqa: F401
from tests.test_webhook import post, wait_for

Client = Callable[..., Awaitable[TestClient]]
QDRANT_KEY = "qdrant-api-key-that-must-not-leak"
SECRETS = [TOKEN, SLACK_TOKEN, GRAFANA_TOKEN, PD_ROUTING_KEY, MODEL_TOKEN, QDRANT_KEY]


async def test_secrets_stay_out_of_every_output(
    aiohttp_client: Client,
    tmp_path: Path,
    sinks: Sinks,  # noqa: F811
) -> None:
    sinks.slack.script = [(500, {}, {"ok": False})] * 3
    quoted = [f"routing_key {PD_ROUTING_KEY} is not enabled"]  # a rejection quoting the event back
    sinks.pagerduty.script = [(400, {}, {"status": "invalid event", "message": "bad", "errors": quoted})]
    sinks.grafana.down = True
    model = TestServer(FakeModel("500").app(), host="127.0.0.1")
    await model.start_server()
    config = sinks.config(tmp_path)
    config = config.model_copy(
        update={
            "file": config.file.model_copy(
                update={
                    "reasoning": config.file.reasoning.model_copy(
                        update={"backend": "llm", "base_url": str(model.make_url("")), "timeout": 2.0}
                    )
                }
            ),
            "secrets": config.secrets.model_copy(
                update={"huggingface_token": _secret(MODEL_TOKEN), "qdrant_api_key": _secret(QDRANT_KEY)}
            ),
        }
    )
    written = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with contextlib.redirect_stderr(written):  # the handler serve's setup_logging installs writes there
        setup_logging(config.secrets.values())
    try:
        client = await aiohttp_client(init_app(config))
        await post(client, fixture_body("am-0.25-firing.json"))

        async def failures_seen() -> bool:
            rows = await client.app[STORE].outbox_rows()
            slack = any(r["last_error"] for r in rows if r["sink"] == "slack")
            return slack and any(r["state"] == "failed" for r in rows if r["sink"] == "pagerduty")

        await wait_for(failures_seen, within=15)
        outputs = [written.getvalue()]
        for path in (
            "/metrics",
            "/api/v1/metrics",
            "/api/v1/health/ready",
            "/api/v1/incidents",
            "/api/v1/incidents/1",
        ):
            outputs.append(await (await client.get(path, headers=auth_headers())).text())
        outputs.append(await (await client.get("/api/v1/incidents", headers=auth_headers("wrong"))).text())
        outputs.append(str(await client.app[STORE].outbox_rows()))
        outputs.append(repr(config) + str(config.masked()))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        await model.close()
    everything = "\n".join(outputs)
    assert "fallback" in everything and "slack" in everything  # the failures did happen and were logged
    assert "routing_key *** is not enabled" in written.getvalue()  # logged, and kept with the row, starred
    for secret in SECRETS:
        assert secret not in everything, f"a secret leaked: {secret[:6]}…"


def _secret(value: str):  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    return SecretStr(value)


# -- URLs with userinfo, Prometheus credentials and the Slack webhook URL ---------------------------


def test_log_lines_drop_url_userinfo_and_prometheus_secrets() -> None:
    secrets = Secrets(
        prometheus_username=SecretStr("prometheus"),  # no secret; scrubbing it would garble every line
        prometheus_password=SecretStr("prom-pw-in-env"),
        slack_webhook_url=SecretStr("https://hooks.slack.com/services/T0/B0/webhook-part"),
    )
    record = logging.LogRecord(
        "t",
        logging.ERROR,
        __file__,
        1,
        "prometheus %s failed (password %s); grafana %s; slack %s",
        (
            "http://agent:url-pw@prometheus:9090/api/v1/query",
            "prom-pw-in-env",
            "https://admin:grafana-pw@grafana:3000",
            "https://hooks.slack.com/services/T0/B0/webhook-part",
        ),
        None,
    )
    line = JsonFormatter(secrets.values()).format(record)
    for leaked in ("url-pw", "prom-pw-in-env", "grafana-pw", "webhook-part"):
        assert leaked not in line, leaked
    assert "http://prometheus:9090/api/v1/query" in line and "https://grafana:3000" in line
    assert "***" in line  # the known secrets by value, the URL userinfo by its shape


async def test_grafana_explore_links_drop_userinfo() -> None:
    async with aiohttp.ClientSession() as session:
        prometheus = PrometheusClient("http://prometheus:9090", session)
        source = with_explore_links(prometheus, "https://admin:grafana-pw@grafana.example.com/")
        link = source.explore_url("up", 0, 60)
    assert link.startswith("https://grafana.example.com/explore?") and "grafana-pw" not in link


def test_public_url_in_messages_drops_userinfo() -> None:
    settings = ActSettings(
        enabled=frozenset({"slack"}), public_url="https://ops:public-pw@agentic-obs.example"
    )
    labels = {"alertname": "HighLatency", "service": "carts"}
    incident = Incident("7", "g", "alertmanager", "firing", "HighLatency", labels, 1_700_000_000.0, None)
    actions = plan_actions(incident, {"summary": "s", "hypotheses": []}, "analyze", settings)
    shown = json.dumps([a.payload for a in actions])
    assert "https://agentic-obs.example/api/v1/incidents/" in shown and "public-pw" not in shown


async def test_no_shown_url_carries_prometheus_userinfo(
    aiohttp_client: Client,
    config_factory: Callable[..., Config],
    secured_prometheus: ManagedProcess,  # noqa: F811
) -> None:
    """Credentials in prometheus.url reach the secured Prometheus (readiness ok, evidence queried), and
    neither readiness, the report's explore links, alerts from watches nor the logs show them."""
    url = secured_prometheus.url.replace("://", f"://{PROM_USER}:{PROM_PASSWORD}@")
    config = config_factory(prometheus={"url": url, "timeout": "5s"})
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter(config.secrets.values()))
    logging.getLogger().addHandler(handler)
    try:
        client = await aiohttp_client(init_app(config))
        ready = await (await client.get("/api/v1/health/ready")).json()
        assert ready["checks"]["prometheus"]["status"] == "ok", ready
        assert ready["checks"]["prometheus"]["url"] == secured_prometheus.url
        await post(client, fixture_body("am-0.25-firing.json"))
        await wait_for(lambda: _reported(client), within=15)
        [incident] = (await (await client.get("/api/v1/incidents", headers=auth_headers())).json())[
            "incidents"
        ]
        logging.getLogger("test").error("querying %s", url)
    finally:
        logging.getLogger().removeHandler(handler)
    links = _values(incident["report"], "explore_url")
    assert links and all(link.startswith(secured_prometheus.url + "/graph?") for link in links)
    assert not _values(incident["report"], "error"), incident["report"]  # the queries were authorised
    everything = json.dumps([ready, incident]) + written.getvalue()
    assert "querying http://127.0.0.1" in everything  # the log line is there, without the userinfo
    assert PROM_PASSWORD not in everything and f"{PROM_USER}:" not in everything


def _values(data: object, key: str) -> list[str]:
    """Every string under ``key`` anywhere in a JSON document."""
    if isinstance(data, dict):
        found = [v for k, v in data.items() if k == key and isinstance(v, str) and v]
        return found + [x for v in data.values() for x in _values(v, key)]
    if isinstance(data, list):
        return [x for v in data for x in _values(v, key)]
    return []


async def _reported(client: TestClient) -> bool:
    response = await client.get("/api/v1/incidents", headers=auth_headers())
    found = (await response.json())["incidents"]
    return bool(found) and found[0]["report"] is not None


async def test_slack_webhook_url_comes_from_the_environment(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/services/T000/B000/webhook-secret-part", hook)
    server = await aiohttp_server(app)
    webhook_url = str(server.make_url("/services/T000/B000/webhook-secret-part"))
    config = make_config(tmp_path, secrets={"slack_webhook_url": webhook_url})
    async with aiohttp.ClientSession() as session:
        sinks = build_sinks(config, session, None)
        await sinks["slack"].deliver(_item({"text": "incident 1 opened"}))
        assert "slack" not in build_sinks(make_config(tmp_path), session, None)
    assert received == [{"text": "incident 1 opened"}]


async def test_slack_webhook_url_stays_out_of_delivery_errors(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    """aiohttp quotes the URL when redirects loop; that message is stored with the outbox row."""

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(request.path)  # keeps the POST, so it loops

    app = web.Application()
    app.router.add_post("/services/T000/B000/webhook-secret-part", loop)
    server = await aiohttp_server(app)
    webhook_url = str(server.make_url("/services/T000/B000/webhook-secret-part"))
    config = make_config(tmp_path, secrets={"slack_webhook_url": webhook_url})
    async with aiohttp.ClientSession() as session:
        sink = build_sinks(config, session, None)["slack"]
        with pytest.raises(DeliveryError) as err:
            await sink.deliver(_item({"text": "incident 1 opened"}))
    assert "webhook-secret-part" not in str(err.value) and "SLACK_WEBHOOK_URL" in str(err.value)


def _item(payload: dict[str, object]) -> OutboxItem:
    return OutboxItem(1, "1", "slack", "open", payload, 0, 0.0)
