"""Hostile input: schemathesis generates requests from our own OpenAPI document against the running
service, and hypothesis throws arbitrary JSON at the webhook: no 5xx, no crash, 4xx with a JSON error.

The case count comes from AGENTIC_OBS_FUZZ_CASES (examples per operation; the default keeps
``make test`` quick, the figure in the closing note was run with a larger value)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentic_observability.demo.stack import free_port
from agentic_observability.service import init_app
from agentic_observability.service.routes.openapi import document
from tests.conftest import TOKEN, make_config

CASES = int(os.environ.get("AGENTIC_OBS_FUZZ_CASES", "60"))
SENT: Counter[str] = Counter()  # requests sent, by operation: printed at the end (pytest -s)
schema = schemathesis.openapi.from_dict(document())


class LiveService:
    """The app on a real port, in its own thread and event loop (schemathesis calls are blocking)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, args=(tmp_path,), daemon=True)

    def _serve(self, tmp_path: Path) -> None:
        from aiohttp import web

        async def main() -> None:
            runner = web.AppRunner(init_app(make_config(tmp_path)))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    def __enter__(self) -> LiveService:
        self._thread.start()
        assert self._ready.wait(30), "service did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with LiveService(tmp_path_factory.mktemp("live")) as service:
        yield service
    by_operation = ", ".join(f"{name} {count}" for name, count in sorted(SENT.items()))
    print(f"\nfuzz: {sum(SENT.values())} requests, none answered 500 ({by_operation})")


@schema.parametrize()
@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_from_the_openapi_document_gets_a_5xx(case: schemathesis.Case, live: LiveService) -> None:
    import requests

    # Sent with requests directly: schemathesis' own sender trips over urllib3-future, which
    # grafana-client's HTTP stack (niquests) installs in place of urllib3.
    kwargs = case.as_transport_kwargs(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"})
    response = requests.request(**kwargs, timeout=10)
    SENT[f"{case.method} {case.path}"] += 1
    documented = {int(code) for code in case.operation.definition.raw["responses"] if code.isdigit()}
    # A 5xx is allowed only where documented (502: Prometheus unreachable for /analyze); never a 500.
    allowed = response.status_code < 500 or response.status_code in documented - {500}
    assert allowed, f"{case.as_curl_command()}\n-> {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        assert "detail" in response.json() or "error" in response.json()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
near_valid = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["4", "3", 4]),
        "groupKey": st.text(max_size=60),
        "status": st.sampled_from(["firing", "resolved", "unknown"]),
        "alerts": st.lists(
            st.fixed_dictionaries(
                {
                    "status": st.sampled_from(["firing", "resolved", ""]),
                    "labels": st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=5),
                    "annotations": st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=3),
                    "startsAt": st.sampled_from(
                        [
                            "2026-01-01T00:00:00Z",
                            "yesterday",
                            "",
                            "0001-01-01T00:00:00Z",
                            "0001-01-01T00:00:00+14:00",  # year 0 in UTC
                            "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
                            "9999-12-31T23:59:59+14:00",  # the latest that can be shown
                        ]
                    ),
                    "fingerprint": st.text(max_size=20),
                }
            ),
            max_size=4,
        ),
    }
)


@given(body=st.one_of(json_values, near_valid))
@settings(max_examples=CASES * 3, deadline=None, suppress_health_check=list(HealthCheck))
def test_arbitrary_webhook_bodies_get_202_or_a_clear_400(body: object, live: LiveService) -> None:
    import requests

    response = requests.post(
        f"{live.url}/api/v1/webhook/alertmanager",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    SENT["POST /api/v1/webhook/alertmanager (hypothesis bodies)"] += 1
    assert response.status_code in (202, 400), response.text
    if response.status_code == 400:
        error = response.json()
        assert error["detail"] and "field" in error
    # What was accepted must still be readable: a stored time past year 9999 once broke the list.
    listed = requests.get(
        f"{live.url}/api/v1/incidents", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert listed.status_code == 200, listed.text
