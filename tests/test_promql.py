"""PromQL through the parser (pipeline/promql.py): the printer round-trips every expression the
project ships, an entity restriction reaches every selector its series come from, thresholds split
on the AST, and a syntax error names its column."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import promql_parser as pp
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_observability.cli import main
from agentic_observability.config import Config, FileConfig, load_config
from agentic_observability.demo.run import demo_config
from agentic_observability.errors import ConfigError
from agentic_observability.models import Alert, Incident
from agentic_observability.pipeline.promql import (
    MAX_PROMQL_DEPTH,
    MAX_PROMQL_LENGTH,
    MAX_PROMQL_OPERATORS,
    canonical_promql,
    check_config_queries,
    check_promql,
    incident_expressions,
    parse_promql,
    promql_for_entity,
    promql_problem,
    promql_string,
    split_threshold,
    warn_config_queries,
    write_promql,
)
from agentic_observability.service import init_app
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [
    *sorted((ROOT / "alertmanager" / "rules").glob("*.yml")),
    ROOT / "src/agentic_observability/demo/rules.yml",
]


def _rule_expressions() -> list[str]:
    return [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _helm_config() -> Config:
    values = yaml.safe_load((ROOT / "helm/agentic-observability/values.yaml").read_text())
    return Config(file=FileConfig.model_validate(values["config"]), source="values.yaml")


def _config_queries(config: Config) -> list[str]:
    return [s.query for s in config.file.investigation.signals] + [w.query for w in config.file.watches]


EXAMPLE = load_config(ROOT / "config.example.yaml", environ={})
SHIPPED = sorted(
    {*_rule_expressions(), *_config_queries(EXAMPLE), *_config_queries(_helm_config())}
    | {*_config_queries(demo_config(Path("/nonexistent"), "http://prometheus", 1, "token"))}
)
FEATURES = [
    'sum by (service) (rate(x{a="b"}[5m] offset 1m @ 100)) > bool 0.5',
    "a + on (x) group_left (y) b",
    "a * ignoring (x) group_right b",
    "a + ignoring () group_left b",
    "a and on () b",
    "a or b unless c",
    "topk by (service) (3, x)",
    "quantile without (pod) (0.9, x)",
    'count_values("version", build_info)',
    "-x",
    "--x",
    "-(a + b)",
    "-1 ^ 2",
    "(-1) ^ 2",
    "2 ^ 3 ^ 2",
    "x - -1",
    "rate(x[5m:1m] offset -5m)",
    "max_over_time(rate(x[1m])[1h30m:] @ end())",
    "x @ start()",
    "x @ 1700000000.5 offset 1d",
    'label_replace(vector(1), "a", "quote\\" backslash\\\\ newline\\n tab\\t", "", "")',
    'x{a=~"b|c", d!~"e", f!="g"}',
    'x{a=~"\\\\d+"}',
    'x{a="b" or c="d"}',
    "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))",
    'clamp(x, 0, scalar(y)) atan2 sort_by_label(z, "a")',
    "x > -Inf or x == NaN or x < 1e-07",
    "a + fill (0) b",
    "a + fill_left (1) fill_right (2) b",
    'absent(up{job="a"})',
    "time() - x",
]
QUOTED = [
    '{"http.server.duration"}',
    '{"http.server.duration", "k8s.pod.name"="x"}',
    'rate({"http.server.requests", "http.route"=~"/api/.*"}[5m])',
    'sum by ("k8s.pod.name", service) (x)',
    'a * on ("k8s.pod.name") group_left ("k8s.node.name") b',
    '{"on"}',  # a keyword as a metric name
    'sum by ("without") (x)',  # and as a label name
    'x{"a.b"="c"}',
]


@pytest.mark.parametrize("expr", SHIPPED + FEATURES + QUOTED)
def test_printed_promql_parses_back_to_the_same_tree(expr: str) -> None:
    tree = pp.parse(expr)
    printed = write_promql(tree)
    assert repr(pp.parse(printed)) == repr(tree), printed  # repr is the parser's full AST dump
    assert write_promql(pp.parse(printed)) == printed


def test_the_corpus_holds_what_the_project_ships() -> None:
    assert len(_rule_expressions()) >= 10
    assert any("label_replace" in q for q in _config_queries(EXAMPLE))


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("x{}", "x"),
        ('{__name__="x"}', "x"),
        ('{__name__="http.server.duration"}', '{"http.server.duration"}'),
        ('{"x.y", a="b" or c="d"}', '{__name__="x.y", a="b" or c="d"}'),  # the name is the first group's
        ("sum(x) by (service)", "sum by (service) (x)"),
        ("sum by () (x)", "sum(x)"),
        ("a + ignoring() b", "a + b"),
        ("a + on(x) group_left() b", "a + on (x) group_left b"),
        ("x offset 90s @ 10", "x @ 10 offset 1m30s"),
        ("x{a='b'}", 'x{a="b"}'),
        ("x{a=`b\\\\c`}", 'x{a="b\\\\\\\\c"}'),  # a raw string keeps its backslashes
        ("0x1F + 1e3 + .5", "31 + 1000 + 0.5"),
        ("vector(1) and on () (vector(time() % 40) < 20)", "vector(1) and on () (vector(time() % 40) < 20)"),
    ],
)
def test_the_printer_writes_it_as_an_sre_would(expr: str, printed: str) -> None:
    assert canonical_promql(expr) == printed
    assert canonical_promql(printed) == printed


def test_unparsable_text_is_kept_as_given() -> None:
    assert canonical_promql("sum(rate(x[5m]") == "sum(rate(x[5m]"


def test_incident_expressions_are_printed_and_counted_once() -> None:
    def alert(expr: str) -> Alert:
        url = "http://prometheus/graph?" + urlencode({"g0.expr": expr})
        return Alert("firing", {"alertname": "A"}, {}, 0.0, None, url, expr)

    exprs = ["x{}  >  1", "x > 1", "sum(y) by (a)", "not ( promql"]
    incident = Incident("i", "g", "alertmanager", "firing", "A", {}, 0.0, None, tuple(map(alert, exprs)))
    assert incident_expressions(incident) == ["x > 1", "sum by (a) (y)", "not ( promql"]


# -- one entity --------------------------------------------------------------------------------------


def _selectors(expr: pp.Expr) -> list[pp.VectorSelector]:
    found: list[pp.VectorSelector] = []

    def visit(node: pp.Expr) -> None:
        if isinstance(node, pp.VectorSelector):  # also visited inside a MatrixSelector
            found.append(node)

    pp.walk(expr, visit)
    return found


def _matchers(selector: pp.VectorSelector) -> list[tuple[str, str]]:
    groups = selector.matchers.or_matchers or [selector.matchers.matchers]
    return [(m.name, m.value) for group in groups for m in group if m.op == pp.MatchOp.Equal]


@pytest.mark.parametrize(
    ("query", "restricted"),
    [
        (
            "max by (service) (shop_request_latency_seconds)",
            'max by (service) (shop_request_latency_seconds{service="carts"})',
        ),
        ("cpu", 'cpu{service="carts"}'),
        # A matcher on the label that carts satisfies goes (see the entity matcher tests below).
        ('x{service=~"carts|orders", code="5"}', 'x{code="5", service="carts"}'),
        (
            "sum by (service) (rate(x[5m])) / on (service) sum by (service) (rate(y[5m:1m] offset 5m))",
            'sum by (service) (rate(x{service="carts"}[5m])) '
            '/ on (service) sum by (service) (rate(y{service="carts"}[5m:1m] offset 5m))',
        ),
        (
            "histogram_quantile(0.9, sum by (service, le) (rate(h_bucket[2m])))",
            'histogram_quantile(0.9, sum by (service, le) (rate(h_bucket{service="carts"}[2m])))',
        ),
        ("-x or absent(y)", '-x{service="carts"} or absent(y{service="carts"})'),
        ('{"http.server.duration"}', '{"http.server.duration", service="carts"}'),
        ('x{a="1" or b="2"}', 'x{a="1", service="carts" or b="2", service="carts"}'),
        # A number stays a number: scalar() and scalar arguments are not filtered.
        ("x > scalar(y)", 'x{service="carts"} > scalar(y)'),
        ("topk by (service) (scalar(k), x)", 'topk by (service) (scalar(k), x{service="carts"})'),
        ("clamp_max(x, scalar(m))", 'clamp_max(x{service="carts"}, scalar(m))'),
        # The side matched on other labels is not filtered: it would change the answer.
        (
            "sum by (service) (x) / ignoring (service) group_left sum(x)",
            'sum by (service) (x{service="carts"}) / ignoring (service) group_left sum(x)',
        ),
        ("x and on () up", 'x{service="carts"} and on () up'),
        ("a * on (pod) group_right b", 'a * on (pod) group_right b{service="carts"}'),
    ],
)
def test_the_entity_matcher_goes_into_the_selectors(query: str, restricted: str) -> None:
    assert promql_for_entity(query, "service", "carts") == restricted
    pp.parse(restricted)


def _joined(query: str) -> str:
    return f'{query} and on (service) label_replace(vector(1), "service", "carts", "", "")'


@pytest.mark.parametrize(
    ("query", "restricted"),
    [
        # carts satisfies the matcher already there: it goes.
        ('x{service="carts"}', 'x{service="carts"}'),
        ('x{service!="frontend"}', 'x{service="carts"}'),
        ('x{service=~"cart.*", a="b"}', 'x{a="b", service="carts"}'),
        ('x{service!~"front.*|orders"}', 'x{service="carts"}'),
        ('x{container!="", container!="POD"}', 'x{container!="", container!="POD", service="carts"}'),
        # It does not: both stay, and the query selects nothing for carts, as it should.
        ('x{service="frontend"}', 'x{service="frontend", service="carts"}'),
        ('x{service!="carts"}', 'x{service!="carts", service="carts"}'),
        ('x{service=~"front.*"}', 'x{service=~"front.*", service="carts"}'),
        ('x{service=~"cart"}', 'x{service=~"cart", service="carts"}'),  # anchored at both ends
        ('x{service!~"c.*"}', 'x{service!~"c.*", service="carts"}'),
        (
            'x{service="frontend" or a="b"}',
            'x{service="frontend", service="carts" or a="b", service="carts"}',
        ),
        # A regex Python does not read as RE2 does (RE2's \z is Python's \Z): unsure, both stay.
        ('x{service=~"carts\\\\z"}', 'x{service=~"carts\\\\z", service="carts"}'),
        ('x{service!~"[[:digit:]]+"}', 'x{service!~"[[:digit:]]+", service="carts"}'),  # POSIX class
        # A selecting aggregation filtered inside picks other series; per service it picks the same.
        ("topk(3, x)", _joined("topk(3, x)")),
        ("bottomk without (service) (3, x)", _joined("bottomk without (service) (3, x)")),
        ("sum(limitk(2, x))", _joined("sum(limitk(2, x))")),
        ("limit_ratio(0.5, x) * y", _joined("(limit_ratio(0.5, x) * y)")),
        ("topk by (service) (3, x)", 'topk by (service) (3, x{service="carts"})'),
        ("topk without (pod) (3, x)", 'topk without (pod) (3, x{service="carts"})'),
        # An "or" matched on other labels: b's series come in or not by a's, of any service.
        ("a or on (pod) b", _joined("(a or on (pod) b)")),
        ("a or ignoring (service) b", _joined("(a or ignoring (service) b)")),
        ("sum(x) + (a or on (pod) b)", _joined("(sum(x) + (a or on (pod) b))")),
        ("a or on (service, pod) b", 'a{service="carts"} or on (service, pod) b{service="carts"}'),
        ("a or ignoring (pod) b", 'a{service="carts"} or ignoring (pod) b{service="carts"}'),
        ("a unless on (pod) b", 'a{service="carts"} unless on (pod) b'),
    ],
)
def test_the_entity_matcher_is_added_unless_implied(query: str, restricted: str) -> None:
    assert promql_for_entity(query, "service", "carts") == restricted
    pp.parse(restricted)


def test_a_copied_label_is_restricted_on_its_source_by_the_same_rules() -> None:
    copied = 'label_replace(x{container!="POD", container!="frontend"}, "service", "$1", "container", "(.+)")'
    assert promql_for_entity(copied, "service", "carts") == (
        'label_replace(x{container="carts"}, "service", "$1", "container", "(.+)")'
    )
    kept = 'label_replace(x{container="frontend"}, "service", "$1", "container", "(.+)")'
    assert promql_for_entity(kept, "service", "carts") == (
        'label_replace(x{container="frontend", container="carts"}, "service", "$1", "container", "(.+)")'
    )
    picked = f"topk(3, {kept})"
    assert promql_for_entity(picked, "service", "carts") == _joined(picked)


def _plain(expr: str) -> bool:
    """No label the query writes and no operator matching on other labels (tested on their own)."""
    return not any(word in expr for word in ("label_replace", "group_", "on (", "ignoring"))


@pytest.mark.parametrize("expr", [e for e in SHIPPED + FEATURES if _plain(e)])
def test_every_selector_of_a_plain_query_gets_the_matcher(expr: str) -> None:
    restricted = pp.parse(promql_for_entity(expr, "service", "carts"))
    for selector in _selectors(restricted):
        if not _is_scalar_input(expr, selector):
            assert ("service", "carts") in _matchers(selector), write_promql(restricted)


def _is_scalar_input(expr: str, selector: pp.VectorSelector) -> bool:
    """A selector read through scalar(), which keeps its meaning only unfiltered."""
    return f"scalar({write_promql(selector)})" in canonical_promql(expr)


@pytest.mark.parametrize(
    "query",
    [
        'sum by (service) (label_replace(rate(c[2m]), "service", "$1", "container", "(.+)") + d)',
        'label_replace(rate(c[2m]), "service", "x-$1", "container", "(.+)")',
        'label_join(x, "service", "-", "app", "tier")',
        'count_values("service", x)',
        "x * on (pod) group_left (service) kube_pod_labels",
    ],
)
def test_a_label_the_query_writes_is_filtered_by_a_join(query: str) -> None:
    """The raw series do not carry a label the query computes: a matcher on them would match
    nothing, so the result is joined with a one-series vector carrying the value."""
    restricted = promql_for_entity(query, "service", "carts")
    assert restricted.endswith(' and on (service) label_replace(vector(1), "service", "carts", "", "")')
    assert 'service="carts"' not in restricted
    pp.parse(restricted)


@pytest.mark.parametrize(
    ("query", "restricted"),
    [
        (
            'sum by (namespace, service) (label_replace(rate(c{container!="POD"}[2m]), "service", "$1", '
            '"container", "(.+)"))',
            'sum by (namespace, service) (label_replace(rate(c{container="carts"}[2m]), "service", "$1", '
            '"container", "(.+)"))',
        ),
        (
            'label_replace(a, "service", "${1}", "app", "^(.*)$") / '
            'label_replace(b, "service", "$1", "app", "(.+)")',
            'label_replace(a{app="carts"}, "service", "${1}", "app", "^(.*)$") / '
            'label_replace(b{app="carts"}, "service", "$1", "app", "(.+)")',
        ),
    ],
)
def test_a_label_copied_as_is_is_matched_on_its_source(query: str, restricted: str) -> None:
    """service <- container unchanged (how the Kubernetes signals name a service): filtering the raw
    series on container reads as an SRE would write it, and selects the same series."""
    assert promql_for_entity(query, "service", "carts") == restricted
    pp.parse(restricted)


def test_an_unparsable_signal_keeps_the_old_join() -> None:
    assert promql_for_entity("some_metricsql_only(x)", "service", "carts") == (
        '(some_metricsql_only(x)) and on (service) label_replace(vector(1), "service", "carts", "", "")'
    )


def test_a_utf8_entity_label_is_quoted() -> None:
    assert promql_for_entity("x", "k8s.service", "a") == 'x{"k8s.service"="a"}'
    joined = promql_for_entity('label_replace(x, "k8s.service", "x$1", "app", "(.+)")', "k8s.service", "a")
    assert 'and on ("k8s.service") label_replace(vector(1), "k8s.service", "a", "", "")' in joined
    pp.parse(joined)


@settings(max_examples=300, deadline=None)
@given(value=st.text())
def test_any_entity_value_stays_inside_its_string(value: str) -> None:
    pushed = pp.parse(promql_for_entity('sum by (service) (rate(x{service!="old"}[5m]))', "service", value))
    assert [_matchers(s) for s in _selectors(pushed)] == [[("service", value)]]
    joined = pp.parse(
        promql_for_entity('label_replace(x, "service", "x$1", "app", "(.+)")', "service", value)
    )
    assert value in _strings(joined)


@settings(max_examples=200, deadline=None)
@given(label=st.text(min_size=1).filter(lambda name: name != "__name__"), value=st.text())
def test_any_entity_label_is_written_as_a_name(label: str, value: str) -> None:
    """Prometheus 3 takes any UTF-8 label name; a quoted one must still parse back to itself."""
    [selector] = _selectors(pp.parse(promql_for_entity("sum(x)", label, value)))
    assert (label, value) in _matchers(selector)
    computed = f'label_replace(x, {promql_string(label)}, "x$1", "app", "(.+)")'
    joined = pp.parse(promql_for_entity(computed, label, value))
    assert {label, value} <= set(_strings(joined))


def _strings(expr: pp.Expr) -> list[str]:
    found: list[str] = []
    pp.walk(expr, lambda node: found.append(node.val) if isinstance(node, pp.StringLiteral) else None)
    return found


# -- thresholds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(x[5m]) > 0.5", ("rate(x[5m])", ">", 0.5)),
        ("0.5 < x", ("x", ">", 0.5)),
        ("1 >= bool x", ("x", "<=", 1.0)),
        ("2 == x", ("x", "==", 2.0)),
        ("(sum by (a) (x) != 0)", ("sum by (a) (x)", "!=", 0.0)),
        ("((x{}) > (3))", ("x", ">", 3.0)),
        ("x > -1", ("x", ">", -1.0)),
        ("x > bool Inf", None),  # no finite threshold (see test_a_threshold_that_is_no_number)
        ('{"http.server.duration"} > 1', ('{"http.server.duration"}', ">", 1.0)),
        (
            "sum by (service) (rate(x[5m])) / sum by (service) (rate(y[5m])) > 0.5",
            ("sum by (service) (rate(x[5m])) / sum by (service) (rate(y[5m]))", ">", 0.5),
        ),
        ("x > y", None),
        ("x + 1", None),
        ("x > 1 and y", None),
        ("sum(x > 1)", None),
        ("rate(x[5m]) >", None),
    ],
)
def test_split_threshold(expr: str, expected: tuple[str, str, float] | None) -> None:
    assert split_threshold(expr) == expected


@pytest.mark.parametrize(
    "expr", ["x > NaN", "x < Inf", "x > -Inf", "NaN < x", "(x) >= bool (Inf)", "x == -NaN", "x > 1e999"]
)
def test_a_threshold_that_is_no_number_is_no_threshold(expr: str) -> None:
    """A NaN or infinite threshold has no line to draw, and would reach the report as ``NaN``, which
    is not JSON."""
    assert split_threshold(expr) is None


def test_a_finite_threshold_is_valid_json() -> None:
    parts = split_threshold("x > 1e308")
    assert parts is not None and math.isfinite(parts[2])
    json.dumps(parts, allow_nan=False)


@pytest.mark.parametrize("expr", [e for e in _rule_expressions() if split_threshold(e)])
def test_the_value_side_of_a_shipped_rule_is_a_query_of_its_own(expr: str) -> None:
    parts = split_threshold(expr)
    assert parts is not None
    pp.parse(parts[0])


# -- syntax errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "where", "what"),
    [
        ("sum(rate(x[5m]", 'column 9 (near "sum(rate(x[5m]")', "unclosed left parenthesis"),
        ("sum(rate(x[5m]) by (a)", "column 4 ", "unclosed left parenthesis"),
        ("rate(x[5m)", "column 10 ", ""),  # a bracket closed by the wrong kind
        ("x)", "column 2 ", "unexpected right parenthesis"),
        ('x{a="b}', "column 5 ", "unterminated quoted string"),
        ("x{a=b}", "column 5 ", "unexpected identifier 'b'"),
        ("foo bar", 'column 5 (near "foo bar")', ""),
        ("sum by service (x)", "column 8 ", ""),
        ('x{a="b",,}', "column 9 ", ""),
        ("x $ y", "column 3 ", "unexpected character: '$'"),
        ("rate(x[5m]) >", "column 14 ", ""),  # the right-hand side is missing: the end of the input
        ("rate(x)", "column 7 ", "expected type matrix"),  # where the range should be
        ("x[5x]", "column 3 ", "bad number or duration syntax"),
        ("x offset", "column 9 ", "expected duration"),
        ("", "column 1:", "no expression found"),
        ("sum by (a) (\n  rate(x[5m])\n) > bool", "line 3, column 9 ", ""),
    ],
)
def test_a_syntax_error_names_its_column(expr: str, where: str, what: str) -> None:
    problem = promql_problem(expr)
    assert problem is not None and problem.startswith(f"PromQL syntax error at {where}"), problem
    assert what in problem
    with pytest.raises(ConfigError, match="PromQL syntax error at"):
        check_promql(expr)


@pytest.mark.parametrize("expr", SHIPPED + FEATURES + QUOTED)
def test_valid_promql_has_no_problem(expr: str) -> None:
    assert promql_problem(expr) is None
    check_promql(expr)


# -- the config check -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [EXAMPLE, _helm_config(), demo_config(Path("/nonexistent"), "http://prometheus", 1, "token")],
    ids=["config.example.yaml", "helm values", "demo"],
)
def test_shipped_configs_pass_the_query_check(config: Config) -> None:
    check_config_queries(config)


def _bad_config(tmp_path: Path) -> Path:
    data: dict[str, Any] = {
        "watches": [{"name": "fine", "query": "up"}, {"name": "broken", "query": "sum(rate(x[5m])"}],
        "investigation": {
            "signals": [{"name": "cpu", "query": "cpu"}, {"name": "latency", "query": "max by service (x)"}]
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_bad_query_is_named_by_its_config_path(tmp_path: Path) -> None:
    path = _bad_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_config_queries(load_config(path, environ={}))
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{path}: watches[1] (broken).query: PromQL syntax error at column 4 ")
    assert lines[1].startswith(
        f"{path}: investigation.signals[1] (latency).query: PromQL syntax error at column 8"
    )
    assert len(lines) == 2


def test_check_config_cli_reports_a_bad_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(_bad_config(tmp_path))]) == 2
    out = capsys.readouterr()
    assert "watches[1] (broken).query: PromQL syntax error at column 4" in out.err
    assert "investigation.signals[1] (latency).query" in out.err
    assert out.out == ""


def test_the_service_warns_about_a_bad_query_and_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The parser refuses some queries a server answers (MetricsQL, Prometheus 3 additions): the
    receiver must not go down over one; check-config is where it fails."""
    config = make_config(tmp_path, investigation={"signals": [{"name": "cpu", "query": "rate(cpu[5m]"}]})
    with caplog.at_level(logging.WARNING, logger="agentic_observability.pipeline.promql"):
        init_app(config)
    assert "investigation.signals[0] (cpu).query: PromQL syntax error at column" in caplog.text


# -- what the parser must not be given, and where it panics -------------------------------------------

_CHILD = """
import json, sys
from agentic_observability.pipeline.promql import (
    canonical_promql, parse_promql, promql_for_entity, promql_problem, split_threshold
)
readable = sys.argv[1] == "readable"
for name, text in json.load(sys.stdin).items():
    print(name, flush=True)  # the last name printed is the one that killed the process
    if readable:  # the limits: a tree comes back, and the printer gives up cleanly if it must
        assert parse_promql(text) is not None and promql_problem(text) is None
        canonical_promql(text), split_threshold(text), promql_for_entity(text, "service", "carts")
        continue
    assert parse_promql(text) is None
    assert canonical_promql(text) == text
    assert split_threshold(text) is None
    assert promql_problem(text).startswith("PromQL not checked: the query "), promql_problem(text)
    joined = '({}) and on (service) label_replace(vector(1), "service", "carts", "", "")'.format(text)
    assert promql_for_entity(text, "service", "carts") == joined
"""


def _in_a_child(texts: dict[str, str], *, readable: bool) -> None:
    """Check ``texts`` in another interpreter: a stack overflow in the parser kills the process it
    runs in (SIGSEGV, exit 139), which must not be pytest's. One child for all: each takes seconds
    to start."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, "readable" if readable else "refused"],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    last = (result.stdout.split() or ["(none)"])[-1]
    assert result.returncode == 0, f"exit {result.returncode} on {last}: {result.stderr[-3000:]}"
    assert result.stdout.split() == list(texts)


def test_text_that_would_overflow_the_parser_is_not_given_to_it() -> None:
    """``pp.parse`` overflows the Rust stack on deep nesting and the process dies: an alert carrying
    such an expression would crash the pipeline on every retry. It is refused and kept as given."""
    _in_a_child(
        {
            "binary-10k": "-".join(["x"] * 5000),  # the parser dies from about 4,190 operators
            "unary-16k": "-" * 16000 + "x",
            "unary-8k": "-" * 8190 + "x",  # short enough, but the parser dies from about 8,180 signs
            "or-10k": "x" + " or x" * 2000,
            "parens-16k": "(" * 8180 + "x" + ")" * 8180,
            "calls-8k": "abs(" * 1600 + "x" + ")" * 1600,  # short enough, too deep
            "unary-parens-6k": "-(" * 2000 + "x" + ")" * 2000,
        },
        readable=False,
    )


def _at_the_limits() -> dict[str, str]:
    depth, operators = MAX_PROMQL_DEPTH, MAX_PROMQL_OPERATORS
    chain = "-".join(["x"] * (operators + 1))
    return {
        "subqueries": "max_over_time(" * (depth - 1) + f"({chain})" + "[1m:])" * (depth - 1),
        "unary": "-(" * depth + "-" * (operators - depth) + "x" + ")" * depth,
        "calls": "abs(" * depth + " or ".join(["x"] * (operators + 1)) + ")" * depth,
        "binary": "(x-" * depth + "^".join(["x"] * (operators - depth + 1)) + ")" * depth,
    }


def test_the_deepest_text_given_to_the_parser_is_read() -> None:
    """The limits stay well below where the parser dies (the first of these dies at about six times
    both limits), with depth and operators both at theirs; one more of either is refused."""
    texts = _at_the_limits()
    assert all(len(text) <= MAX_PROMQL_LENGTH for text in texts.values())
    _in_a_child(texts, readable=True)
    for text in texts.values():
        assert parse_promql("-" + text) is None
        assert parse_promql("(" + text + ")") is None


def test_a_long_query_is_refused_unread() -> None:
    text = "x + " + " " * MAX_PROMQL_LENGTH + "1"
    assert parse_promql(text) is None
    assert promql_problem(text) == (
        f"PromQL not checked: the query is too long to read ({len(text)} characters, "
        f"at most {MAX_PROMQL_LENGTH})"
    )


def test_strings_and_comments_count_neither_as_depth_nor_operators() -> None:
    text = f"x{{a=~{promql_string('-' * 1100)}}} # {'(' * 300}{'-' * 1100}\n+ 1"
    assert parse_promql(text) is not None


_PANICS = ["x offset Inf", "x offset 1e300", "x offset -Inf", "rate(x[1e20])", "x[5m:1e300]"]


@pytest.mark.parametrize("text", _PANICS)
def test_a_panic_in_the_parser_is_an_unparsable_query(text: str) -> None:
    """The Rust parser panics on these; pyo3's PanicException is a BaseException, which would escape
    every ``except Exception`` in the pipeline and end its worker."""
    assert parse_promql(text) is None
    assert canonical_promql(text) == text
    assert split_threshold(f"{text} > 1") is None
    assert promql_for_entity(text, "service", "carts") == _joined(f"({text})")
    problem = promql_problem(text)
    assert problem is not None and problem.startswith("PromQL syntax error at column "), problem
    assert "the parser failed: " in problem
    with pytest.raises(ConfigError):
        check_promql(text)


def test_a_panic_names_the_column_of_its_cause() -> None:
    problem = promql_problem("sum(rate(x[5m] offset Inf))")
    assert problem is not None
    assert problem.startswith(
        'PromQL syntax error at column 23 (near "m] offset Inf))"): the parser failed: '
    )


_UNPRINTABLE = [
    "x @ -1",  # valid Prometheus; reading the time before 1970 panics
    "rate(x[5m] @ -100)",
    "x @ 1e12",  # past what datetime holds: OverflowError
    "x @ 1e15",  # ValueError
    # Read, but deeper than the printer's recursion (two frames a level, Python stops at 1,000).
    "-".join(["x"] * 500),
    "(" * 120 + "-".join(["x"] * 390) + ")" * 120,
]


@pytest.mark.parametrize(
    "text", _UNPRINTABLE, ids=["at-1", "at-100", "at-1e12", "at-1e15", "chain", "nested"]
)
def test_a_query_the_printer_cannot_write_is_kept_as_given(text: str) -> None:
    assert parse_promql(text) is not None
    assert promql_problem(text) is None  # it is PromQL
    assert canonical_promql(text) == text
    assert split_threshold(f"{text} * 1 > 1") is None
    assert split_threshold(f"1 < {text} * 1") is None
    assert promql_for_entity(text, "service", "carts") == _joined(f"({text})")


def test_incident_expressions_survive_what_the_parser_cannot_take() -> None:
    def alert(expr: str) -> Alert:
        url = "http://prometheus/graph?" + urlencode({"g0.expr": expr})
        return Alert("firing", {"alertname": "A"}, {}, 0.0, None, url, expr)

    exprs = ["x offset Inf > 1", "x @ -1 > 1", "-" * 8190 + "x", "x{} > 1"]
    alerts = (*map(alert, exprs), Alert("firing", {}, {}, 0.0, None, "http://[::1/graph?g0.expr=up", "up"))
    incident = Incident("i", "g", "alertmanager", "firing", "A", {}, 0.0, None, alerts)
    assert incident_expressions(incident) == [*exprs[:3], "x > 1"]


def test_the_service_warns_about_queries_the_parser_cannot_take(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queries = ["x offset Inf", "x @ -1", "-" * 2000 + "x", "rate(x[1e20])", "(" * 300 + "x" + ")" * 300]
    signals = [{"name": f"s{index}", "query": query} for index, query in enumerate(queries)]
    config = make_config(tmp_path, investigation={"signals": signals})
    with caplog.at_level(logging.WARNING, logger="agentic_observability.pipeline.promql"):
        warn_config_queries(config)
    assert "signals[0] (s0).query: PromQL syntax error at column 10 " in caplog.text
    assert "signals[1]" not in caplog.text  # valid
    assert "signals[2] (s2).query: PromQL not checked: the query has too many operators" in caplog.text
    assert "signals[3] (s3).query: PromQL syntax error at column 8 " in caplog.text
    assert "signals[4] (s4).query: PromQL not checked: the query is nested too deep" in caplog.text


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit])
def test_what_stops_the_interpreter_is_not_taken_for_a_panic(
    stop: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    def parse(text: str) -> pp.Expr:
        raise stop

    monkeypatch.setattr(pp, "parse", parse)
    with pytest.raises(stop):
        parse_promql("x")
    with pytest.raises(stop):
        promql_problem("x")


def test_what_stops_the_interpreter_while_printing_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentic_observability.pipeline.promql as promql

    def vector(node: pp.VectorSelector, only: pp.Matcher | None) -> str:
        raise asyncio.CancelledError

    monkeypatch.setitem(promql._WRITERS, pp.VectorSelector, vector)
    with pytest.raises(asyncio.CancelledError):
        canonical_promql("x")
    with pytest.raises(asyncio.CancelledError):
        promql_for_entity("x", "service", "carts")
