"""PromQL as the pipeline handles it, through a real parser (``promql_parser``: Prometheus' grammar, in
Rust): an alert's own expression recovered from its ``generatorURL`` and printed canonically, a
threshold rule split into its value side and threshold, a signal restricted to one entity, the
config's queries checked at startup with the column of the first error. No I/O.

The parser's own printer is lossy (``x{}`` for a bare name, UTF-8 label names unquoted, string
literals unescaped), so the printer here writes PromQL from the AST itself, the way an SRE would:
``max by (service) (x{service="carts"})``."""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import promql_parser as pp

from agentic_observability.config import Config, FileConfig
from agentic_observability.errors import ConfigError
from agentic_observability.models import Incident

log = logging.getLogger(__name__)

MAX_QUERIES = 5  # alert expressions recovered per incident

# What the parser is given at most. It is a Rust LR parser that builds (and frees) its tree
# recursively: past a few thousand levels it overflows the native stack and the process dies
# (SIGSEGV), which no ``except`` catches, and an alert's stored expression would crash the pipeline on
# every retry. Measured with promql_parser 0.12 on the 8 MiB main-thread stack, in a subprocess: a chain
# of binary operators (``x-x-…``, ``x^x^…``, ``x or x or …``) dies at about 4,190 operators, unary
# signs (``--…x``) at about 8,180, nested parentheses at about 8,180, nested calls (``abs(abs(…))``)
# at about 5,450, ``max_over_time(…[1m:])`` at about 2,690, ``(x-(x-(…`` at about 2,770 levels. Text
# at both the depth and the operator limit below, in the worst of those shapes, first dies at six times
# both limits. They are lower than the stack alone needs because parse time grows faster than the
# text (a chain of 1,024 operators takes 0.4 s, one at the limits 0.15 s at most), and real queries
# are far inside them (depth under 20, operators under 100).
MAX_PROMQL_LENGTH = 8192  # characters: an alert's text is up to 16 KiB; this bounds the parse and the
# error-position search (which parses every prefix), and no rule or signal comes near it
MAX_PROMQL_DEPTH = 128  # brackets open at once
MAX_PROMQL_OPERATORS = 512  # binary operators and unary signs, which nest without brackets

# A Rust panic inside the parser (``x offset Inf``, ``rate(x[1e20])``, reading the time of
# ``x @ -1``) is raised as pyo3's PanicException, a BaseException that ``except Exception`` misses.
# pyo3 names its module ``pyo3_runtime`` without always registering one to import; then everything
# is caught except what the interpreter itself raises to stop.
try:
    _PANIC: type[BaseException] = importlib.import_module("pyo3_runtime").PanicException
except (ImportError, AttributeError):
    _PANIC = BaseException
_NOT_PANICS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)
# What printing a tree can raise: a timestamp Python's datetime cannot hold (``x @ 1e12``: Overflow-,
# ``x @ 1e15``: ValueError), a panic reading one before 1970 (``x @ -1``, valid Prometheus), and
# nesting deeper than Python's recursion limit (about 500 levels).
_PRINT_ERRORS = (OverflowError, ValueError, RecursionError, _PANIC)


def expression_from_generator_url(url: str) -> str | None:
    """The PromQL of ``…/graph?g0.expr=…`` (Prometheus, Thanos, VictoriaMetrics vmalert links)."""
    if not url:
        return None
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:  # "http://[::1/…": not a URL urlsplit takes
        return None
    for key in ("g0.expr", "expr", "query"):
        values = query.get(key)
        if values and values[0].strip():
            return values[0].strip()
    return None


def parse_promql(text: str) -> pp.Expr | None:
    """The AST of ``text``, or None when it is not PromQL this parser reads (or is given: see
    ``MAX_PROMQL_LENGTH``)."""
    try:
        return _parse(text)
    except ValueError:
        return None


def _parse(text: str, shape: _Shape | None = None) -> pp.Expr:
    """``pp.parse`` made safe for any text: ValueError for what it does not read, for what could
    overflow its stack (refused before it is tried) and for a panic inside it. The only call to
    ``pp.parse``. ``shape`` is the text's, when the caller already knows it."""
    refusal = _refusal(shape if shape is not None else _shape(text))
    if refusal is not None:
        raise ValueError(refusal)
    try:
        return pp.parse(text)
    except (ValueError, *_NOT_PANICS):
        raise
    except _PANIC as exc:
        raise ValueError(f"the parser failed: {exc}") from None


_OPERATORS = frozenset({"+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">="})
_WORD_OPERATORS = frozenset({"and", "or", "unless", "atan2"})


class _Shape(NamedTuple):
    """What decides whether a text may be given to the parser."""

    length: int
    depth: int  # brackets open at once, at most
    operators: int


def _shape(text: str) -> _Shape:
    """Depth and operators counted with the tokenizer below, so strings and comments do not count
    (and a text too long to read is not tokenized)."""
    readable = len(text) <= MAX_PROMQL_LENGTH
    last = deque(_running_shape(text, _tokens(text)) if readable else (), maxlen=1)
    depth, operators = last[0] if last else (0, 0)
    return _Shape(len(text), depth, operators)


def _running_shape(text: str, tokens: Iterable[_Token]) -> Iterator[tuple[int, int]]:
    """(brackets open at once at most, operators) so far, after each token."""
    depth = deepest = operators = 0
    for token in tokens:
        if token.kind == "open":
            depth += 1
            deepest = max(deepest, depth)
        elif token.kind == "close":
            depth = max(depth - 1, 0)
        elif token.kind in ("operator", "word"):
            word = text[token.start : token.end]
            operators += word in _OPERATORS or word.lower() in _WORD_OPERATORS
        yield deepest, operators


def _refusal(shape: _Shape) -> str | None:
    """Why a text of this shape is not given to the parser (too long, or nested past what its stack
    holds), or None."""
    if shape.length > MAX_PROMQL_LENGTH:
        return f"the query is too long to read ({shape.length} characters, at most {MAX_PROMQL_LENGTH})"
    if shape.depth > MAX_PROMQL_DEPTH:
        return f"the query is nested too deep to read ({shape.depth} brackets, at most {MAX_PROMQL_DEPTH})"
    if shape.operators > MAX_PROMQL_OPERATORS:
        return f"the query has too many operators to read ({shape.operators}, at most {MAX_PROMQL_OPERATORS})"
    return None


def _printed(write: Callable[..., str], *args: Any) -> str | None:
    """``write(*args)``, or None where the printer cannot (see ``_PRINT_ERRORS``)."""
    try:
        return write(*args)
    except _NOT_PANICS:
        raise
    except _PRINT_ERRORS:
        return None


def canonical_promql(text: str) -> str:
    """``text`` as the printer writes it; as given when it does not parse or cannot be printed."""
    expr = parse_promql(text)
    printed = None if expr is None else _printed(write_promql, expr)
    return text if printed is None else printed


# -- thresholds --------------------------------------------------------------------------------------

# A comparison read from its other side: ``0.5 < x`` is ``x > 0.5``.
_MIRRORED = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}


def split_threshold(expr: str) -> tuple[str, str, float] | None:
    """``rate(x[5m]) > 0.5`` -> (``rate(x[5m])``, ``>``, 0.5); ``0.5 < x`` -> (``x``, ``>``, 0.5).
    None unless the top-level operator (through parentheses) is a comparison, with or without
    ``bool``, with a finite number literal on one side (``x > NaN`` has no threshold to draw, and
    would be written into the report as JSON that is not JSON), and the other side can be printed."""
    parsed = parse_promql(expr)
    node = _unwrapped(parsed) if parsed is not None else None
    if not isinstance(node, pp.BinaryExpr) or str(node.op) not in _MIRRORED:
        return None
    operator = str(node.op)
    left, right = _unwrapped(node.lhs), _unwrapped(node.rhs)
    if isinstance(right, pp.NumberLiteral):
        side, number = left, right
    elif isinstance(left, pp.NumberLiteral):
        side, number, operator = right, left, _MIRRORED[operator]
    else:
        return None
    if not math.isfinite(number.val):
        return None
    printed = _printed(write_promql, side)
    return None if printed is None else (printed, operator, number.val)


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
    read, are filtered as a whole by a join on a one-series vector instead.

    So are queries where filtering the selectors would change which series the result holds, not
    just drop the other entities' (see ``_pushable``): ``topk(3, x)`` filtered inside picks carts'
    top three, not the top three that are carts; ``a or on (pod) b`` would take ``b``'s series whose
    pod no *carts* series of ``a`` has. And any query the printer cannot write."""
    expr = parse_promql(query)
    restricted = None if expr is None else _printed(_restricted, expr, label, value)
    return _joined(f"({query})", label, value) if restricted is None else restricted


def _restricted(expr: pp.Expr, label: str, value: str) -> str:
    if _writes_label(expr, label):
        source = _copied_from(expr, label)
        # service <- container as is: the matcher goes on container
        if source is not None and value and _pushable(expr, label) and _pushable(expr, source):
            return write_promql(expr, pp.Matcher(pp.MatchOp.Equal, source, value))
    elif _pushable(expr, label):
        return write_promql(expr, pp.Matcher(pp.MatchOp.Equal, label, value))
    text = write_promql(expr)
    return _joined(f"({text})" if isinstance(expr, pp.BinaryExpr) else text, label, value)


# Aggregations that pick series: filtered before them, they pick among other series.
_PICKING = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})


def _pushable(expr: pp.Expr, label: str) -> bool:
    """Whether a matcher on ``label`` in the selectors keeps exactly the result's series with that
    value: not when an aggregation picks series (``topk``…) other than per value of ``label``, nor
    through an ``or`` whose ``on``/``ignoring`` matches on other labels."""
    return not any(_blocks_pushing(node, label) for node in _nodes(expr))


def _blocks_pushing(node: pp.Expr, label: str) -> bool:
    if isinstance(node, pp.AggregateExpr) and str(node.op) in _PICKING:
        return not _grouped_by(node.modifier, label)
    if isinstance(node, pp.BinaryExpr) and str(node.op) == "or" and node.modifier is not None:
        return not _matches_on(node.modifier.matching, label)
    return False


def _grouped_by(modifier: pp.AggModifier | None, label: str) -> bool:
    """Whether an aggregation works per value of ``label`` (``by (label)``, ``without`` others)."""
    if modifier is None:
        return False
    listed = label in modifier.labels
    return listed if modifier.type == pp.AggModifierType.By else not listed


_IDENTITY_REPLACEMENTS = ("$1", "${1}")
_IDENTITY_REGEXES = ("(.+)", "(.*)", "^(.+)$", "^(.*)$")


def _copied_from(expr: pp.Expr, label: str) -> str | None:
    """The source label when ``label`` is only ever a plain copy of it that covers every selector
    (``label_replace(v, "service", "$1", "container", "(.+)")``, the usual way Kubernetes signals
    name their service): then ``service="carts"`` is ``container="carts"`` on the raw series."""
    copies = [
        node
        for node in _nodes(expr)
        if isinstance(node, pp.Call) and node.func.name == "label_replace" and _string_arg(node, 1) == label
    ]
    selectors = _selector_count(expr)
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
    return sum(isinstance(node, pp.VectorSelector) for node in _nodes(expr))


def _nodes(expr: pp.Expr) -> Iterator[pp.Expr]:
    """Every node of ``expr``, parents first (a MatrixSelector's VectorSelector too). Not
    ``pp.walk``: it takes time growing with about the fourth power of the depth (20 s for 64 calls
    around 256 operators), where reading the children is instant."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(_children(node)))


def _children(node: pp.Expr) -> list[pp.Expr]:
    if isinstance(node, pp.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [node.expr]
    if isinstance(node, pp.AggregateExpr):
        return [child for child in (node.param, node.expr) if child is not None]
    if isinstance(node, pp.Call):
        return list(node.args)
    if isinstance(node, pp.MatrixSelector):
        return [node.vector_selector]
    return []


def _joined(query: str, label: str, value: str) -> str:
    one = f'label_replace(vector(1), {promql_string(label)}, {promql_string(value)}, "", "")'
    return f"{query} and on ({_grouping_label(label)}) {one}"


_LABEL_WRITERS = ("label_replace", "label_join")  # their second argument names the label they write


def _writes_label(expr: pp.Expr, label: str) -> bool:
    return any(_node_writes_label(node, label) for node in _nodes(expr))


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
    the right one for ``group_right``): the other side is matched on other labels, and filtering it
    would change the answer (``x / ignoring(service) group_left sum(x)``). An ``or`` matched on
    other labels keeps both sides' series; no matcher inside it is right, and ``_pushable`` sends
    such a query to the join."""
    modifier = node.modifier
    if modifier is None or _matches_on(modifier.matching, only.name):
        return only, only
    right_kept = modifier.card == pp.VectorMatchCardinality.OneToMany
    return (None, only) if right_kept else (only, None)


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
    if only is not None:  # it replaces a matcher on its label only when that one is then redundant
        groups = [[m for m in group if not _implied(m, only)] + [only] for group in groups]
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


def _implied(matcher: pp.Matcher, only: pp.Matcher) -> bool:
    """Whether ``only`` (``label="value"``) implies ``matcher``, which may then go: ``container!="POD"``
    with ``container="carts"``. Otherwise both stay (PromQL takes two matchers on one label), so
    ``x{service="frontend"}`` restricted to carts selects nothing, as it should."""
    if matcher.name != only.name:
        return False
    if matcher.op == pp.MatchOp.Equal:
        return matcher.value == only.value
    if matcher.op == pp.MatchOp.NotEqual:
        return matcher.value != only.value
    matches = _regex_matches(matcher.value, only.value)
    if matches is None:
        return False
    return matches if matcher.op == pp.MatchOp.Re else not matches


# Python's readings of an RE2 regex that may differ from Prometheus': \d, \w, \s and \b ASCII or
# Unicode; "." matching a newline or not.
_REGEX_FLAGS = (0, re.ASCII, re.DOTALL, re.ASCII | re.DOTALL)


def _regex_matches(regex: str, value: str) -> bool | None:
    """Whether the fully anchored ``regex`` (PromQL's are RE2, anchored at both ends) matches
    ``value``; None unless Python compiles it and every reading above agrees. RE2's POSIX classes
    (``[[:alpha:]]``) Python reads as a set of ``[:alph`` and a ``]``, so those are unsure too."""
    if "[:" in regex:
        return None
    try:
        results = {re.fullmatch(regex, value, flags) is not None for flags in _REGEX_FLAGS}
    except re.error:
        return None
    return results.pop() if len(results) == 1 else None


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
    """None for valid PromQL, else ``PromQL syntax error at column 14 (near "…"): <what>``, or
    why the query is not read at all (too long or too deeply nested: see ``MAX_PROMQL_LENGTH``)."""
    shape = _shape(expr)
    refusal = _refusal(shape)
    if refusal is not None:
        return f"PromQL not checked: {refusal}"
    try:
        _parse(expr, shape)
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
    try:
        problems = config_query_problems(config)
    except Exception:  # a bug in the check must not stop the receiver either
        log.exception("the config's PromQL queries could not be checked")
        return
    for problem in problems:
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
    # Each try's shape comes from the prefix's (a completion opens one bracket at most and writes no
    # operator): tokenizing every try again would make this search many times slower.
    shapes = [(0, 0), *_running_shape(text, tokens)]
    for count in range(len(tokens), -1, -1):
        prefix = text[: tokens[count - 1].end] if count else ""
        closers = "".join(_CLOSING[text[t.start]] for t in reversed(_still_open(text, tokens[:count])))
        depth, operators = shapes[count]
        for completion in _COMPLETIONS:
            attempt = prefix + completion + closers
            if _parses(attempt, _Shape(len(attempt), depth + 1, operators)):
                return tokens[count].start if count < len(tokens) else len(prefix)
    return 0


def _parses(text: str, shape: _Shape) -> bool:
    try:
        _parse(text, shape)
    except ValueError:
        return False
    return True


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
