"""The service's own telemetry: Prometheus metrics, OpenTelemetry spans and JSON logs.

Metrics live in a registry owned by each app instance (tests build many apps in one process).
Logs are JSON lines carrying the incident id as correlation id (set with ``correlation()``), and
every secret value known to the config, and the userinfo of every URL, is scrubbed from them
before they are written.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from agentic_observability.config import redact_urls
from agentic_observability.models import ModelReply

SERVICE_NAME = "agentic-observability"
_incident_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("incident_id", default=None)
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# agentic_obs_incident_open: one series per open incident, for a Grafana table (service/open_incidents.py)
OPEN_INCIDENT_LABELS = ("id", "title", "service", "severity", "url", "slack_channel", "slack_ts")
OPEN_INCIDENT_ROWS = 500
OPEN_INCIDENT_LABEL_CHARS = 100  # a longer title, service or severity is cut


class AnomalyGauges(Collector):
    """``agentic_obs_anomaly_score`` and the expected band (``_lower``, ``_upper``) per watch and series,
    keeping each series' own labels (so Grafana can overlay them and rules can alert on them). The
    label sets differ between watches, which prometheus_client's fixed-label Gauge cannot express."""

    NAMES = (
        "agentic_obs_anomaly_score",
        "agentic_obs_anomaly_score_lower",
        "agentic_obs_anomaly_score_upper",
    )

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float, float]] = {}
        self._lock = threading.Lock()  # watches score in worker threads while /metrics collects

    def set(
        self, watch: str, labels: Mapping[str, str], score: float, band: tuple[float, float] | None
    ) -> None:
        lower, upper = band if band is not None else (math.nan, math.nan)
        with self._lock:
            self._values[self._key(watch, labels)] = (score, lower, upper)

    def forget(self, watch: str, labels: Mapping[str, str]) -> None:
        """A series the watch no longer tracks leaves /metrics (pod churn must not grow it forever)."""
        with self._lock:
            self._values.pop(self._key(watch, labels), None)

    @staticmethod
    def _key(watch: str, labels: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (watch, tuple(sorted((k, v) for k, v in labels.items() if k not in ("__name__", "watch"))))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        docs = (
            "Anomaly score of a watched series, 0..1.",
            "Lower edge of the expected band.",
            "Upper edge of the expected band.",
        )
        with self._lock:
            current = list(self._values.items())
        for index, (name, doc) in enumerate(zip(self.NAMES, docs, strict=True)):
            family = GaugeMetricFamily(name, doc)
            for (watch, labels), values in current:
                family.samples.append(Sample(name, {**dict(labels), "watch": watch}, values[index]))
            yield family


class Metrics:
    """Every metric the service exports, registered on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.alerts_received = Counter(
            "agentic_obs_alerts_received",
            "Alerts in valid webhook bodies, duplicates included.",
            ["status"],
            registry=r,
        )
        self.alerts_duplicate = Counter(
            "agentic_obs_alerts_duplicate",
            "Alerts already stored (retries, repeat notifications).",
            registry=r,
        )
        self.webhook_requests = Counter(
            "agentic_obs_webhook_requests", "Webhook requests by HTTP status code.", ["code"], registry=r
        )
        self.webhook_latency = Histogram(
            "agentic_obs_webhook_duration_seconds",
            "Webhook handling time, commit included.",
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.incidents_opened = Counter(
            "agentic_obs_incidents_opened", "Incidents opened, by source.", ["source"], registry=r
        )
        self.incidents_open = Gauge("agentic_obs_incidents_open", "Incidents currently firing.", registry=r)
        self.incident_open = Gauge(
            "agentic_obs_incident_open",
            "1 per open incident (a fault's root; its members are no rows of their own), the newest "
            f"{OPEN_INCIDENT_ROWS} at most; title, service and severity cut to {OPEN_INCIDENT_LABEL_CHARS} "
            "characters. url: the incident in the API (server.public_url); slack_channel and slack_ts: "
            "its Slack thread, when known.",
            OPEN_INCIDENT_LABELS,
            registry=r,
        )
        self.incident_open_omitted = Gauge(
            "agentic_obs_incident_open_omitted",
            "Open incidents left out of agentic_obs_incident_open (it keeps the newest "
            f"{OPEN_INCIDENT_ROWS}), counted up to {OPEN_INCIDENT_ROWS}: that value means at least as many.",
            registry=r,
        )
        self._open_rows: set[tuple[str, ...]] = set()
        self.queue_depth = Gauge(
            "agentic_obs_queue_depth",
            "Work not yet done: inbox rows, pipeline jobs, outbox actions.",
            ["queue"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "agentic_obs_stage_duration_seconds",
            "Pipeline stage latency.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.errors = Counter("agentic_obs_errors", "Errors by component.", ["component"], registry=r)
        self.watch_evaluations = Counter(
            "agentic_obs_watch_evaluations", "Watch polls by outcome.", ["watch", "outcome"], registry=r
        )
        self.anomaly = AnomalyGauges()
        r.register(self.anomaly)
        self.watch_series = Gauge(
            "agentic_obs_watch_series", "Series a watch tracks now.", ["watch"], registry=r
        )
        self.watch_series_dropped = Counter(
            "agentic_obs_watch_series_dropped",
            "New series a watch did not track because it was at watches[].max_series.",
            ["watch"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "agentic_obs_circuit_breaker_open",
            "1 while a dependency's circuit breaker is open.",
            ["dependency"],
            registry=r,
        )

        self.deliveries = Counter(
            "agentic_obs_action_deliveries",
            "Outbox deliveries by sink and outcome (delivered, retry, failed).",
            ["sink", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "agentic_obs_action_delivery_seconds",
            "From an action being queued to its delivery.",
            ["sink"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "agentic_obs_model_duration_seconds",
            "Language-model call latency (answered calls).",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.model_tokens = Counter(
            "agentic_obs_model_tokens", "Tokens the model used, by kind.", ["kind"], registry=r
        )
        self.model_reports = Counter(
            "agentic_obs_model_reports",
            "Reports by reasoning outcome: answered by the model, or fallback to rules.",
            ["outcome"],
            registry=r,
        )
        self.model_claims_dropped = Counter(
            "agentic_obs_model_claims_dropped",
            "Claims in model answers that named something absent from the evidence.",
            registry=r,
        )
        self.remediations = Counter(
            "agentic_obs_remediations",
            "Remediation steps by catalogue action and event (approved, refused, dry-run, ran, failed, "
            "recovered, not-recovered).",
            ["action", "event"],
            registry=r,
        )
        self.pruned_rows = Counter(
            "agentic_obs_pruned_rows",
            "Rows deleted by retention (storage.retention), by table.",
            ["table"],
            registry=r,
        )

        self.leases_held = Gauge(
            "agentic_obs_leases_held",
            "Named leases (watches, singleton loops) this replica holds now: 1 held, 0 held by another.",
            ["name"],
            registry=r,
        )
        self.replica = Gauge(
            "agentic_obs_replica",
            "This replica's id (1): what the store's claims and leases name as their owner.",
            ["id"],
            registry=r,
        )
        self.takeovers = Counter(
            "agentic_obs_takeovers",
            "Work this replica took over from another whose lease ran out, by kind (job, lease).",
            ["kind"],
            registry=r,
        )
        self.lease_conflicts = Counter(
            "agentic_obs_lease_conflicts",
            "Named leases this replica held and found taken by another at its next renewal (it renewed "
            "too late: a stalled event loop, a slow database).",
            registry=r,
        )

    def observe_model(self, outcome: str, reply: ModelReply | None, dropped: int) -> None:
        self.model_reports.labels(outcome).inc()
        if reply is not None:
            self.model_latency.observe(reply.seconds)
            self.model_tokens.labels("prompt").inc(reply.prompt_tokens)
            self.model_tokens.labels("completion").inc(reply.completion_tokens)
        if dropped:
            self.model_claims_dropped.inc(dropped)

    def set_open_incidents(self, rows: Iterable[Mapping[str, str]], omitted: int) -> None:
        """Make ``agentic_obs_incident_open`` these rows (label values by name; the first
        ``OPEN_INCIDENT_ROWS``): a series no longer among them goes, a new one appears, an unchanged one
        stays (so a scrape never sees it empty in between)."""
        wanted = {
            tuple(row.get(name, "") for name in OPEN_INCIDENT_LABELS)
            for row in itertools.islice(rows, OPEN_INCIDENT_ROWS)
        }
        for labels in self._open_rows - wanted:
            self.incident_open.remove(*labels)
        for labels in wanted - self._open_rows:
            self.incident_open.labels(*labels).set(1)
        self._open_rows = wanted
        self.incident_open_omitted.set(omitted)

    def snapshot(self) -> dict[str, Any]:
        """The metrics as plain JSON (for ``/api/v1/metrics``)."""
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = sample.name + _label_suffix(sample.labels)
                out[key] = sample.value
        return out


def _label_suffix(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


@contextmanager
def correlation(incident_id: str | None) -> Iterator[None]:
    """Tag every log line (and span) emitted inside with this incident id."""
    token = _incident_id.set(incident_id)
    try:
        yield
    finally:
        _incident_id.reset(token)


class StageTimer:
    """Times a pipeline stage into the histogram and wraps it in an OpenTelemetry span."""

    def __init__(self, metrics: Metrics, tracer: trace.Tracer) -> None:
        self._metrics = metrics
        self._tracer = tracer

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(f"pipeline.{stage}") as span:
            incident_id = _incident_id.get()
            if incident_id:
                span.set_attribute("incident.id", incident_id)
            try:
                yield
            finally:
                self._metrics.stage_latency.labels(stage).observe(time.perf_counter() - started)


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        # each secret as it appears in JSON text: quotes and backslashes arrive escaped
        self._secrets = [json.dumps(s)[1:-1] for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        incident_id = _incident_id.get()
        if incident_id:
            entry["incident_id"] = incident_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._scrub(json.dumps(entry, default=str))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        # credentials in a URL's userinfo are not among the known secrets, so they go by their shape
        return redact_urls(text)


def setup_logging(secrets: Sequence[str] = (), level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("AGENTIC_OBS_LOG_LEVEL", "INFO")).upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


_provider_configured = False


def setup_tracing(environ: Mapping[str, str]) -> trace.Tracer:
    """A tracer; spans are exported by OTLP/HTTP only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    global _provider_configured
    if not _provider_configured:
        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
        provider = TracerProvider(resource=resource)
        if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _provider_configured = True
    return trace.get_tracer(SERVICE_NAME)


def log_fields(**fields: Any) -> dict[str, Any]:
    """``logger.info("...", extra=log_fields(key=value))`` puts structured fields in the JSON line."""
    return {"fields": fields}
