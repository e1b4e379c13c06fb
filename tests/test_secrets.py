"""Secrets never leave: not in logs (also when every downstream call fails), error responses,
/metrics, the JSON metrics, readiness, the incident API or check-config output."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from agentic_observability.service import init_app
from agentic_observability.service.keys import STORE
from agentic_observability.telemetry import JsonFormatter
from tests.conftest import TOKEN, auth_headers, fixture_body
from tests.fakes import GRAFANA_TOKEN, MODEL_TOKEN, PD_ROUTING_KEY, SLACK_TOKEN, FakeModel
from tests.test_actions import Sinks, sinks  # noqa: F401  (the fixture)
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
    sinks.pagerduty.script = [(400, {}, {"status": "invalid event", "message": "bad"})]
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
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter(config.secrets.values()))
    logging.getLogger().addHandler(handler)
    try:
        client = await aiohttp_client(init_app(config))
        await post(client, fixture_body("am-0.25-firing.json"))

        async def failures_seen() -> bool:
            rows = await client.app[STORE].outbox_rows()
            return any(r["last_error"] for r in rows if r["sink"] == "slack")

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
        logging.getLogger().removeHandler(handler)
        await model.close()
    everything = "\n".join(outputs)
    assert "fallback" in everything and "slack" in everything  # the failures did happen and were logged
    for secret in SECRETS:
        assert secret not in everything, f"a secret leaked: {secret[:6]}…"


def _secret(value: str):  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    return SecretStr(value)
