"""The remediation catalogue in config (issue 22): off by default, every bad entry refused at load with
a message naming the action and the field, the http token only from the environment and scrubbed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentic_observability.config import RemediationConfig, load_config, template_parts
from agentic_observability.errors import ConfigError
from agentic_observability.telemetry import JsonFormatter

HOOK_TOKEN = "hook-token-that-must-not-leak-42"

RESTART = {
    "name": "carts-restart",
    "kind": "kubernetes.rollout_restart",
    "description": "Restart the cause's pods",
    "matchers": ['severity=~"critical|page"'],
    "cause": "carts|orders",
    "signals": ["cpu"],
    "namespaces": ["shop"],
    "approvers": ["U012ABCDEF", "S0SREGROUP"],
}
SCALE = {
    "name": "carts-scale",
    "kind": "kubernetes.scale",
    "namespaces": ["shop"],
    "workload_kind": "StatefulSet",
    "scale_by": 2,
    "min_replicas": 1,
    "max_replicas": 6,
    "auto": True,
    "auto_severities": ["critical"],
    "min_interval": "15m",
    "max_per_hour": 2,
}
HOOK = {
    "name": "rundeck-restart",
    "kind": "http",
    "url": "https://rundeck.example/api/41/job/abc/run",
    "body": {"options": {"service": "{cause}", "incident": "{incident.id}"}, "tags": ["{labels.namespace}"]},
    "headers": {"X-Requested-By": "agentic-{action}"},
    "token_env": "HOOK_TOKEN",
}


def _load(tmp_path: Path, remediation: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "config.yaml"
    signals = [{"name": "cpu", "query": "rate(cpu_seconds_total[1m])"}, {"name": "latency", "query": "lat"}]
    path.write_text(yaml.safe_dump({"investigation": {"signals": signals}, "remediation": remediation}))
    return load_config(path, environ=environ or {})


def test_off_by_default_with_no_actions() -> None:
    config = load_config(None, environ={})
    remediation = config.file.remediation
    assert remediation == RemediationConfig()
    assert remediation.enabled is False and remediation.actions == ()
    assert remediation.kubernetes.kubeconfig is None and remediation.timeout == 10.0
    assert remediation.follow_up == 600.0
    assert config.secrets.remediation_tokens == {}


def test_a_full_catalogue_loads(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {"enabled": True, "actions": [RESTART, SCALE, HOOK], "follow_up": "5m"},
        {"HOOK_TOKEN": HOOK_TOKEN},
    )
    remediation = config.file.remediation
    assert [a.name for a in remediation.actions] == ["carts-restart", "carts-scale", "rundeck-restart"]
    restart, scale, hook = remediation.actions
    assert restart.namespace == "{labels.namespace}" and restart.workload == "{cause}"
    assert restart.workload_kind == "Deployment" and restart.min_interval == 1800.0 and not restart.auto
    assert scale.min_interval == 900.0 and scale.max_per_hour == 2 and scale.auto_severities == ("critical",)
    assert hook.url == HOOK["url"] and hook.token_env == "HOOK_TOKEN"
    assert remediation.follow_up == 300.0
    assert remediation.action("carts-scale") is scale and remediation.action("nope") is None
    assert config.secrets.remediation_tokens["HOOK_TOKEN"].get_secret_value() == HOOK_TOKEN


BAD = [
    (
        {**SCALE, "min_replicas": None},
        "remediation.actions[carts-scale]: kubernetes.scale needs min_replicas and max_replicas",
    ),
    (
        {**SCALE, "min_replicas": 4, "max_replicas": 2},
        "remediation.actions[carts-scale]: min_replicas (4) and max_replicas (2)",
    ),
    ({**SCALE, "scale_by": 0}, "remediation.actions[carts-scale]: scale_by must not be 0"),
    (
        {**RESTART, "namespaces": []},
        "remediation.actions[carts-restart]: kubernetes.rollout_restart needs namespaces",
    ),
    ({**RESTART, "namespaces": ["Shop_1"]}, "remediation.actions[carts-restart]: namespaces: 'Shop_1'"),
    (
        {**RESTART, "workload": "{caus}"},
        "remediation.actions[carts-restart]: workload: unknown placeholder {caus}",
    ),
    (
        {**RESTART, "namespace": "{labels}"},
        "remediation.actions[carts-restart]: namespace: unknown placeholder {labels}",
    ),
    (
        {**RESTART, "workload": "{cause:>9}"},
        "remediation.actions[carts-restart]: workload: unknown placeholder {cause:>9}",
    ),
    (
        {**RESTART, "workload": "{cause"},
        "remediation.actions[carts-restart]: workload: '{cause' is not a template",
    ),
    ({**RESTART, "matchers": ["severity=~(critical"]}, "remediation.actions[carts-restart]: matchers[0]: "),
    (
        {**RESTART, "matchers": ["not a matcher"]},
        "remediation.actions[carts-restart]: matchers[0]: 'not a matcher'",
    ),
    (
        {**RESTART, "cause": "carts("},
        "remediation.actions[carts-restart]: cause: 'carts(' is not a regular expression",
    ),
    ({**RESTART, "approvers": ["alice"]}, "remediation.actions[carts-restart]: approvers: 'alice'"),
    ({**RESTART, "auto": True}, "remediation.actions[carts-restart]: auto needs auto_severities"),
    ({**RESTART, "max_per_hour": 0}, "remediation.actions[carts-restart]: max_per_hour must be at least 1"),
    (
        {**RESTART, "min_replicas": 1},
        "remediation.actions[carts-restart]: min_replicas does not apply to kubernetes.rollout_restart",
    ),
    (
        {**RESTART, "url": "http://x"},
        "remediation.actions[carts-restart]: url does not apply to kubernetes.rollout_restart",
    ),
    (
        {**SCALE, "token_env": "X"},
        "remediation.actions[carts-scale]: token_env does not apply to kubernetes.scale",
    ),
    (
        {**HOOK, "namespaces": ["shop"]},
        "remediation.actions[rundeck-restart]: namespaces does not apply to http",
    ),
    ({**HOOK, "url": None}, "remediation.actions[rundeck-restart]: http needs url"),
    (
        {**HOOK, "url": "https://u:p@rundeck.example/x"},
        "remediation.actions[rundeck-restart]: url must not carry credentials",
    ),
    ({**HOOK, "token_env": "hook-token"}, "remediation.actions[rundeck-restart]: token_env: 'hook-token'"),
    (
        {**HOOK, "headers": {"authorization": "Bearer x"}},
        "remediation.actions[rundeck-restart]: headers: no Authorization",
    ),
    (
        {**HOOK, "headers": {"X-By": "{who}"}},
        "remediation.actions[rundeck-restart]: headers.X-By: unknown placeholder {who}",
    ),
    (
        {**HOOK, "body": {"a": [{"b": "{incident.owner}"}]}},
        "remediation.actions[rundeck-restart]: body: unknown placeholder {incident.owner}",
    ),
    ({**RESTART, "name": "Carts Restart"}, "remediation.actions[Carts Restart]: name must be"),
    ({**RESTART, "name": "x" * 41}, "name must be 1-40"),
]


@pytest.mark.parametrize(("action", "expected"), BAD, ids=[e.split(": ", 1)[-1][:40] for _, e in BAD])
def test_a_bad_action_is_refused_naming_the_action_and_field(
    tmp_path: Path, action: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"actions": [action]})
    message = str(err.value)
    assert expected in message
    assert str(tmp_path / "config.yaml") in message  # and the file
    assert "Value error" not in message


def test_the_same_action_is_valid_when_fixed(tmp_path: Path) -> None:
    """The cases above fail for their one defect: the entries they start from load."""
    config = _load(tmp_path, {"actions": [RESTART, SCALE, {**HOOK, "token_env": None}]})
    assert len(config.file.remediation.actions) == 3


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"names must be unique; repeated: carts-restart"):
        _load(tmp_path, {"actions": [RESTART, {**RESTART, "cause": "orders"}]})


@pytest.mark.parametrize("key", ["timeout", "follow_up"])
def test_timeouts_must_be_positive(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"remediation.{key} must be greater than 0"):
        _load(tmp_path, {key: 0})


def test_a_misspelt_key_in_an_action_is_named_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remediation\.actions\[0\]\.namspaces.*did you mean 'namespaces'"):
        _load(tmp_path, {"actions": [{**RESTART, "namspaces": ["shop"]}]})


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remediation\.actions\[0\]\.kind"):
        _load(tmp_path, {"actions": [{**RESTART, "kind": "kubernetes.delete"}]})


def test_signals_must_name_investigation_signals(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"actions\[carts-restart\]\.signals: 'cpuu' is not one of .*cpu, latency"
    ):
        _load(tmp_path, {"actions": [{**RESTART, "signals": ["cpuu"]}]})


def test_literal_braces_and_every_placeholder_are_accepted() -> None:
    parts = template_parts(
        "{{x}} {cause}/{incident.id}/{incident.title}/{incident.severity}/{action}/{labels.a_b}"
    )
    assert [name for _, name in parts if name] == [
        "cause",
        "incident.id",
        "incident.title",
        "incident.severity",
        "action",
        "labels.a_b",
    ]
    assert "".join(literal for literal, _ in parts).startswith("{x} /////")


# -- the http token: from the environment only ----------------------------------------------------------


def test_a_missing_token_variable_fails_the_load_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"enabled": True, "actions": [HOOK]}, {"OTHER": "x"})
    assert "HOOK_TOKEN" in str(err.value) and "rundeck-restart" in str(err.value)


def test_an_empty_token_variable_counts_as_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOOK_TOKEN"):
        _load(tmp_path, {"enabled": True, "actions": [HOOK]}, {"HOOK_TOKEN": "  "})


def test_tokens_are_not_read_while_remediation_is_off(tmp_path: Path) -> None:
    config = _load(tmp_path, {"enabled": False, "actions": [HOOK]}, {"HOOK_TOKEN": HOOK_TOKEN})
    assert config.secrets.remediation_tokens == {}


def test_a_token_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remediation\.actions\[0\]\.token'"):
        _load(tmp_path, {"actions": [{**HOOK, "token": HOOK_TOKEN}]})


def test_the_token_is_masked_and_scrubbed_from_logs(tmp_path: Path) -> None:
    config = _load(tmp_path, {"enabled": True, "actions": [HOOK]}, {"HOOK_TOKEN": HOOK_TOKEN})
    assert HOOK_TOKEN in config.secrets.values()  # what serve's setup_logging scrubs
    masked = config.masked()
    assert masked["secrets"]["HOOK_TOKEN"] == "set (masked)"
    shown = json.dumps(masked) + repr(config) + str(config) + config.model_dump_json()
    assert HOOK_TOKEN not in shown
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "receiver said: %s", (f"bad {HOOK_TOKEN}",), None
    )
    line = JsonFormatter(config.secrets.values()).format(record)
    assert HOOK_TOKEN not in line and "receiver said" in line
