"""Numbers and times as people read them (``readable.py``), and the demo's report as it reads at
3 a.m., compared with a golden file (tests/data/golden/demo_report.txt)."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from agentic_observability.config import SignalConfig
from agentic_observability.demo.run import demo_config
from agentic_observability.models import Alert, Evidence, Incident, SeriesSummary, iso_time
from agentic_observability.pipeline.reason import rules_report
from agentic_observability.readable import (
    describe_change,
    format_duration,
    format_stored_time,
    format_time,
    format_value,
    hypothesis_onset,
    relative_to_alert,
    unit_for,
    unix_time,
)

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("query", "unit"),
    [
        ("max by (service) (shop_request_latency_seconds)", "seconds"),
        ('max by (service) (shop_request_latency_seconds{service="carts"})', "seconds"),
        ("max by (service) (shop_cpu_usage_ratio)", "ratio"),
        ("node_filesystem_avail_bytes", "bytes"),
        ("sum without (instance) (node_hwmon_temp_celsius)", "celsius"),
        ("disk_used_percent", "percent"),
        ("node_power_supply_voltage_volts", "volts"),
        # counters: per second under rate, an amount in the window under increase
        ("sum by (service) (rate(http_requests_total[5m]))", "per_second"),
        ("irate(http_requests_total[1m])", "per_second"),
        ("rate(http_request_duration_seconds_count[5m])", "per_second"),
        ("increase(http_requests_total[1h])", None),
        ("increase(process_cpu_seconds_total[1h])", "seconds"),
        ("rate(node_network_receive_bytes_total[5m])", "bytes_per_second"),
        ("rate(process_cpu_seconds_total[5m])", "ratio"),  # CPU seconds a second: cores, as a share
        ('1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m]))', "ratio"),
        ("http_requests_total", None),  # a raw count
        ("process_cpu_seconds_total", "seconds"),  # CPU time since start
        # histograms
        ("histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))", "seconds"),
        ("histogram_quantile(0.9, rate(http_request_duration_seconds[5m]))", "seconds"),  # native
        ("rate(rpc_duration_seconds_sum[5m]) / rate(rpc_duration_seconds_count[5m])", "seconds"),
        ("rate(http_request_duration_seconds_bucket[5m])", None),
        # arithmetic
        ("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "ratio"),
        ("sum(rate(errors_total[5m])) / sum(rate(requests_total[5m]))", "ratio"),
        ("node_memory_MemAvailable_bytes / 1024", None),  # scaled by a constant: KiB, or anything
        ("shop_cpu_usage_ratio * 100", None),
        ("a_bytes + b_bytes", "bytes"),
        # names that disagree, or none at all
        ("a_seconds + b_bytes", None),
        ("up", None),
        ("vector(1)", None),
        ("", None),
        # what is not a metric name: label names, strings, ranges, keywords, functions
        ('shop_request_latency_seconds{le="x_bytes"} offset 5m', "seconds"),
        (
            'sum by (x_bytes) (a_seconds) and on (y_bytes) label_replace(vector(1), "s", "z_bytes", "", "")',
            "seconds",
        ),
        ("max_over_time(a_seconds[5m:1m])", "seconds"),
        # counts, flags and clock readings have no unit, whatever they count
        ("count(x_bytes > 1e9)", None),
        ("count_over_time(x_seconds[5m])", None),
        ("changes(x_seconds[1h])", None),
        ("absent(x_bytes)", None),
        ("timestamp(x_bytes)", None),
        ("x_seconds > bool 1", None),
        ("deriv(x_bytes[5m])", "bytes_per_second"),
        ("deriv(process_cpu_seconds[5m])", "ratio"),
    ],
)
def test_the_unit_of_a_query(query: str, unit: str | None) -> None:
    assert unit_for(query, None) == unit


def test_hostile_text_is_not_scanned_for_long() -> None:
    """The alert's own expression reaches unit_for unparsed: an unclosed brace made the scan quadratic
    (16,000 of them took 5 s on the event loop)."""
    started = time.perf_counter()
    assert unit_for("{" * 16_000, None) is None
    assert unit_for("x_bytes" + " + x_bytes" * 2000, None) is None  # past MAX_UNIT_QUERY
    assert unit_for("{" * 4000 + "}" * 4000, None) is None
    assert time.perf_counter() - started < 0.5


def test_a_configured_unit_wins() -> None:
    assert unit_for("shop_cpu_usage_ratio", "percent") == "percent"
    assert unit_for("x", " Seconds ") == "seconds"
    assert unit_for("x", "s") == "seconds" and unit_for("x", "%") == "percent"
    assert unit_for("x", "requests") == "requests" and unit_for("x", " RPM ") == "RPM"  # as written
    assert unit_for("x_bytes", "") == "bytes"  # empty is unset


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.05161, "seconds", "51.6 ms"),
        (1.151, "seconds", "1.15 s"),
        (150.0, "seconds", "2.5 min"),
        (7200.0, "seconds", "2 h"),
        (1e7, "seconds", "116 d"),
        (0.9996, "seconds", "1 s"),  # rounds up into the next scale, not "1e+03 ms"
        (1e300, "seconds", "1.16e+295 d"),  # not 296 grouped digits
        (2.5e-7, "seconds", "250 ns"),
        (3.2e-6, "seconds", "3.2 µs"),
        (1e-12, "seconds", "0.001 ns"),
        (0.0, "seconds", "0 s"),
        (-0.0, "seconds", "0 s"),
        (-0.05, "seconds", "-50 ms"),
        (1e9 * 86400, "seconds", "1,000,000,000 d"),
        (512.0, "bytes", "512 B"),
        (1000.0, "bytes", "1,000 B"),
        (1536.0, "bytes", "1.5 KiB"),
        (5e12, "bytes", "4.55 TiB"),
        (2e6, "bytes_per_second", "1.91 MiB/s"),
        (0.125, "ratio", "12.5%"),
        (3.2, "ratio", "320%"),
        (0.0, "ratio", "0%"),
        (99.5, "percent", "99.5%"),
        (1234.0, "per_second", "1.23k/s"),
        (0.5, "per_second", "0.5/s"),
        (45.0, "celsius", "45 °C"),
        (3.2, "volts", "3.2 volts"),  # a unit with no scale of its own: the value, then the word
        (1234.0, "requests", "1.23k requests"),
        (1234.0, None, "1.23k"),
        (52.0, None, "52"),
        (1.5e9, None, "1.5G"),
        (999_999.0, None, "1M"),
        (0.000123, None, "0.000123"),
        (1e-7, None, "1e-7"),
        (1e16, None, "10,000T"),
        (-2500.0, None, "-2.5k"),
        (NAN, "seconds", "n/a"),
        (NAN, None, "n/a"),
        (INF, "seconds", "∞"),
        (INF, "ratio", "∞"),
        (-INF, None, "-∞"),
    ],
)
def test_values_read_in_their_unit(value: float, unit: str | None, text: str) -> None:
    assert format_value(value, unit) == text


NOON = datetime(2026, 11, 30, 9, 42, 57, 803000, tzinfo=UTC).timestamp()


def test_times_read_as_a_clock_in_utc() -> None:
    assert format_time(NOON) == "09:42:57 UTC"  # the second it is in, not rounded up
    assert format_time(NOON, with_date=True) == "2026-11-30 09:42:57 UTC"
    assert format_time(NAN) == format_time(INF) == "an unknown time"
    assert format_time(1e20) == "an unknown time"  # past year 9999


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (0.4, "0 s"),
        (14.2, "14 s"),
        (59.6, "1 min"),
        (125.0, "2 min 5 s"),
        (922.0, "15 min 22 s"),
        (3600.0, "1 h"),
        (3605.0, "1 h"),  # the two largest units: seconds are noise an hour in
        (3660.0, "1 h 1 min"),
        (90000.0, "1 d 1 h"),
        (-14.0, "-14 s"),
        (NAN, "an unknown time"),
    ],
)
def test_durations_in_the_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_times_relative_to_the_alert() -> None:
    assert relative_to_alert(NOON, NOON + 14.2) == "14 s before the alert"
    assert relative_to_alert(NOON + 125, NOON) == "2 min 5 s after the alert"
    assert relative_to_alert(NOON + 0.4, NOON) == relative_to_alert(NOON - 0.4, NOON) == "at the alert"
    assert relative_to_alert(NOON + 0.6, NOON) == "1 s after the alert"
    assert relative_to_alert(NAN, NOON) == "at an unknown time relative to the alert"


def test_stored_times_are_parsed_or_shown_as_they_are() -> None:
    assert unix_time("2026-11-30T09:42:57.803000Z") == pytest.approx(NOON)
    assert unix_time("2026-11-30T09:42:57.803") == pytest.approx(NOON)  # no zone: UTC
    assert unix_time(NOON) == NOON and unix_time(3) == 3.0
    assert unix_time("later") is unix_time(None) is unix_time(True) is unix_time(NAN) is None
    assert format_stored_time("2026-01-01T00:00:00Z") == "2026-01-01 00:00:00 UTC"
    assert format_stored_time("yesterday") == "yesterday"
    assert format_stored_time(None) == "an unknown date"


def test_a_report_stored_before_units_reads_its_unit_from_the_promql() -> None:
    old = {
        "signal": "latency",
        "baseline": 0.05,
        "incident": 1.2,
        "deviation": 40.4,
        "promql": "max(x_seconds)",
    }
    assert describe_change(old) == "latency 50 ms → 1.2 s (40.4× its usual spread)"
    assert describe_change({**old, "unit": "bytes"}) == "latency 0.05 B → 1.2 B (40.4× its usual spread)"
    assert hypothesis_onset({"onset": "2026-11-30T09:42:57.803Z"}) == pytest.approx(NOON)
    assert hypothesis_onset({"onset_unix": NOON, "onset": None}) == NOON
    assert hypothesis_onset({"onset": None}) is None and hypothesis_onset({}) is None


# -- the demo's report, as it reads -------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "data" / "golden" / "demo_report.txt"
ALERT_AT = datetime(2026, 11, 30, 9, 43, 12, tzinfo=UTC).timestamp()
METRICS = {"cpu": "shop_cpu_usage_ratio", "latency_p90": "shop_request_latency_seconds"}


def _demo_rule() -> dict[str, Any]:
    rules = yaml.safe_load(resources.files("agentic_observability.demo").joinpath("rules.yml").read_text())
    (rule,) = rules["groups"][0]["rules"]
    return dict(rule)


def _demo_signals() -> dict[str, SignalConfig]:
    config = demo_config(Path("demo"), "http://127.0.0.1:9090", 8080, "token")
    return {s.name: s for s in config.file.investigation.signals}


def _demo_incident() -> Incident:
    rule = _demo_rule()
    labels = {"alertname": rule["alert"], "service": "front-end", **rule["labels"]}
    annotations = {**rule["annotations"], "description": "front-end p90 latency is 1.342s"}
    url = "http://127.0.0.1:9090/graph?" + urlencode({"g0.expr": rule["expr"], "g0.tab": "1"})
    alert = Alert("firing", labels, annotations, ALERT_AT, None, url, "c0ffee")
    return Incident(
        "2", "{}:{alertname}", "alertmanager", "firing", rule["alert"], labels, ALERT_AT, None, (alert,)
    )


def _demo_hypothesis(
    rank: int, entity: str, score: float, onset: float, *changes: tuple[Any, ...]
) -> dict[str, Any]:
    """A hypothesis as investigate.py writes it, on the demo's signals (their units come from the demo's
    config). The PromQL is the signal restricted to the entity as ``promql_for_entity`` writes it,
    spelled out so this text checks the wording, not promql.py."""
    signals = _demo_signals()
    evidence = [
        {
            "signal": name,
            "promql": f'max by (service) ({METRICS[name]}{{service="{entity}"}})',
            "labels": {"service": entity},
            "baseline": baseline,
            "incident": incident,
            "unit": unit_for(signals[name].query, signals[name].unit),
            "deviation": deviation,
            "onset": iso_time(onset),
            "explore_url": "http://127.0.0.1:9090/graph?g0.expr=...",
        }
        for name, baseline, incident, deviation in changes
    ]
    return {
        "rank": rank,
        "entity_label": "service",
        "entity": entity,
        "score": score,
        "onset": iso_time(onset),
        "onset_unix": onset,
        "evidence": evidence,
    }


def _demo_report_text() -> str:
    """The second round of the demo: the CPU hog on carts slows front-end down, and memory recalls
    the first round, confirmed and fixed."""
    incident = _demo_incident()
    series = SeriesSummary(
        {
            "__name__": "shop_request_latency_seconds",
            "instance": "127.0.0.1:9464",
            "job": "shop",
            "service": "front-end",
        },
        points=240,
        first=0.1102,
        last=1.342,
        minimum=0.1021,
        maximum=1.387,
        mean=0.4821,
        peak_at=ALERT_AT + 31.25,
    )
    evidence = Evidence(
        'shop_request_latency_seconds{service="front-end"}', ALERT_AT - 255, ALERT_AT + 45, 1.25, (series,)
    )
    hypotheses = (
        _demo_hypothesis(
            1,
            "carts",
            0.9412,
            ALERT_AT - 14.197,
            ("latency_p90", 0.05161, 1.151, 435.17),
            ("cpu", 0.2113, 0.9712, 96.4),
        ),
        _demo_hypothesis(2, "orders", 0.4107, ALERT_AT - 9.5, ("latency_p90", 0.08230, 1.204, 210.3)),
        _demo_hypothesis(3, "front-end", 0.2215, ALERT_AT - 6.0, ("latency_p90", 0.1102, 1.342, 122.9)),
    )
    similar = (
        {
            "id": "1",
            "score": 0.9731,
            "root_cause": "carts",
            "resolution": "stopped the runaway batch job on carts",
            "confirmed": True,
            "title": "ShopFrontEndSlow: front-end p90 latency above 500ms",
            "started_at": iso_time(ALERT_AT - 118.0),
        },
    )
    report = rules_report(incident, (evidence,), hypotheses, [], ALERT_AT + 45, similar)
    return report.summary + "\n"


def test_the_demo_report_reads_as_the_golden_file() -> None:
    """The words a person reads: any change to them shows here. After checking a new text by eye,
    write it with ``UPDATE_GOLDEN=1``."""
    text = _demo_report_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
