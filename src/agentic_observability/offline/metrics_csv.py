"""The offline metrics CSV (DESIGN.md): header ``timestamp,<series>…``; timestamps unix seconds,
ascending; every other column numeric (empty cells are gaps) and headed by a Prometheus selector
(``cpu{service="carts"}``) or a bare metric name."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agentic_observability.errors import BadInputError

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


@dataclass(frozen=True)
class Column:
    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class MetricsTable:
    timestamps: np.ndarray
    columns: tuple[Column, ...]
    values: np.ndarray  # rows x columns, NaN for gaps
    timestamp_text: tuple[str, ...] = ()  # each row's timestamp cell as given, to write back unchanged


def parse_selector(text: str) -> Column:
    """``name{a="b",c="d"}`` or ``name`` -> Column; raises ValueError naming what is wrong."""
    text = text.strip()
    name, brace, rest = text.partition("{")
    if not _NAME.match(name):
        raise ValueError(f"{text!r}: {name!r} is not a valid metric name")
    if not brace:
        return Column(name, {})
    if not rest.endswith("}"):
        raise ValueError(f"{text!r}: missing closing brace")
    body, labels, position = rest[:-1], {}, 0
    while position < len(body):
        match = _LABEL.match(body, position)
        if match is None:
            raise ValueError(f"{text!r}: cannot parse labels at {body[position:]!r}")
        labels[match.group(1)] = _unescape(match.group(2))
        position = match.end()
    return Column(name, labels)


def _unescape(value: str) -> str:
    """PromQL label-value escapes: \\\\, \\" and \\n."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(cell: str, row: int, column: str, path: Path) -> float:
    if cell.strip() == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise BadInputError(
            f"{path}: row {row}, column {column!r}: {cell!r} is not a number", field=column
        ) from None


def read_metrics_csv(path: Path) -> MetricsTable:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read: {exc.strerror or exc}", field=str(path)) from exc
    if not rows or not rows[0] or rows[0][0].strip() != "timestamp":
        raise BadInputError(f"{path}: the first column must be 'timestamp'", field="timestamp")
    header = rows[0][1:]
    try:
        columns = tuple(parse_selector(h) for h in header)
    except ValueError as exc:
        raise BadInputError(f"{path}: header: {exc}", field="header") from exc
    data = np.empty((len(rows) - 1, len(header) + 1))
    for index, row in enumerate(rows[1:], start=2):
        if len(row) != len(header) + 1:
            raise BadInputError(
                f"{path}: row {index} has {len(row)} cells, the header has {len(header) + 1}",
                field=f"row {index}",
            )
        data[index - 2] = [
            _number(c, index, n, path) for c, n in zip(row, ["timestamp", *header], strict=True)
        ]
    timestamps = data[:, 0]
    if np.isnan(timestamps).any() or (np.diff(timestamps) <= 0).any():
        raise BadInputError(f"{path}: timestamps must be present and strictly ascending", field="timestamp")
    return MetricsTable(timestamps, columns, data[:, 1:], tuple(row[0] for row in rows[1:]))
