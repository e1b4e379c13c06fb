"""Log evidence from Loki (issue 18): the adapter, the evidence and the config, against the fake Loki of
tests/fake_loki.py (Loki's documented response shapes; no real Loki was run: it cannot be installed
here). The fake serves a shop whose carts service starts logging database errors at the onset."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import aiohttp
import numpy as np
import pytest
import yaml
from aiohttp.test_utils import TestServer

from agentic_observability import pipeline
from agentic_observability.config import (
    Config,
    FileConfig,
    InvestigationConfig,
    LogsConfig,
    Secrets,
    load_config,
)
from agentic_observability.demo.stack import free_port
from agentic_observability.errors import ConfigError, UpstreamUnavailableError
from agentic_observability.integrations.loki import LokiClient, LokiError, LokiQueryError
from agentic_observability.integrations.resilience import Guard
from agentic_observability.investigation import Candidate, rank_entities
from agentic_observability.models import Incident, Series, iso_time
from agentic_observability.pipeline.logs import (
    LOG_SIGNAL_MIN,
    LogEvidence,
    LogSource,
    grafana_log_links,
    log_evidence,
    render_selector,
    risen,
    visible,
)
from agentic_observability.pipeline.ports import PipelineDeps
from agentic_observability.telemetry import setup_logging
from tests.fake_loki import SERVICES, FakeLoki, Stream, parse_logql, shop_streams

ONSET = 1_700_000_000.0
BASELINE, AFTER = 1800.0, 600.0
NOW = ONSET + AFTER
LOKI_TOKEN = "loki-bearer-token-that-must-not-leak"
ERRORS = '|~ "(?i)(error|exception|panic|fatal)"'


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@contextlib.asynccontextmanager
async def serving(fake: FakeLoki) -> AsyncIterator[str]:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def shop() -> FakeLoki:
    return FakeLoki(streams=shop_streams(ONSET - BASELINE - 300, NOW, fault_at=ONSET))


def client(
    url: str,
    session: aiohttp.ClientSession,
    retries: int = 0,
    timeout: float = 5.0,
    fail_max: int = 5,
    max_response_bytes: int = 1_048_576,
) -> LokiClient:
    guard = Guard("loki", retries=retries, fail_max=fail_max, max_backoff=0.05, excluded=(LokiQueryError,))
    return LokiClient(url, session, timeout, guard, max_response_bytes=max_response_bytes)


async def evidence(source: LogSource, settings: LogsConfig | None = None) -> LogEvidence:
    links = grafana_log_links("http://grafana.example:3000", "loki-uid")
    return await log_evidence(
        list(SERVICES), "shop", source, settings or LogsConfig(), ONSET, BASELINE, AFTER, NOW, links
    )


# -- the adapter ---------------------------------------------------------------------------------


async def test_adapter_parses_matrix_streams_and_vector(session: aiohttp.ClientSession) -> None:
    fake = shop()
    async with serving(fake) as url:
        loki = client(url, session)
        metric = await loki.query_range(
            f'sum by (app) (count_over_time({{app="carts"}} {ERRORS} [1m]))',
            ONSET - 600,
            ONSET + 600,
            step=60,
        )
        logs = await loki.query_range(f'{{app="carts"}} {ERRORS}', ONSET, NOW, limit=5, direction="backward")
        instant = await loki.query(f'sum(count_over_time({{app="carts"}} {ERRORS} [1m]))', at=ONSET + 300)
    assert metric.kind == "matrix"
    [series] = metric.series
    assert series.labels == {"app": "carts"}
    assert series.timestamps[0] >= ONSET - 600 and series.timestamps[-1] <= ONSET + 600
    assert max(series.values) >= 30 and min(series.values) >= 1  # 30 a minute after the onset, 1 before
    assert logs.kind == "streams"
    entries = [e for stream in logs.streams for e in stream.entries]
    assert len(entries) == 5 and all(ONSET <= ts < NOW for ts, _ in entries)
    assert all(s.labels["app"] == "carts" and s.labels["namespace"] == "shop" for s in logs.streams)
    assert [ts for ts, _ in entries] == sorted((ts for ts, _ in entries), reverse=True)  # newest first
    raw = fake.streams[1].entries  # nanosecond strings back to seconds without losing the order
    assert entries[0][0] == pytest.approx(max(ts for ts, _ in raw if ts < NOW), abs=1e-6)
    assert instant.kind == "vector" and instant.samples[0].value >= 30


async def test_bad_logql_surfaces_lokis_message_and_is_not_retried(session: aiohttp.ClientSession) -> None:
    fake = shop()
    async with serving(fake) as url:
        loki = client(url, session, retries=3)
        for query, col in (
            ('{app="carts"', 13),  # unbalanced brace
            ('{app="carts}', 6),  # unbalanced quote
            ('{app="carts"} | unpack_everything', 17),  # an unknown pipeline stage
            ('sum(counts_over_time({app="carts"}[1m]))', 5),  # an unknown range aggregation
        ):
            with pytest.raises(
                LokiQueryError, match=rf"Loki rejected the query: parse error at line 1, col {col}:"
            ):
                await loki.query_range(query, ONSET, NOW, step=60)
    assert len(fake.requests) == 4  # one each: a bad query is not retried
    assert loki.guard.state == "closed"  # and says nothing about Loki's health


async def test_transient_errors_are_retried_and_others_are_not(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.script = [(503, "upstream connect error"), (429, "too many outstanding requests")]
    async with serving(fake) as url:
        lines = await client(url, session, retries=2).log_lines(f'{{app="carts"}} {ERRORS}', ONSET, NOW, 3)
        assert len(lines) == 3 and len(fake.requests) == 3  # 503, 429, then the answer
        fake.requests.clear()
        fake.tenant = "team-a"  # a 401 is not transient: one request, Loki's words in the error
        with pytest.raises(LokiError, match=r"HTTP 401.*no org id"):
            await client(url, session, retries=2).log_lines('{app="carts"}', ONSET, NOW, 3)
        assert len(fake.requests) == 1


async def test_a_slow_loki_times_out_after_its_retries(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.delay = 1.0
    async with serving(fake) as url:
        with pytest.raises(UpstreamUnavailableError, match=r"timed out after 0.2s"):
            await client(url, session, retries=1, timeout=0.2).metric_range(
                'count_over_time({app="x"}[1m])', ONSET, NOW, 60
            )
    assert len(fake.requests) == 2


async def test_the_breaker_opens_after_repeated_failures(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.script = [(502, "bad gateway")] * 5
    async with serving(fake) as url:
        loki = client(url, session, retries=0, fail_max=2)
        for _ in range(2):
            with pytest.raises(UpstreamUnavailableError, match="HTTP 502"):
                await loki.log_lines('{app="carts"}', ONSET, NOW, 3)
        with pytest.raises(UpstreamUnavailableError, match="circuit open"):
            await loki.log_lines('{app="carts"}', ONSET, NOW, 3)
    assert len(fake.requests) == 2 and loki.guard.state == "open"


async def test_answers_over_the_size_cap_are_refused(session: aiohttp.ClientSession) -> None:
    async with serving(shop()) as url:
        loki = client(url, session, max_response_bytes=2048)
        with pytest.raises(LokiQueryError, match=r"larger than logs\.max_response_bytes"):
            await loki.log_lines('{app="carts"}', ONSET - BASELINE, NOW, 5000)


async def test_tenant_and_credentials_from_the_config(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.tenant, fake.token = "team-a", LOKI_TOKEN
    async with serving(fake) as url:
        config = _config(url, tenant="team-a", secrets={"loki_bearer_token": LOKI_TOKEN})
        loki = LokiClient.from_config(config, session)
        assert loki is not None and loki.base_url == url
        assert await loki.log_lines('{app="carts"}', ONSET, NOW, 2)
        fake.tenant, fake.token, fake.basic = None, None, ("grafana-cloud-user", "loki-basic-password")
        basic = {"loki_username": "grafana-cloud-user", "loki_password": "loki-basic-password"}
        loki = LokiClient.from_config(_config(url, secrets=basic), session)
        assert loki is not None and await loki.log_lines('{app="carts"}', ONSET, NOW, 2)
        await loki.ping()
        with pytest.raises(LokiError, match="HTTP 401"):
            await client(url, session).log_lines('{app="carts"}', ONSET, NOW, 2)  # no credentials
    assert LokiClient.from_config(Config(), session) is None  # logs.url unset: log evidence is off


def _config(url: str, secrets: dict[str, str] | None = None, **logs: object) -> Config:
    file = FileConfig.model_validate({"logs": {"url": url, "retries": 0, **logs}})
    return Config(file=file, secrets=Secrets.model_validate(secrets or {}))


# -- the evidence --------------------------------------------------------------------------------


async def test_log_errors_rank_the_faulty_service_first(session: aiohttp.ClientSession) -> None:
    fake = shop()
    async with serving(fake) as url:
        found = await evidence(client(url, session))
    assert found.problems == ()
    top, *others = found.signals
    assert top["entity"] == "carts" and top["signal"] == "log_errors"
    assert top["logql"] == (f'sum(count_over_time({{namespace=~".+", app="carts"}} {ERRORS} [60s]))')
    parse_logql(top["logql"])  # what was sent is LogQL Loki's grammar takes
    assert top["baseline"] == pytest.approx(1.0) and top["incident"] >= 30  # lines a minute
    assert top["unit"] == "lines/min" and top["deviation"] > 6 and top["onset"] == iso_time(ONSET)
    assert top["lines_after"] >= 300 and top["lines_before"] <= 31
    assert all(s["deviation"] < 6 for s in others)  # the background errors did not change
    panes = json.loads(parse_qs(urlsplit(top["explore_url"]).query)["panes"][0])
    assert top["explore_url"].startswith("http://grafana.example:3000/explore?")
    assert panes["a"]["queries"][0]["expr"] == top["logql"]
    assert panes["a"]["queries"][0]["datasource"] == {"type": "loki", "uid": "loki-uid"}
    # the ranking takes the counts as a signal like any other
    ranking = rank_entities(found.series, ONSET)
    assert ranking[0].entity == "carts" and ranking[0].evidence[0].signal == "log_errors"
    assert json.dumps(found.as_dict())  # a report can keep it as it is


async def test_new_templates_after_the_onset(session: aiohttp.ClientSession) -> None:
    async with serving(shop()) as url:
        found = await evidence(client(url, session))
    assert found.template_entity == "carts"
    assert found.sample == {"limit": 500, "before": 30, "after": 330}  # 300 + 20 panics + 10 background
    first, second = found.templates  # the background error, seen before the onset too, is not new
    assert first["template"] == "ERROR connection refused to db host=<IP> after <NUM> ms (attempt <NUM>)"
    assert (first["count"], first["before"]) == (300, 0)
    assert first["example"].startswith("ERROR connection refused to db host=10.0.3.")
    assert first["logql"] == f'{{namespace=~".+", app="carts"}} {ERRORS} |= "connection"'
    assert "panes=" in first["explore_url"]
    assert second["template"].startswith("panic: runtime error: index out of range")
    assert (second["count"], second["before"]) == (20, 0)


async def test_the_sample_is_bounded(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.ignore_limit = True  # a proxy that drops the limit: the bound still holds here
    async with serving(fake) as url:
        found = await evidence(client(url, session), LogsConfig(sample_lines=50, max_templates=1))
    sent = [r for r in fake.requests if "limit" in r]
    assert len(sent) == 2 and {r["limit"] for r in sent} == {"50"}
    assert {r["direction"] for r in sent} == {"backward"}
    assert found.sample == {"limit": 50, "before": 30, "after": 50}
    [template] = found.templates
    assert template["count"] <= 50


async def test_loki_down_degrades_with_the_problem_named(session: aiohttp.ClientSession) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    found = await evidence(client(dead, session, retries=1))
    assert found.signals == () and found.templates == ()
    assert len(found.problems) == len(SERVICES)
    assert all(p.startswith("log errors of ") and f"Loki at {dead} unreachable" in p for p in found.problems)


async def test_loki_slow_degrades_within_the_budget(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.delay = 3.0
    async with serving(fake) as url:
        timed_out = await evidence(client(url, session, timeout=0.3))
        started = time.monotonic()
        over_budget = await evidence(client(url, session, timeout=10.0), LogsConfig(budget=0.5))
        took = time.monotonic() - started
    assert timed_out.signals == () and all("timed out after 0.3s" in p for p in timed_out.problems)
    assert over_budget.signals == () and took < 2.0
    assert over_budget.problems == tuple(
        f"log errors of {s}: not read within logs.budget (0.5s)" for s in SERVICES
    )


async def test_a_refused_query_is_a_problem_not_an_exception(session: aiohttp.ClientSession) -> None:
    fake = shop()
    fake.script = [(400, "parse error at line 1, col 9: syntax error: unexpected IDENTIFIER")] * 4
    async with serving(fake) as url:
        found = await evidence(client(url, session, retries=2))
    assert len(fake.requests) == 4 and found.signals == ()  # refused once each, never retried
    assert all("Loki rejected the query: parse error at line 1, col 9" in p for p in found.problems)
    assert len(found.problems) == 4


async def test_nothing_to_read_yet_and_no_entities(session: aiohttp.ClientSession) -> None:
    loki = client(f"http://127.0.0.1:{free_port()}", session)  # never called
    settings = LogsConfig()
    assert await log_evidence([], None, loki, settings, ONSET, BASELINE, AFTER, NOW, None) == LogEvidence()
    early = await log_evidence(["carts"], None, loki, settings, ONSET, BASELINE, AFTER, ONSET, None)
    assert early.problems and "no time has passed since the onset" in early.problems[0]


async def test_log_lines_are_untrusted_text(session: aiohttp.ClientSession) -> None:
    hostile = "ERROR \x1b[31mboom\x1b[0m \u202e<!channel> " + "x" * 5000
    fake = FakeLoki(
        streams=[
            Stream(
                {"app": "carts", "namespace": "shop"}, [(ONSET + i, f"{hostile} {i}") for i in range(1, 60)]
            ),
            Stream(
                {"app": "orders", "namespace": "shop"}, [(ONSET - 60 * i, "ERROR old") for i in range(1, 30)]
            ),
        ]
    )
    async with serving(fake) as url:
        found = await log_evidence(
            ["carts", "orders"], None, client(url, session), LogsConfig(), ONSET, BASELINE, AFTER, NOW, None
        )
    [template] = found.templates
    assert len(template["example"]) <= 300 and len(template["template"]) <= 300
    assert "\x1b" not in template["example"] and "\u202e" not in template["example"]
    assert template["example"].startswith("ERROR \\x1b[31mboom")
    assert template["explore_url"] is None and found.signals[0]["explore_url"] is None  # no Grafana
    assert visible("a\nb\u2028c", 10) == "a\\x0ab\ufffdc"


def test_entity_and_namespace_values_are_escaped_into_the_selector() -> None:
    plain = render_selector('{namespace="{namespace}", app="{entity}"}', 'we"ird\\na{entity}me', None)
    assert plain == '{app="we\\"ird\\\\na{entity}me"}'  # no namespace: its matcher is left out
    assert parse_logql(plain).matchers == (("app", "=", 'we"ird\\na{entity}me'),)  # type: ignore[union-attr]
    regex = render_selector('{namespace="{namespace}", app=~"{entity}-.*"}', "a.b", "shop")
    [(_, _, namespace), (_, _, pattern)] = parse_logql(regex).matchers  # type: ignore[union-attr]
    assert namespace == "shop" and pattern == "a\\.b-.*"


# -- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        (
            {"selector": '{app="{entity}"'},
            r"'logs.selector': .*parse error at line 1, col 16: expected , or a closing }",
        ),
        (
            {"selector": '{app="{entity}}'},
            r"'logs.selector': .*col 2: expected a matcher .*unbalanced quotes",
        ),
        ({"selector": '{app=~"{entity}(", x="y"}'}, r"'logs.selector': .*invalid regular expression"),
        (
            {"selector": '{app="{service}"}'},
            r"unknown placeholder \{service\}.*allowed: \{entity\}, \{namespace\}",
        ),
        ({"selector": '{namespace="shop"}'}, r"must contain \{entity\}"),
        ({"selector": '{app!="{entity}"}'}, r"cannot match the empty value"),
        ({"selector": '{namespace="{namespace}", app!="{entity}"}'}, r"without its \{namespace\} matchers"),
        ({"error_filter": "| unpack_all"}, r"'logs.error_filter': .*col 1: expected a line filter"),
        ({"error_filter": '|~ "(?i)(error"'}, r"'logs.error_filter': .*invalid regular expression"),
        ({"url": "http://admin:hunter2@loki:3100"}, r"carries credentials .*LOKI_BEARER_TOKEN"),
        ({"sample_lines": 0}, r"'logs.sample_lines'"),
    ],
)
def test_bad_logs_config_fails_at_load(tmp_path: Path, logs: dict[str, object], message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"logs": logs}))  # JSON is YAML
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, environ={})
    assert "hunter2" not in str(caught.value)


def test_the_default_logs_config_is_valid_loki() -> None:
    settings = load_config(None, environ={}).file.logs
    assert settings.url is None  # off until configured
    parse_logql(render_selector(settings.selector, "carts", None) + " " + settings.error_filter)
    for selector in ('{namespace="{namespace}", container="{entity}"}', '{service_name="{entity}"}'):
        assert LogsConfig(selector=selector).selector == selector


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LOKI_USERNAME": "u"}, "LOKI_USERNAME and LOKI_PASSWORD go together"),
        ({"LOKI_USERNAME": "u", "LOKI_PASSWORD": "p", "LOKI_BEARER_TOKEN": "t"}, "not both"),
        ({"LOKI_USERNAME": "a:b", "LOKI_PASSWORD": "p"}, "cannot contain ':'"),
    ],
)
def test_loki_credentials_come_in_one_kind(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ=environ)


async def test_loki_secrets_never_reach_logs_or_problems(session: aiohttp.ClientSession) -> None:
    config = load_config(None, environ={"LOKI_USERNAME": "obs", "LOKI_PASSWORD": "loki-basic-password-xyz"})
    bearer = load_config(None, environ={"LOKI_BEARER_TOKEN": LOKI_TOKEN})
    assert "loki-basic-password-xyz" in config.secrets.values() and "obs" not in config.secrets.values()
    assert LOKI_TOKEN in bearer.secrets.values()
    assert bearer.masked()["secrets"]["LOKI_BEARER_TOKEN"] == "set (masked)"
    assert LOKI_TOKEN not in repr(bearer) and LOKI_TOKEN not in json.dumps(bearer.masked())
    fake = shop()
    fake.script = [(500, f"internal error; request had Authorization: Bearer {LOKI_TOKEN}")] * 20
    written = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with contextlib.redirect_stderr(written):
        setup_logging(bearer.secrets.values())
    try:
        async with serving(fake) as url:
            loki = LokiClient.from_config(_config(url, secrets={"loki_bearer_token": LOKI_TOKEN}), session)
            assert loki is not None
            found = await evidence(loki)
    finally:
        root.handlers[:], root.level = saved
    assert found.problems and all("HTTP 500" in p and "Bearer ***" in p for p in found.problems)
    assert "log evidence incomplete" in written.getvalue()
    assert LOKI_TOKEN not in written.getvalue() and LOKI_TOKEN not in json.dumps(found.as_dict())


def as_log_source(loki: LokiClient) -> LogSource:
    return loki  # mypy (``mypy tests/test_logs.py``) checks that the adapter satisfies the Protocol


class _NoLines:
    """A LogSource whose counts come from Loki but whose log queries fail (a querier that times out
    on the heavier query)."""

    def __init__(self, inner: LokiClient) -> None:
        self.inner = inner

    async def metric_range(self, logql: str, start: float, end: float, step: float) -> list[Series]:
        return await self.inner.metric_range(logql, start, end, step)

    async def log_lines(
        self,
        logql: str,
        start: float,
        end: float,
        limit: int,
        direction: Literal["forward", "backward"] = "backward",
    ) -> list[tuple[float, str, dict[str, str]]]:
        raise UpstreamUnavailableError("Loki unavailable (HTTP 504): timeout")


async def test_templates_unread_are_named_and_the_counts_kept(session: aiohttp.ClientSession) -> None:
    async with serving(shop()) as url:
        found = await evidence(_NoLines(client(url, session)))
    assert found.signals[0]["entity"] == "carts" and found.templates == ()
    assert found.problems == ("log templates of carts: Loki unavailable (HTTP 504): timeout",)


async def test_half_a_minute_after_the_onset(session: aiohttp.ClientSession) -> None:
    async with serving(shop()) as url:
        found = await log_evidence(
            list(SERVICES),
            "shop",
            client(url, session),
            LogsConfig(),
            ONSET,
            BASELINE,
            AFTER,
            ONSET + 30,
            None,
        )
    assert found.signals[0]["entity"] == "carts" and found.signals[0]["logql"].endswith("[30s]))")
    assert found.problems == () and found.templates[0]["count"] == 15


def test_the_commented_example_block_loads() -> None:
    text = (Path(__file__).resolve().parents[1] / "config.example.yaml").read_text()
    block = text[text.index("# logs:") : text.index("\nmemory:")]
    data = yaml.safe_load("\n".join(line[2:] if line.startswith("# ") else "" for line in block.splitlines()))
    settings = FileConfig.model_validate(data).logs
    assert settings.url is not None and settings == LogsConfig(url=settings.url)  # the defaults, documented


async def test_one_line_from_a_quiet_service_does_not_outrank_a_real_rise(
    session: aiohttp.ClientSession,
) -> None:
    """The scale of a count is at least its Poisson noise: a service that logged no errors before and
    one after (MAD 0) must not beat one whose errors tripled."""
    noisy = [(ONSET - 60 * m + i, "ERROR busy") for m in range(1, 31) for i in range(8 + 2 * (m % 3))]
    noisy += [(ONSET + 60 * m + i, "ERROR busy") for m in range(10) for i in range(30)]
    fake = FakeLoki(
        streams=[
            Stream({"app": "quiet", "namespace": "shop"}, [(ONSET + 30, "ERROR once")]),
            Stream({"app": "noisy", "namespace": "shop"}, noisy),
        ]
    )
    async with serving(fake) as url:
        found = await log_evidence(
            ["quiet", "noisy"], "shop", client(url, session), LogsConfig(), ONSET, BASELINE, AFTER, NOW, None
        )
    assert [s["entity"] for s in found.signals] == ["noisy", "quiet"]
    assert found.signals[1]["deviation"] == 1.0 and found.signals[0]["deviation"] > 6


# -- in the pipeline: log errors join the ranked entities' evidence, the report shows them -----------


class _QuietMetrics:
    """Every service's cpu wobbles the same way around the onset: the metrics alone cannot tell which
    service is at fault; front-end's moves a little more, so it ranks first without the logs (carts'
    moves ``carts`` against front-end's 0.3)."""

    def __init__(self, carts: float = 0.1) -> None:
        self._carts = carts

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        ts = tuple(float(t) for t in np.arange(start, end, step))
        found = []
        for n, service in enumerate(SERVICES):
            lift = {"front-end": 0.3, "carts": self._carts}.get(service, 0.1)
            values = tuple(
                0.2 + 0.01 * ((i * (n + 3)) % 5) + (lift if t >= ONSET else 0.0) for i, t in enumerate(ts)
            )
            found.append(Series({"service": service}, ts, values))
        return found

    def explore_url(self, expr: str, start: float, end: float) -> str:
        return "http://prometheus/graph"


def _incident() -> Incident:
    labels = {"alertname": "ShopSlow", "namespace": "shop", "service": "front-end"}
    return Incident("1", "g", "alertmanager", "firing", "ShopSlow", labels, ONSET, None)


async def test_the_pipeline_shows_log_errors_as_evidence_and_reports_them(
    session: aiohttp.ClientSession,
) -> None:
    investigation = InvestigationConfig.model_validate(
        {"signals": [{"name": "cpu", "query": "cpu_usage"}], "baseline": BASELINE, "after": AFTER}
    )
    without = await pipeline.run(_incident(), PipelineDeps(_QuietMetrics(), investigation), now=NOW)
    assert without.hypotheses[0]["entity"] == "front-end" and without.logs is None
    async with serving(shop()) as url:
        deps = PipelineDeps(_QuietMetrics(), investigation, logs=as_log_source(client(url, session)))
        report = await pipeline.run(_incident(), deps, now=NOW)
    ranked = {h["entity"]: h for h in report.hypotheses}
    scores = {h["entity"]: h["score"] for h in without.hypotheses}
    assert {e: h["score"] for e, h in ranked.items()} == scores  # carts' metrics hardly moved: no lift
    logged = [e for e in ranked["carts"]["evidence"] if e["signal"] == "log_errors"]  # only its moved
    assert logged and logged[0]["query_language"] == "logql" and "count_over_time" in logged[0]["promql"]
    assert not [e for e in ranked["front-end"]["evidence"] if e["signal"] == "log_errors"]
    assert report.logs is not None and report.logs["template_entity"] == "carts"
    assert "What the logs say (Loki):" in report.summary and "connection refused" in report.summary


async def test_error_lines_decide_between_comparable_suspects(session: aiohttp.ClientSession) -> None:
    """carts' metrics moved nearly as much as front-end's, and only carts' error lines rose with them:
    the logs put carts first. Without Loki, front-end stays first."""
    investigation = InvestigationConfig.model_validate(
        {"signals": [{"name": "cpu", "query": "cpu_usage"}], "baseline": BASELINE, "after": AFTER}
    )
    metrics = _QuietMetrics(carts=0.25)
    without = await pipeline.run(_incident(), PipelineDeps(metrics, investigation), now=NOW)
    assert [h["entity"] for h in without.hypotheses[:2]] == ["front-end", "carts"]
    async with serving(shop()) as url:
        deps = PipelineDeps(metrics, investigation, logs=as_log_source(client(url, session)))
        report = await pipeline.run(_incident(), deps, now=NOW)
    assert report.hypotheses[0]["entity"] == "carts"
    before = {h["entity"]: h["score"] for h in without.hypotheses}
    after = {h["entity"]: h["score"] for h in report.hypotheses}
    assert after["carts"] == pytest.approx(before["carts"] + math.log(2.0), abs=1e-3)
    assert after["front-end"] == before["front-end"]  # its error lines did not move


def test_errors_that_began_after_the_metrics_are_not_evidence() -> None:
    """A rise that began more than a count's step after the entity's own metric change is an effect."""
    ranking = [Candidate("carts", 2.0, ONSET, ()), Candidate("orders", 1.9, ONSET, ())]
    signals = [
        {"entity": "carts", "score": 8.0, "onset_unix": ONSET + 60.0, "step": 60},
        {"entity": "orders", "score": 8.0, "onset_unix": ONSET + 61.0, "step": 60},
        {"entity": "front-end", "score": 9.0, "onset_unix": ONSET, "step": 60},  # not ranked
    ]
    assert risen(signals, ranking) == ["carts"]
    weak = [{"entity": "carts", "score": LOG_SIGNAL_MIN - 0.01, "onset_unix": ONSET, "step": 60}]
    assert risen(weak, ranking) == []


async def test_readiness_names_loki_and_degrades_when_it_is_down(aiohttp_client: Any, tmp_path: Path) -> None:
    """Loki is named in readiness with its URL and breaker; down, the service is degraded (a report
    goes out without the logs), never unavailable."""
    from agentic_observability.service import init_app
    from tests.conftest import make_config

    async with serving(shop()) as url:
        config = make_config(tmp_path, memory={"enabled": False}, logs={"url": url})
        client = await aiohttp_client(init_app(config))
        body = await (await client.get("/api/v1/health/ready")).json()
        assert body["checks"]["loki"] == {"status": "ok", "url": url, "breaker": "closed"}
        assert (
            body["checks"]["replica"]["status"] == "ok" and "retention" in body["checks"]["replica"]["leases"]
        )
    down = await client.get("/api/v1/health/ready")  # the fake Loki is gone now
    checks = (await down.json())["checks"]
    assert down.status == 200 and checks["loki"]["status"] == "down" and url in checks["loki"]["url"]
    off = await aiohttp_client(init_app(make_config(tmp_path / "off", memory={"enabled": False})))
    assert (await (await off.get("/api/v1/health/ready")).json())["checks"]["loki"]["status"] == "disabled"
