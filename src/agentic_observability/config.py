"""The one place that reads configuration: a YAML file plus the environment (for secrets and tunables).

Every section rejects unknown keys, so a misspelt key fails at startup with a message naming the key,
the file and the closest valid spelling, instead of silently falling back to a default.
Secrets are never read from YAML: only from the environment variables in ``SECRET_ENV``.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agentic_observability.errors import ConfigError

CONFIG_ENV = "AGENTIC_OBS_CONFIG"

# field name on Secrets -> environment variable
SECRET_ENV: dict[str, str] = {
    "webhook_token": "AGENTIC_OBS_WEBHOOK_TOKEN",
    "huggingface_token": "HUGGINGFACE_TOKEN",
    "grafana_token": "GRAFANA_TOKEN",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "pagerduty_routing_key": "PAGERDUTY_ROUTING_KEY",
    "qdrant_api_key": "QDRANT_API_KEY",
    "prometheus_bearer_token": "PROMETHEUS_BEARER_TOKEN",
    "prometheus_username": "PROMETHEUS_USERNAME",
    "prometheus_password": "PROMETHEUS_PASSWORD",
    "slack_webhook_url": "SLACK_WEBHOOK_URL",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",  # verifies Slack's buttons and slash commands
    "slack_app_token": "SLACK_APP_TOKEN",  # xapp-…: the same over Socket Mode (no ingress needed)
    "loki_bearer_token": "LOKI_BEARER_TOKEN",
    "loki_username": "LOKI_USERNAME",
    "loki_password": "LOKI_PASSWORD",
    "postgres_password": "POSTGRES_PASSWORD",  # storage.backend: postgres
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any) -> float:
    """Prometheus-style durations ("30s", "1h30m", "1d") or plain numbers of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = str(value).strip()
    if not text or _DURATION_PART.sub("", text) != "":
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h30m or 1d")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


Duration = Annotated[float, BeforeValidator(parse_duration)]


def check_http_url(value: Any) -> Any:
    """An absolute http(s) URL; a bare ``host:port`` is the usual slip and fails only much later."""
    if value is None:
        return value
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{_shown(str(value))!r} is not an http(s) URL such as http://prometheus:9090")
    return str(value)


def redact_url(url: str) -> str:
    """``url`` without its userinfo (``user:password@``): the form every shown URL takes (logs, reports,
    readiness, Slack, check-config). Requests still use the credentials (see PrometheusClient)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# scheme://userinfo@ inside any text; userinfo stops at what cannot be in it (or ends a quoted string)
_USERINFO_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s\"'<>]*(?:@[^/?#@\s\"'<>]*)*@")


def redact_urls(text: str) -> str:
    """Every URL inside ``text`` (a log line, an error message) without its userinfo."""
    return _USERINFO_IN_TEXT.sub(r"\1", text)


def _shown(value: str) -> str:
    """A rejected value as an error message may show it: never with what looks like credentials."""
    shown = redact_url(value)
    return "…" + shown.rpartition("@")[2] if "@" in shown.split("/")[0] else shown


HttpUrl = Annotated[str, BeforeValidator(check_http_url)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServerConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, gt=0)
    auth: bool = True
    workers: int = Field(2, ge=1, le=64)
    shutdown_timeout: Duration = 10.0
    public_url: HttpUrl | None = None  # how people reach this service; links in Slack/Grafana/PagerDuty
    # Intake caps: a body over any of them is refused with a 400 naming the limit. Alertmanager's
    # receiver `max_alerts` (see alertmanager/receiver.yml) keeps real groups under the first one.
    max_alerts_per_body: int = Field(1000, ge=1)
    max_labels_per_alert: int = Field(64, ge=1)
    max_annotations_per_alert: int = Field(64, ge=1)
    max_label_value_bytes: int = Field(2048, ge=1)
    max_annotation_bytes: int = Field(16384, ge=1)
    # Slow clients: a request whose headers or body take longer than these is dropped.
    header_timeout: Duration = 10.0
    body_timeout: Duration = 30.0
    # Readiness turns 503 when the oldest pending job has waited longer than this.
    ready_max_job_age: Duration = 600.0
    analyze_concurrency: int = Field(2, ge=1, le=64)  # ad-hoc /api/v1/analyze queries at once
    # Replicas on one PostgreSQL store: a job, an outbox row, a watch is held for this long and
    # renewed every third of it; a replica that stops renewing loses them to another within two leases.
    lease: Duration = Field(15.0, ge=1.0, le=600.0)


class PrometheusConfig(Section):
    # Credentials: PROMETHEUS_BEARER_TOKEN or PROMETHEUS_USERNAME + PROMETHEUS_PASSWORD. A user:password@
    # in the URL is also used (as basic auth) but never shown; the environment is the better place.
    url: HttpUrl = "http://127.0.0.1:9090"
    timeout: Duration = 10.0
    retries: int = Field(3, ge=0, le=10)
    # A larger answer is refused (a query over too many series must not exhaust the service's memory).
    max_response_bytes: int = Field(64 * 1_048_576, ge=1024)


def _password_in_conninfo(value: str) -> bool:
    """Whether a libpq connection string (URI or ``key=value`` form) carries a password."""
    text = value.strip()
    if text.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        return parts.password is not None or bool(re.search(r"(?:^|&)password=", parts.query))
    return re.search(r"(?:^|\s)password\s*=", text) is not None


class PostgresConfig(Section):
    """``storage.backend: postgres``: where and how to connect. ``url`` is a libpq connection string,
    a URI (``postgresql://agentic@db:5432/agentic``) or key/value (``service=agentic`` names an entry
    of a libpq service file, ``host=db dbname=agentic``); the password comes from POSTGRES_PASSWORD
    (or the service file, or ~/.pgpass), never from this file."""

    url: str | None = None
    pool_min: int = Field(1, ge=0, le=1000)
    pool_max: int = Field(10, ge=1, le=1000)
    connect_timeout: Duration = 5.0
    statement_timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None and _password_in_conninfo(value):
            raise ValueError(
                "storage.postgres.url carries a password; remove it and set POSTGRES_PASSWORD in the "
                "environment (or use a libpq service file / ~/.pgpass)"
            )
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> PostgresConfig:
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) cannot exceed pool_max ({self.pool_max})")
        return self


class StorageConfig(Section):
    path: str = "./var"
    # sqlite: one file under ``path`` (one replica); postgres: ``postgres.url`` (several replicas).
    backend: Literal["sqlite", "postgres"] = "sqlite"
    postgres: PostgresConfig = PostgresConfig()
    # Resolved incidents (with their alerts, jobs, delivered actions and inbox rows) older than this
    # are pruned, in small batches that never hold the write lock for long.
    retention: Duration = 30 * 86400.0
    prune_batch: int = Field(500, ge=1, le=100_000)
    prune_interval: Duration = 600.0

    @model_validator(mode="after")
    def _postgres_needs_a_url(self) -> StorageConfig:
        if self.backend == "postgres" and not (self.postgres.url or "").strip():
            raise ValueError(
                "storage.backend is postgres but storage.postgres.url is not set; set it to a libpq "
                "connection string such as postgresql://agentic@db:5432/agentic or service=agentic"
            )
        return self


class WatchConfig(Section):
    name: str = Field(min_length=1)
    query: str = Field(min_length=1)
    interval: Duration = 60.0
    lookback: Duration = 86400.0
    detector: str = "default"
    for_: Duration = Field(0.0, alias="for")
    above: float | None = None
    below: float | None = None
    resolve_after: int = Field(3, ge=1, description="consecutive clean polls before an episode closes")
    forget_after: int = Field(10, ge=1, description="polls a series may be absent before it is forgotten")
    max_series: int = Field(
        10_000, ge=1, description="series tracked per watch; more are counted, not tracked"
    )


class SignalConfig(Section):
    name: str
    query: str
    # How people read its values: seconds, bytes, ratio, percent, per_second, or any other word
    # (printed after the value). Unset: from the metric name's suffix (_seconds, _bytes, _ratio, ...).
    unit: str | None = None


class CallEdge(Section):
    """``caller`` calls ``callee``: when both changed, the callee is the better explanation."""

    caller: str
    callee: str


class InvestigationConfig(Section):
    entity_label: str = "service"
    signals: tuple[SignalConfig, ...] = ()
    calls: tuple[CallEdge, ...] = ()
    baseline: Duration = 1800.0
    after: Duration = 600.0
    evidence_window: Duration = 3600.0
    # A change event (changes:) this long before the onset, on a ranked entity or a callee, is shown
    # at the top of the report and counts as evidence in the ranking.
    change_window: Duration = 1800.0


# kube-state-metrics series carry the workload (deployment, statefulset, daemonset); the entity an
# investigation ranks (investigation.entity_label, e.g. service) is the first of these labels present
# on the workload's series or its kube_<kind>_labels (labels allowlisted in kube-state-metrics'
# --metric-labels-allowlist), ``workload`` being the workload's own name.
DEFAULT_ENTITY_FROM = (
    "label_app_kubernetes_io_name",
    "label_app",
    "label_service",
    "deployment",
    "statefulset",
    "daemonset",
    "workload",
)


class ChangesConfig(Section):
    """Change events (issue 18): kube-state-metrics polled through Prometheus, Grafana annotations
    tagged as deploys (when actions.grafana.url is set), and POST /api/v1/changes."""

    enabled: bool = True  # off: nothing is polled and reports do not look (the route still stores)
    poll_interval: Duration = 60.0
    entity_from: tuple[str, ...] = Field(DEFAULT_ENTITY_FROM, min_length=1)
    grafana_tag: str = Field("deploy", min_length=1)
    kube_state_metrics: bool = True

    @field_validator("poll_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


class CorrelationConfig(Section):
    """One incident per fault: a new alert group or watch episode joins an open incident that started
    within ``window`` of it, whose root cause is the same service or a caller/callee of it
    (``investigation.calls``), and whose ``by`` labels, where both have them, are equal."""

    enabled: bool = True
    window: Duration = 600.0
    by: tuple[str, ...] = ("cluster", "namespace")
    # A group that arrives while an earlier one is still being analysed waits this long for that
    # analysis (its cause is what decides), then decides without it.
    wait: Duration = 60.0


# -- logs (issue 18): error lines and new log templates from Grafana Loki ----------------------------

LOG_PLACEHOLDERS = ("entity", "namespace")
_LOG_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LOG_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|`[^`]*`)\s*')
_LOG_FILTER = re.compile(r'\s*(\|=|!=|\|~|!~)\s*("(?:[^"\\]|\\.)*"|`[^`]*`)\s*')
_LOG_PARSER_STAGE = re.compile(r"\s*\|\s*(json|logfmt)\b\s*")
_GO_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _log_parse_error(text: str, at: int, what: str) -> ValueError:
    # the form Loki's own parser uses, so a message reads the same from the config and from Loki
    return ValueError(f"{text!r}: parse error at line 1, col {at + 1}: {what}")


def log_string(quoted: str) -> str:
    """The value of a LogQL string literal (``"..."`` with Go escapes, or a raw ```...```)."""
    if quoted.startswith("`"):
        return quoted[1:-1]
    out, chars, index = [], quoted[1:-1], 0
    while index < len(chars):
        char = chars[index]
        if char == "\\":
            code = chars[index + 1]
            if code not in _GO_ESCAPES:
                raise ValueError(f"unknown escape \\{code} in {quoted} (write \\\\ for a backslash)")
            out.append(_GO_ESCAPES[code])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def parse_log_selector(text: str) -> list[tuple[str, str, str]]:
    """A LogQL stream selector ``{name="value", name=~"regex", ...}`` as (name, operator, value).
    A ValueError names the column, as Loki would; regexes must compile and one matcher must select
    something (Loki refuses a selector every stream matches)."""
    start = len(text) - len(text.lstrip())
    if not text[start:].startswith("{"):
        raise _log_parse_error(text, start, "a stream selector starts with {")
    matchers, at = [], start + 1
    while True:
        found = _LOG_MATCHER.match(text, at)
        if found is None:
            raise _log_parse_error(text, at, 'expected a matcher like app="carts" (unbalanced quotes?)')
        name, op, quoted = found.groups()
        value = log_string(quoted)
        if op in ("=~", "!~"):
            try:
                re.compile(_LOG_PLACEHOLDER.sub("x", value))
            except re.error as exc:
                raise _log_parse_error(text, found.start(3), f"invalid regular expression: {exc}") from None
        matchers.append((name, op, value))
        at = found.end()
        if text.startswith(",", at):
            at += 1
            continue
        if text.startswith("}", at) and not text[at + 1 :].strip():
            break
        raise _log_parse_error(text, at, "expected , or a closing } at the end")
    if not any(_selects(op, _LOG_PLACEHOLDER.sub("x", value)) for _, op, value in matchers):
        raise ValueError(
            f"{text!r}: needs one = or =~ matcher that cannot match the empty value (Loki refuses "
            'app=~".*" alone; app=~".+" is fine)'
        )
    return matchers


def _selects(op: str, value: str) -> bool:
    return (op == "=" and value != "") or (op == "=~" and re.fullmatch(value, "") is None)


def check_log_filter(text: str) -> str:
    """A LogQL pipeline of line filters (``|=``, ``!=``, ``|~``, ``!~``) and ``| json`` / ``| logfmt``:
    what goes between the stream selector and the range of a metric query."""
    at = 0
    while text[at:].strip():
        stage = _LOG_FILTER.match(text, at)
        if stage is not None:
            if stage.group(1) in ("|~", "!~"):
                try:
                    re.compile(log_string(stage.group(2)))
                except re.error as exc:
                    where = stage.start(2)
                    raise _log_parse_error(text, where, f"invalid regular expression: {exc}") from None
            else:
                log_string(stage.group(2))
        else:
            stage = _LOG_PARSER_STAGE.match(text, at)
        if stage is None:
            raise _log_parse_error(text, at, 'expected a line filter (|= != |~ !~ "...") or | json, | logfmt')
        at = stage.end()
    return text


class LogsConfig(Section):
    """Log evidence from Grafana Loki (issue 18); off while ``url`` is unset.

    Credentials come from the environment only: LOKI_BEARER_TOKEN, or LOKI_USERNAME + LOKI_PASSWORD
    (basic auth, e.g. Grafana Cloud Logs). ``tenant`` is sent as X-Scope-OrgID (multi-tenant Loki).

    ``selector`` maps an investigation entity to its log streams: a LogQL stream selector in which
    ``{entity}`` is the entity's value and ``{namespace}`` the incident's namespace label (a matcher
    with ``{namespace}`` is left out when the incident has none). Values are escaped for the string
    (and regex) they land in. Pick the labels your log agent writes:
      Promtail/Alloy kubernetes_sd:  {namespace="{namespace}", app="{entity}"}   (pod label app)
      by container name:             {namespace="{namespace}", container="{entity}"}
      OpenTelemetry / Loki 3:        {service_name="{entity}"}
    ``grafana_datasource`` is the uid of the Loki datasource in Grafana (actions.grafana.url), used in
    the Explore links of log evidence; Grafana does not default a pane to it, so it must match.
    """

    url: HttpUrl | None = None
    tenant: str | None = None
    timeout: Duration = 10.0  # each request; transient failures (429, 5xx, timeouts) are retried
    retries: int = Field(2, ge=0, le=10)
    budget: Duration = 30.0  # all log evidence of one report; what is unread by then is named
    max_response_bytes: int = Field(16 * 1_048_576, ge=1024)
    selector: str = '{namespace=~".+", app="{entity}"}'
    error_filter: str = '|~ "(?i)(error|exception|panic|fatal)"'
    sample_lines: int = Field(500, ge=10, le=5000)  # lines before and after the onset, for templates
    max_templates: int = Field(5, ge=1, le=50)
    max_entities: int = Field(5, ge=1, le=20)  # candidate entities queried per report
    grafana_datasource: str = Field("loki", min_length=1)

    @field_validator("url")
    @classmethod
    def _no_userinfo(cls, value: str | None) -> str | None:
        if value is not None and "@" in urlsplit(value).netloc:
            raise ValueError(
                f"{_shown(value)!r} carries credentials (user:password@); set LOKI_BEARER_TOKEN or "
                "LOKI_USERNAME + LOKI_PASSWORD in the environment instead"
            )
        return value

    @field_validator("tenant")
    @classmethod
    def _header_value(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "\r\n\0")):
            raise ValueError("must be a non-empty X-Scope-OrgID value on one line")
        return value

    @field_validator("selector")
    @classmethod
    def _valid_selector(cls, value: str) -> str:
        unknown = sorted({p for p in _LOG_PLACEHOLDER.findall(value) if p not in LOG_PLACEHOLDERS})
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} in {value!r} (allowed: {{entity}}, {{namespace}})"
            )
        if "{entity}" not in value:
            raise ValueError(
                f'{value!r} must contain {{entity}} (e.g. app="{{entity}}"): else all read one stream'
            )
        kept = [m for m in parse_log_selector(value) if "{namespace}" not in m[2]]
        if not any(_selects(op, _LOG_PLACEHOLDER.sub("x", v)) for _, op, v in kept):
            raise ValueError(
                f"{value!r}: without its {{namespace}} matchers (an incident with no namespace label) "
                "no = or =~ matcher is left that selects anything"
            )
        return value

    @field_validator("error_filter")
    @classmethod
    def _valid_filter(cls, value: str) -> str:
        return check_log_filter(value)


class MemoryConfig(Section):
    enabled: bool = True
    backend: Literal["edge", "qdrant"] = "edge"
    url: HttpUrl | None = None
    embedder: str = "hashing"  # hashing | hashing:<dimension> | huggingface:<model id>
    timeout: Duration = 5.0
    recall_limit: int = Field(3, ge=1, le=20)
    max_points: int = Field(100_000, ge=1)  # past it, the oldest unconfirmed incidents are forgotten


class ReasoningConfig(Section):
    backend: Literal["rules", "llm"] = "rules"
    model: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    base_url: HttpUrl | None = None
    timeout: Duration = 20.0  # the whole budget, retries included; then the rules report goes out
    retries: int = Field(2, ge=0, le=5)
    requests_per_minute: float = Field(60.0, gt=0)


class GrafanaConfig(Section):
    url: HttpUrl | None = None
    dashboard_uid: str | None = None
    panel_id: int | None = None
    folder: str = "agentic-observability"
    # Push the bundled dashboards at startup; off when Grafana provisions them from files (or the
    # Helm chart's sidecar ConfigMap), which owns those uids.
    provision_dashboards: bool = True


class SlackConfig(Section):
    """The incoming-webhook URL is a secret (whoever has it can post): SLACK_WEBHOOK_URL only."""

    api_url: HttpUrl = "https://slack.com/api"
    channel: str | None = None


class PagerDutyConfig(Section):
    events_url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"


class FileSinkConfig(Section):
    """The embedded default sink: one JSON line per action in ``<storage.path>/actions.jsonl``."""

    enabled: bool = True
    max_bytes: int = Field(10 * 1_048_576, ge=1024)  # then actions.jsonl rotates to actions.jsonl.1 …
    backups: int = Field(3, ge=0, le=100)


_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def parse_matcher(text: str) -> tuple[str, str, str]:
    """An Alertmanager-style matcher: ``label=value``, ``!=``, ``=~`` or ``!~`` (regex, anchored)."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f'{text!r} is not a matcher like severity="critical" or service=~"cart.*"')
    name, op, value = found.groups()
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: invalid regular expression: {exc}") from exc
    return name, op, value


def _check_matcher(value: Any) -> Any:
    parse_matcher(str(value))
    return value


class RouteConfig(Section):
    """Send incidents matching every matcher (and one of the severities, when given) to ``sink``.
    A sink with no route gets every incident; a sink with routes gets only what one of them matches."""

    sink: Literal["grafana", "slack", "pagerduty", "file"]
    severities: tuple[str, ...] = ()
    matchers: tuple[Annotated[str, BeforeValidator(_check_matcher)], ...] = ()


class ActionsConfig(Section):
    grafana: GrafanaConfig = GrafanaConfig()
    slack: SlackConfig = SlackConfig()
    pagerduty: PagerDutyConfig = PagerDutyConfig()
    file: FileSinkConfig = FileSinkConfig()
    routes: tuple[RouteConfig, ...] = ()
    timeout: Duration = 10.0
    first_retry: Duration = 1.0  # a failed delivery waits this, doubling per attempt (max 5 min)


# -- remediation (issue 22): allowlisted actions a person approves, run within limits ---------------

_ACTION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SLACK_APPROVER = re.compile(r"^[UWS][A-Z0-9]{2,}$")  # a user (U…, W… on Enterprise Grid) or group (S…)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Kubernetes namespace name
TEMPLATE_FIELDS = ("cause", "incident.id", "incident.title", "incident.severity", "action")
_LABEL_FIELD = re.compile(r"^labels\.[a-zA-Z_][a-zA-Z0-9_]*$")
_KUBERNETES_ONLY = frozenset({"namespaces", "namespace", "workload", "workload_kind"})
_SCALE_ONLY = frozenset({"scale_by", "min_replicas", "max_replicas"})
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token
_HTTP_ONLY = frozenset({"url", "body", "headers", "token_env", "token_header", "token_scheme"})


def template_parts(text: str) -> list[tuple[str, str | None]]:
    """A template as (literal text, placeholder or None) pairs. ``{{`` and ``}}`` are literal braces.
    Only the placeholders in ``TEMPLATE_FIELDS`` and ``{labels.<name>}`` exist; any other (or a format
    spec) is a ValueError naming it, so a typo fails at load instead of rendering nothing at 3 a.m."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a template ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not _known_placeholder(name)):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            allowed = ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)
            raise ValueError(
                f"unknown placeholder {shown} in {text!r} (allowed: {allowed}, {{labels.<name>}})"
            )
        parts.append((literal, name))
    return parts


def _known_placeholder(name: str) -> bool:
    return name in TEMPLATE_FIELDS or _LABEL_FIELD.match(name) is not None


def _template_strings(value: Any) -> list[str]:
    """Every string inside a JSON-like value (an http body): each one is a template."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _template_strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _template_strings(item)]
    return []


class RemediationKubernetes(Section):
    # A kubeconfig file; unset: the in-cluster service account, else $KUBECONFIG, else ~/.kube/config.
    kubeconfig: str | None = None
    context: str | None = None  # a context of that kubeconfig; unset: its current-context


class RemediationAction(Section):
    """One allowlisted action: when it applies, what it does, who may approve it and how often it may
    run. Nothing outside this catalogue is ever proposed or run (see ``remediation/catalogue.py``)."""

    name: str
    kind: Literal["kubernetes.rollout_restart", "kubernetes.scale", "http"]
    description: str = ""
    # When: Alertmanager-style matchers over the incident's labels, an anchored regex on the ranked
    # cause (the report's top hypothesis) and the fault kind (its first evidence signal).
    matchers: tuple[str, ...] = ()
    cause: str | None = None
    signals: tuple[str, ...] = ()
    # kubernetes.*: a workload in one of the allowlisted namespaces (templates render the target)
    namespaces: tuple[str, ...] = ()
    namespace: str = "{labels.namespace}"
    workload: str = "{cause}"
    workload_kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    scale_by: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    # http: a POST to an automation system; string values of body and headers are templates. The
    # token is the NAME of an environment variable (sent as a bearer token), never the secret itself.
    url: HttpUrl | None = None
    body: dict[str, Any] = {}
    headers: dict[str, str] = {}
    token_env: str | None = None
    # Where the token goes: `Authorization: Bearer <token>` by default; Rundeck takes it as
    # X-Rundeck-Auth-Token and StackStorm as St2-Api-Key (token_scheme "" for the bare token).
    token_header: str = "Authorization"
    token_scheme: str = "Bearer"
    # Who and when
    approvers: tuple[str, ...] = ()  # Slack user (U…/W…) or user-group (S…) ids; empty: only auto
    auto: bool = False  # may run without approval, only for auto_severities
    auto_severities: tuple[str, ...] = ()
    min_interval: Duration = 1800.0  # per workload (per url for http)
    max_per_hour: int = 3  # this action, across all incidents

    @model_validator(mode="after")
    def _consistent(self) -> RemediationAction:
        problem = _action_problem(self)
        if problem is not None:
            # named by its name: the location pydantic reports only has its index
            raise _remediation_error(f"remediation.actions[{self.name}]: {problem}")
        return self


def _remediation_error(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (no "Value error, " before it)."""
    return PydanticCustomError("remediation", "{message}", {"message": message})


def _action_problem(action: RemediationAction) -> str | None:
    checks = (_name_problem, _when_problem, _fields_problem, _kind_problem, _who_problem, _template_problem)
    return next((p for p in (check(action) for check in checks) if p is not None), None)


def _name_problem(action: RemediationAction) -> str | None:
    if not _ACTION_NAME.match(action.name):
        return "name must be 1-40 lower-case letters, digits or '-', starting with a letter or digit"
    return None


def _when_problem(action: RemediationAction) -> str | None:
    for index, matcher in enumerate(action.matchers):
        try:
            parse_matcher(matcher)
        except ValueError as exc:
            return f"matchers[{index}]: {exc}"
    if action.cause is not None:
        try:
            re.compile(action.cause)
        except re.error as exc:
            return f"cause: {action.cause!r} is not a regular expression: {exc}"
    if any(not s.strip() for s in action.signals):
        return "signals: a signal name cannot be empty"
    return None


def _fields_problem(action: RemediationAction) -> str | None:
    """A key set for another kind is a slip (a scale bound on a restart does nothing): say so."""
    if action.kind == "http":
        foreign = _KUBERNETES_ONLY | _SCALE_ONLY
    elif action.kind == "kubernetes.rollout_restart":
        foreign = _SCALE_ONLY | _HTTP_ONLY
    else:
        foreign = _HTTP_ONLY
    stray = sorted(action.model_fields_set & foreign)
    return f"{', '.join(stray)} does not apply to {action.kind}" if stray else None


def _kind_problem(action: RemediationAction) -> str | None:
    if action.kind == "http":
        return _http_problem(action)
    if not action.namespaces:
        return f"{action.kind} needs namespaces (the allowlist of namespaces it may act in)"
    bad = [n for n in action.namespaces if not _DNS_LABEL.match(n)]
    if bad:
        return f"namespaces: {bad[0]!r} is not a Kubernetes namespace name"
    if action.kind == "kubernetes.scale":
        low, high = action.min_replicas, action.max_replicas
        if low is None or high is None:
            return "kubernetes.scale needs min_replicas and max_replicas"
        if low < 0 or high < low:
            return f"min_replicas ({low}) and max_replicas ({high}) need 0 <= min_replicas <= max_replicas"
        if action.scale_by == 0:
            return "scale_by must not be 0 (the change in replicas: 1 scales up by one, -1 down)"
    return None


def _http_problem(action: RemediationAction) -> str | None:
    if action.url is None:
        return "http needs url (where the POST goes)"
    if "@" in urlsplit(action.url).netloc:
        return "url must not carry credentials (user:password@); name an environment variable in token_env"
    if action.token_env is not None and not _ENV_NAME.match(action.token_env):
        return f"token_env: {action.token_env!r} is not an environment variable name like RUNDECK_TOKEN"
    if any(h.lower() in ("authorization", action.token_header.lower()) for h in action.headers):
        return f"headers: no {action.token_header} header here (never a secret in the file); use token_env"
    if not _HEADER_NAME.match(action.token_header):
        return f"token_header: {action.token_header!r} is not an HTTP header name"
    if any(c in action.token_scheme for c in "\r\n\0 "):
        return f"token_scheme: {action.token_scheme!r} must be one word, like Bearer, or empty"
    return None


def _who_problem(action: RemediationAction) -> str | None:
    bad = [a for a in action.approvers if not _SLACK_APPROVER.match(a)]
    if bad:
        return f"approvers: {bad[0]!r} is not a Slack user id (U…, W…) or user-group id (S…)"
    if action.auto and not action.auto_severities:
        return "auto needs auto_severities (the severities it may run for without approval)"
    if action.max_per_hour < 1:
        return "max_per_hour must be at least 1 (the runs of this action allowed in any hour)"
    return None


def _template_problem(action: RemediationAction) -> str | None:
    templates: list[tuple[str, str]] = []
    if action.kind == "http":
        templates += [("body", s) for s in _template_strings(action.body)]
        templates += [(f"headers.{k}", v) for k, v in action.headers.items()]
    else:
        templates += [("namespace", action.namespace), ("workload", action.workload)]
    for where, text in templates:
        try:
            template_parts(text)
        except ValueError as exc:
            return f"{where}: {exc}"
    return None


class RemediationConfig(Section):
    """Off by default. Proposed actions come only from ``actions``; the model never picks one."""

    enabled: bool = False
    actions: tuple[RemediationAction, ...] = ()
    kubernetes: RemediationKubernetes = RemediationKubernetes()
    timeout: Duration = 10.0  # each call to the Kubernetes API or the automation system
    follow_up: Duration = 600.0  # after an action: whether the signals recovered within this window

    @model_validator(mode="after")
    def _unique_and_positive(self) -> RemediationConfig:
        names = [a.name for a in self.actions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise _remediation_error(
                f"remediation.actions: names must be unique; repeated: {', '.join(repeated)}"
            )
        for key in ("timeout", "follow_up"):
            if getattr(self, key) <= 0:
                raise _remediation_error(f"remediation.{key} must be greater than 0")
        return self

    def action(self, name: str) -> RemediationAction | None:
        return next((a for a in self.actions if a.name == name), None)


class FileConfig(Section):
    """Exactly the YAML file's schema."""

    server: ServerConfig = ServerConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    storage: StorageConfig = StorageConfig()
    watches: tuple[WatchConfig, ...] = ()
    investigation: InvestigationConfig = InvestigationConfig()
    correlation: CorrelationConfig = CorrelationConfig()
    changes: ChangesConfig = ChangesConfig()
    logs: LogsConfig = LogsConfig()
    memory: MemoryConfig = MemoryConfig()
    reasoning: ReasoningConfig = ReasoningConfig()
    actions: ActionsConfig = ActionsConfig()
    remediation: RemediationConfig = RemediationConfig()


class Secrets(Section):
    """Secrets from the environment only; SecretStr masks them in repr, str and model dumps."""

    webhook_token: SecretStr | None = None
    huggingface_token: SecretStr | None = None
    grafana_token: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    qdrant_api_key: SecretStr | None = None
    prometheus_bearer_token: SecretStr | None = None
    prometheus_username: SecretStr | None = None
    prometheus_password: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    loki_bearer_token: SecretStr | None = None
    loki_username: SecretStr | None = None
    loki_password: SecretStr | None = None
    postgres_password: SecretStr | None = None
    # The http remediation actions' bearer tokens, by the environment variable each action's
    # token_env names (read at load only while remediation is enabled; see _remediation_tokens).
    remediation_tokens: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("slack_webhook_url")
    @classmethod
    def _webhook_is_a_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message must not echo the value: it is the secret.
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL such as https://hooks.slack.com/services/...")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_level_token(cls, value: SecretStr | None) -> SecretStr | None:
        # A bot token (xoxb-) here is the usual slip; Slack would refuse it only at connection time.
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be the Slack app's app-level token (xapp-…, scope connections:write)")
        return value

    @model_validator(mode="after")
    def _one_prometheus_auth(self) -> Secrets:
        user, password = self.prometheus_username, self.prometheus_password
        if (user is None) != (password is None):
            raise ValueError(
                "PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD go together (basic auth): set both or neither"
            )
        if user is not None and ":" in user.get_secret_value():
            raise ValueError("PROMETHEUS_USERNAME cannot contain ':' (basic auth separates on it)")
        if self.prometheus_bearer_token is not None and user is not None:
            raise ValueError(
                "set either PROMETHEUS_BEARER_TOKEN or PROMETHEUS_USERNAME + PROMETHEUS_PASSWORD, not both"
            )
        return self

    @model_validator(mode="after")
    def _one_loki_auth(self) -> Secrets:
        user, password = self.loki_username, self.loki_password
        if (user is None) != (password is None):
            raise ValueError("LOKI_USERNAME and LOKI_PASSWORD go together (basic auth): set both or neither")
        if user is not None and ":" in user.get_secret_value():
            raise ValueError("LOKI_USERNAME cannot contain ':' (basic auth separates on it)")
        if self.loki_bearer_token is not None and user is not None:
            raise ValueError("set either LOKI_BEARER_TOKEN or LOKI_USERNAME + LOKI_PASSWORD, not both")
        return self

    def values(self) -> list[str]:
        """Every secret's plain value, for log scrubbing. Not the Prometheus or Loki user name: it is no
        secret, and a common word ("prometheus", "admin") would be starred out of every log line."""
        users = ("prometheus_username", "loki_username")
        found = [getattr(self, name) for name in SECRET_ENV if name not in users]
        found += self.remediation_tokens.values()
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]


class Tunables(Section):
    """Numeric knobs honoured from the environment (the seed's variables)."""

    anomaly_threshold: float = Field(0.7, ge=0.0, le=1.0)  # chosen by `backtest nab`
    circuit_breaker_threshold: int = Field(5, ge=1)
    circuit_breaker_reset: Duration = 30.0


class Config(Section):
    """The whole runtime configuration: the file, secrets and tunables."""

    file: FileConfig = FileConfig()
    secrets: Secrets = Secrets()
    tunables: Tunables = Tunables()
    source: str = "<defaults>"

    def masked(self) -> dict[str, Any]:
        """A printable view: the file's settings (URLs without userinfo) plus which secrets are set
        (never their values)."""
        view = _redact_all(self.file.model_dump(mode="json", by_alias=True))
        view["secrets"] = {
            env: ("set (masked)" if getattr(self.secrets, name) is not None else "not set")
            for name, env in SECRET_ENV.items()
        }
        view["secrets"].update({env: "set (masked)" for env in self.secrets.remediation_tokens})
        view["tunables"] = self.tunables.model_dump(mode="json")
        return view


def _redact_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _redact_all(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_all(item) for item in value]
    return redact_url(value) if isinstance(value, str) and "://" in value else value


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the schema along ``loc`` (without its last element) to list the keys valid there."""
    current: Any = model
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        fields = getattr(current, "model_fields", {})
        field_info = fields.get(item)
        if field_info is None:
            return []
        annotation = field_info.annotation
        args = getattr(annotation, "__args__", ())
        current = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if current is None:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


# Keys that held secrets in earlier versions: the error says where the value goes now.
_MOVED_TO_ENV = {"actions.slack.webhook_url": "slack_webhook_url"}


def _explain(error: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = _format_location(loc) or "(top level)"
        if item["type"] == "extra_forbidden" and where in _MOVED_TO_ENV:
            env = SECRET_ENV[_MOVED_TO_ENV[where]]
            lines.append(
                f"{source}: '{where}' is a secret and is no longer read from the config file; "
                f"remove it and set the environment variable {env} instead"
            )
        elif item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown key '{where}'{hint} (valid keys here: {', '.join(allowed)})")
        else:
            lines.append(f"{source}: '{where}': {item['msg']}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    return data


_TUNABLE_ENV = {
    "anomaly_threshold": "ANOMALY_THRESHOLD",
    "circuit_breaker_threshold": "CIRCUIT_BREAKER_THRESHOLD",
    "circuit_breaker_reset": "CIRCUIT_BREAKER_RESET",
}


def _from_env(model: type[Section], names: Mapping[str, str], environ: Mapping[str, str]) -> Any:
    raw = {field: environ[env] for field, env in names.items() if environ.get(env, "").strip()}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        bad = ", ".join(_env_problem(e["loc"], e["msg"], names) for e in exc.errors())
        raise ConfigError(f"environment: {bad}") from None  # the chained error would show the values


def _env_problem(loc: tuple[Any, ...], message: str, names: Mapping[str, str]) -> str:
    """One problem, named by its variable; a rule across variables (empty ``loc``) names them itself."""
    message = message.removeprefix("Value error, ")
    return f"{names.get(str(loc[0]), loc[0])}: {message}" if loc else message


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the YAML file (``path``, else $AGENTIC_OBS_CONFIG, else defaults) and the environment."""
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_ENV) or None
    source = str(chosen) if chosen is not None else "<defaults>"
    data = _read_yaml(Path(chosen)) if chosen is not None else {}
    try:
        file_config = FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source, FileConfig)) from exc
    secrets = _remediation_tokens(_from_env(Secrets, SECRET_ENV, env), file_config.remediation, env, source)
    tunables = _from_env(Tunables, _TUNABLE_ENV, env)
    config = Config(file=file_config, secrets=secrets, tunables=tunables, source=source)
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    """Cross-field rules that a schema alone cannot express; fail fast at startup."""
    names = [w.name for w in config.file.watches]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{config.source}: watch names must be unique; repeated: {', '.join(duplicates)}")
    for index, watch in enumerate(config.file.watches):
        if watch.interval <= 0:
            raise ConfigError(f"{config.source}: 'watches[{index}].interval' must be greater than 0")
    _check_prometheus_auth(config)
    _check_remediation_signals(config)


def _remediation_tokens(
    secrets: Secrets, remediation: RemediationConfig, environ: Mapping[str, str], source: str
) -> Secrets:
    """The http actions' tokens from the variables their ``token_env`` names; a missing one fails the
    load (naming the variable), not the first approval. Kept as SecretStr, so log scrubbing covers them."""
    if not remediation.enabled:
        return secrets
    tokens: dict[str, SecretStr] = {}
    for action in remediation.actions:
        if action.token_env is None:
            continue
        value = environ.get(action.token_env, "").strip()
        if not value:
            raise ConfigError(
                f"{source}: remediation.actions[{action.name}].token_env names the environment variable "
                f"{action.token_env}, which is not set; set it (the bearer token for {action.name})"
            )
        tokens[action.token_env] = SecretStr(value)
    return secrets.model_copy(update={"remediation_tokens": tokens}) if tokens else secrets


def _check_remediation_signals(config: Config) -> None:
    """An action's ``signals`` name investigation signals: a typo would silently never match."""
    known = [s.name for s in config.file.investigation.signals]
    for action in config.file.remediation.actions:
        unknown = [s for s in action.signals if s not in known]
        if unknown:
            raise ConfigError(
                f"{config.source}: remediation.actions[{action.name}].signals: {unknown[0]!r} is not one "
                f"of investigation.signals ({', '.join(known) or 'none configured'})"
            )


def _check_prometheus_auth(config: Config) -> None:
    """Credentials in prometheus.url and in the environment would compete: one source only."""
    secrets = config.secrets
    from_env = secrets.prometheus_bearer_token is not None or secrets.prometheus_username is not None
    if from_env and "@" in urlsplit(config.file.prometheus.url).netloc:
        raise ConfigError(
            f"{config.source}: 'prometheus.url' carries credentials (user:password@) and "
            "PROMETHEUS_BEARER_TOKEN or PROMETHEUS_USERNAME is set too; keep the environment variables "
            "and remove the credentials from the URL"
        )


def require_webhook_token(config: Config) -> str | None:
    """The token the service must check, or None when auth is explicitly off."""
    if not config.file.server.auth:
        return None
    token = config.secrets.webhook_token
    if token is None or not token.get_secret_value():
        raise ConfigError(
            f"{config.source}: server.auth is true but {SECRET_ENV['webhook_token']} is not set; "
            "set it (the bearer token Alertmanager sends) or set server.auth: false to opt out"
        )
    return token.get_secret_value()
