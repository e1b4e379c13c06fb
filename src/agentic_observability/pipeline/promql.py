"""PromQL as the pipeline handles it, through a real parser (``promql_parser``: Prometheus' grammar, in
Rust): an alert's own expression recovered from its ``generatorURL`` and printed canonically, a
threshold rule split into its value side and threshold, a signal restricted to one entity, the
config's queries checked at startup with the column of the first error. No I/O.

The parser's own printer is lossy (``x{}`` for a bare name, UTF-8 label names unquoted, string
literals unescaped), so the printer here writes PromQL from the AST itself, the way an SRE would:
``max by (service) (x{service="carts"})``."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import promql_parser as pp

from agentic_observability.config import Config, FileConfig
from agentic_observability.errors import ConfigError
from agentic_observability.models import Incident

log = logging.getLogger(__name__)

MAX_QUERIES = 5  # alert expressions recovered per incident


def expression_from_generator_url(url: str) -> str | None:
    """The PromQL of ``…/graph?g0.expr=…`` (Prometheus, Thanos, VictoriaMetrics vmalert links)."""
    if not url:
        return None
    query = parse_qs(urlsplit(url).query)
    for key in ("g0.expr", "expr", "query"):
        values = query.get(key)
        if values and values[0].strip():
            return values[0].strip()
    return None


def parse_promql(text: str) -> pp.Expr | None:
    """The AST of ``text``, or None when it is not PromQL this parser reads."""
    try:
        return pp.parse(text)
    except ValueError:
        return None


def canonical_promql(text: str) -> str:
    """``text`` as the printer writes it; as given when it does not parse."""
    expr = parse_promql(text)
    return text if expr is None else write_promql(expr)


# -- thresholds --------------------------------------------------------------------------------------

# A comparison read from its other side: ``0.5 < x`` is ``x > 0.5``.
_MIRRORED = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}


def split_threshold(expr: str) -> tuple[str, str, float] | None:
    """``rate(x[5m]) > 0.5`` -> (``rate(x[5m])``, ``>``, 0.5); ``0.5 < x`` -> (``x``, ``>``, 0.5).
    None unless the top-level operator (through parentheses) is a comparison, with or without
    ``bool``, with a number literal on one side."""
    parsed = parse_promql(expr)
    node = _unwrapped(parsed) if parsed is not None else None
    if not isinstance(node, pp.BinaryExpr) or str(node.op) not in _MIRRORED:
        return None
    operator = str(node.op)
    left, right = _unwrapped(node.lhs), _unwrapped(node.rhs)
    if isinstance(right, pp.NumberLiteral):
        return write_promql(left), operator, right.val
    if isinstance(left, pp.NumberLiteral):
        return write_promql(right), _MIRRORED[operator], left.val
    return None


def _unwrapped(node: pp.Expr) -> pp.Expr:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def incident_expressions(incident: Incident) -> list[str]:
    """The incident's distinct alert expressions, printed canonically (so two spellings of one rule
    count once)."""
    seen: dict[str, None] = {}
    for alert in incident.alerts:
        expr = expression_from_generator_url(alert.generator_url)
        if expr:
            seen.setdefault(canonical_promql(expr), None)
    return list(seen)[:MAX_QUERIES]


# -- one entity ----------------------------------------------------------------------------------------


def promql_for_entity(query: str, label: str, value: str) -> str:
    """Keep only the series of ``query`` whose ``label`` equals ``value``, written as an SRE would:
    the matcher goes into every selector the result's series come from
    (``max by (service) (x{service="carts"})``).

    The selectors cannot be filtered on a label the query itself writes (``label_replace`` or
    ``label_join`` into it, ``count_values`` naming it, a ``group_left``/``group_right`` copying it
    from the other side): their raw series do not carry it. Those queries, and any the parser cannot
    read, are filtered as a whole by a join on a one-series vector instead."""
    expr = parse_promql(query)
    if expr is None:
        return _joined(f"({query})", label, value)
    if _writes_label(expr, label):
        source = _copied_from(expr, label)
        if source is not None and value:  # service <- container as is: the matcher goes on container
            return write_promql(expr, pp.Matcher(pp.MatchOp.Equal, source, value))
        text = write_promql(expr)
        return _joined(f"({text})" if isinstance(expr, pp.BinaryExpr) else text, label, value)
    return write_promql(expr, pp.Matcher(pp.MatchOp.Equal, label, value))


_IDENTITY_REPLACEMENTS = ("$1", "${1}")
_IDENTITY_REGEXES = ("(.+)", "(.*)", "^(.+)$", "^(.*)$")


def _copied_from(expr: pp.Expr, label: str) -> str | None:
    """The source label when ``label`` is only ever a plain copy of it that covers every selector
    (``label_replace(v, "service", "$1", "container", "(.+)")``, the usual way Kubernetes signals
    name their service): then ``service="carts"`` is ``container="carts"`` on the raw series."""
    copies: list[pp.Call] = []
    selectors = 0

    def visit(node: pp.Expr) -> bool:
        nonlocal selectors
        if isinstance(node, pp.VectorSelector):
            selectors += 1
        if isinstance(node, pp.Call) and node.func.name == "label_replace" and _string_arg(node, 1) == label:
            copies.append(node)
        return True

    pp.walk(expr, visit)
    sources = {_identity_source(call) for call in copies}
    if len(sources) != 1 or None in sources:
        return None
    covered = sum(_selector_count(call.args[0]) for call in copies)
    return sources.pop() if covered == selectors else None


def _identity_source(call: pp.Call) -> str | None:
    if _string_arg(call, 2) in _IDENTITY_REPLACEMENTS and _string_arg(call, 4) in _IDENTITY_REGEXES:
        return _string_arg(call, 3) or None
    return None


def _string_arg(call: pp.Call, index: int) -> str | None:
    args = call.args
    return args[index].val if len(args) > index and isinstance(args[index], pp.StringLiteral) else None


def _selector_count(expr: pp.Expr) -> int:
    count = 0

    def visit(node: pp.Expr) -> bool:
        nonlocal count
        count += isinstance(node, pp.VectorSelector)
        return True

    pp.walk(expr, visit)
    return count


def _joined(query: str, label: str, value: str) -> str:
    one = f'label_replace(vector(1), {promql_string(label)}, {promql_string(value)}, "", "")'
    return f"{query} and on ({_grouping_label(label)}) {one}"


_LABEL_WRITERS = ("label_replace", "label_join")  # their second argument names the label they write


def _writes_label(expr: pp.Expr, label: str) -> bool:
    found = False

    def visit(node: pp.Expr) -> bool:
        nonlocal found
        found = _node_writes_label(node, label)
        return not found  # stop walking once found

    pp.walk(expr, visit)
    return found


def _node_writes_label(node: pp.Expr, label: str) -> bool:
    if isinstance(node, pp.Call) and node.func.name in _LABEL_WRITERS:
        target = node.args[1] if len(node.args) > 1 else None
        return isinstance(target, pp.StringLiteral) and target.val == label
    if isinstance(node, pp.AggregateExpr) and str(node.op) == "count_values":
        return isinstance(node.param, pp.StringLiteral) and node.param.val == label
    if isinstance(node, pp.BinaryExpr) and node.modifier is not None:
        return label in (node.modifier.group_labels or ())
    return False


def _restricted_sides(node: pp.BinaryExpr, only: pp.Matcher) -> tuple[pp.Matcher | None, pp.Matcher | None]:
    """Which operands of a binary operator get the entity matcher. Both when the operator matches
    series on the entity label; otherwise only the side whose labels the result keeps (the left one,
    the right one for ``group_right``, both for ``or``): the other side is matched on other labels,
    and filtering it would change the answer (``x / ignoring(service) group_left sum(x)``)."""
    modifier = node.modifier
    if modifier is None or _matches_on(modifier.matching, only.name):
        return only, only
    right_kept = modifier.card == pp.VectorMatchCardinality.OneToMany
    left_kept = not right_kept
    if str(node.op) == "or":
        left_kept = right_kept = True
    return (only if left_kept else None), (only if right_kept else None)


def _matches_on(matching: pp.LabelModifier | None, label: str) -> bool:
    if matching is None:
        return True  # no on()/ignoring(): series are matched on all their labels
    listed = label in matching.labels
    return listed if matching.type == pp.LabelModifierType.Include else not listed


# -- the printer -----------------------------------------------------------------------------------------

# Names written bare when they match these; otherwise quoted (Prometheus 3's UTF-8 names).
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Words the lexer reads as keywords or numbers where a metric name or a by()/on() label may stand
# (found by trying each one): quoted, they stay names.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "smoothed", "anchored"}
)
_MATCH_OPS = (
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
)
# Escaped so that no value can break out of its string, and control characters stay visible.
_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]},
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal; quotes, backslashes and newlines cannot break out."""
    return f'"{value.translate(_ESCAPES)}"'


def write_promql(expr: pp.Expr, only: pp.Matcher | None = None) -> str:
    """Canonical PromQL for ``expr``: parse(write(parse(x))) is parse(x). With ``only``, that matcher
    goes into every selector the result's series come from (see ``promql_for_entity``)."""
    writer = _WRITERS.get(type(expr))
    if writer is None:
        raise TypeError(f"no PromQL writer for {type(expr).__name__}")
    return writer(expr, only)


def _number(node: pp.NumberLiteral, only: pp.Matcher | None) -> str:
    return _number_text(node.val)


def _number_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _string(node: pp.StringLiteral, only: pp.Matcher | None) -> str:
    return promql_string(node.val)


def _paren(node: pp.ParenExpr, only: pp.Matcher | None) -> str:
    return f"({write_promql(node.expr, only)})"


def _unary(node: pp.UnaryExpr, only: pp.Matcher | None) -> str:
    return f"-{write_promql(node.expr, only)}"


def _vector(node: pp.VectorSelector, only: pp.Matcher | None) -> str:
    return _selector(node, only) + _modifiers(node.at, node.offset)


def _matrix(node: pp.MatrixSelector, only: pp.Matcher | None) -> str:
    selector = node.vector_selector
    window = f"[{_duration(node.range)}]"
    return _selector(selector, only) + window + _modifiers(selector.at, selector.offset)


def _subquery(node: pp.SubqueryExpr, only: pp.Matcher | None) -> str:
    step = _duration(node.step) if node.step is not None else ""
    window = f"[{_duration(node.range or timedelta(0))}:{step}]"
    return write_promql(node.expr, only) + window + _modifiers(node.at, node.offset)


def _call(node: pp.Call, only: pp.Matcher | None) -> str:
    func = node.func
    if func.return_type == pp.ValueType.Scalar:
        only = None  # scalar(x), time(): a number; filtering inside would change it
    args = [write_promql(arg, only if _takes_series(func, i) else None) for i, arg in enumerate(node.args)]
    return f"{func.name}({', '.join(args)})"


def _takes_series(func: pp.Function, index: int) -> bool:
    """Whether argument ``index`` is series (not a scalar like clamp's bounds or round's step)."""
    types = func.arg_types
    kind = types[min(index, len(types) - 1)]  # a variadic function repeats its last type
    return kind in (pp.ValueType.Vector, pp.ValueType.Matrix)


def _aggregate(node: pp.AggregateExpr, only: pp.Matcher | None) -> str:
    args = [write_promql(node.param)] if node.param is not None else []  # topk's k, quantile's φ
    args.append(write_promql(node.expr, only))
    return f"{node.op}{_aggregate_grouping(node.modifier)}({', '.join(args)})"


def _aggregate_grouping(modifier: pp.AggModifier | None) -> str:
    if modifier is None:
        return ""
    if modifier.type == pp.AggModifierType.By:
        return f" by ({_label_list(modifier.labels)}) " if modifier.labels else ""  # by () is no by
    return f" without ({_label_list(modifier.labels)}) "


def _binary(node: pp.BinaryExpr, only: pp.Matcher | None) -> str:
    left, right = _restricted_sides(node, only) if only is not None else (None, None)
    matching = _vector_matching(node.modifier)
    return f"{write_promql(node.lhs, left)} {node.op}{matching} {write_promql(node.rhs, right)}"


def _vector_matching(modifier: pp.BinModifier | None) -> str:
    """`` bool on (a) group_left (b) fill (0)``: what follows a binary operator, spaced as Prometheus'
    own formatter writes it."""
    if modifier is None:
        return ""
    parts = ["bool"] if modifier.return_bool else []
    grouped = modifier.card in (pp.VectorMatchCardinality.ManyToOne, pp.VectorMatchCardinality.OneToMany)
    matching = modifier.matching
    if matching is not None:
        including = matching.type == pp.LabelModifierType.Include
        if matching.labels or including or grouped:  # a bare ignoring() changes nothing
            parts.append(f"{'on' if including else 'ignoring'} ({_label_list(matching.labels)})")
    if grouped:
        side = "group_left" if modifier.card == pp.VectorMatchCardinality.ManyToOne else "group_right"
        extra = modifier.group_labels
        parts.append(f"{side} ({_label_list(extra)})" if extra else side)
    parts += _fill(modifier.fill_values)
    return "".join(f" {part}" for part in parts)


def _fill(values: pp.VectorMatchFillValues | None) -> list[str]:
    """Prometheus 3's fill modifiers: the value an operand without a match stands in with."""
    if values is None:
        return []
    if values.lhs is not None and values.lhs == values.rhs:
        return [f"fill ({_number_text(values.lhs)})"]
    sides = (("fill_left", values.lhs), ("fill_right", values.rhs))
    return [f"{name} ({_number_text(value)})" for name, value in sides if value is not None]


def _selector(node: pp.VectorSelector, only: pp.Matcher | None) -> str:
    """``name{matchers}``: a bare name without braces, a UTF-8 one quoted inside them."""
    name, groups = _name_and_matchers(node)
    if only is not None:  # the entity's matcher replaces any other on its label
        groups = [[m for m in group if m.name != only.name] + [only] for group in groups]
    inside = " or ".join(", ".join(_matcher(m) for m in group) for group in groups)
    if name is None:
        return f"{{{inside}}}"
    if _METRIC_NAME.fullmatch(name) and name.lower() not in _KEYWORDS:
        return f"{name}{{{inside}}}" if inside else name
    return f"{{{', '.join(filter(None, [promql_string(name), inside]))}}}"


def _name_and_matchers(node: pp.VectorSelector) -> tuple[str | None, list[list[pp.Matcher]]]:
    """The metric name and the matcher groups (``a="1" or b="2"``). A ``{__name__="x"}`` or
    ``{"x"}`` selector has no name but a matcher; it is written as the name it is."""
    groups = [list(group) for group in node.matchers.or_matchers] or [list(node.matchers.matchers)]
    if node.name is not None or len(groups) > 1:
        return node.name, groups  # with "or", a quoted name belongs to its own group only
    names = [m for m in groups[0] if m.name == "__name__"]
    if len(names) == 1 and names[0].op == pp.MatchOp.Equal:
        return names[0].value, [[m for m in groups[0] if m.name != "__name__"]]
    return None, groups


def _matcher(matcher: pp.Matcher) -> str:
    operator = next(text for op, text in _MATCH_OPS if matcher.op == op)
    name = matcher.name if _LABEL_NAME.fullmatch(matcher.name) else promql_string(matcher.name)
    return f"{name}{operator}{promql_string(matcher.value)}"


def _label_list(labels: list[str]) -> str:
    return ", ".join(_grouping_label(label) for label in labels)


def _grouping_label(label: str) -> str:
    plain = _LABEL_NAME.fullmatch(label) and label.lower() not in _KEYWORDS
    return label if plain else promql_string(label)


def _modifiers(at: pp.AtModifier | None, offset: timedelta | None) -> str:
    text = ""
    if at is not None:
        text += f" @ {_at(at)}"
    if offset is not None:
        text += f" offset {_duration(offset)}"
    return text


def _at(at: pp.AtModifier) -> str:
    if at.type == pp.AtModifierType.Start:
        return "start()"
    if at.type == pp.AtModifierType.End:
        return "end()"
    return _number_text(at.at.timestamp()) if at.at is not None else "0"


def _duration(delta: timedelta) -> str:
    if delta < timedelta(0):  # display_duration refuses negative offsets
        return f"-{pp.display_duration(-delta)}"
    return pp.display_duration(delta)


_WRITERS: dict[type, Callable[[Any, pp.Matcher | None], str]] = {
    pp.NumberLiteral: _number,
    pp.StringLiteral: _string,
    pp.ParenExpr: _paren,
    pp.UnaryExpr: _unary,
    pp.VectorSelector: _vector,
    pp.MatrixSelector: _matrix,
    pp.SubqueryExpr: _subquery,
    pp.Call: _call,
    pp.AggregateExpr: _aggregate,
    pp.BinaryExpr: _binary,
}


# -- syntax errors with a position -------------------------------------------------------------------------
#
# The parser says what is wrong ("unclosed left parenthesis", "invalid promql query") but not where.
# The position comes from a small tokenizer over the text, in two steps:
#  1. An unterminated string or an unbalanced bracket is found exactly by scanning: the opening
#     quote, the closing bracket that matches nothing, or the innermost bracket never closed.
#  2. Any other error lies just after the longest token prefix that can still become PromQL: a
#     prefix is tried with a few completions (a missing operand, label value, range or
#     aggregation body) and its open brackets closed, longest prefix first. Only the parser can
#     say what is valid, so it is asked rather than a second grammar being written here. A prefix
#     that parses once completed is valid so far, so the column is never past the real mistake;
#     the parser's own message says what the mistake is.


class _Token(NamedTuple):
    kind: str
    start: int
    end: int


_TOKEN = re.compile(
    r"""
      (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
    | (?P<unterminated>["'`])
    | (?P<open>[(\[{])
    | (?P<close>[)\]}])
    | (?P<word>\d[\w.]*[eE][-+]\d+|[\w.:]+)
    | (?P<operator>[=!<>]=|=~|!~|.)
    """,
    re.VERBOSE | re.DOTALL,
)
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_COMPLETIONS = ("", " 0", ' ""', "[1m]", " (x)", " (x) (x)")


def promql_problem(expr: str) -> str | None:
    """None for valid PromQL, else ``PromQL syntax error at column 14 (near "…"): <what>``."""
    try:
        pp.parse(expr)
    except ValueError as exc:
        what = str(exc).strip().split("\n")[0] or "invalid query"
        return f"PromQL syntax error at {_place(expr, _error_offset(expr))}: {what}"
    return None


def check_promql(expr: str) -> None:
    """Raise ConfigError naming the position of the first error unless ``expr`` is valid PromQL."""
    problem = promql_problem(expr)
    if problem:
        raise ConfigError(problem)


def config_query_problems(config: Config) -> list[str]:
    """Every watch or signal query that does not parse as PromQL, named by its config path:
    ``investigation.signals[2] (latency).query: PromQL syntax error at column …``."""
    return [
        f"{config.source}: {where}: {problem}"
        for where, query in _config_queries(config.file)
        if (problem := promql_problem(query))
    ]


def check_config_queries(config: Config) -> None:
    """``agentic-obs check-config``: fail on any query the parser cannot read (see
    ``warn_config_queries`` for why the service itself only warns)."""
    problems = config_query_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))


def warn_config_queries(config: Config) -> None:
    """At startup, log each query the parser cannot read, with its position, and start anyway: the
    parser follows Prometheus 2.45 and part of 3.x, so it refuses some queries a Prometheus or
    VictoriaMetrics server answers (MetricsQL, backtick regexes with escapes, duration arithmetic);
    refusing to start over one of those would take the receiver down. A real typo shows again, in
    Prometheus's own words, as a named problem in every report that uses the query."""
    for problem in config_query_problems(config):
        log.warning("%s (the query is kept; `agentic-obs check-config` fails on it)", problem)


def _config_queries(file: FileConfig) -> Iterator[tuple[str, str]]:
    for index, watch in enumerate(file.watches):
        yield f"watches[{index}] ({watch.name}).query", watch.query
    for index, signal in enumerate(file.investigation.signals):
        yield f"investigation.signals[{index}] ({signal.name}).query", signal.query


def _error_offset(text: str) -> int:
    tokens = [token for token in _tokens(text) if token.kind != "space"]
    unterminated = next((t.start for t in tokens if t.kind == "unterminated"), None)
    if unterminated is not None:
        return unterminated
    unbalanced = _unbalanced_bracket(text, tokens)
    if unbalanced is not None:
        return unbalanced
    return _after_longest_viable_prefix(text, tokens)


def _tokens(text: str) -> Iterator[_Token]:
    for match in _TOKEN.finditer(text):
        yield _Token(match.lastgroup or "operator", match.start(), match.end())


def _unbalanced_bracket(text: str, tokens: list[_Token]) -> int | None:
    opened: list[_Token] = []
    for token in tokens:
        if token.kind == "open":
            opened.append(token)
        elif token.kind == "close":
            if not opened or _CLOSING[text[opened[-1].start]] != text[token.start]:
                return token.start
            opened.pop()
    return opened[-1].start if opened else None


def _after_longest_viable_prefix(text: str, tokens: list[_Token]) -> int:
    for count in range(len(tokens), -1, -1):
        prefix = text[: tokens[count - 1].end] if count else ""
        closers = "".join(_CLOSING[text[t.start]] for t in reversed(_still_open(text, tokens[:count])))
        if any(parse_promql(prefix + completion + closers) is not None for completion in _COMPLETIONS):
            return tokens[count].start if count < len(tokens) else len(prefix)
    return 0


def _still_open(text: str, tokens: list[_Token]) -> list[_Token]:
    opened: list[_Token] = []
    for token in tokens:
        if token.kind == "open":
            opened.append(token)
        elif token.kind == "close" and opened:
            opened.pop()
    return opened


def _place(text: str, offset: int) -> str:
    """``column 14 (near "…")``, 1-based; a query over several lines gets its line too."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    where = f"line {line}, column {column}" if "\n" in text.strip() else f"column {column}"
    near = " ".join(text[max(0, offset - 10) : offset + 10].split())
    return f"{where} (near {promql_string(near)})" if near else where
