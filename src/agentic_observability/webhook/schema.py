"""The Alertmanager webhook v4 body, validated at the trust boundary.

Unknown keys are ignored (Alertmanager 0.32 added ``notification_reason``, 0.34 ``routeLabels``),
so newer versions keep working; missing or mistyped required keys are rejected with the field named.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentic_observability.errors import BadInputError
from agentic_observability.models import AcceptedAlert, Alert, label_fingerprint


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
