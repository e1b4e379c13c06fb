"""What the logs say: error-like lines per candidate entity from Loki, and the new log templates.

For each candidate entity (at most ``logs.max_entities``) one LogQL metric query counts its
error-like lines per step, ``sum(count_over_time({selector} <error_filter> [<step>s]))``, over the
baseline before the onset and the time after it. Each count is scored as the ranking scores a metric
signal (``investigation/rank.py``): the distance of the counts after the onset from the baseline's
median in robust units (MAD as a standard deviation, floored at 5% of the level), with one more
floor for counts: the scale is at least the Poisson noise of the baseline, ``sqrt(max(median, 1))``
lines per step, so a service that logged no errors before cannot win with one line. Only a rise
counts: fewer errors explain nothing. Entities are ordered by the sustained change (the 75th
percentile of the deviations after the onset, as the ranking does), and the evidence shows the peak.

For the entity whose errors rose most, a bounded sample of its error-like lines before and after the
onset (``logs.sample_lines`` each, newest first) is mined for templates with drain3, and the
templates frequent after the onset but absent, or ``NOVELTY_RATIO`` times rarer, before it are
reported, each with its count, one example line and the LogQL that shows it.

Log lines are untrusted text: examples and templates are clipped and their control characters made
visible; whoever renders them (Slack, Grafana, a prompt) escapes them as it escapes alert text.
Loki down, slow or refusing never raises here: what could not be read is named in ``problems``, and
the whole of it is bounded by ``logs.budget``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import numpy as np

from agentic_observability.config import LogsConfig, parse_log_selector, redact_url
from agentic_observability.errors import UpstreamError
from agentic_observability.investigation import Candidate, RankConfig, SignalSeries
from agentic_observability.investigation.rank import MAX_DEVIATION, robust_scale
from agentic_observability.investigation.series import quantile
from agentic_observability.models import Series, iso_time
from agentic_observability.pipeline.ports import LogSource
from agentic_observability.pipeline.promql import promql_string

log = logging.getLogger(__name__)

SIGNAL = "log_errors"
UNIT = "lines/min"
MIN_STEP = 60  # seconds: the [1m] people read error counts in
SHORTEST_STEP = 10  # when less than a minute has passed since the onset
MAX_POINTS = 720  # per query: a long baseline gets a coarser step
NOVELTY_RATIO = 4.0  # a template this many times more frequent (as a share of the sample) is new
EXAMPLE_CHARS = 300
TEMPLATE_CHARS = 300
MINED_CHARS = 2000  # a longer line is cut before mining: templates are about its start
FILTER_CHARS = 80  # the constant word a template's LogQL filters on: a prefix is still a substring
_RANK = RankConfig()
_PLACEHOLDER = re.compile(r"\{(entity|namespace)\}")
_RE2_META = re.compile(r"([\\.+*?()|\[\]{}^$])")
# C0/C1 controls, DEL, line/paragraph separators and bidi overrides: shown, never acted on
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

T = TypeVar("T")
ExploreUrl = Callable[[str, float, float], str]


@dataclass(frozen=True)
class LogEvidence:
    """The log half of a report.

    ``signals``: one dict per entity, best first, shaped like a hypothesis' metric evidence:
    ``entity``, ``signal`` ("log_errors"), ``logql``, ``labels`` ({}), ``baseline`` and ``incident``
    (lines per minute: the baseline's median, the count at the peak), ``unit`` ("lines/min"),
    ``deviation`` (the peak, robust units), ``score`` (the sustained change the order follows),
    ``onset`` (RFC 3339, or None), ``lines_before``, ``lines_after``, ``explore_url`` (or None).
    ``templates``: the new templates of ``template_entity``, most frequent first: ``entity``,
    ``template``, ``count`` and ``before`` (lines of the samples after and before the onset),
    ``example`` (one line after the onset, clipped; untrusted), ``logql``, ``explore_url``.
    ``sample``: lines mined (``before``, ``after``) and the bound (``limit``).
    ``series``: the error counts per step as the ranking takes signals (``rank_entities``).
    ``problems``: what could not be read, and why.
    """

    signals: tuple[dict[str, Any], ...] = ()
    templates: tuple[dict[str, Any], ...] = ()
    template_entity: str | None = None
    sample: Mapping[str, int] = field(default_factory=dict)
    series: tuple[SignalSeries, ...] = ()
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON a report keeps (the series stay out: the signals summarise them)."""
        return {
            "signals": [dict(s) for s in self.signals],
            "templates": [dict(t) for t in self.templates],
            "template_entity": self.template_entity,
            "sample": dict(self.sample),
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class _Window:
    """Evaluation times ``onset + k * step`` for k in (-before, after]: each count covers the step
    before its time, so the first ``before`` counts are wholly before the onset, the rest after."""

    onset: float
    step: int
    before: int
    after: int

    @property
    def start(self) -> float:
        return self.onset - (self.before - 1) * self.step

    @property
    def end(self) -> float:
        return self.onset + self.after * self.step

    def times(self) -> np.ndarray:
        return self.onset + self.step * np.arange(1 - self.before, self.after + 1, dtype=float)


def error_window(onset: float, baseline: float, after: float, now: float) -> _Window | None:
    """The query window for the counts; None when no time has passed since the onset."""
    end = min(onset + after, now)
    if end <= onset:
        return None
    step = max(MIN_STEP, math.ceil((baseline + end - onset) / MAX_POINTS))
    step = min(step, max(SHORTEST_STEP, math.floor(end - onset)))
    before = max(int(baseline // step), _RANK.min_baseline_points)
    return _Window(onset, step, before, max(int((end - onset) // step), 1))


# -- LogQL ---------------------------------------------------------------------------------------


def render_selector(template: str, entity: str, namespace: str | None) -> str:
    """``logs.selector`` for one entity: placeholders filled, escaped for the string (and regex) they
    land in; a matcher on ``{namespace}`` is left out when the namespace is unknown."""
    values = {"entity": entity, "namespace": namespace or ""}
    matchers = []
    for name, op, value in parse_log_selector(template):
        if namespace is None and "{namespace}" in value:
            continue
        filled = _filled(value, values, regex=op in ("=~", "!~"))
        matchers.append(f"{name}{op}{promql_string(filled)}")
    return "{" + ", ".join(matchers) + "}"


def _filled(value: str, values: Mapping[str, str], regex: bool) -> str:
    """One pass, so a value that itself reads ``{entity}`` is not filled again."""

    def literal(found: re.Match[str]) -> str:
        text = values[found.group(1)]
        return _RE2_META.sub(r"\\\1", text) if regex else text

    return _PLACEHOLDER.sub(literal, value)


def log_query(settings: LogsConfig, entity: str, namespace: str | None) -> str:
    """The error-like lines of one entity: a LogQL log query."""
    return f"{render_selector(settings.selector, entity, namespace)} {settings.error_filter}".strip()


def error_count_query(settings: LogsConfig, entity: str, namespace: str | None, step: int) -> str:
    """Error-like lines of one entity per ``step`` seconds: a LogQL metric query."""
    return f"sum(count_over_time({log_query(settings, entity, namespace)} [{step}s]))"


def grafana_log_links(grafana_url: str | None, datasource_uid: str) -> ExploreUrl | None:
    """Explore links that open LogQL on the Loki datasource ``datasource_uid`` (``logs.
    grafana_datasource``) of the Grafana at ``grafana_url``; None without a Grafana."""
    if not grafana_url:
        return None
    base = redact_url(grafana_url).rstrip("/")  # the links are shown: never with userinfo

    def explore_url(logql: str, start: float, end: float) -> str:
        datasource = {"type": "loki", "uid": datasource_uid}
        query = {"refId": "A", "expr": logql, "queryType": "range", "datasource": datasource}
        pane = {
            "a": {
                "datasource": datasource_uid,
                "queries": [query],
                "range": {"from": str(int(start * 1000)), "to": str(int(end * 1000))},
            }
        }
        return f"{base}/explore?" + urlencode({"schemaVersion": "1", "panes": json.dumps(pane)})

    return explore_url


# -- error counts per entity ---------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCounts:
    entity: str
    logql: str
    counts: np.ndarray  # lines per step on the window's times


async def _count_errors(
    source: LogSource, settings: LogsConfig, entity: str, namespace: str | None, window: _Window
) -> ErrorCounts:
    logql = error_count_query(settings, entity, namespace, window.step)
    found = await source.metric_range(logql, window.start, window.end, float(window.step))
    return ErrorCounts(entity, logql, on_grid(found, window))


def on_grid(found: Sequence[Series], window: _Window) -> np.ndarray:
    """The counts at the window's times; Loki sends no sample for a step without lines: 0."""
    counts = np.zeros(window.before + window.after)
    for series in found:
        for ts, value in zip(series.timestamps, series.values, strict=False):
            index = round((ts - window.start) / window.step)
            if 0 <= index < counts.size and math.isfinite(value):
                counts[index] += value
    return counts


def score_errors(counted: ErrorCounts, window: _Window, explore: ExploreUrl | None) -> dict[str, Any]:
    """One entity's error counts as evidence: the rise after the onset in robust units."""
    baseline, after = counted.counts[: window.before], counted.counts[window.before :]
    median, scale = robust_scale(baseline, _RANK.relative_floor)
    scale = max(scale, math.sqrt(max(median, 1.0)))  # counts: at least the baseline's Poisson noise
    deviations = np.minimum(np.maximum(after - median, 0.0) / scale, MAX_DEVIATION)
    peak = int(np.argmax(deviations))
    above = np.flatnonzero(deviations >= _RANK.onset_threshold)
    per_minute = 60.0 / window.step
    times = window.times()[window.before :]
    onset = float(times[above[0]]) - window.step if above.size else None
    return {
        "entity": counted.entity,
        "signal": SIGNAL,
        "logql": counted.logql,
        "labels": {},
        "baseline": round(median * per_minute, 4),
        "incident": round(float(after[peak]) * per_minute, 4),
        "unit": UNIT,
        "deviation": round(float(deviations[peak]), 2),
        "score": round(quantile(deviations, _RANK.sustained), 2),
        "onset": iso_time(onset),
        "onset_unix": onset,
        "step": window.step,  # seconds a count covers: the onset is known to within one
        "lines_before": int(baseline.sum()),
        "lines_after": int(after.sum()),
        "explore_url": explore(counted.logql, window.start - window.step, window.end) if explore else None,
    }


def _order(signal: Mapping[str, Any]) -> tuple[float, float, int]:
    return (-signal["score"], -signal["deviation"], -signal["lines_after"])


# -- new templates -------------------------------------------------------------------------------


def visible(text: str, limit: int) -> str:
    """Untrusted text as it may be shown: control characters as ``\\xNN``, at most ``limit`` chars."""
    shown = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else "\ufffd", text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _miner() -> Any:
    """An in-memory drain3 miner configured here (no drain3.ini is read, nothing is persisted)."""
    from drain3 import TemplateMiner  # imported when logs are configured, like the other extras
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    config = TemplateMinerConfig()
    config.drain_sim_th = 0.4
    config.drain_depth = 4
    config.drain_max_children = 100
    config.parametrize_numeric_tokens = True
    config.masking_instructions = [
        MaskingInstruction(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?", "TIME"),
        MaskingInstruction(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b", "UUID"),
        MaskingInstruction(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "IP"),
        MaskingInstruction(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-f]{12,}\b", "HEX"),
        MaskingInstruction(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:ms|us|µs|ns|s|m|h|%|[kMG]i?B)?\b", "NUM"),
    ]
    return TemplateMiner(persistence_handler=None, config=config)


def new_templates(before: Sequence[str], after: Sequence[str], limit: int) -> list[tuple[str, int, int, str]]:
    """(template, count after, count before, first example after) of the templates frequent after
    the onset and absent, or ``NOVELTY_RATIO`` times rarer as a share of its sample, before it."""
    miner = _miner()
    mined = [
        [miner.add_log_message(line[:MINED_CHARS])["cluster_id"] for line in lines]
        for lines in (before, after)
    ]
    was, now = Counter(mined[0]), Counter(mined[1])
    example: dict[int, str] = {}
    for cluster, line in zip(mined[1], after, strict=True):
        example.setdefault(cluster, line)
    novel = [
        cluster
        for cluster, count in now.items()
        if was[cluster] == 0 or count / len(after) >= NOVELTY_RATIO * was[cluster] / len(before)
    ]
    novel.sort(key=lambda c: (-now[c], c))
    return [(miner.drain.id_to_cluster[c].get_template(), now[c], was[c], example[c]) for c in novel[:limit]]


def _literal_filter(template: str) -> str:
    """A line filter for the template's longest constant word, so its LogQL shows its lines."""
    words = [w for w in template.split() if "<" not in w and ">" not in w and not _UNSAFE.search(w)]
    return f" |= {promql_string(max(words, key=len)[:FILTER_CHARS])}" if words else ""


async def _templates(
    source: LogSource,
    settings: LogsConfig,
    entity: str,
    namespace: str | None,
    span: tuple[float, float, float],
    explore: ExploreUrl | None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    start, onset, end = span
    query = log_query(settings, entity, namespace)
    limit = settings.sample_lines
    before, after = await asyncio.gather(
        source.log_lines(query, start, onset, limit, "backward"),
        source.log_lines(query, onset, end, limit, "backward"),
    )
    lines_before = [str(item[1]) for item in before[:limit]]  # the bound holds whatever was sent
    lines_after = [str(item[1]) for item in after[:limit]]
    sample = {"limit": limit, "before": len(lines_before), "after": len(lines_after)}
    if not lines_after:
        return [], sample
    found = await asyncio.to_thread(new_templates, lines_before, lines_after, settings.max_templates)
    items = []
    for template, count, was, example in found:
        logql = query + _literal_filter(template)
        items.append(
            {
                "entity": entity,
                "template": visible(template, TEMPLATE_CHARS),
                "count": count,
                "before": was,
                "example": visible(example, EXAMPLE_CHARS),
                "logql": logql,
                "explore_url": explore(logql, onset, end) if explore else None,
            }
        )
    return items, sample


# -- the whole ---------------------------------------------------------------------------------------


async def log_evidence(
    entities: Sequence[str],
    namespace: str | None,
    source: LogSource,
    settings: LogsConfig,
    onset: float,
    baseline: float,
    after: float,
    now: float,
    explore_url: ExploreUrl | None,
) -> LogEvidence:
    """Log evidence for the candidate ``entities`` (best first; at most ``settings.max_entities``)
    around ``onset`` (unix seconds): ``baseline`` seconds before it, ``after`` seconds after it (up to
    ``now``). Never raises: Loki down, slow or refusing ends in ``problems``."""
    chosen = list(dict.fromkeys(e for e in entities if e))[: settings.max_entities]
    window = error_window(onset, baseline, after, now)
    if not chosen:
        return LogEvidence()
    if window is None:
        return LogEvidence(problems=("logs: nothing to read yet (no time has passed since the onset)",))
    deadline = asyncio.get_running_loop().time() + settings.budget
    problems: list[str] = []
    jobs = {e: _count_errors(source, settings, e, namespace, window) for e in chosen}
    counted = await _bounded(jobs, deadline, settings.budget, "log errors of", problems)
    signals = sorted((score_errors(c, window, explore_url) for c in counted.values()), key=_order)
    series = tuple(SignalSeries(c.entity, SIGNAL, {}, window.times(), c.counts) for c in counted.values())
    top = next((s["entity"] for s in signals if s["deviation"] > 0), None)
    templates: list[dict[str, Any]] = []
    sample: dict[str, int] = {}
    if top is not None:
        span = (onset - baseline, onset, min(onset + after, now))
        job = _templates(source, settings, top, namespace, span, explore_url)
        mined = await _bounded({top: job}, deadline, settings.budget, "log templates of", problems)
        templates, sample = mined.get(top, ([], {}))
    for problem in problems:
        log.warning("log evidence incomplete: %s", problem)
    return LogEvidence(tuple(signals), tuple(templates), top, sample, series, tuple(problems))


async def _bounded(
    jobs: Mapping[str, Awaitable[T]], deadline: float, budget: float, what: str, problems: list[str]
) -> dict[str, T]:
    """Run ``jobs`` together until ``deadline``; the results of those that finished, and a problem
    for each that failed or did not finish: never an exception."""
    tasks = {asyncio.ensure_future(job): entity for entity, job in jobs.items()}
    remaining = deadline - asyncio.get_running_loop().time()
    _, pending = await asyncio.wait(tasks, timeout=max(remaining, 0.0)) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results: dict[str, T] = {}
    for task, entity in tasks.items():
        if task in pending:
            problems.append(f"{what} {entity}: not read within logs.budget ({budget:g}s)")
        elif (error := task.exception()) is not None:
            problems.append(f"{what} {entity}: {_reason(error)}")
        else:
            results[entity] = task.result()
    return results


def _reason(error: BaseException) -> str:
    if isinstance(error, UpstreamError):
        return str(error)
    log.error("log evidence failed unexpectedly", exc_info=error)  # a bug, not an outage: keep it seen
    return f"unexpected {type(error).__name__}"


LOG_SIGNAL_MIN = 3.0  # robust units (counts floored: see score_errors) from which error lines are evidence


def risen(signals: Sequence[Mapping[str, Any]], ranking: Sequence[Candidate]) -> list[str]:
    """The ranked entities whose error-like lines rose with their metrics: evidence for the ranking
    (``investigation.rank.with_evidence``). A rise counts when it is sustained (the score, the 75th
    percentile of the deviations after the onset, as the ranking's ``sustained``) at ``LOG_SIGNAL_MIN``
    or more, and began no later than the entity's own metric change plus one count's step (the log onset
    is known to a step): errors that start after the metrics moved are more often an effect."""
    onsets = {c.entity: c.onset for c in ranking}
    found = []
    for signal in signals:
        entity = str(signal.get("entity"))
        if entity not in onsets or float(signal.get("score") or 0) < LOG_SIGNAL_MIN:
            continue
        own, logged = onsets[entity], signal.get("onset_unix")
        if own is None or logged is None or float(logged) <= own + float(signal.get("step") or MIN_STEP):
            found.append(entity)
    return found


class LogProbe:
    """Log evidence for one incident, asked by the ranking for the entities the metrics ranked
    (``investigate.root_cause_hypotheses``): a sustained rise in an entity's error lines weighs in the
    ranking as evidence beside its metrics (``risen``), joins its hypothesis' evidence, and the result
    stays here for the report."""

    def __init__(
        self,
        source: LogSource,
        settings: LogsConfig,
        namespace: str | None,
        onset: float,
        baseline: float,
        after: float,
        now: float,
        explore_url: ExploreUrl | None,
    ) -> None:
        self._source, self._settings, self._namespace = source, settings, namespace
        self._span = (onset, baseline, after, now)
        self._explore_url = explore_url
        self.result: LogEvidence | None = None

    async def __call__(self, entities: Sequence[str], onset: float | None = None) -> LogEvidence:
        """The evidence of ``entities`` around ``onset`` (the metrics' estimate, earlier than a late
        alert's start; that start when None)."""
        start, baseline, after, now = self._span
        onset = start if onset is None else onset
        self.result = await log_evidence(
            entities,
            self._namespace,
            self._source,
            self._settings,
            onset,
            baseline,
            after,
            now,
            self._explore_url,
        )
        return self.result

    def strong_signal_of(self, entity: str) -> dict[str, Any] | None:
        """``entity``'s error-line signal when it moved at least ``LOG_SIGNAL_MIN`` robust units (counts
        floored by their Poisson spread: a quiet service's first error line is not evidence)."""
        if self.result is None:
            return None
        found = next((dict(s) for s in self.result.signals if s["entity"] == entity), None)
        return found if found is not None and float(found.get("deviation") or 0) >= LOG_SIGNAL_MIN else None

    def risen(self, ranking: Sequence[Candidate]) -> list[str]:
        """``risen`` over what was read (nothing before the probe ran)."""
        return risen(self.result.signals, ranking) if self.result is not None else []
