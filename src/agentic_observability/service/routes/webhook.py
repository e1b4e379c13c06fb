"""``POST /api/v1/webhook/alertmanager``: validate the body, commit it to the inbox, answer 202.

The 202 is sent only after the alerts are committed, so an acknowledged alert survives a crash.
If the store cannot commit we answer 503: Alertmanager retries 5xx, but drops a group on 4xx.

The body (webhook v4) is validated here, at the trust boundary. Unknown keys are ignored
(Alertmanager 0.32 added ``notification_reason``, 0.34 ``routeLabels``), so newer versions keep
working; missing or mistyped required keys are rejected with the field named.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentic_observability.errors import BadInputError, StoreError
from agentic_observability.models import AcceptedAlert, Alert, label_fingerprint
from agentic_observability.service.keys import CONFIG, METRICS, STORE, WORKERS
from agentic_observability.service.responses import error_response
from agentic_observability.telemetry import log_fields

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await request.read()


@routes.post("/api/v1/webhook/alertmanager")
async def receive_alertmanager(request: web.Request) -> web.Response:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    response = await _handle(request)
    metrics.webhook_requests.labels(str(response.status)).inc()
    metrics.webhook_latency.observe(time.perf_counter() - started)
    return response


async def _handle(request: web.Request) -> web.Response:
    limit = request.app[CONFIG].file.server.max_body_bytes
    try:
        alerts = parse_webhook(await _read_body(request, limit))
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "body too large", f"the limit is {limit} bytes (server.max_body_bytes)")
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


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WebhookAlert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
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


def _unix(moment: datetime | None) -> float | None:
    """Alertmanager sends 0001-01-01T00:00:00Z for 'no end time'."""
    if moment is None or moment.year <= 1:
        return None
    return moment.timestamp()


def parse_webhook(raw: bytes) -> list[AcceptedAlert]:
    """Validate a webhook body and turn it into the alerts to store. Raises BadInputError naming the field."""
    try:
        body = WebhookBody.model_validate_json(raw)  # pydantic's own JSON parser: one pass, no dict copy
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        if first["type"] in ("json_invalid", "model_type") or not where:
            raise BadInputError(f"body must be a JSON object: {first['msg']}", field="(body)") from exc
        raise BadInputError(f"{where}: {first['msg']}", field=where) from exc
    return [_accepted(body, alert) for alert in body.alerts]


def _accepted(body: WebhookBody, alert: WebhookAlert) -> AcceptedAlert:
    starts = _unix(alert.startsAt) or 0.0
    ends = _unix(alert.endsAt)
    return AcceptedAlert(
        group_key=body.groupKey,
        source="alertmanager",
        alert=Alert(
            status=alert.status,
            labels=alert.labels,
            annotations=alert.annotations,
            starts_at=starts,
            ends_at=ends if alert.status == "resolved" else None,
            generator_url=alert.generatorURL,
            fingerprint=alert.fingerprint or label_fingerprint(alert.labels),
        ),
        group_labels=body.groupLabels or body.commonLabels,
        external_url=body.externalURL,
    )
