from __future__ import annotations

import json
import logging

import pytest

from agentic_observability.telemetry import JsonFormatter, correlation, log_fields


def _format(formatter: JsonFormatter, message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return dict(json.loads(formatter.format(record)))


def test_log_lines_are_json_with_the_incident_id() -> None:
    formatter = JsonFormatter()
    with correlation("42"):
        entry = _format(formatter, "report written for %s", "checkout", **log_fields(seconds=0.2))
    assert entry["incident_id"] == "42" and entry["msg"] == "report written for checkout"
    assert entry["seconds"] == 0.2 and entry["level"] == "info"
    assert "incident_id" not in _format(formatter, "outside any incident")


@pytest.mark.parametrize("secret", ["xoxb-123-secret", "tok\"with'quotes"])
def test_known_secrets_are_scrubbed_from_log_lines(secret: str) -> None:
    formatter = JsonFormatter(secrets=[secret])
    entry = _format(formatter, "calling with %s", secret)
    assert secret not in json.dumps(entry) and "***" in entry["msg"]
