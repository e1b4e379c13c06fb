"""A local fake Grafana Loki: Grafana Loki cannot be installed here (Debian's package named ``loki`` is
an unrelated program), so log evidence is tested against this. No real Loki was run.

It answers ``GET``/``POST /loki/api/v1/query_range`` and ``/loki/api/v1/query`` (and ``/ready``) in
the shapes Loki's HTTP API documents:

* a log query: ``{"status": "success", "data": {"resultType": "streams", "result": [{"stream":
  {labels}, "values": [["<unix ns as a string>", "<line>"], ...]}], "stats": {...}}}``, at most
  ``limit`` lines (default 100) across streams, newest first for ``direction=backward`` (the default);
* a metric query over a range: ``"matrix"``, ``[{"metric": {labels}, "values": [[<unix seconds>,
  "<value>"], ...]}]``, evaluated at start, start + step, ... end, with no sample for a time whose
  range holds no line (as Loki does); at an instant: ``"vector"`` (``"value": [<t>, "<v>"]``).

Times are taken as Loki takes them: unix nanoseconds, unix seconds (with a fraction) or RFC 3339;
``step`` as a duration (``1m``) or seconds. LogQL is parsed, and what this parser does not know is
refused as Loki refuses it, HTTP 400 with a plain-text body ``parse error at line 1, col N: ...``:
unbalanced braces or quotes in a selector, a selector every stream matches, pipeline stages other than
``|=``, ``!=``, ``|~``, ``!~``, ``| json``, ``| logfmt``, ``| line_format``, ``| label_format``, range
aggregations other than ``count_over_time``, ``rate``, ``bytes_over_time``, ``bytes_rate``, and vector
aggregations other than ``sum``, ``min``, ``max``, ``avg``, ``count`` (with ``by``/``without``).
``| json`` and ``| logfmt`` add the line's fields as labels; ``line_format`` and ``label_format`` are
accepted and change nothing (a documented simplification).

With ``tenant`` set a request without that ``X-Scope-OrgID`` gets 401 ``no org id``; with ``token``
or ``basic`` set one without those credentials gets 401. ``delay`` slows every query; ``script``
queues (status, body) answers; ``ignore_limit`` sends every line (a proxy that drops the limit).
Every query is recorded in ``requests``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

RANGE_FUNCTIONS = ("count_over_time", "rate", "bytes_over_time", "bytes_rate")
VECTOR_AGGREGATIONS = ("sum", "min", "max", "avg", "count")
EMPTY_COMPATIBLE = (
    "queries require at least one regexp or equality matcher that does not have an empty-compatible "
    'value. For instance, app=~".*" does not meet this requirement, but app=~".+" will'
)
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class LogQLError(Exception):
    def __init__(self, col: int, message: str) -> None:
        super().__init__(f"parse error at line 1, col {col}: {message}")


# -- a small LogQL parser --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<string>"(?:[^"\\\n]|\\.)*"|`[^`]*`)|(?P<op>\|=|!=|\|~|!~|=~|=|\|)
    |(?P<duration>\[\d+(?:ms|s|m|h|d)(?:\d+(?:ms|s|m|h|d))*\])|(?P<punct>[{}(),])
    |(?P<number>\d+(?:\.\d+)?)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    col: int


def tokenize(text: str) -> list[Token]:
    tokens, at = [], 0
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None:
            if text[at] in '"`':
                raise LogQLError(at + 1, "literal not terminated")
            raise LogQLError(at + 1, f"syntax error: unexpected character {text[at]!r}")
        if found.lastgroup != "space":
            tokens.append(Token(str(found.lastgroup), found.group(), at + 1))
        at = found.end()
    return tokens


_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[abfnrtv\\"]|.)')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def unquote(token: Token) -> str:
    """A LogQL string as Go's strconv.Unquote reads it (raw ```...``` strings as they are)."""
    if token.text.startswith("`"):
        return token.text[1:-1]

    def escape(found: re.Match[str]) -> str:
        code = found.group(1)
        if code[0] in "xu" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code in _SIMPLE:
            return _SIMPLE[code]
        raise LogQLError(token.col, f"invalid char escape \\{code}")

    return _GO_ESCAPE.sub(escape, token.text[1:-1])


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[tuple[str, str, str], ...]
    stages: tuple[tuple[str, str], ...]  # (kind, argument)


@dataclass(frozen=True)
class MetricQuery:
    function: str
    query: LogQuery
    range: float
    aggregation: str | None = None
    grouping: tuple[str, tuple[str, ...]] | None = None  # ("by" | "without", labels)


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.at = 0

    def peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str | None = None, text: str | None = None) -> Token:
        token = self.peek()
        if token is None:
            raise LogQLError(len(self.text) + 1, f"syntax error: unexpected $end, expecting {text or kind}")
        if (kind and token.kind != kind) or (text and token.text != text):
            raise LogQLError(token.col, f"syntax error: unexpected {token.text}, expecting {text or kind}")
        self.at += 1
        return token

    def parse(self) -> LogQuery | MetricQuery:
        first = self.peek()
        if first is None:
            raise LogQLError(1, "syntax error: unexpected $end")
        result: LogQuery | MetricQuery
        result = self.log_query() if first.text == "{" else self.metric()
        extra = self.peek()
        if extra is not None:
            raise LogQLError(extra.col, f"syntax error: unexpected {extra.text}")
        return result

    def metric(self) -> MetricQuery:
        name = self.take("ident")
        if name.text in VECTOR_AGGREGATIONS:
            grouping = self.grouping()
            self.take(text="(")
            inner = self.metric()
            self.take(text=")")
            grouping = grouping or self.grouping()
            return MetricQuery(inner.function, inner.query, inner.range, name.text, grouping)
        if name.text not in RANGE_FUNCTIONS:
            raise LogQLError(name.col, "syntax error: unexpected IDENTIFIER")
        self.take(text="(")
        query = self.log_query()
        window = self.take("duration")
        self.take(text=")")
        return MetricQuery(name.text, query, parse_duration(window.text[1:-1]))

    def grouping(self) -> tuple[str, tuple[str, ...]] | None:
        token = self.peek()
        if token is None or token.text not in ("by", "without"):
            return None
        self.at += 1
        self.take(text="(")
        labels = [self.take("ident").text]
        while (comma := self.peek()) is not None and comma.text == ",":
            self.at += 1
            labels.append(self.take("ident").text)
        self.take(text=")")
        return token.text, tuple(labels)

    def log_query(self) -> LogQuery:
        opened = self.take(text="{")
        matchers = [self.matcher()]
        while (token := self.peek()) is not None and token.text == ",":
            self.at += 1
            matchers.append(self.matcher())
        if self.peek() is None:
            raise LogQLError(len(self.text) + 1, "syntax error: unexpected $end, expecting } or ,")
        self.take(text="}")
        if not any(_selects(op, value) for _, op, value in matchers):
            raise LogQLError(opened.col, EMPTY_COMPATIBLE)
        return LogQuery(tuple(matchers), tuple(self.stages()))

    def matcher(self) -> tuple[str, str, str]:
        name = self.take("ident")
        op = self.take("op")
        if op.text not in ("=", "!=", "=~", "!~"):
            raise LogQLError(op.col, f"syntax error: unexpected {op.text}, expecting = or != or =~ or !~")
        value = unquote(self.take("string"))
        if op.text in ("=~", "!~"):
            _compile(value, op.col)
        return name.text, op.text, value

    def stages(self) -> Iterable[tuple[str, str]]:
        while (token := self.peek()) is not None and token.kind == "op":
            self.at += 1
            if token.text in ("|=", "!=", "|~", "!~"):
                value = unquote(self.take("string"))
                if token.text in ("|~", "!~"):
                    _compile(value, token.col)
                yield token.text, value
            elif token.text == "|":
                yield self.parser_stage()
            else:
                raise LogQLError(token.col, f"syntax error: unexpected {token.text}")

    def parser_stage(self) -> tuple[str, str]:
        name = self.take("ident")
        if name.text in ("json", "logfmt"):
            return name.text, ""
        if name.text == "line_format":
            return name.text, unquote(self.take("string"))
        if name.text == "label_format":
            parts = []
            while True:
                target = self.take("ident").text
                self.take(text="=")
                source = self.take()
                parts.append(f"{target}={source.text}")
                if (token := self.peek()) is None or token.text != ",":
                    return name.text, ",".join(parts)
                self.at += 1
        raise LogQLError(name.col, "syntax error: unexpected IDENTIFIER")


def _compile(pattern: str, col: int) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise LogQLError(col, f"invalid regex: {exc}") from None


def _selects(op: str, value: str) -> bool:
    return (op == "=" and value != "") or (op == "=~" and re.fullmatch(value, "") is None)


def parse_logql(text: str) -> LogQuery | MetricQuery:
    return Parser(text).parse()


def parse_duration(text: str) -> float:
    if not text or _DURATION.sub("", text):
        raise ValueError(f"bad duration {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def parse_time(text: str) -> float:
    """Loki's time parameters: unix nanoseconds, unix seconds (float) or RFC 3339."""
    try:
        number = float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return number / 1e9 if number > 1e12 else number


def parse_step(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


# -- data and evaluation ---------------------------------------------------------------------------


@dataclass
class Stream:
    labels: dict[str, str]
    entries: list[tuple[float, str]]  # (unix seconds, line), ascending

    def __post_init__(self) -> None:
        self.entries.sort(key=lambda e: e[0])
        self.times = [t for t, _ in self.entries]


def _matches(labels: dict[str, str], matchers: Sequence[tuple[str, str, str]]) -> bool:
    for name, op, value in matchers:
        have = labels.get(name, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


def _parsed_fields(kind: str, line: str) -> dict[str, str]:
    if kind == "json":
        try:
            data = json.loads(line)
        except ValueError:
            return {"__error__": "JSONParserErr"}
        if not isinstance(data, dict):
            return {"__error__": "JSONParserErr"}
        return {k: str(v) for k, v in data.items() if not isinstance(v, dict | list)}
    return {k: v.strip('"') for k, v in re.findall(r'([A-Za-z_][\w.]*)=("[^"]*"|\S*)', line)}


def _staged(query: LogQuery, stream: Stream, line: str) -> dict[str, str] | None:
    """The line's labels after the pipeline, or None when a filter drops it."""
    labels = dict(stream.labels)
    for kind, argument in query.stages:
        if kind == "|=" and argument not in line:
            return None
        if kind == "!=" and argument in line:
            return None
        if kind == "|~" and re.search(argument, line) is None:
            return None
        if kind == "!~" and re.search(argument, line) is not None:
            return None
        if kind in ("json", "logfmt"):
            labels.update(_parsed_fields(kind, line))
    return labels


def _selected(streams: Sequence[Stream], query: LogQuery, start: float, end: float) -> dict[tuple, list]:
    """Lines in [start, end) that pass, grouped by their labels after the pipeline."""
    found: dict[tuple, list[tuple[float, str]]] = {}
    for stream in streams:
        if not _matches(stream.labels, query.matchers):
            continue
        low, high = bisect.bisect_left(stream.times, start), bisect.bisect_left(stream.times, end)
        for ts, line in stream.entries[low:high]:
            labels = _staged(query, stream, line)
            if labels is not None:
                found.setdefault(tuple(sorted(labels.items())), []).append((ts, line))
    return found


def _ns(ts: float) -> str:
    return str(round(ts * 1e9))


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(value)


def log_result(
    streams: Sequence[Stream], query: LogQuery, start: float, end: float, limit: int | None, backward: bool
) -> list[dict[str, Any]]:
    groups = _selected(streams, query, start, end)
    flat = [(ts, key, line) for key, lines in groups.items() for ts, line in lines]
    flat.sort(key=lambda item: item[0], reverse=backward)
    if limit is not None:
        flat = flat[:limit]
    out: dict[tuple, list[list[str]]] = {}
    for ts, key, line in flat:
        out.setdefault(key, []).append([_ns(ts), line])
    return [{"stream": dict(key), "values": values} for key, values in out.items()]


def _range_value(function: str, lines: Sequence[tuple[float, str]], window: float) -> float:
    if function == "count_over_time":
        return float(len(lines))
    if function == "rate":
        return len(lines) / window
    size = float(sum(len(line.encode()) for _, line in lines))
    return size if function == "bytes_over_time" else size / window


def metric_at(streams: Sequence[Stream], query: MetricQuery, at: float) -> dict[tuple, float]:
    """The metric's samples at ``at``: one per label set whose range (at - range, at] has lines."""
    groups = _selected(streams, query.query, at - query.range + 1e-9, at + 1e-9)
    samples = {key: _range_value(query.function, lines, query.range) for key, lines in groups.items()}
    if query.aggregation is None:
        return samples
    grouped: dict[tuple, list[float]] = {}
    for key, value in samples.items():
        grouped.setdefault(_group_key(key, query.grouping), []).append(value)
    combine: dict[str, Callable[[list[float]], float]] = {
        "sum": sum,
        "min": min,
        "max": max,
        "avg": lambda v: sum(v) / len(v),
        "count": lambda v: float(len(v)),
    }
    return {key: combine[query.aggregation](values) for key, values in grouped.items()}


def _group_key(key: tuple, grouping: tuple[str, tuple[str, ...]] | None) -> tuple:
    if grouping is None:
        return ()
    mode, labels = grouping
    keep = (lambda name: name in labels) if mode == "by" else (lambda name: name not in labels)
    return tuple((k, v) for k, v in key if keep(k))


def matrix_result(
    streams: Sequence[Stream], query: MetricQuery, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    series: dict[tuple, list[list[Any]]] = {}
    steps = math.floor((end - start) / step + 1e-9)
    for index in range(steps + 1):
        at = start + index * step
        for key, value in metric_at(streams, query, at).items():
            series.setdefault(key, []).append([round(at, 3), _number(value)])
    return [{"metric": dict(key), "values": values} for key, values in series.items()]


# -- the server ------------------------------------------------------------------------------------


@dataclass
class FakeLoki:
    streams: list[Stream] = field(default_factory=list)
    tenant: str | None = None
    token: str | None = None
    basic: tuple[str, str] | None = None
    delay: float = 0.0
    ignore_limit: bool = False
    script: list[tuple[int, str]] = field(default_factory=list)  # (status, plain-text body)
    requests: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        for path, handler in (
            ("/loki/api/v1/query_range", self.query_range),
            ("/loki/api/v1/query", self.query),
        ):
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        app.router.add_get("/ready", self.ready)
        return app

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.tenant is not None and request.headers.get("X-Scope-OrgID") != self.tenant:
            return web.Response(status=401, text="no org id\n")
        wanted = None
        if self.token is not None:
            wanted = f"Bearer {self.token}"
        elif self.basic is not None:
            wanted = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
        if wanted is not None and request.headers.get("Authorization") != wanted:
            return web.Response(status=401, text="unauthorized\n")
        if self.script:
            status, body = self.script.pop(0)
            return web.Response(status=status, text=body)
        return None

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        self.requests.append({"path": request.path, **params})
        return params

    async def query_range(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            query, start, end = (
                parse_logql(params["query"]),
                parse_time(params["start"]),
                parse_time(params["end"]),
            )
            if isinstance(query, MetricQuery):
                step = parse_step(params["step"])
                return _success("matrix", matrix_result(self.streams, query, start, end, step))
            limit = None if self.ignore_limit else int(params.get("limit", "100"))
            backward = _backward(params)
            return _success("streams", log_result(self.streams, query, start, end, limit, backward))
        except (LogQLError, KeyError, ValueError) as exc:
            return _bad_request(exc)

    async def query(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            query, at = parse_logql(params["query"]), parse_time(params.get("time", "0"))
            if isinstance(query, MetricQuery):
                vector = [
                    {"metric": dict(key), "value": [round(at, 3), _number(value)]}
                    for key, value in metric_at(self.streams, query, at).items()
                ]
                return _success("vector", vector)
            limit = None if self.ignore_limit else int(params.get("limit", "100"))
            return _success(
                "streams", log_result(self.streams, query, 0.0, at + 1e-9, limit, _backward(params))
            )
        except (LogQLError, KeyError, ValueError) as exc:
            return _bad_request(exc)


def _backward(params: dict[str, str]) -> bool:
    direction = params.get("direction", "backward").lower()
    if direction not in ("forward", "backward"):
        raise ValueError(f"invalid direction: {direction}")
    return direction == "backward"


def _success(kind: str, result: list[dict[str, Any]]) -> web.Response:
    stats = {"summary": {"totalEntriesReturned": sum(len(r.get("values", [])) for r in result)}}
    return web.json_response(
        {"status": "success", "data": {"resultType": kind, "result": result, "stats": stats}}
    )


def _bad_request(exc: Exception) -> web.Response:
    message = str(exc) if not isinstance(exc, KeyError) else f"missing parameter {exc}"
    return web.Response(status=400, text=message + "\n")  # Loki answers bad queries in plain text


# -- lines around an injected fault ----------------------------------------------------------------

SERVICES = ("front-end", "carts", "orders", "catalogue")
FAULT_TEMPLATE = "ERROR connection refused to db host={ip}:5432 after {ms} ms (attempt {attempt})"
SECOND_TEMPLATE = "panic: runtime error: index out of range [{index}] with length {length}"
BACKGROUND_ERROR = "WARN request id={id} failed with error=timeout after {ms}ms, retrying"


def shop_streams(
    start: float,
    end: float,
    fault_at: float,
    faulty: str = "carts",
    services: Sequence[str] = SERVICES,
    every: float = 5.0,
    fault_every: float = 2.0,
) -> list[Stream]:
    """Each service logs an access line every ``every`` seconds and a background error (a retried
    timeout) every minute, before and after the fault alike. From ``fault_at`` on, ``faulty`` also logs
    an error of ``FAULT_TEMPLATE`` every ``fault_every`` seconds and a panic every 30 s."""
    streams = []
    for number, service in enumerate(services):
        entries: list[tuple[float, str]] = []
        ts, tick = start + number * 0.37, 0
        while ts < end:
            entries.append((ts, f"GET /api/{service}/items/{tick % 97} 200 {12 + tick % 30}ms"))
            if tick % 12 == 0:
                entries.append(
                    (
                        ts + 0.1,
                        BACKGROUND_ERROR.format(id=uuid.UUID(int=tick * 7919 + number), ms=900 + tick % 50),
                    )
                )
            ts, tick = ts + every, tick + 1
        if service == faulty:
            entries += _fault_lines(fault_at, end, fault_every)
        labels = {"namespace": "shop", "app": service, "container": service, "pod": f"{service}-5f6d8-x2k9p"}
        streams.append(Stream(labels, entries))
    return streams


def _fault_lines(start: float, end: float, every: float) -> list[tuple[float, str]]:
    lines, ts, attempt = [], start + 0.2, 1
    while ts < end:
        lines.append(
            (ts, FAULT_TEMPLATE.format(ip=f"10.0.3.{attempt % 200}", ms=1000 + attempt * 13, attempt=attempt))
        )
        if attempt % 15 == 0:
            lines.append((ts + 0.05, SECOND_TEMPLATE.format(index=attempt % 9 + 3, length=attempt % 3 + 1)))
        ts, attempt = ts + every, attempt + 1
    return lines
