from __future__ import annotations

from pathlib import Path

import pytest

from agentic_observability.cli import main
from agentic_observability.config import (
    load_config,
    parse_duration,
    redact_url,
    redact_urls,
    require_webhook_token,
)
from agentic_observability.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads() -> None:
    config = load_config(ROOT / "config.example.yaml", environ={})
    assert config.file.server.port == 8000
    assert config.file.watches[0].for_ == 300
    assert config.file.investigation.baseline == 1800
    assert config.file.reasoning.backend == "rules"


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config.source == "<defaults>"
    assert config.file.prometheus.url == "http://127.0.0.1:9090"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {port: 9123}\n")
    assert load_config(None, environ={"AGENTIC_OBS_CONFIG": str(path)}).file.server.port == 9123


def test_misspelt_key_is_named_with_file_and_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  prot: 8000\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert str(path) in message
    assert "server.prot" in message
    assert "did you mean 'port'" in message


def test_unknown_key_in_a_list_item(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("watches:\n  - {name: a, query: up, abov: 1}\n")
    with pytest.raises(ConfigError, match=r"watches\[0\]\.abov.*did you mean 'above'"):
        load_config(path, environ={})


def test_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("promethues: {url: http://x}\n")
    with pytest.raises(ConfigError, match="did you mean 'prometheus'"):
        load_config(path, environ={})


@pytest.mark.parametrize("text", ["server: [1, 2", "- just a list", "server: {port: not-a-number}"])
def test_invalid_files_name_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), (15, 15), ("250ms", 0.25)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "", "m5", "-1", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_secrets_come_from_environment_and_are_masked() -> None:
    env = {"AGENTIC_OBS_WEBHOOK_TOKEN": "s3cret-token-value", "SLACK_BOT_TOKEN": "xoxb-very-secret"}
    config = load_config(None, environ=env)
    assert require_webhook_token(config) == "s3cret-token-value"
    printed = repr(config) + str(config.masked()) + config.model_dump_json()
    assert "s3cret-token-value" not in printed and "xoxb-very-secret" not in printed
    assert config.masked()["secrets"]["SLACK_BOT_TOKEN"] == "set (masked)"


def test_secrets_in_yaml_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("actions:\n  slack: {channel: '#ops', token: xoxb-1}\n")
    with pytest.raises(ConfigError, match=r"actions\.slack\.token"):
        load_config(path, environ={})


def test_auth_on_without_token_fails_fast() -> None:
    with pytest.raises(ConfigError, match="AGENTIC_OBS_WEBHOOK_TOKEN"):
        require_webhook_token(load_config(None, environ={}))


def test_auth_can_be_explicitly_disabled(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {auth: false}\n")
    assert require_webhook_token(load_config(path, environ={})) is None


def test_tunables_from_environment() -> None:
    config = load_config(None, environ={"ANOMALY_THRESHOLD": "0.7", "CIRCUIT_BREAKER_THRESHOLD": "3"})
    assert config.tunables.anomaly_threshold == 0.7
    assert config.tunables.circuit_breaker_threshold == 3
    with pytest.raises(ConfigError, match="CIRCUIT_BREAKER_THRESHOLD"):
        load_config(None, environ={"CIRCUIT_BREAKER_THRESHOLD": "zero"})


def test_duplicate_watch_names_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("watches:\n  - {name: a, query: up, above: 1}\n  - {name: a, query: up, below: 1}\n")
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(path, environ={})


def test_check_config_cli_masks_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTIC_OBS_WEBHOOK_TOKEN", "tok-should-never-print")
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "pd-key-should-never-print")
    assert main(["check-config", str(ROOT / "config.example.yaml")]) == 0
    out = capsys.readouterr()
    assert "should-never-print" not in out.out + out.err
    assert "AGENTIC_OBS_WEBHOOK_TOKEN: set (masked)" in out.out
    assert "is valid" in out.err


def test_check_config_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("storage: {pth: x}\n")
    assert main(["check-config", str(path)]) == 2
    assert "storage.pth" in capsys.readouterr().err


def test_example_signal_templates_are_valid_promql(tmp_path: Path) -> None:
    import subprocess

    import yaml

    from agentic_observability.demo.stack import find_binary

    config = load_config(ROOT / "config.example.yaml", environ={})
    queries = [s.query for s in config.file.investigation.signals] + [w.query for w in config.file.watches]
    rules = {
        "groups": [
            {
                "name": "templates",
                "rules": [{"record": f"agentic_obs:template_{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [find_binary("promtool", install=True), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("url", ["localhost:9090", "prometheus", "ftp://x"])
def test_urls_must_be_http(tmp_path: Path, url: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"prometheus: {{url: '{url}'}}\n")
    with pytest.raises(ConfigError, match=r"prometheus\.url.*not an http\(s\) URL"):
        load_config(path, environ={})


# -- Prometheus credentials, the Slack webhook secret and URLs shown without userinfo ----------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROMETHEUS_USERNAME": "agent"}, "PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD go together"),
        ({"PROMETHEUS_PASSWORD": "pw"}, "PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD go together"),
        (
            {"PROMETHEUS_BEARER_TOKEN": "t", "PROMETHEUS_USERNAME": "a", "PROMETHEUS_PASSWORD": "pw"},
            "either PROMETHEUS_BEARER_TOKEN or PROMETHEUS_USERNAME",
        ),
        ({"PROMETHEUS_USERNAME": "a:b", "PROMETHEUS_PASSWORD": "pw"}, "cannot contain ':'"),
    ],
)
def test_prometheus_credentials_are_one_kind_and_complete(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, environ=env)
    assert "pw" not in str(err.value)


def test_prometheus_credentials_from_the_environment() -> None:
    env = {"PROMETHEUS_USERNAME": "agent", "PROMETHEUS_PASSWORD": "pw-1"}
    secrets = load_config(None, environ=env).secrets
    assert secrets.prometheus_password is not None and "pw-1" in secrets.values()
    assert load_config(None, environ={"PROMETHEUS_BEARER_TOKEN": "t-1"}).secrets.prometheus_bearer_token


def test_credentials_in_the_url_and_the_environment_compete(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("prometheus: {url: 'http://agent:url-pw@prometheus:9090'}\n")
    assert load_config(path, environ={}).file.prometheus.url.endswith("@prometheus:9090")  # allowed alone
    with pytest.raises(ConfigError, match=r"prometheus\.url' carries credentials") as err:
        load_config(path, environ={"PROMETHEUS_BEARER_TOKEN": "t"})
    assert "url-pw" not in str(err.value)


def test_slack_webhook_url_in_yaml_names_the_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("actions:\n  slack: {webhook_url: 'https://hooks.slack.com/services/T/B/x'}\n")
    with pytest.raises(
        ConfigError,
        match=r"actions\.slack\.webhook_url.*set the environment variable "
        r"SLACK_WEBHOOK_URL",
    ) as err:
        load_config(path, environ={})
    assert "hooks.slack.com" not in str(err.value)


def test_slack_webhook_url_from_the_environment_is_checked_and_masked() -> None:
    url = "https://hooks.slack.com/services/T000/B000/webhook-secret-part"
    config = load_config(None, environ={"SLACK_WEBHOOK_URL": url})
    assert config.masked()["secrets"]["SLACK_WEBHOOK_URL"] == "set (masked)"
    assert "webhook-secret-part" not in repr(config) + str(config.masked())
    with pytest.raises(ConfigError, match="SLACK_WEBHOOK_URL: must be an http") as err:
        load_config(None, environ={"SLACK_WEBHOOK_URL": "hooks.slack.com/services/not-a-url-secret"})
    assert "not-a-url-secret" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@prometheus:9090", "http://prometheus:9090"),
        ("https://user@grafana.example.com/sub/path?x=1", "https://grafana.example.com/sub/path?x=1"),
        ("http://u:p%40ss@h:1/a@b", "http://h:1/a@b"),
        ("http://prometheus:9090", "http://prometheus:9090"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_urls(f"failed: GET {url} (HTTP 500)") == f"failed: GET {shown} (HTTP 500)"


def test_check_config_shows_no_url_userinfo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "prometheus: {url: 'http://agent:prom-url-pw@prometheus:9090'}\n"
        "actions:\n  grafana: {url: 'https://admin:grafana-url-pw@grafana:3000'}\n"
        "memory: {backend: qdrant, url: 'http://qdrant-user:qdrant-url-pw@qdrant:6333'}\n"
    )
    monkeypatch.delenv("AGENTIC_OBS_CONFIG", raising=False)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "url-pw" not in out.out + out.err
    assert "url: http://prometheus:9090" in out.out and "https://grafana:3000" in out.out


def test_invalid_url_error_hides_credentials(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("prometheus: {url: 'agent:typo-pw@prometheus:9090'}\n")
    with pytest.raises(ConfigError, match="not an http") as err:
        load_config(path, environ={})
    assert "typo-pw" not in str(err.value)


def test_prometheus_max_response_bytes() -> None:
    assert load_config(None, environ={}).file.prometheus.max_response_bytes == 64 * 1_048_576
