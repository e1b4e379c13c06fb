"""The default detector (``ensemble``) for many series at once: a (series x samples) block per call.

Scores are the per-sample ``ensemble``'s (builtin.py), series by series, up to the rounding of
the compact state: the history is held as float32 offsets (histories.py) and the likelihoods' older
raw scores as float32 (likelihoods.py), which moves scores by ~1e-7 (tests/test_detect_bulk.py
bounds it and checks the alerts are the same). The expensive part, each component's distances,
depends only on the series' history and is computed for the whole block (bulk_distances.py,
profile.py); what remains is the step-by-step state of the likelihoods, the range breach and the
alert gating, which is vectorised across series, one step per sample. A watch keeps one
``BulkEnsemble`` for all its series and calls it once per poll; a block of one sample per series (a
poll) takes the incremental path instead (poll_profiles.py): each series keeps its last row of
window distances, so a poll costs O(history) per series, not O(history x width), in one compiled
pass (profile_kernels.py). Histories are rings (a poll moves no value). The coarse blocks are not
staggered across series: each series' per-sample ``DiscordScale`` completes a block on every fourth
value *it* was given, so a watch's series, warmed and polled together, all complete theirs on the
same poll; moving some to other polls would change their coarse means and so their scores. That
poll costs more than an ordinary one (both scales' profiles are stepped).

State per series at a one-minute interval: ~83 KiB (two float32 histories of 3,032 values, two
float32 distance profiles of 2,984, float32 likelihood rings of 3,990 + 990 + 3,990).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from agentic_observability.detectors.alerting import BREACH_GAP
from agentic_observability.detectors.builtin import SEASONAL_MAX_INTERVAL
from agentic_observability.detectors.bulk_distances import (
    Seasonal,
    block_means,
    fine_distances,
    seasonal_distances,
    seasonal_poll,
    seasonal_reference,
)
from agentic_observability.detectors.bulk_state import Breaches, Gating
from agentic_observability.detectors.histories import Histories
from agentic_observability.detectors.likelihoods import Likelihoods
from agentic_observability.detectors.poll_profiles import Profiles
from agentic_observability.detectors.profile import nearest_before

WIDTH, HISTORY, COARSE = 16, 3000, 4  # Discord's defaults: window, windows held, coarse block
# a block's fine history joined with its new values, per series (None: a poll, read the profiles)
Lookback = Callable[[int], tuple[np.ndarray, int]] | None


class BulkEnsemble:
    def __init__(
        self, series: int, threshold: float, episode_gap: int, interval: float | None = None
    ) -> None:
        self.threshold = threshold
        self._interval = interval
        self.seasonal: Seasonal | None = None
        if interval and interval <= SEASONAL_MAX_INTERVAL:
            self.seasonal = seasonal_reference(interval)
        keep = max(HISTORY + 2 * WIDTH, self.seasonal.keep if self.seasonal else 0)
        self.fine = Histories(series, keep)  # shared by the fine discord and the day-ago comparison
        self.coarse = Histories(series, HISTORY + 2 * WIDTH)
        # each series' last row of distances at both scales: a poll updates them in O(history)
        self._fine_profiles = Profiles(series, WIDTH, HISTORY)
        self._coarse_profiles = Profiles(series, WIDTH, HISTORY)
        self._pending = np.zeros((series, COARSE - 1))  # values of the unfinished coarse block
        self._pending_count = np.zeros(series, np.int64)
        self._fine_likelihood = Likelihoods(series, history=4000)
        self._coarse_likelihood = Likelihoods(series, history=4000 // COARSE)
        self._seasonal_likelihood = Likelihoods(series, history=4000, decades=20.0)
        self._scale_scores = np.zeros((series, 2))
        self._cut = np.full(series, -1, np.int64)  # Discord's episode cut (-1: none)
        self._usual = np.full(series, np.nan)  # and the usual distance then (NaN: None)
        self._given = np.zeros(series, np.int64)  # values the components were given so far
        self.breach = Breaches(series)
        self.gating = Gating(series, threshold, episode_gap, min(BREACH_GAP, episode_gap))

    @property
    def nbytes(self) -> int:
        parts = (self.fine, self.coarse, self._fine_likelihood, self._coarse_likelihood, self._fine_profiles)
        arrays = (self._pending, self._pending_count, self._scale_scores, self._cut, self._usual, self._given)
        return (
            sum(p.nbytes for p in parts)
            + self._seasonal_likelihood.nbytes
            + self._coarse_profiles.nbytes
            + sum(a.nbytes for a in arrays)
            + self.breach.nbytes
            + self.gating.nbytes
        )

    def rearm(self, rows: np.ndarray | None = None) -> None:
        """``Alerting.rearm`` for these series (all when None)."""
        self.gating.rearm(slice(None) if rows is None else rows)

    def bands(self) -> tuple[np.ndarray, np.ndarray]:
        """Each series' expected range for its next sample (NaN while it is still learning)."""
        return self.breach.bands()

    @property
    def series(self) -> int:
        return self.gating.seen.size

    def add(self, count: int) -> None:
        """Room for ``count`` more series (rows at the end, as a new detector's)."""
        fresh = BulkEnsemble(count, self.threshold, self.gating.gap, self._interval)
        _each_array(self, fresh, lambda mine, new: np.concatenate((mine, new)))

    def reset(self, rows: np.ndarray) -> None:
        """Start these rows over, as new detectors (a row freed by a forgotten series is reused)."""
        fresh = BulkEnsemble(len(rows), self.threshold, self.gating.gap, self._interval)

        def assign(mine: np.ndarray, new: np.ndarray) -> np.ndarray:
            mine[rows] = new
            return mine

        _each_array(self, fresh, assign)

    def prepare(self, rows: np.ndarray | None = None) -> None:
        """Make these series (all when None) ready for polls after a warm-up block: their distance
        profiles are computed now rather than in the first poll."""
        which = np.arange(self.series) if rows is None else np.asarray(rows, dtype=np.int64)
        self._fine_profiles.prepare(self.fine, which)
        self._coarse_profiles.prepare(self.coarse, which)

    def score(self, values: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(alerts, raw), each (block rows x samples): what ``Alerting.score`` and its ``last_raw``
        give for each series' detector fed its row of ``values``. ``rows``: the series the block's
        rows are (all, in order, when None). A block of one column (a poll) takes the incremental
        path (poll_profiles.py); the scores are the same."""
        block = np.asarray(values, dtype=float)
        which = np.arange(self.series) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows is not None and np.unique(which).size != which.size:  # one step per row and sample
            raise ValueError("a block names the same series in more than one row")
        lookback: Lookback = None  # a poll: the episode's look back reads the fine profiles
        if block.shape[1] == 1:
            distances = self._poll_distances(block[:, 0], which)
        else:
            distances, joined = self._distances(block, which)
            lookback = joined.__getitem__
            self._fine_profiles.stale(which, block)
            self._coarse_profiles.stale(which, block)
        alerts, raw = np.zeros(block.shape), np.zeros(block.shape)
        for column in range(block.shape[1]):
            alerts[:, column], raw[:, column] = self._step(
                block[:, column], which, distances[:, :, column], lookback
            )
        return alerts, raw

    def _poll_distances(self, values: np.ndarray, which: np.ndarray) -> np.ndarray:
        """``_distances`` for one new value per series, from the kept profiles (which push the
        values to the histories)."""
        distances = np.full((3, which.size, 1), np.nan)
        present = np.flatnonzero(np.isfinite(values))
        rows, new = which[present], values[present]
        distances[0, present, 0] = self._fine_profiles.poll(self.fine, rows, new)
        if self.seasonal is not None:
            distances[2, present, 0] = seasonal_poll(self.fine, rows, self.seasonal)
        distances[1, present, 0] = self._coarse_poll(rows, new)
        return distances

    def _coarse_poll(self, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
        """The coarse scale's distance for the series whose new value completes a block."""
        count = self._pending_count[rows]
        complete = count == COARSE - 1
        waiting = rows[~complete]
        self._pending[waiting, count[~complete]] = new[~complete]
        self._pending_count[waiting] += 1
        out = np.full(rows.size, np.nan)
        done = rows[complete]
        if done.size:
            total = self._pending[done, 0].copy()  # summed left to right, as ``block_means`` does
            for column in range(1, COARSE - 1):
                total += self._pending[done, column]
            total += new[complete]
            means = total / COARSE
            self._pending_count[done] = 0
            out[complete] = self._coarse_profiles.poll(self.coarse, done, means)
        return out

    def _distances(
        self, block: np.ndarray, which: np.ndarray
    ) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, int]]]:
        """(fine, coarse, seasonal) distances per series and sample (NaN: none at that sample) and
        each series' fine history joined with its new values (for the episode's look back)."""
        distances = np.full((3, *block.shape), np.nan)
        joined = {}
        for index, (row, values) in enumerate(zip(which.tolist(), block, strict=True)):
            finite = np.flatnonzero(np.isfinite(values))  # a gap is skipped: components never see it
            pushed = int(self.fine.pushed[row])
            history = self.fine.extend(row, values[finite])
            first = pushed - (history.size - finite.size)
            joined[row] = (history, first)
            distances[0, index, finite] = fine_distances(history, first, finite.size, WIDTH, HISTORY)
            if self.seasonal is not None:
                distances[2, index, finite] = seasonal_distances(history, first, finite.size, self.seasonal)
            distances[1, index] = self._coarse_distances(row, values[finite], finite, values.size)
        return distances, joined

    def _coarse_distances(self, row: int, new: np.ndarray, finite: np.ndarray, size: int) -> np.ndarray:
        pending = self._pending[row, : self._pending_count[row]]
        means, at, left = block_means(pending, new, COARSE)
        self._pending[row, : left.size] = left
        self._pending_count[row] = left.size
        pushed = int(self.coarse.pushed[row])
        history = self.coarse.extend(row, means)
        first = pushed - (history.size - means.size)
        out = np.full(size, np.nan)
        out[finite[at]] = fine_distances(history, first, means.size, WIDTH, HISTORY)
        return out

    def _step(
        self,
        values: np.ndarray,
        which: np.ndarray,
        distances: np.ndarray,
        lookback: Lookback,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One sample of each series in ``which``: ``Alerting._one`` across series."""
        self.gating.advance(which)
        present = np.flatnonzero(np.isfinite(values))  # block rows with a value
        rows = which[present]  # and the series they are
        alerts, raw = np.zeros(values.size), np.zeros(values.size)
        if rows.size == 0:
            return alerts, raw
        self._given[rows] += 1
        breach = self.breach.update(values[present], rows, self.threshold)
        score = self._discord(rows, distances[:2, present], lookback)
        if self.seasonal is not None:
            score = np.maximum(score, self._seasonal(rows, distances[2, present]))
        alerts[present], raw[present] = self.gating.gate(rows, breach, score)
        return alerts, raw

    def _seasonal(self, rows: np.ndarray, distance: np.ndarray) -> np.ndarray:
        score = np.zeros(rows.size)
        ready = np.isfinite(distance)
        score[ready] = self._seasonal_likelihood.update(distance[ready], rows[ready])
        return score

    def _discord(self, rows: np.ndarray, distances: np.ndarray, lookback: Lookback) -> np.ndarray:
        for scale, likelihood in enumerate((self._fine_likelihood, self._coarse_likelihood)):
            ready = np.isfinite(distances[scale])
            if ready.any():
                updated = rows[ready]
                self._scale_scores[updated, scale] = likelihood.update(distances[scale, ready], updated)
        score = self._scale_scores[rows].max(axis=1)
        high = score >= self.threshold
        self._cut[rows[~high]] = -1
        at = np.flatnonzero(high)  # only while a discord is at the threshold
        onset = at[self._cut[rows[at]] < 0]
        if onset.size:  # the episode starts: where it cuts, and the usual distance
            started = rows[onset]
            self._cut[started] = self._given[started] - 2 * WIDTH
            self._usual[started] = self._fine_likelihood.quantiles(started, 0.95)
        later = np.setdiff1d(at, onset)
        if later.size:
            back = self._looks_like_before(rows[later], lookback)
            score[later[back]] = self.threshold * 0.999  # the newest stretch looks like before again
        return score

    def _looks_like_before(self, rows: np.ndarray, lookback: Lookback) -> np.ndarray:
        """``Discord.update``'s look back once an episode started: is the newest stretch as near to
        one before the cut as stretches usually are to their neighbours? (NaN: no distance.)"""
        cuts = self._cut[rows]
        if lookback is None:  # a poll: the fine profiles are this sample's (poll_profiles.py)
            distance = self._fine_profiles.nearest_before(self.fine, rows, cuts - WIDTH + 1)
        else:
            distance = np.full(rows.size, np.nan)
            for index, row in enumerate(rows.tolist()):
                history, first = lookback(row)
                pushed = int(self._given[row])
                found = nearest_before(history[: pushed - first], first, int(cuts[index]), WIDTH, HISTORY)
                distance[index] = np.nan if found is None else found
        usual = self._usual[rows]
        with np.errstate(invalid="ignore"):
            return ~np.isnan(usual) & ~np.isnan(distance) & (distance <= usual)


def _each_array(mine: object, fresh: object, combine: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Apply ``combine`` to every array of ``mine`` (and of its parts) and ``fresh``'s: every array
    in the state is per series (its first axis), so this grows or resets series."""
    for name, value in vars(mine).items():
        other = getattr(fresh, name)
        if isinstance(value, np.ndarray):
            setattr(mine, name, combine(value, other))
        elif isinstance(value, (Histories, Likelihoods, Breaches, Gating, Profiles)):
            _each_array(value, other, combine)


class KeyedEnsemble:
    """A ``BulkEnsemble`` whose rows are named by series keys: a watch's series come and go. A new
    key takes a row a forgotten one left, or a new row."""

    def __init__(self, threshold: float, episode_gap: int, interval: float | None) -> None:
        self.bulk = BulkEnsemble(0, threshold, episode_gap, interval)
        self.rows: dict[str, int] = {}
        self._free: list[int] = []

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def forget(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is not None:
            self._free.append(row)

    def score(self, keys: list[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alerts, raw) of each key's series fed its row of ``values``; one call for them all."""
        return self.bulk.score(values, self._rows(keys))

    def rearm(self, keys: list[str]) -> None:
        self.bulk.rearm(self._rows(keys))

    def prepare(self, keys: list[str]) -> None:
        """``BulkEnsemble.prepare`` for these keys' series (after their warm-up)."""
        self.bulk.prepare(self._rows(keys))

    def band(self, key: str, bands: tuple[np.ndarray, np.ndarray]) -> tuple[float, float] | None:
        """The key's range from ``bulk.bands()`` (taken once for many keys)."""
        low, high = float(bands[0][self.rows[key]]), float(bands[1][self.rows[key]])
        return None if math.isnan(low) else (low, high)

    def _rows(self, keys: list[str]) -> np.ndarray:
        new = [key for key in keys if key not in self.rows]
        reused = [self._free.pop() for _ in range(min(len(new), len(self._free)))]
        if reused:
            self.bulk.reset(np.array(reused))
        added = len(new) - len(reused)
        rows = [*reused, *range(self.bulk.series, self.bulk.series + added)]
        if added:
            self.bulk.add(added)
        self.rows.update(zip(new, rows, strict=True))
        return np.array([self.rows[key] for key in keys], dtype=np.int64)


# the detectors (by their names in DETECTORS) that have a bulk form
BULK = {"default": BulkEnsemble, "ensemble": BulkEnsemble}
