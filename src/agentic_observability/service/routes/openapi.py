"""The OpenAPI document (a test checks it lists exactly the app's routes) and the /docs page.

/docs is Swagger UI from the ``swagger-ui-bundle`` package, its files served under /docs/static: no
CDN, so the page works offline and loads no third-party script. That bundle is Swagger UI 4, which
renders OpenAPI 3.0 only, so the document is 3.0.3 (``nullable`` rather than 3.1's type lists).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from agentic_observability import __version__

routes = web.RouteTableDef()

_ERROR = {"$ref": "#/components/schemas/Error"}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request; `field` names what was wrong (or the server.max_* cap it broke)",
        401: "Missing or invalid credentials",
        404: "Not found",
        408: "The body did not arrive within server.body_timeout",
        409: "Not possible in the incident's present state (`detail` says why)",
        413: "Body larger than server.max_body_bytes",
        502: "Prometheus failed",
        503: "Store unavailable; retry",
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _op(summary: str, responses: dict[str, Any], secured: bool = True, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if secured:
        op["security"] = _SECURED
    return op


_INCIDENT_ID = {"name": "incident_id", "in": "path", "required": True, "schema": {"type": "string"}}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/webhook/alertmanager": {
        "post": _op(
            "Receive an Alertmanager webhook (v4)",
            {
                "202": _json(
                    {
                        "type": "object",
                        "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"}},
                    },
                    "Alerts durably stored",
                ),
                **_errors(400, 401, 408, 413, 503),
            },
            requestBody=_json_body({"$ref": "#/components/schemas/AlertmanagerWebhook"}),
        )
    },
    "/api/v1/changes": {
        "post": _op(
            "Record change events (a deploy, a rollout, a config edit): the generic body, or a PagerDuty "
            "change event as PagerDuty takes it (told apart by its `payload`); one object or an array. "
            "A change shortly before an incident's onset is shown in its report and weighs in its ranking",
            {
                "202": _json(
                    {
                        "type": "object",
                        "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"}},
                    },
                    "Stored; `duplicates`: events stored before (same `id`, or the same content and `at`)",
                ),
                **_errors(400, 401, 408, 413, 503),
            },
            requestBody=_json_body(
                {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ChangeEvent"},
                        {"$ref": "#/components/schemas/PagerDutyChangeEvent"},
                        {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/ChangeEvent"},
                                    {"$ref": "#/components/schemas/PagerDutyChangeEvent"},
                                ]
                            },
                        },
                    ]
                }
            ),
        )
    },
    "/api/v1/incidents": {
        "get": _op(
            "List incidents, newest first",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "incidents": {"type": "array", "items": {"$ref": "#/components/schemas/Incident"}}
                        },
                    },
                    "Incidents",
                ),
                **_errors(400, 401),
            },
            parameters=[
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["firing", "resolved"]},
                },
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            ],
        )
    },
    "/api/v1/incidents/{incident_id}": {
        "get": _op(
            "One incident with its alerts and report",
            {"200": _json({"$ref": "#/components/schemas/Incident"}, "The incident"), **_errors(401, 404)},
            parameters=[_INCIDENT_ID],
        )
    },
    "/api/v1/incidents/{incident_id}/chart.png": {
        "get": _op(
            "The incident's chart: the alert's value with its threshold and the top hypotheses' signals, "
            "baseline then incident, onset and alert marked",
            {
                "200": {
                    "description": "PNG, about 1000×600 px",
                    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                },
                **_errors(401, 404),
                "503": _json(_ERROR, "Not drawn: matplotlib is not installed, or drawing failed"),
            },
            parameters=[_INCIDENT_ID],
        )
    },
    "/api/v1/incidents/{incident_id}/feedback": {
        "post": _op(
            "What really caused the incident and what fixed it (and who says so: `by`); updates incident "
            "memory, and the incident's Slack parent and thread",
            {"200": _json({"type": "object"}, "Feedback saved"), **_errors(400, 401, 404, 408)},
            parameters=[_INCIDENT_ID],
            requestBody=_json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "root_cause": {"type": "string", "minLength": 1, "maxLength": 200},
                        "resolution": {"type": "string", "minLength": 1, "maxLength": 2000},
                        "correct": {"type": "boolean"},
                        "by": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                }
            ),
        )
    },
    "/api/v1/incidents/{incident_id}/split": {
        "post": _op(
            "Take an alert group out of this incident: it becomes its own incident (undoes a wrong merge)",
            {"200": _json({"type": "object"}, "Split"), **_errors(400, 401, 404, 408, 409)},
            parameters=[_INCIDENT_ID],
            requestBody=_json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": {
                        "member": {"type": "string", "description": "the member's incident id"},
                        "group_key": {"type": "string"},
                    },
                }
            ),
        )
    },
    "/api/v1/incidents/{incident_id}/merge": {
        "post": _op(
            "Make another incident (with its members) part of this one: the same fault (a missed merge)",
            {"200": _json({"type": "object"}, "Merged"), **_errors(400, 401, 404, 408, 409)},
            parameters=[_INCIDENT_ID],
            requestBody=_json_body(
                {
                    "type": "object",
                    "required": ["incident"],
                    "additionalProperties": False,
                    "properties": {"incident": {"type": "string"}},
                }
            ),
        )
    },
    "/api/v1/analyze": {
        "post": _op(
            "Ad-hoc analysis of a PromQL query over a time range (default: the last hour)",
            {"200": _json({"type": "object"}, "Evidence summary"), **_errors(400, 401, 408, 502)},
            requestBody=_json_body(
                {
                    "type": "object",
                    "required": ["query"],
                    "additionalProperties": False,
                    "properties": {
                        "query": {"type": "string", "minLength": 1},
                        "start": {"type": "number", "minimum": 0, "maximum": 4102444800},
                        "end": {"type": "number", "minimum": 0, "maximum": 4102444800},
                    },
                }
            ),
        )
    },
    "/api/v1/health": {"get": _op("Liveness", {"200": _json({"type": "object"}, "Alive")}, secured=False)},
    "/api/v1/health/ready": {
        "get": _op(
            "Readiness: store, Prometheus, memory",
            {
                "200": _json({"type": "object"}, "Ready or degraded"),
                "503": _json({"type": "object"}, "Store unavailable"),
            },
            secured=False,
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus exposition of the service's own metrics",
            {"200": {"description": "text/plain exposition"}},
            secured=False,
        )
    },
    "/api/v1/metrics": {
        "get": _op("The same metrics as JSON", {"200": _json({"type": "object"}, "Metrics")}, secured=False)
    },
    "/api/v1/slack/interactions": {
        "post": _op(
            "Slack's button presses, modal submissions and slash commands; signed by Slack "
            "(X-Slack-Signature over X-Slack-Request-Timestamp and the body, SLACK_SIGNING_SECRET), "
            "so no bearer token",
            {
                "200": {"description": "Taken: empty, a modal's errors, or a slash command's answer (JSON)"},
                **_errors(400, 401, 408, 413),
                "503": _json(_ERROR, "SLACK_SIGNING_SECRET is not set"),
            },
            secured=False,
            requestBody={
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "payload": {
                                    "type": "string",
                                    "description": "an interaction payload as JSON: block_actions, "
                                    "view_submission",
                                },
                                "command": {"type": "string", "description": "a slash command: /agentic-obs"},
                                "text": {"type": "string"},
                                "user_id": {"type": "string"},
                                "channel_id": {"type": "string"},
                                "response_url": {"type": "string"},
                            },
                        }
                    }
                },
            },
        )
    },
    "/mcp": {
        "post": _op(
            "MCP over streamable HTTP (stateless, JSON answers): the tools `agentic-obs mcp` bridges to",
            {
                "200": _json({"type": "object"}, "The JSON-RPC response"),
                "202": {"description": "A JSON-RPC notification, accepted"},
                **_errors(400, 401, 408, 413),
            },
            requestBody=_json_body({"type": "object", "description": "A JSON-RPC 2.0 message"}),
        )
    },
    "/api/v1/openapi.json": {
        "get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI")}, secured=False)
    },
    "/docs": {"get": _op("Interactive API docs", {"200": {"description": "HTML"}}, secured=False)},
}

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "field": {"type": "string"},
        },
    },
    "AlertmanagerWebhook": {
        "type": "object",
        "required": ["version", "groupKey", "status", "alerts"],
        "properties": {
            "version": {"type": "string", "enum": ["4"]},
            "groupKey": {"type": "string", "minLength": 1},
            "status": {"type": "string", "enum": ["firing", "resolved"]},
            "receiver": {"type": "string"},
            "groupLabels": _LABELS,
            "commonLabels": _LABELS,
            "commonAnnotations": _LABELS,
            "externalURL": {"type": "string"},
            "truncatedAlerts": {"type": "integer"},
            "alerts": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["status", "labels", "startsAt"],
                    "properties": {
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "labels": _LABELS,
                        "annotations": _LABELS,
                        "startsAt": {"type": "string", "format": "date-time"},
                        "endsAt": {"type": "string", "format": "date-time"},
                        "generatorURL": {"type": "string"},
                        "fingerprint": {"type": "string"},
                    },
                },
            },
        },
    },
    "ChangeEvent": {
        "type": "object",
        "required": ["summary"],
        "description": "`service` or `entity` is required: the investigation entity the change belongs to",
        "properties": {
            "service": {"type": "string", "minLength": 1},
            "entity": {"type": "string", "minLength": 1},
            "summary": {"type": "string", "minLength": 1, "description": "one line: image v1.4.2 → v1.4.3"},
            "namespace": {"type": "string"},
            "workload": {"type": "string"},
            "kind": {
                "type": "string",
                "enum": ["rollout", "image", "config", "replicaset", "deploy", "other"],
                "default": "deploy",
            },
            "old": {"type": "string"},
            "new": {"type": "string"},
            "at": {
                "description": "when it happened: unix seconds or RFC 3339 (default: when received)",
                "oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
            },
            "link": {"type": "string", "description": "an http(s) URL: the pipeline run, the Argo CD app"},
            "id": {"type": "string", "description": "the event's own id: a retry with it is stored once"},
        },
    },
    "PagerDutyChangeEvent": {
        "type": "object",
        "required": ["payload"],
        "description": "PagerDuty's Events API v2 change event; the routing key is not kept",
        "properties": {
            "routing_key": {"type": "string"},
            "payload": {
                "type": "object",
                "required": ["summary"],
                "properties": {
                    "summary": {"type": "string"},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "source": {"type": "string", "description": "the entity, unless custom_details.service"},
                    "custom_details": {"type": "object"},
                },
            },
            "links": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"href": {"type": "string"}, "text": {"type": "string"}},
                },
            },
        },
    },
    "Incident": {
        "type": "object",
        "required": [
            "id",
            "status",
            "title",
            "labels",
            "started_at",
            "resolved_at",
            "report",
            "similar_incidents",
        ],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["firing", "resolved"]},
            "title": {"type": "string"},
            "labels": _LABELS,
            "source": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "resolved_at": {"type": "string", "format": "date-time", "nullable": True},
            "report": {
                "type": "object",
                "nullable": True,
                "description": "the analysis; its `chart` (null when nothing could be charted, absent in "
                "reports from before charts) holds the series that chart.png draws; in the list it is only "
                "`{url}`, the chart.png path",
            },
            "similar_incidents": {"type": "array"},
            "alerts": {"type": "array"},
            "parent_id": {
                "type": "string",
                "nullable": True,
                "description": "set on an alert group that is part of another incident (the same fault)",
            },
            "correlation": {"type": "object", "nullable": True, "description": "why it joined or left one"},
            "members": {
                "type": "array",
                "description": "the fault's other alert groups and watch episodes, in the order they started",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "started_at": {"type": "string", "format": "date-time"},
                        "resolved_at": {"type": "string", "format": "date-time", "nullable": True},
                        "alertnames": {"type": "array", "items": {"type": "string"}},
                        "joined": {"type": "object"},
                    },
                },
            },
        },
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "agentic-observability",
            "version": __version__,
            "description": "Prometheus/Grafana-native incident analyst.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())


DOCS_STATIC = "/docs/static"
routes.static(DOCS_STATIC, swagger_ui_path)  # not an API route: the OpenAPI test leaves it out

_DOCS_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>agentic-observability API</title>
<link rel="stylesheet" href="{DOCS_STATIC}/swagger-ui.css"></head>
<body><div id="ui"><noscript>The machine-readable API is at /api/v1/openapi.json.</noscript></div>
<script src="{DOCS_STATIC}/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/api/v1/openapi.json", dom_id: "#ui"}});</script></body></html>
"""


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_HTML, content_type="text/html")
