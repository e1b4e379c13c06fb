"""``POST /api/v1/changes``: change events from CI/CD (Argo CD notifications, Flux, a pipeline step)
and PagerDuty change events as PagerDuty takes them; the same auth as the alert webhook.

Two bodies, told apart by shape (one object, or a JSON array of them):

* generic: ``{"service" | "entity", "summary", "namespace"?, "workload"?, "kind"?, "old"?, "new"?,
  "at"? (unix seconds or RFC 3339; default now), "link"?, "id"?}``;
* PagerDuty's change event (``{"routing_key", "payload": {"summary", "timestamp", "source",
  "custom_details"}, "links": [...]}``): the entity from ``custom_details.service`` (or the
  investigation's entity label, ``entity``), else ``payload.source``; the routing key is not kept.

202 ``{"accepted": n, "duplicates": m}`` once committed: an event whose ``id`` (else whose whole
content, ``at`` included) was stored before is a duplicate, so a retried delivery stores nothing
twice. Send ``id`` or ``at`` for that: without either, ``at`` is the time of receipt. 400 names the bad
field; the body and its values are held to the alert webhook's caps (``server.max_*``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from agentic_observability.errors import BadInputError, StoreError
from agentic_observability.models import CHANGE_KINDS, Change, ChangeKind
from agentic_observability.service.keys import CONFIG, METRICS, STORE
from agentic_observability.service.responses import error_response
from agentic_observability.service.routes.webhook import (
    IntakeLimits,
    Time,
    body_refused,
    clip_text,
    read_body,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SUMMARY_LINE = 300  # the summary is one line in a report: longer ones are clipped, not refused
Text = Annotated[str, Field(min_length=1)]
_TIME: TypeAdapter[datetime] = TypeAdapter(Time)


def _to_unix(value: Any) -> Any:
    """Unix seconds, or an RFC 3339 time (the alert webhook's parsing) as unix seconds."""
    if not isinstance(value, str):
        return value  # a number, or something float refuses
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = _TIME.validate_python(value)
    except ValidationError:
        raise ValueError("expected unix seconds or an RFC 3339 time such as 2030-03-17T09:41:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


Moment = Annotated[float, BeforeValidator(_to_unix)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class GenericChange(_Body):
    service: Text | None = None
    entity: Text | None = None
    summary: Text
    namespace: str | None = None
    workload: str | None = None
    kind: ChangeKind = "deploy"
    old: str | None = None
    new: str | None = None
    at: Moment | None = None
    link: str | None = None
    id: Text | None = None

    @field_validator("link")
    @classmethod
    def _http_link(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value


class PagerDutyPayload(_Body):
    summary: Text
    source: str = ""
    timestamp: Time | None = None
    custom_details: dict[str, Any] = Field(default_factory=dict)


class PagerDutyLink(_Body):
    href: str
    text: str = ""


class PagerDutyChange(_Body):
    routing_key: str = ""
    payload: PagerDutyPayload
    links: list[PagerDutyLink] = Field(default_factory=list)


@routes.post("/api/v1/changes")
async def receive_changes(request: web.Request) -> web.Response:
    config = request.app[CONFIG].file
    try:
        raw = await read_body(request)
        changes = parse_changes(
            raw, IntakeLimits.from_server(config.server), config.investigation.entity_label
        )
    except (web.HTTPRequestEntityTooLarge, web.HTTPRequestTimeout) as exc:
        return body_refused(request, exc)
    except BadInputError as exc:
        return error_response(400, "invalid change event", str(exc), exc.field)
    try:
        new = await request.app[STORE].record_changes(changes)
    except StoreError as exc:
        request.app[METRICS].errors.labels("store").inc()
        log.error("could not commit change events: %s", exc)
        return error_response(503, "store unavailable", "change events not stored; retry")
    return web.json_response({"accepted": new, "duplicates": len(changes) - new}, status=202)


def parse_changes(raw: bytes, limits: IntakeLimits, entity_label: str = "service") -> list[Change]:
    """The change events of a body (one object or an array); BadInputError names the bad field."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadInputError(f"body must be JSON: {exc}", field="(body)") from exc
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        raise BadInputError("body must be a change event (an object) or an array of them", field="(body)")
    if len(items) > limits.alerts:
        detail = f"{len(items)} change events in one body, the limit is {limits.alerts}"
        raise BadInputError(f"{detail} (server.max_alerts_per_body)", field="(body)")
    now = time.time()
    prefix = (lambda i: f"[{i}].") if isinstance(body, list) else (lambda i: "")
    return [_one(item, prefix(i), limits, entity_label, now) for i, item in enumerate(items)]


def _one(item: dict[str, Any], where: str, limits: IntakeLimits, entity_label: str, now: float) -> Change:
    pagerduty = isinstance(item.get("payload"), dict)
    model: type[_Body] = PagerDutyChange if pagerduty else GenericChange
    try:
        parsed = model.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = where + ".".join(str(p) for p in first["loc"])
        raise BadInputError(f"{field}: {first['msg']}", field=field) from exc
    if isinstance(parsed, PagerDutyChange):
        change = _from_pagerduty(parsed, entity_label, now)
    else:
        assert isinstance(parsed, GenericChange)
        _cap(where + "id", parsed.id, limits.label_bytes, "max_label_value_bytes")
        change = _from_generic(parsed, where, now)
    _check_sizes(change, where, limits)
    return change


def _from_generic(body: GenericChange, where: str, now: float) -> Change:
    entity = body.service or body.entity
    if entity is None:
        raise BadInputError(f"{where}service: field required (or entity)", field=f"{where}service")
    at = _unix(body.at, now)
    fields: dict[str, Any] = {
        "entity": entity,
        "namespace": body.namespace,
        "workload": body.workload,
        "kind": body.kind,
        "summary": _line(body.summary),
        "old": body.old,
        "new": body.new,
        "link": body.link,
    }
    key = f"webhook:id:{body.id}" if body.id else "webhook:" + _digest({**fields, "at": at})
    return Change(source="webhook", at=at, dedup_key=key, **fields)


def _from_pagerduty(body: PagerDutyChange, entity_label: str, now: float) -> Change:
    payload, details = body.payload, body.payload.custom_details
    entity = next(
        (
            str(details[k])
            for k in (entity_label, "service", "entity")
            if isinstance(details.get(k), str | int)
        ),
        payload.source,
    )
    if not entity:
        raise BadInputError("payload.source: needed (or custom_details.service)", field="payload.source")
    link = next((link.href for link in body.links if link.href.startswith(("http://", "https://"))), None)
    at = _unix(payload.timestamp, now)
    fields: dict[str, Any] = {
        "entity": entity,
        "namespace": _detail(details, "namespace"),
        "workload": _detail(details, "workload"),
        "kind": _kind(details.get("kind")),
        "summary": _line(payload.summary),
        "old": _detail(details, "old") or _detail(details, "previous_version"),
        "new": _detail(details, "new") or _detail(details, "version"),
        "link": link,
    }
    key = "pagerduty:" + _digest({**fields, "at": at, "source": payload.source})
    return Change(source="pagerduty", at=at, dedup_key=key, **fields)


def _detail(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _kind(value: object) -> ChangeKind:
    return cast(ChangeKind, value) if isinstance(value, str) and value in CHANGE_KINDS else "deploy"


def _unix(value: float | datetime | None, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _line(text: str) -> str:
    return clip_text(" ".join(text.split()), SUMMARY_LINE)


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _check_sizes(change: Change, where: str, limits: IntakeLimits) -> None:
    """The stored values within the webhook's caps: names within a label value's, text within an
    annotation's (the summary is clipped to a line before this)."""
    for name in ("entity", "namespace", "workload", "old", "new"):
        _cap(where + name, getattr(change, name), limits.label_bytes, "max_label_value_bytes")
    _cap(where + "link", change.link, limits.annotation_bytes, "max_annotation_bytes")
    if not 0 <= change.at <= 4_102_444_800:  # 2100-01-01, as /api/v1/analyze
        raise BadInputError(f"{where}at: not a time between 1970 and 2100", field=f"{where}at")


def _cap(field: str, value: str | None, limit: int, key: str) -> None:
    size = len(value.encode()) if value else 0
    if size > limit:
        raise BadInputError(f"{field}: {size} bytes, the limit is {limit} (server.{key})", field=field)
