"""``POST /api/v1/webhook/alertmanager``: validate the body, commit it to the inbox, answer 202.

The 202 is sent only after the alerts are committed, so an acknowledged alert survives a crash.
If the store cannot commit we answer 503: Alertmanager retries 5xx, but drops a group on 4xx.

The body (webhook v4) is validated here, at the trust boundary. Unknown keys are ignored
(Alertmanager 0.32 added ``notification_reason``, 0.34 ``routeLabels``), so newer versions keep
working; missing or mistyped required keys are rejected with the field named. Every part of a body
that is stored is capped (``server.max_*``), so one delivery's share of the store stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from agentic_observability.config import ServerConfig
from agentic_observability.errors import BadInputError, StoreError
from agentic_observability.models import AcceptedAlert, Alert, label_fingerprint
from agentic_observability.service.keys import CONFIG, METRICS, STORE, WORKERS
from agentic_observability.service.responses import error_response
from agentic_observability.telemetry import log_fields

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def read_body(request: web.Request) -> bytes:
    """The body within ``server.max_body_bytes`` and ``server.body_timeout``: a client that sends
    headers and then stalls would otherwise hold a connection and a handler for as long as it likes.
    Raises HTTPRequestEntityTooLarge (413) or HTTPRequestTimeout (408); the app's error middleware
    turns either into the one JSON error shape."""
    server = request.app[CONFIG].file.server
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        async with asyncio.timeout(server.body_timeout):
            return await request.read()
    except TimeoutError:
        detail = f"the body did not arrive within {server.body_timeout:g}s (server.body_timeout)"
        raise web.HTTPRequestTimeout(text=detail) from None


def body_refused(
    request: web.Request, exc: web.HTTPRequestEntityTooLarge | web.HTTPRequestTimeout
) -> web.Response:
    """The answer to a body ``read_body`` refused: 413 naming the cap, or 408 on a closed connection."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[CONFIG].file.server.max_body_bytes
        return error_response(413, "body too large", f"the limit is {limit} bytes (server.max_body_bytes)")
    response = error_response(408, "body too slow", exc.text or "")
    response.force_close()  # the rest of the body may still be on its way: never reuse the connection
    return response


@routes.post("/api/v1/webhook/alertmanager")
async def receive_alertmanager(request: web.Request) -> web.Response:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    response = await _handle(request)
    metrics.webhook_requests.labels(str(response.status)).inc()
    metrics.webhook_latency.observe(time.perf_counter() - started)
    return response


async def _handle(request: web.Request) -> web.Response:
    server = request.app[CONFIG].file.server
    try:
        alerts = parse_webhook(await read_body(request), IntakeLimits.from_server(server))
    except (web.HTTPRequestEntityTooLarge, web.HTTPRequestTimeout) as exc:
        return body_refused(request, exc)
    except BadInputError as exc:
        return error_response(400, "invalid Alertmanager webhook body", str(exc), exc.field)
    try:
        result = await request.app[STORE].accept(alerts)
    except StoreError as exc:
        request.app[METRICS].errors.labels("store").inc()
        log.error("could not commit alerts: %s", exc)
        return error_response(503, "store unavailable", "alerts not stored; Alertmanager will retry")
    _count(request, alerts, result.duplicates)
    if result.accepted:
        request.app[WORKERS].wake()
    return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates}, status=202)


def _count(request: web.Request, alerts: list[AcceptedAlert], duplicates: int) -> None:
    metrics = request.app[METRICS]
    for accepted in alerts:
        metrics.alerts_received.labels(accepted.alert.status).inc()
    if duplicates:
        metrics.alerts_duplicate.inc(duplicates)
        log.info(
            "duplicate delivery ignored",
            extra=log_fields(group_key=alerts[0].group_key, duplicates=duplicates),
        )


# -- the body ----------------------------------------------------------------------------------------


def _representable(moment: datetime) -> datetime:
    """A time the rest of the service can show. ``9999-12-31T23:59:59-14:00`` parses, but is year
    10000 in UTC: stored, it would break every later read of the incident (a 500 on the list)."""
    if moment.year <= 1:
        return moment  # Alertmanager's zero time (0001-01-01T00:00:00Z) means "no end time"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # RFC 3339 requires an offset; not the server's local time
    try:
        datetime.fromtimestamp(moment.timestamp(), UTC)  # the round trip every later read makes
    except (OverflowError, ValueError, OSError):
        message = "the time is past 9999-12-31T23:59:59Z once its offset is applied"
        raise PydanticCustomError("time_out_of_range", message) from None
    return moment


Time = Annotated[datetime, AfterValidator(_representable)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WebhookAlert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Time
    endsAt: Time | None = None
    generatorURL: str = ""
    fingerprint: str | None = None

    @field_validator("labels")
    @classmethod
    def _needs_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("an alert needs at least one label (normally alertname)")
        return value


class WebhookBody(_Lenient):
    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    truncatedAlerts: int = 0
    alerts: list[WebhookAlert] = Field(min_length=1)


@dataclass(frozen=True)
class IntakeLimits:
    """The per-body caps, as ``server.max_*`` configures them (the defaults are the config's)."""

    alerts: int
    labels: int
    annotations: int
    label_bytes: int
    annotation_bytes: int

    @classmethod
    def from_server(cls, server: ServerConfig) -> IntakeLimits:
        return cls(
            alerts=server.max_alerts_per_body,
            labels=server.max_labels_per_alert,
            annotations=server.max_annotations_per_alert,
            label_bytes=server.max_label_value_bytes,
            annotation_bytes=server.max_annotation_bytes,
        )


DEFAULT_LIMITS = IntakeLimits.from_server(ServerConfig())


def _unix(moment: datetime | None) -> float | None:
    """Alertmanager sends 0001-01-01T00:00:00Z for 'no end time'."""
    if moment is None or moment.year <= 1:
        return None
    return moment.timestamp()


def parse_webhook(raw: bytes, limits: IntakeLimits = DEFAULT_LIMITS) -> list[AcceptedAlert]:
    """Validate a webhook body and turn it into the alerts to store. Raises BadInputError naming the field."""
    try:
        body = WebhookBody.model_validate_json(raw)  # pydantic's own JSON parser: one pass, no dict copy
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        if first["type"] in ("json_invalid", "model_type") or not where:
            raise BadInputError(f"body must be a JSON object: {first['msg']}", field="(body)") from exc
        raise BadInputError(f"{where}: {first['msg']}", field=where) from exc
    _check_limits(body, limits)
    return [_accepted(body, alert, limits.annotation_bytes) for alert in body.alerts]


# -- the caps: each a 400 that names the field and the config key ------------------------------------


Cap = tuple[int, str]  # a limit and its config key


def _over(field: str, what: str, cap: Cap) -> BadInputError:
    limit, key = cap
    return BadInputError(f"{field}: {what}, the limit is {limit} (server.{key})", field=field)


def _check_text(field: str, text: str, cap: Cap) -> None:
    size = len(text.encode())
    if size > cap[0]:
        raise _over(field, f"{size} bytes", cap)


def _check_map(
    field: str, mapping: Mapping[str, str], noun: str, count: Cap, size: Cap, *, values: bool = True
) -> None:
    """Count and names always; values unless ``values`` is False (annotations: clipped instead)."""
    if len(mapping) > count[0]:
        raise _over(field, f"{len(mapping)} {noun}s", count)
    for name, value in mapping.items():
        if len(name.encode()) > size[0]:  # the name is not echoed: it is the problem
            raise _over(field, f"a {noun} name of {len(name.encode())} bytes", size)
        if values:
            _check_text(f"{field}.{name}", value, size)


def clip_text(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-8 bytes, cut at a character boundary and marked as cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    marker = f" … [cut from {len(raw)} bytes]"
    keep = limit - len(marker.encode())
    if keep <= 0:  # a limit too small for the marker: the text alone
        return raw[:limit].decode(errors="ignore")
    return raw[:keep].decode(errors="ignore") + marker


def _check_limits(body: WebhookBody, limits: IntakeLimits) -> None:
    """Every stored part of the body within its cap. URLs and keys have no cap of their own: they get
    the annotation cap (free text), the fingerprint the label cap (it is one label-sized token)."""
    alerts: Cap = (limits.alerts, "max_alerts_per_body")
    labels: Cap = (limits.labels, "max_labels_per_alert")
    annotations: Cap = (limits.annotations, "max_annotations_per_alert")
    label_bytes: Cap = (limits.label_bytes, "max_label_value_bytes")
    text_bytes: Cap = (limits.annotation_bytes, "max_annotation_bytes")
    if len(body.alerts) > alerts[0]:
        raise _over("alerts", f"{len(body.alerts)} alerts in one body", alerts)
    _check_text("groupKey", body.groupKey, text_bytes)
    _check_text("externalURL", body.externalURL, text_bytes)
    _check_map("groupLabels", body.groupLabels, "label", labels, label_bytes)
    _check_map("commonLabels", body.commonLabels, "label", labels, label_bytes)
    # An annotation is free text (a description, a runbook excerpt): one too long is clipped, not
    # refused, since Alertmanager does not retry a 400 and the whole group's page would be lost.
    # Labels are identity: clipping one could merge two alerts, so they stay a 400.
    _check_map(
        "commonAnnotations", body.commonAnnotations, "annotation", annotations, text_bytes, values=False
    )
    for i, alert in enumerate(body.alerts):
        _check_map(f"alerts[{i}].labels", alert.labels, "label", labels, label_bytes)
        _check_map(
            f"alerts[{i}].annotations", alert.annotations, "annotation", annotations, text_bytes, values=False
        )
        _check_text(f"alerts[{i}].generatorURL", alert.generatorURL, text_bytes)
        _check_text(f"alerts[{i}].fingerprint", alert.fingerprint or "", label_bytes)


def _accepted(body: WebhookBody, alert: WebhookAlert, annotation_bytes: int) -> AcceptedAlert:
    starts = _unix(alert.startsAt) or 0.0
    ends = _unix(alert.endsAt)
    return AcceptedAlert(
        group_key=body.groupKey,
        source="alertmanager",
        alert=Alert(
            status=alert.status,
            labels=alert.labels,
            annotations={k: clip_text(v, annotation_bytes) for k, v in alert.annotations.items()},
            starts_at=starts,
            ends_at=ends if alert.status == "resolved" else None,
            generator_url=alert.generatorURL,
            fingerprint=alert.fingerprint or label_fingerprint(alert.labels),
        ),
        group_labels=body.groupLabels or body.commonLabels,
        external_url=body.externalURL,
    )
