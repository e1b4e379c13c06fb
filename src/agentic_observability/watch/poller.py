"""PromQL watches polled on their own schedule (with jitter, so many watches don't fire in lockstep).

A watch with ``above``/``below`` applies that static threshold; otherwise its ``detector`` scores each
series (warmed up on ``lookback`` of history at the first poll) and a score at or above the anomaly
threshold is a breach. Scores and expected bands are exported per series on /metrics.

Each returned series is tracked separately; when an episode opens or closes the poller commits a
synthetic firing/resolved alert to the same inbox the webhook uses, so watches and Alertmanager
alerts share one path (dedup, incidents, jobs, restart safety).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

import numpy as np

from agentic_observability.config import WatchConfig
from agentic_observability.detectors import DEFAULT_EPISODE_GAP, DEFAULT_THRESHOLD, Detector, create
from agentic_observability.detectors.bulk import BULK, KeyedEnsemble
from agentic_observability.detectors.episodes import EpisodeTracker, breaches
from agentic_observability.errors import AgenticObsError, ConfigError
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.models import AcceptedAlert, Alert, Sample, Series, label_fingerprint
from agentic_observability.store import Store
from agentic_observability.telemetry import Metrics

log = logging.getLogger(__name__)
JITTER = 0.1


def watch_expression(watch: WatchConfig) -> str:
    """The rule the watch applies, as PromQL (what the evidence stage will recover and plot)."""
    if watch.above is not None:
        return f"({watch.query}) > {watch.above:g}"
    if watch.below is not None:
        return f"({watch.query}) < {watch.below:g}"
    return watch.query


def watch_lease_name(watch: WatchConfig) -> str:
    """The named lease (``Store.hold_leases``) whose holder polls the watch."""
    return f"watch:{watch.name}"


def watch_group_key(watch: WatchConfig, labels: Mapping[str, str]) -> str:
    return f"watch:{watch.name}:{label_fingerprint(labels)}"


class WatchPoller:
    def __init__(
        self,
        watch: WatchConfig,
        prometheus: PrometheusClient,
        store: Store,
        metrics: Metrics,
        on_commit: Callable[[], None] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        owns: Callable[[], bool] | None = None,
    ) -> None:
        self.watch = watch
        # With replicas, one holds the watch's lease at a time (``lease_name``); the others skip its
        # polls. None: this process alone polls it.
        self._owns = owns
        self._active = False  # polling: resumed from the store, detectors warming or warm
        self._lost = False  # the lease went since the last poll: forget before polling again
        self._held_last: bool | None = None  # what ``lease_changed`` was last told
        self._wake = asyncio.Event()
        self.threshold = threshold
        self.uses_detector = watch.above is None and watch.below is None
        if self.uses_detector:
            try:
                create(watch.detector)  # unknown names fail at startup, with the known ones listed
            except ValueError as exc:
                raise ConfigError(f"watch {watch.name}: {exc}") from None
        self._prometheus = prometheus
        self._store = store
        self._metrics = metrics
        self._notify = on_commit
        self.task: asyncio.Task[None] | None = None  # set by the service that runs it
        self._fresh_state()

    def _fresh_state(self) -> None:
        """Nothing tracked, detectors cold: at the start, and when another replica takes the watch."""
        watch = self.watch
        self._detectors: dict[str, Detector] = {}
        # the default detector scores every series of a poll in one call (warm-up too): a watch may
        # hold 100,000 series; other detectors keep one instance per series
        self._bulk: KeyedEnsemble | None = None
        if self.uses_detector and watch.detector in BULK:
            self._bulk = KeyedEnsemble(self.threshold, DEFAULT_EPISODE_GAP, watch.interval)
        self._warmed = False
        self.tracker = EpisodeTracker(watch.for_, watch.resolve_after)
        self._labels: dict[str, dict[str, str]] = {}  # every tracked series, by group key
        self._absent: dict[str, int] = {}  # polls in a row a tracked series has been missing
        self._warned_full = False

    @property
    def lease_name(self) -> str:
        return watch_lease_name(self.watch)

    @property
    def alive(self) -> bool:
        return self.task is None or not self.task.done()

    async def resume(self) -> None:
        """Reopen tracking for episodes that were still open when the service stopped, with their
        series' labels, so that closing one resolves the very alert that opened it."""
        prefix = f"watch:{self.watch.name}:"
        for group_key, incident_id in (await self._store.open_incidents_by_group("watch")).items():
            if group_key.startswith(prefix):
                self.tracker.mark_active(group_key, time.time())
                incident = await self._store.get_incident(incident_id)
                if incident is not None:
                    labels = {k: v for k, v in incident.labels.items() if k not in ("alertname", "watch")}
                    self._labels[group_key] = labels

    async def run_forever(self) -> None:
        await asyncio.sleep(random.uniform(0, self.watch.interval * JITTER))
        failures = 0
        while True:
            try:
                await self._poll_if_held()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failing store or a bug must not end the watch: log, back off, poll again.
                failures += 1
                self._metrics.errors.labels("watch").inc()
                log.exception("watch %s: poll failed (%d in a row)", self.watch.name, failures)
            pause = self.watch.interval * (min(2**failures, 16) if failures else 1)
            with contextlib.suppress(TimeoutError):  # a lease taken or lost wakes it early
                await asyncio.wait_for(self._wake.wait(), pause * random.uniform(1 - JITTER, 1 + JITTER))
            self._wake.clear()

    def lease_changed(self, held: bool) -> None:
        """This replica took the watch's lease (``held``) or lost it: act now, not at the next interval.
        A loss is remembered, so a lease lost and taken back between two polls still starts afresh
        from the store (the other holder may have closed or opened episodes meanwhile)."""
        if held == self._held_last:
            return  # another watch's lease changed: this one polls on its own cadence
        self._held_last = held
        if not held:
            self._lost = True
        self._wake.set()

    async def _poll_if_held(self) -> None:
        """Poll while this replica holds the watch: on taking it, resume its open episodes from the
        store (an episode stays one incident across the hand-over) and warm its detectors at the first
        poll; on losing it, forget its series (the holder tracks them now)."""
        if self._lost or (self._active and self._owns is not None and not self._owns()):
            self._let_go()
        if self._owns is None or self._owns():
            if not self._active:
                await self.resume()
                self._active = True
            await self.poll_once()

    def _let_go(self) -> None:
        self._lost = self._active = False
        for key in list(self._labels):
            self._forget(key)
        self._fresh_state()
        self._metrics.watch_series.labels(self.watch.name).set(0)
        log.info("watch %s: another replica polls it now", self.watch.name)

    async def poll_once(self, now: float | None = None) -> int:
        """One evaluation; returns how many alerts (opens + closes) it committed."""
        moment = time.time() if now is None else now
        try:
            samples = await self._prometheus.query(self.watch.query, at=moment)
        except AgenticObsError as exc:
            self._metrics.watch_evaluations.labels(self.watch.name, "error").inc()
            log.warning("watch %s: query failed: %s", self.watch.name, exc)
            return 0
        self._metrics.watch_evaluations.labels(self.watch.name, "ok").inc()
        current = [(watch_group_key(self.watch, sample.labels), sample) for sample in samples]
        if self.uses_detector and not self._warmed:
            await self._warm_up(moment, {key for key, _ in current})
        keyed = self._tracked(current)
        if self.uses_detector:  # CPU work (a day of history per series at first): off the event loop
            hits = await asyncio.to_thread(self._score, keyed)
        else:
            hits = [breaches(sample.value, self.watch.above, self.watch.below) for _, sample in keyed]
        before = copy.deepcopy(self.tracker.states)
        changes: list[AcceptedAlert] = []
        seen: set[str] = set()
        for (key, sample), hit in zip(keyed, hits, strict=True):
            seen.add(key)
            changes.extend(self._transition(key, hit, moment, sample.value))
        for key in [k for k in self.tracker.states if k not in seen]:
            changes.extend(self._transition(key, False, moment, None))  # series vanished: counts as clean
        if changes:
            try:
                await self._store.accept(changes)
            except Exception:
                # Not committed: undo the transitions, so the next poll opens or closes them again.
                self.tracker.states = before
                raise
            if self._notify is not None:
                self._notify()
        self._forget_absent(seen)
        return len(changes)

    def _tracked(self, keyed: list[tuple[str, Sample]]) -> list[tuple[str, Sample]]:
        """The samples of series the watch tracks; a new series past ``max_series`` is counted and
        left out, so a label explosion cannot take the service's memory with it."""
        kept = []
        for key, sample in keyed:
            if key not in self._labels:
                if len(self._labels) >= self.watch.max_series:
                    self._drop(key)
                    continue
                self._labels[key] = dict(sample.labels)
            kept.append((key, sample))
        self._metrics.watch_series.labels(self.watch.name).set(len(self._labels))
        return kept

    def _drop(self, key: str) -> None:
        self._metrics.watch_series_dropped.labels(self.watch.name).inc()
        if not self._warned_full:  # once, until the watch falls well below its cap
            self._warned_full = True
            log.warning(
                "watch %s: tracking %d series (watches[].max_series); new series are counted in "
                "agentic_obs_watch_series_dropped_total, not tracked",
                self.watch.name,
                self.watch.max_series,
            )

    def _forget_absent(self, seen: set[str]) -> None:
        """A series missing for ``forget_after`` polls (a deleted pod) is forgotten: its detector,
        labels and gauges go, unless an episode of it is still open (it closes first)."""
        for key in [k for k in self._labels if k not in seen]:
            self._absent[key] = self._absent.get(key, 0) + 1
            if self._absent[key] >= self.watch.forget_after and not self.tracker.started(key):
                self._forget(key)
        for key in seen:
            self._absent.pop(key, None)
        self._metrics.watch_series.labels(self.watch.name).set(len(self._labels))

    def _forget(self, key: str) -> None:
        labels = self._labels.pop(key)
        self._absent.pop(key, None)
        self._detectors.pop(key, None)
        if self._bulk is not None:
            self._bulk.forget(key)
        self._metrics.anomaly.forget(self.watch.name, labels)
        if len(self._labels) < 0.9 * self.watch.max_series:
            self._warned_full = False

    def _score(self, keyed: list[tuple[str, Sample]]) -> list[bool]:
        """Score each sample with its series' detector (runs in a worker thread); whether it breaches
        is ``EpisodeTracker.breaching``, the rule ``detect`` replays too."""
        if self._bulk is not None:
            return self._score_bulk(self._bulk, keyed)
        hits = []
        for key, sample in keyed:
            detector = self._detectors.get(key)
            if detector is None:  # a series that appeared after the warm-up starts cold
                detector = self._detectors[key] = self._new_detector()
            alert = float(detector.score(np.array([sample.value]))[0])
            raw = float(getattr(detector, "last_raw", [alert])[0])
            self._metrics.anomaly.set(self.watch.name, sample.labels, raw, detector.band())
            hits.append(self.tracker.breaching(key, alert >= self.threshold, raw >= self.threshold))
        return hits

    def _score_bulk(self, bulk: KeyedEnsemble, keyed: list[tuple[str, Sample]]) -> list[bool]:
        """``_score`` with one bulk call for all the poll's series (a new one starts cold)."""
        if not keyed:
            return []
        values = np.array([[sample.value] for _, sample in keyed], dtype=float)
        alerts, raw = bulk.score([key for key, _ in keyed], values)
        bands = bulk.bulk.bands()
        hits = []
        for (key, sample), alert, score in zip(keyed, alerts[:, 0], raw[:, 0], strict=True):
            self._metrics.anomaly.set(self.watch.name, sample.labels, float(score), bulk.band(key, bands))
            hits.append(self.tracker.breaching(key, alert >= self.threshold, score >= self.threshold))
        return hits

    def _new_detector(self) -> Detector:
        return create(self.watch.detector, self.threshold, interval=self.watch.interval)

    async def _warm_up(self, moment: float, live: set[str]) -> None:
        """Feed ``lookback`` of history to a detector per series, so scoring starts informed."""
        self._warmed = True
        start, end = moment - self.watch.lookback, moment - self.watch.interval
        try:
            history = await self._prometheus.query_range(self.watch.query, start, end, self.watch.interval)
        except AgenticObsError as exc:
            log.warning("watch %s: no history to warm up from (%s); starting cold", self.watch.name, exc)
            return
        started = time.perf_counter()
        # only series alive now: a day of history holds many pods that are long gone
        await asyncio.to_thread(self._feed_history, [s for s in history if self._key(s) in live])
        log.info(
            "watch %s: warmed %d series on %.0f s of history in %.1f s",
            self.watch.name,
            len(history),
            self.watch.lookback,
            time.perf_counter() - started,
        )

    def _key(self, series: Series) -> str:
        return watch_group_key(self.watch, series.labels)

    def _feed_history(self, history: list[Series]) -> None:
        if self._bulk is not None:
            self._feed_bulk(self._bulk, history[: self.watch.max_series])
            return
        for series in history[: self.watch.max_series]:
            detector = self._new_detector()
            detector.score(np.asarray(series.values, dtype=float))
            rearm = getattr(detector, "rearm", None)
            if rearm is not None:
                rearm()  # an alert inside the history must not keep the live series from paging
            key = self._key(series)
            self._detectors[key] = detector
            self._labels[key] = dict(series.labels)

    def _feed_bulk(self, bulk: KeyedEnsemble, history: list[Series]) -> None:
        """The warm-up in one bulk call per history length (series with gaps are shorter)."""
        by_length: dict[int, list[Series]] = {}
        for series in history:
            by_length.setdefault(len(series.values), []).append(series)
        for group in by_length.values():
            keys = [self._key(series) for series in group]
            bulk.score(keys, np.array([series.values for series in group], dtype=float))
            bulk.rearm(keys)  # an alert inside the history must not keep the live series from paging
            bulk.prepare(keys)  # distance profiles now, so the first poll is as quick as the rest
            for key, series in zip(keys, group, strict=True):
                self._labels[key] = dict(series.labels)

    def _transition(self, key: str, hit: bool, now: float, value: float | None) -> list[AcceptedAlert]:
        before = self.tracker.states.get(key)
        opened_before = before.opened_at if before else None
        change = self.tracker.observe(key, hit, now)
        if change == "open":
            return [self._alert(key, "firing", self.tracker.states[key].opened_at or now, now, value)]
        if change == "close":
            return [self._alert(key, "resolved", opened_before or now, now, value)]
        return []

    def _alert(self, key: str, status: str, starts: float, now: float, value: float | None) -> AcceptedAlert:
        series_labels = self._labels.get(key, {})
        labels = {**series_labels, "alertname": self.watch.name, "watch": self.watch.name}
        labels.pop("__name__", None)
        shown = "" if value is None else f" (value {value:.4g})"
        expr = watch_expression(self.watch)
        alert = Alert(
            status="firing" if status == "firing" else "resolved",
            labels=labels,
            annotations={"summary": f"watch {self.watch.name}: {expr}{shown}"},
            starts_at=starts,
            ends_at=now if status == "resolved" else None,
            generator_url=f"{self._prometheus.base_url}/graph?{urlencode({'g0.expr': expr})}",
            fingerprint=label_fingerprint(labels),
        )
        return AcceptedAlert(group_key=key, source="watch", alert=alert, group_labels=labels)
