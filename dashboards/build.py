"""Writes the Grafana dashboards in this folder (and the Helm chart's copies) from one description.

Run ``python dashboards/build.py`` after changing a panel; a test fails when the JSON files and this
script disagree, and another runs every panel's query against a real Prometheus scraping the service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "helm" / "agentic-observability" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "type": "datasource",
        "query": "prometheus",
        "label": "Data source",
        "current": {},
        "hide": 0,
        "refresh": 1,
    }


def _panel(
    index: int, title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries"
) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def _quantile(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))"


def _dashboard(
    uid: str,
    title: str,
    panels: list[Any],
    variables: tuple[dict[str, Any], ...] = (),
    annotations: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["agentic-obs"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [_datasource_variable(), *variables]},
        "annotations": {"list": list(annotations)},
        "panels": [_panel(i, *p) if isinstance(p, tuple) else p for i, p in enumerate(panels)],
    }


HEALTH = [
    (
        "Alerts received",
        [
            (f"sum by (status) (rate(agentic_obs_alerts_received_total[{RATE}]))", "{{status}}"),
            (f"sum(rate(agentic_obs_alerts_duplicate_total[{RATE}]))", "duplicates"),
        ],
        "reqps",
    ),
    (
        "Webhook latency",
        [
            (_quantile(0.99, "agentic_obs_webhook_duration_seconds"), "p99"),
            (_quantile(0.5, "agentic_obs_webhook_duration_seconds"), "p50"),
        ],
        "s",
    ),
    (
        "Incidents",
        [
            ("agentic_obs_incidents_open", "open"),
            (
                "sum by (source) (increase(agentic_obs_incidents_opened_total[$__range]))",
                "opened ({{source}})",
            ),
        ],
    ),
    ("Queue depth (inbox, jobs, outbox backlog)", [("agentic_obs_queue_depth", "{{queue}}")]),
    (
        "Pipeline stage latency (p95)",
        [(_quantile(0.95, "agentic_obs_stage_duration_seconds", "stage"), "{{stage}}")],
        "s",
    ),
    (
        "Circuit breakers open and errors",
        [
            ("agentic_obs_circuit_breaker_open", "breaker {{dependency}}"),
            (f"sum by (component) (rate(agentic_obs_errors_total[{RATE}]))", "errors {{component}}"),
        ],
    ),
    (
        "Webhook responses",
        [(f"sum by (code) (rate(agentic_obs_webhook_requests_total[{RATE}]))", "{{code}}")],
        "reqps",
    ),
    (
        "Action deliveries",
        [
            (
                f"sum by (sink, outcome) (rate(agentic_obs_action_deliveries_total[{RATE}]))",
                "{{sink}} {{outcome}}",
            ),
        ],
        "ops",
    ),
    (
        "Action delivery latency (p95, queued to delivered)",
        [
            (_quantile(0.95, "agentic_obs_action_delivery_seconds", "sink"), "{{sink}}"),
        ],
        "s",
    ),
    (
        "Model latency",
        [
            (_quantile(0.5, "agentic_obs_model_duration_seconds"), "p50"),
            (_quantile(0.99, "agentic_obs_model_duration_seconds"), "p99"),
        ],
        "s",
    ),
    ("Model tokens", [(f"sum by (kind) (rate(agentic_obs_model_tokens_total[{RATE}]))", "{{kind}}")]),
    (
        "Reports by reasoner outcome",
        [
            (f"sum by (outcome) (rate(agentic_obs_model_reports_total[{RATE}]))", "{{outcome}}"),
            (f"sum(rate(agentic_obs_model_claims_dropped_total[{RATE}]))", "ungrounded claims dropped"),
        ],
    ),
]

WATCH = {
    "name": "watch",
    "type": "query",
    "label": "Watch",
    "datasource": DATASOURCE,
    "query": {"query": "label_values(agentic_obs_anomaly_score, watch)", "refId": "watches"},
    "definition": "label_values(agentic_obs_anomaly_score, watch)",
    "refresh": 2,
    "includeAll": True,
    "multi": True,
    "allValue": ".*",
    "current": {},
    "hide": 0,
}

ANOMALIES = [
    (
        "Anomaly score by series (0..1)",
        [('agentic_obs_anomaly_score{watch=~"$watch"}', "{{watch}} {{__name__}}")],
    ),
    (
        "Expected band",
        [
            ('agentic_obs_anomaly_score_lower{watch=~"$watch"}', "lower {{watch}}"),
            ('agentic_obs_anomaly_score_upper{watch=~"$watch"}', "upper {{watch}}"),
        ],
    ),
    (
        "Most anomalous series now",
        [('topk(10, agentic_obs_anomaly_score{watch=~"$watch"})', "{{watch}}")],
        "short",
        "table",
    ),
    (
        "Watch polls by outcome",
        [
            (
                "sum by (watch, outcome) "
                f'(rate(agentic_obs_watch_evaluations_total{{watch=~"$watch"}}[{RATE}]))',
                "{{watch}} {{outcome}}",
            ),
        ],
        "ops",
    ),
]

INCIDENT_ANNOTATIONS = [
    {
        "name": "agentic-obs incidents",
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "iconColor": "red",
        "target": {"type": "tags", "tags": ["agentic-obs"], "limit": 100, "matchAny": False},
    }
]

INCIDENTS = [
    ("Open incidents", [("agentic_obs_incidents_open", "open")], "short", "stat"),
    (
        "Incidents opened in range",
        [("sum by (source) (increase(agentic_obs_incidents_opened_total[$__range]))", "{{source}}")],
        "short",
        "stat",
    ),
    (
        "Alerts firing vs resolved",
        [(f"sum by (status) (rate(agentic_obs_alerts_received_total[{RATE}]))", "{{status}}")],
        "reqps",
    ),
    (
        "Time to report (p50, p95 per stage)",
        [
            (_quantile(0.5, "agentic_obs_stage_duration_seconds", "stage"), "p50 {{stage}}"),
            (_quantile(0.95, "agentic_obs_stage_duration_seconds", "stage"), "p95 {{stage}}"),
        ],
        "s",
    ),
    (
        "Notifications out (Slack, Grafana, PagerDuty, memory)",
        [
            (
                "sum by (sink) "
                f'(increase(agentic_obs_action_deliveries_total{{outcome="delivered"}}[{RATE}]))',
                "{{sink}}",
            ),
        ],
    ),
    (
        "Actions waiting or failed",
        [
            ('agentic_obs_queue_depth{queue="outbox"}', "waiting"),
            (
                'sum by (sink) (increase(agentic_obs_action_deliveries_total{outcome="failed"}[$__range]))',
                "given up {{sink}}",
            ),
        ],
    ),
]

# The open incidents as a table, from agentic_obs_incident_open (service/open_incidents.py): one
# instant query, its labels as columns, newest first (ids grow), each row linking to the incident in
# the API (the series' url label, set when server.public_url is) and to its Slack thread (the
# workspace URL is the slack_url variable: the service does not know it).
OPEN_INCIDENT_COLUMNS = ["id", "title", "service", "severity", "slack_channel"]
OPEN_INCIDENT_HIDDEN = ["url", "slack_ts"]  # kept (the links read them), not shown
API_LINK = {"title": "Incident in the API", "url": "${__data.fields.url}", "targetBlank": True}
SLACK_LINK = {
    "title": "Slack thread",
    "url": "${slack_url}/archives/${__data.fields.slack_channel}/p${__data.fields.slack_ts}",
    "targetBlank": True,
}
SLACK_URL = {
    "name": "slack_url",
    "type": "textbox",
    "label": "Slack workspace URL",
    "description": "https://<workspace>.slack.com: where the table's Slack thread links go",
    "query": "",
    "current": {"text": "", "value": ""},
    "hide": 0,
}


def _open_incidents_table(index: int) -> dict[str, Any]:
    def links(column: str, link: dict[str, Any]) -> dict[str, Any]:
        return {
            "matcher": {"id": "byName", "options": column},
            "properties": [{"id": "links", "value": [link]}],
        }

    hidden = [
        {"matcher": {"id": "byName", "options": c}, "properties": [{"id": "custom.hidden", "value": True}]}
        for c in OPEN_INCIDENT_HIDDEN
    ]
    fields = OPEN_INCIDENT_COLUMNS + OPEN_INCIDENT_HIDDEN
    return {
        "id": index + 1,
        "type": "table",
        "title": "Open incidents (newest first)",
        "description": "A fault's members are listed in its incident. At most 500 rows: "
        "agentic_obs_incident_open_omitted counts the rest.",
        "datasource": DATASOURCE,
        "gridPos": {"h": 10, "w": 24, "x": 0, "y": (index + 1) // 2 * 8},
        "targets": [
            {
                "refId": "A",
                "expr": "agentic_obs_incident_open",
                "instant": True,
                "range": False,
                "format": "table",
                "datasource": DATASOURCE,
            }
        ],
        "transformations": [
            {"id": "filterFieldsByName", "options": {"include": {"names": fields}}},
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [{"targetField": "id", "destinationType": "number"}],
                },
            },
            {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "id", "desc": True}]}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {},
                    "indexByName": {name: n for n, name in enumerate(fields)},
                    "renameByName": {},
                },
            },
        ],
        "fieldConfig": {
            "defaults": {"custom": {"filterable": True}},
            "overrides": [
                links("id", API_LINK),
                links("title", API_LINK),
                links("slack_channel", SLACK_LINK),
                *hidden,
            ],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    }


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        "agentic-obs-health.json": _dashboard(
            "agentic-obs-health", "agentic-observability / service health", HEALTH
        ),
        "agentic-obs-anomalies.json": _dashboard(
            "agentic-obs-anomalies", "agentic-observability / anomaly watches", ANOMALIES, (WATCH,)
        ),
        "agentic-obs-incidents.json": _dashboard(
            "agentic-obs-incidents",
            "agentic-observability / incidents",
            [*INCIDENTS, _open_incidents_table(len(INCIDENTS))],
            (SLACK_URL,),
            annotations=tuple(INCIDENT_ANNOTATIONS),
        ),
    }


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2) + "\n"


def main() -> int:
    for name, dashboard in dashboards().items():
        for folder in (HERE, CHART):
            (folder / name).write_text(render(dashboard))
    print(f"wrote {len(dashboards())} dashboards to {HERE} and {CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
