"""Try row-combination and threshold variants for `agentic-obs backtest servers` without rescoring.

Scoring every column of every machine with the default detector is the slow part (SMD: about 20
minutes on two cores), and it does not depend on how the columns' scores are combined into a row
or how episodes open and close. So this script does it once per machine and caches, per column,
the default detector's gated alert scores and ungated raw scores, its components' scores (range
breach, discord, seasonal) and the values themselves, in ``/tmp/servers_cache/<dataset>-<machine>.npz``.
Then every variant below is a few numpy passes over the cache, scored exactly as
``backtest servers`` scores (offline/servers.py: point-wise micro P/R/F1 and event recall over test
rows).

Run (from the repo root; one process, machines one after another: caching took about 11 minutes,
33 s per ASD machine and 5 minutes per SMD machine; ``eval`` of every variant about 4 minutes)::

    nice -n 10 .venv/bin/python bench/servers_variants.py cache ../shared/datasets/servers
    .venv/bin/python bench/servers_variants.py eval [--only NAME ...]

``cache`` skips machines already cached (``--force`` rescores). ``eval`` prints one line per variant
and dataset: micro precision, recall, F1 and event recall (``--machines``: each machine too);
``baseline`` is the default before issue 15 (max over columns, episodes as ``detect`` keeps them)
and reproduces the README's figures from then; ``product (defaults)`` is today's ``detect_rows``
(the highest column score less ``combine``'s discount per decade of columns, or the row's joint
deviation from detectors/joint.py, whichever is higher) and reproduces what
``agentic-obs backtest servers`` prints now. The windowed-Gaussian *component* variants ("gauss
component ...") were dropped because the component cost NAB 1.5 to 5 points (standard profile).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agentic_observability.detectors import DEFAULT_EPISODE_GAP, DEFAULT_THRESHOLD, joint
from agentic_observability.detectors.alerting import Alerting
from agentic_observability.detectors.builtin import SEASONAL_MAX_INTERVAL
from agentic_observability.detectors.discord import Discord, SeasonalDistance
from agentic_observability.detectors.episodes import episode_rows
from agentic_observability.detectors.extremes import RangeBreach
from agentic_observability.offline.detect import RESOLVE_AFTER, combine, sample_interval
from agentic_observability.offline.metrics_csv import read_metrics_csv
from agentic_observability.offline.servers import Counts, _counts, machines

CACHE = Path("/tmp/servers_cache")
THRESHOLD = DEFAULT_THRESHOLD


# ---------------------------------------------------------------- caching


class Recorded:
    """Wraps a component (or the range breach) and keeps every score it returns."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seen: list[float] = []

    def update(self, value: float) -> float:
        out = float(self.inner.update(value))  # type: ignore[attr-defined]
        self.seen.append(out)
        return out

    def band(self) -> tuple[float, float] | None:
        return self.inner.band()  # type: ignore[attr-defined]


def _score_column(values: np.ndarray, interval: float | None) -> dict[str, np.ndarray]:
    """builtin.ensemble built from its parts, so each component's scores are recorded too (the
    Gaussian variants add their component from the values, so one cache serves them all)."""
    breach = Recorded(RangeBreach())
    discord = Recorded(Discord(threshold=THRESHOLD))
    seasonal = (
        Recorded(SeasonalDistance(interval)) if interval and interval <= SEASONAL_MAX_INTERVAL else None
    )
    parts = [discord] + ([seasonal] if seasonal else [])
    detector = Alerting("ensemble", parts, THRESHOLD, DEFAULT_EPISODE_GAP, breach=breach)  # type: ignore[arg-type]
    alerts = detector.score(values)
    n = len(values)
    return {
        "alerts": alerts,
        "raw": detector.last_raw,
        "breach": np.array(breach.seen) if breach.seen else np.zeros(n),
        "discord": np.array(discord.seen),
        "seasonal": np.array(seasonal.seen) if seasonal else np.zeros(n),
    }


def cache_machine(dataset: str, folder: Path, force: bool) -> None:
    target = CACHE / f"{dataset}-{folder.name}.npz"
    if target.exists() and not force:
        return
    started = time.perf_counter()
    table = read_metrics_csv(folder / "input.csv")
    interval = sample_interval(table.timestamps)
    columns = [_score_column(table.values[:, c], interval) for c in range(table.values.shape[1])]
    labels = dict(line.strip().split(",") for line in (folder / "labels.csv").read_text().splitlines()[1:])
    text = table.timestamp_text
    test = np.array([t in labels for t in text])
    truth = np.array([labels.get(t) == "1" for t in text])
    stacked = {key: np.column_stack([c[key] for c in columns]) for key in columns[0]}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, values=table.values, test=test, truth=truth, **stacked)
    print(f"cached {target.name} in {time.perf_counter() - started:.0f}s", flush=True)


# ---------------------------------------------------------------- evaluation


class Machine:
    def __init__(self, path: Path) -> None:
        data = np.load(path)
        self.name = path.stem
        self.dataset = path.stem.split("-", 1)[0]
        self.values: np.ndarray = data["values"]
        self.test: np.ndarray = data["test"]
        self.truth: np.ndarray = data["truth"]
        self.alerts: np.ndarray = data["alerts"]
        self.raw: np.ndarray = data["raw"]
        self.breach: np.ndarray = data["breach"]
        self.discord: np.ndarray = data["discord"]
        self.seasonal: np.ndarray = data["seasonal"]

    def counts(self, anomaly: np.ndarray) -> Counts:
        found = np.asarray(anomaly, bool)[self.test]
        return _counts(self.truth[self.test], found)


# A variant maps a machine to its anomaly column (one 0/1 per row, all rows).
Variant = Callable[[Machine], np.ndarray]


def episodes(
    paging: np.ndarray, scores: np.ndarray, threshold: float = THRESHOLD, resolve_after: int = RESOLVE_AFTER
) -> np.ndarray:
    return episode_rows(paging >= threshold, scores >= threshold, resolve_after=resolve_after)


def baseline(m: Machine) -> np.ndarray:
    return episodes(m.alerts.max(axis=1), m.raw.max(axis=1))


def trailing_stats(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the ``window`` rows before each row (causal; NaN at row 0)."""
    padded = np.vstack([np.zeros((1, values.shape[1])), values])
    s1, s2 = np.cumsum(padded, axis=0), np.cumsum(padded**2, axis=0)
    rows = np.arange(values.shape[0])
    start = np.maximum(rows - window, 0)
    n = (rows - start)[:, None].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (s1[rows] - s1[start]) / n
        var = (s2[rows] - s2[start]) / n - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def gauss_z(m: Machine, window: int, floor: float) -> np.ndarray:
    """Windowed Gaussian per column: |x - trailing mean| / trailing std (std floored)."""
    key = (window, floor)
    cache = m.__dict__.setdefault("_z", {})
    if key not in cache:
        mean, std = trailing_stats(m.values, window)
        # floor >= 0: that share of the range seen so far (before the row); < 0: -floor absolute
        seen = np.vstack([m.values[:1], m.values[:-1]])
        span = np.maximum.accumulate(seen, axis=0) - np.minimum.accumulate(seen, axis=0)
        least = floor * span if floor >= 0 else np.full_like(span, -floor)
        least = np.maximum(least, np.maximum(1e-3 * np.abs(mean), 1e-9))
        with np.errstate(invalid="ignore"):
            z = np.abs(m.values - mean) / np.maximum(std, least)
        z[: min(150, len(z))] = 0.0  # warm-up, as the detector's
        cache[key] = np.nan_to_num(z)
    return cache[key]


def z_score(z: np.ndarray, decades: float = 5.0) -> np.ndarray:
    """z -> [0, 1] like TailLikelihood: the two-sided Gaussian tail on a log scale."""
    from scipy.special import log_ndtr

    log10_tail = (log_ndtr(-z) + np.log(2.0)) / np.log(10.0)
    return np.clip(-log10_tail / decades, 0.0, 1.0)


def gaussian(window: int, z: float, floor: float = -1e-3) -> Variant:
    def run(m: Machine) -> np.ndarray:
        row = gauss_z(m, window, floor).max(axis=1)
        return episodes(row, row, threshold=z)

    return run


def raw_open(m: Machine) -> np.ndarray:
    """Episodes open on the ungated score (no once-per-gap rule per column)."""
    row = m.raw.max(axis=1)
    return episodes(row, row)


def threshold(t: float) -> Variant:
    return lambda m: episodes(m.alerts.max(axis=1), m.raw.max(axis=1), threshold=t)


def blend(window: int, decades: float, floor: float = -1e-3) -> Variant:
    """The default's row score or the windowed Gaussian's, whichever is higher."""

    def run(m: Machine) -> np.ndarray:
        g = z_score(gauss_z(m, window, floor), decades).max(axis=1)
        return episodes(np.maximum(m.alerts.max(axis=1), g), np.maximum(m.raw.max(axis=1), g))

    return run


def tail_rarity(scores: np.ndarray, low: float = 0.3) -> np.ndarray:
    """Per column, -log10 of the share of the column's earlier rows scoring at least this row's
    score (its empirical tail probability, causal); 0 for rows below ``low``."""
    import bisect

    out = np.zeros_like(scores)
    for c in range(scores.shape[1]):
        seen: list[float] = []
        for row in np.flatnonzero(scores[:, c] >= low):
            value = scores[row, c]
            above = len(seen) - bisect.bisect_left(seen, value)
            out[row, c] = -np.log10((above + 1) / (row + 1))
            bisect.insort(seen, value)
    return out


def calibrated(decades: float, use_raw_open: bool = False) -> Variant:
    """Each column's raw score replaced by its empirical rarity; alerts keep their gating."""

    def run(m: Machine) -> np.ndarray:
        cache = m.__dict__.setdefault("_rarity", {})
        if "r" not in cache:
            cache["r"] = tail_rarity(m.raw)
        rarity = np.minimum(cache["r"] / decades, 1.0)
        gated = np.where(m.alerts >= THRESHOLD, rarity, np.minimum(rarity, THRESHOLD * 0.999))
        row = rarity.max(axis=1)
        return episodes(row if use_raw_open else gated.max(axis=1), row)

    return run


def variable_columns(m: Machine, share: float) -> np.ndarray:
    """Columns that moved: distinct values in the first rows above ``share`` (train part)."""
    head = m.values[: np.argmax(m.test)]
    spread = head.max(axis=0) - head.min(axis=0)
    return spread > share


def drop_flat(share: float) -> Variant:
    def run(m: Machine) -> np.ndarray:
        keep = variable_columns(m, share)
        return episodes(m.alerts[:, keep].max(axis=1), m.raw[:, keep].max(axis=1))

    return run


def mahalanobis_d2(values: np.ndarray, window: int, every: int, ridge: float) -> np.ndarray:
    """Squared Mahalanobis distance of each row from the ``window`` rows before its block of
    ``every`` rows (mean and covariance re-estimated per block; ridge relative to the mean variance)."""
    out = np.zeros(values.shape[0])
    for start in range(every, values.shape[0], every):
        past = values[max(0, start - window) : start]
        if len(past) < 150:
            continue
        mean = past.mean(axis=0)
        cov = np.cov(past, rowvar=False)
        cov += np.eye(cov.shape[0]) * ridge * max(float(np.trace(cov)) / cov.shape[0], 1e-9)
        block = values[start : start + every] - mean
        out[start : start + every] = np.einsum("ij,jk,ik->i", block, np.linalg.pinv(cov), block)
    return out


def discounted_mahalanobis(
    decades: float, shift: float = 0.1, ridge: float = 0.01, window: int = 5000
) -> Variant:
    """Open on the default's discounted row score or the row's Mahalanobis distance (one joint
    test of the row, so no discount), each at the threshold."""

    def run(m: Machine) -> np.ndarray:
        from scipy.stats import chi2

        key = (window, 100, ridge)
        cache = m.__dict__.setdefault("_md", {})
        if key not in cache:
            cache[key] = mahalanobis_d2(m.values, window, 100, ridge)
        joint = np.clip(-chi2.logsf(cache[key], m.values.shape[1]) / np.log(10.0) / decades, 0.0, 1.0)
        t = THRESHOLD + shift * np.log10(m.raw.shape[1])
        opens = (m.alerts.max(axis=1) >= t) | (joint >= THRESHOLD)
        holds = (m.raw.max(axis=1) >= t) | (joint >= THRESHOLD)
        return episode_rows(opens, holds, resolve_after=RESOLVE_AFTER)

    return run


def product_rule(
    decades: float = joint.DECADES,
    ridge: float = joint.RIDGE,
    window: int = joint.WINDOW,
    discount: bool = True,
) -> Variant:
    """What ``detect_rows`` does on the cached column scores: the discounted row score
    (``combine``) or the joint score (detectors/joint.py), whichever is higher."""

    def run(m: Machine) -> np.ndarray:
        key = (decades, ridge, window)
        cache = m.__dict__.setdefault("_joint", {})
        if key not in cache:
            saved = joint.DECADES, joint.RIDGE, joint.WINDOW
            joint.DECADES, joint.RIDGE, joint.WINDOW = decades, ridge, window
            try:
                cache[key] = joint.joint_scores(m.values)
            finally:
                joint.DECADES, joint.RIDGE, joint.WINDOW = saved
        rows = combine if discount else (lambda scores: scores.max(axis=1))
        paging = np.maximum(rows(m.alerts), cache[key])
        return episodes(paging, np.maximum(rows(m.raw), cache[key]))

    return run


def mahalanobis(window: int, every: int, ridge: float, decades: float, blend_in: bool) -> Variant:
    def run(m: Machine) -> np.ndarray:
        from scipy.stats import chi2

        key = (window, every, ridge)
        cache = m.__dict__.setdefault("_md", {})
        if key not in cache:
            cache[key] = mahalanobis_d2(m.values, window, every, ridge)
        tail = chi2.logsf(cache[key], m.values.shape[1]) / np.log(10.0)
        score = np.clip(-tail / decades, 0.0, 1.0)
        if not blend_in:
            return episodes(score, score)
        return episodes(np.maximum(m.alerts.max(axis=1), score), np.maximum(m.raw.max(axis=1), score))

    return run


def either(t: float, z: float, window: int = 5000, floor: float = 1e-3) -> Variant:
    """Open on the default at ``t`` or the windowed Gaussian at ``z`` (each its own threshold)."""

    def run(m: Machine) -> np.ndarray:
        g = gauss_z(m, window, floor).max(axis=1) >= z
        opens = (m.alerts.max(axis=1) >= t) | g
        holds = (m.raw.max(axis=1) >= t) | g
        return episode_rows(opens, holds, resolve_after=RESOLVE_AFTER)

    return run


def agree(z: float, window: int = 5000, floor: float = 1e-3, t: float = THRESHOLD) -> Variant:
    """A column counts only while its value is also ``z`` trailing deviations out (both agree)."""

    def run(m: Machine) -> np.ndarray:
        out = gauss_z(m, window, floor) >= z
        return episodes(np.where(out, m.alerts, 0).max(axis=1), np.where(out, m.raw, 0).max(axis=1), t)

    return run


def regate(
    breach_excess: np.ndarray, score: np.ndarray, t: float = THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(alerts, raw) of one column as ``Alerting`` computes them from its breach excess and its
    components' highest score: lets a variant add a component without rescoring."""
    gap, breach_gap, warmup = DEFAULT_EPISODE_GAP, min(20, DEFAULT_EPISODE_GAP), 150
    since_alert = since_breach = gap
    alerts, raw = np.zeros(len(score)), np.zeros(len(score))
    breach = np.where(breach_excess > 0, np.minimum(1.0, t + (1 - t) * breach_excess), 0.0)
    for i in range(len(score)):
        since_alert += 1
        since_breach += 1
        if i < warmup:
            continue
        b, s = float(breach[i]), float(score[i])
        raw[i] = max(b, s)
        if b >= t and since_breach >= breach_gap:
            since_breach, alerts[i] = 0, raw[i]
            continue
        value = max(s, min(b, t * 0.999))
        if value >= t:
            if since_alert < gap:
                value = t * 0.999
            else:
                since_alert = 0
        alerts[i] = value
    return alerts, raw


def routine_z(z: np.ndarray, window: int, decades: float = 5.0) -> np.ndarray:
    """How unusual each z is against the column's own earlier z values (TailLikelihood's rule with
    ``recent`` = 1): on a spiky series large z values are routine and score low."""
    from scipy.special import log_ndtr

    mean, std = trailing_stats(z, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        zz = (z - mean) / (np.nan_to_num(std) + 1e-9 + 1e-3 * np.abs(np.nan_to_num(mean)))
    score = -(log_ndtr(-np.nan_to_num(zz)) / np.log(10.0)) / decades
    return np.where(zz > 0, np.clip(score, 0.0, 1.0), 0.0)


def previous_max(z: np.ndarray, window: int) -> np.ndarray:
    """Per column, the largest value among the ``window`` rows before each row (0 at row 0)."""
    from scipy.ndimage import maximum_filter1d

    upto = maximum_filter1d(z, size=window, axis=0, origin=(window - 1) // 2, mode="constant")
    return np.vstack([np.zeros((1, z.shape[1])), upto[:-1]])


def with_gaussian(
    zmax: float,
    shift: float,
    window: int = 5000,
    floor: float = 1e-3,
    needs: float = 0.0,
    unusual: int = 0,
    calm: float = 0.0,
) -> Variant:
    """A per-column windowed Gaussian component scoring ``0.7 z / zmax`` (capped at 1), gated with
    the others as ``Alerting`` gates; the row threshold raised by ``shift * log10(columns)``."""

    def run(m: Machine) -> np.ndarray:
        key = (zmax, window, floor, needs, unusual, calm)
        cache = m.__dict__.setdefault("_regated", {})
        if key not in cache:
            g = np.minimum(1.0, THRESHOLD * gauss_z(m, window, floor) / zmax) if zmax else 0 * m.raw
            if unusual > 0:  # and only where that z is itself unusual for the column
                g = np.minimum(g, routine_z(gauss_z(m, window, floor), unusual))
            if calm:  # and only on a column whose z rarely reached 3 in the window before
                z = gauss_z(m, window, floor)
                rate, _ = trailing_stats((z >= 3.0).astype(float), window)
                g = np.where(np.nan_to_num(rate) < calm, g, 0.0)
            if unusual < 0:  # and only where that z beats every z of the -unusual rows before
                z = gauss_z(m, window, floor)
                g = np.where(z > previous_max(z, -unusual), g, 0.0)
            g = np.where(m.discord >= needs, g, 0.0)  # only where the discord sees something too
            pairs = [
                regate(m.breach[:, c], np.maximum(np.maximum(m.discord[:, c], m.seasonal[:, c]), g[:, c]))
                for c in range(m.raw.shape[1])
            ]
            cache[key] = (np.column_stack([a for a, _ in pairs]), np.column_stack([r for _, r in pairs]))
        alerts, raw = cache[key]
        t = THRESHOLD + shift * np.log10(m.raw.shape[1])
        return episodes(alerts.max(axis=1), raw.max(axis=1), threshold=t)

    return run


# Name -> variant, in the order they were tried. "baseline" is the default before issue 15 (its
# cache holds that detector's components); "product (defaults)" is the rule chosen from these
# figures. The "product d.. r.." lines vary the joint score's decades and ridge at its default window.
VARIANTS: dict[str, Variant] = {
    "baseline": baseline,
    "raw_open": raw_open,
    **{f"threshold {t}": threshold(t) for t in (0.6, 0.8, 0.9)},
    **{f"gaussian w{w} z{z}": gaussian(w, z) for w in (1000, 5000) for z in (4.0, 6.0, 10.0)},
    **{f"gaussian w5000 z{z}": gaussian(5000, z) for z in (4.5, 5.0)},
    **{f"gaussian w{w} z{z}": gaussian(w, z) for w in (3000, 10000) for z in (4.0, 5.0)},
    **{f"blend w{w} d{d}": blend(w, d) for w in (1000, 5000) for d in (5.0, 10.0, 20.0)},
    **{f"blend w5000 d{d} floor{f}": blend(5000, d, f) for f in (1e-3, 1e-2) for d in (10.0, 20.0)},
    **{f"calibrated d{d}": calibrated(d) for d in (3.0, 4.0)},
    **{f"calibrated_rawopen d{d}": calibrated(d, True) for d in (3.0, 4.0)},
    **{f"drop_flat {s}": drop_flat(s) for s in (1e-3, 1e-2)},
    **{
        f"mahalanobis r{r} d{d}": mahalanobis(5000, 100, r, d, False)
        for r in (0.01, 0.1)
        for d in (10.0, 30.0, 100.0)
    },
    **{
        f"blend_mahalanobis r{r} d{d}": mahalanobis(5000, 100, r, d, True)
        for r in (0.01, 0.1)
        for d in (30.0, 100.0)
    },
    **{f"either t{t} z{z}": either(t, z) for t in (0.7, 0.8, 0.9) for z in (6.0, 8.0, 12.0, 20.0)},
    **{f"agree z{z}": agree(z) for z in (1.0, 2.0, 3.0, 4.0)},
    "regate check": with_gaussian(0.0, 0.0),  # must print baseline's figures
    "no gauss, shift0.1": with_gaussian(0.0, 0.1),
    **{
        f"gauss component z{z} shift{c}": with_gaussian(z, c)
        for z in (4.0, 6.0, 8.0)
        for c in (0.0, 0.05, 0.1, 0.15)
    },
    "gauss component z6.0 shift0.2": with_gaussian(6.0, 0.2),
    **{
        f"gauss component w{w} z6.0 shift{c}": with_gaussian(6.0, c, window=w)
        for w in (2000, 10000)
        for c in (0.05, 0.1)
    },
    **{
        f"gauss component w{w} z{z} shift{c}": with_gaussian(z, c, window=w)
        for w in (2000, 3000)
        for z in (5.0, 6.0, 7.0)
        for c in (0.075, 0.1)
    },
    **{f"product d{d} r{r}": product_rule(d, r) for d in (10.0, 20.0) for r in (0.01, 0.1)},
    **{f"product d10 w{w}": product_rule(10.0, window=w) for w in (2000, 10000, 20000, 100000)},
    "product (defaults)": product_rule(),
    "product without the discount": product_rule(discount=False),
    **{f"product d{d} w20000": product_rule(d) for d in (5.0, 20.0)},
    **{
        f"discount0.1 + mahalanobis r{r} d{d}": discounted_mahalanobis(d, ridge=r)
        for r in (0.01, 0.1)
        for d in (10.0, 20.0, 30.0, 50.0)
    },
    **{
        f"gauss if unusual u{u} w2000 z6.0 shift0.1": with_gaussian(6.0, 0.1, 2000, unusual=u)
        for u in (2000, 5000)
    },
    **{
        f"gauss if calm r{r} w2000 z6.0 shift0.1": with_gaussian(6.0, 0.1, 2000, calm=r)
        for r in (0.005, 0.01, 0.02)
    },
    **{
        f"gauss if beyond window max u{u} w2000 z6.0 shift0.1": with_gaussian(6.0, 0.1, 2000, unusual=-u)
        for u in (200, 500, 2000)
    },
    **{
        f"gauss if discord>={q} w2000 z6.0 shift0.1": with_gaussian(6.0, 0.1, 2000, needs=q)
        for q in (0.2, 0.3, 0.4, 0.5)
    },
}


def evaluate(paths: list[Path], only: list[str] | None, per_machine: bool = False) -> None:
    loaded = [Machine(p) for p in paths]
    datasets = sorted({m.dataset for m in loaded})
    print(f"{'variant':<34}" + "".join(f"{d + ' P/R/F1/ER':>34}" for d in datasets))
    for name, variant in VARIANTS.items():
        if only and not any(o in name for o in only):
            continue
        totals = {d: Counts() for d in datasets}
        for m in loaded:
            totals[m.dataset] = totals[m.dataset] + m.counts(variant(m))
        print(f"{name:<34}" + "".join(f"{totals[d].line():>34}" for d in datasets), flush=True)
        if per_machine:
            for m in loaded:
                print(f"    {m.name:<30}{m.counts(variant(m)).line()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache")
    cache.add_argument("directory", type=Path)
    cache.add_argument("--force", action="store_true")
    run = sub.add_parser("eval")
    run.add_argument("--only", nargs="*")
    run.add_argument("--machines", action="store_true", help="also print each machine's line")
    args = parser.parse_args(argv)
    if args.command == "cache":
        for dataset, folders in machines(args.directory).items():
            for folder in folders:
                cache_machine(dataset, folder, args.force)
        return 0
    paths = sorted(CACHE.glob("*.npz"))
    if not paths:
        print(f"nothing cached in {CACHE}; run the cache command first", file=sys.stderr)
        return 1
    evaluate(paths, args.only, args.machines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
