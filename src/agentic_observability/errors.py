"""The one exception tree of agentic-observability.

AgenticObsError
├── ConfigError                 bad YAML, unknown key, missing secret (names the key and the file)
│   └── EmbedderMismatchError   the incident memory was written by another embedder
├── BadInputError               a request body or file the user sent is malformed (names the field)
├── StoreError                  the durable store failed
│   └── StoreUnavailableError   cannot commit right now (the webhook answers 503)
├── UpstreamError               an external system misbehaved
│   ├── PrometheusError         Prometheus answered with an error (message from its body)
│   │   └── PrometheusQueryError    the query itself is invalid (HTTP 400/422): never retried
│   ├── ModelAnswerError        the language model's answer failed the report schema
│   ├── DeliveryError           an action (Grafana, Slack, PagerDuty) was not delivered
│   └── UpstreamUnavailableError    timeout, connection refused, 5xx, or circuit open
│       └── MemoryUnavailableError  incident memory cannot be used right now
├── ChartUnavailableError       an incident chart cannot be drawn (no matplotlib, bad data, too slow)
└── StackError                  a demo/test process (prometheus, alertmanager) could not start
"""

from __future__ import annotations


class AgenticObsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(AgenticObsError):
    """The configuration is invalid; the message names the key and the file."""


class BadInputError(AgenticObsError):
    """Input from a user or a peer is malformed; ``field`` names the offending location."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class StoreError(AgenticObsError):
    """The durable store failed."""


class StoreUnavailableError(StoreError):
    """The store cannot commit right now; the caller should retry later."""


class UpstreamError(AgenticObsError):
    """An external system (Prometheus, Grafana, Slack, ...) misbehaved."""


class PrometheusError(UpstreamError):
    """Prometheus answered with an error."""


class PrometheusQueryError(PrometheusError):
    """The PromQL query was rejected as invalid; retrying will not help."""


class UpstreamUnavailableError(UpstreamError):
    """Timeout, refused connection, 5xx or an open circuit breaker: retrying later may help."""


class StackError(AgenticObsError):
    """A local Prometheus/Alertmanager process could not be started or reached."""


class MemoryUnavailableError(UpstreamUnavailableError):
    """Incident memory (Qdrant Edge or a Qdrant server) cannot be used right now."""


class EmbedderMismatchError(ConfigError):
    """The memory was written by another embedder; mixing them would make recall meaningless."""


class ModelAnswerError(UpstreamError):
    """The language model answered, but not with a report that passes the schema."""


class DeliveryError(UpstreamError):
    """An action could not be delivered. ``permanent`` ones are not retried; ``retry_after`` (seconds)
    is the receiver's own request to wait, when it sent one."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class ChartUnavailableError(AgenticObsError):
    """The chart could not be drawn: matplotlib is missing, the data is unusable, or it took too long
    (``retryable``: a busy host or a cold font cache, which a later attempt may not meet)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
