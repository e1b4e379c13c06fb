"""An incident's chart as a PNG, drawn in process from the report's chart data (``pipeline/chart.py``).

One panel per charted query (the alert, then the top hypotheses), sharing the time axis: the
baseline plain, the incident shaded from where the change started (the onset, else the alert), the
onset a dashed line, the alert a solid one, the rule's threshold a dotted line on the alert panel.
1000×600 px, what a Slack preview shows without scaling it down much.

matplotlib is an optional extra (``charts``), imported on first use with the Agg backend's canvas
and no pyplot (no global figure state, so drawing in a worker thread is safe). Without it, or when
a drawing fails or takes too long, ``ChartUnavailableError`` says why; callers answer 503 or give
the Slack upload up. Drawing takes a fraction of a second, but it is CPU work: async callers use
``render_png_async``, which draws in a thread under a deadline.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentic_observability.errors import ChartUnavailableError
from agentic_observability.readable import format_value

log = logging.getLogger(__name__)

WIDTH_PX, HEIGHT_PX, DPI = 1000, 600, 100
RENDER_SECONDS = 15.0  # the first drawing also imports matplotlib and builds its font cache (~1 s)
INSTALL_HINT = "pip install 'agentic-observability[charts]'"
LEGEND_CHARS = 40
SHORT_WINDOW = 900.0  # seconds; below it ticks come closer than a minute apart
# Colour-blind safe (Okabe-Ito), one per series in a panel
COLOURS = ("#0072B2", "#009E73", "#CC79A7", "#56B4E9")
INCIDENT_SHADE, ALERT_COLOUR, ONSET_COLOUR, THRESHOLD_COLOUR = "#D55E00", "#C00000", "#E69F00", "#444444"

# One drawing at a time, in a thread of its own: matplotlib's font caches are shared, and a burst
# of charts (a restart with many uploads due) must not take the threads the pipeline's ranking uses.
MAX_PANELS = 6  # the pipeline keeps at most 3 (the alert, two hypotheses); a stored report is data
_drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chart")


async def render_png_async(chart: Mapping[str, Any], seconds: float = RENDER_SECONDS) -> bytes:
    """``render_png`` off the event loop, within ``seconds`` (waiting for its turn included)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds):
            return await loop.run_in_executor(_drawer, render_png, chart)
    except TimeoutError:
        message = f"drawing the chart took longer than {seconds:g}s"
        raise ChartUnavailableError(message, retryable=True) from None


def render_png(chart: Mapping[str, Any]) -> bytes:
    """The chart as PNG bytes. Raises ChartUnavailableError, never anything else."""
    panels = _panels(chart)[:MAX_PANELS] if isinstance(chart, Mapping) else []
    if not panels:
        raise ChartUnavailableError("the chart has no series to draw")
    figure_class, canvas_class = _matplotlib()
    try:
        return _draw(figure_class, canvas_class, chart, panels)
    except Exception as exc:  # data it cannot draw, or a matplotlib bug: the same again on a retry
        log.warning("an incident chart could not be drawn", exc_info=True)
        raise ChartUnavailableError(
            f"the chart data could not be drawn ({type(exc).__name__}: {exc})"[:300]
        ) from exc


def _matplotlib() -> tuple[Any, Any]:
    """The Figure and Agg canvas classes, imported on first use."""
    _writable_config_dir()
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartUnavailableError(f"matplotlib is not installed ({INSTALL_HINT})") from exc
    return Figure, FigureCanvasAgg


def _writable_config_dir() -> None:
    """matplotlib writes its font cache under ~/.config unless MPLCONFIGDIR says otherwise; in a pod
    with a read-only root filesystem it would warn and make a new temporary one in every process.
    A fixed directory per user under the temp dir (an emptyDir in the Helm chart) is reused."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    folder = Path(tempfile.gettempdir()) / f"agentic-obs-matplotlib-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        log.warning("no writable matplotlib config directory at %s (%s); matplotlib picks one", folder, exc)
        return
    os.environ["MPLCONFIGDIR"] = str(folder)


def _panels(chart: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    """The series grouped by panel, in the order they came; series without points are left out."""
    grouped: dict[Any, list[Mapping[str, Any]]] = {}
    for series in chart.get("series") or []:
        if isinstance(series, Mapping) and series.get("timestamps"):
            grouped.setdefault(series.get("panel"), []).append(series)
    return list(grouped.values())


def _draw(
    figure_class: Any, canvas_class: Any, chart: Mapping[str, Any], panels: list[list[Mapping[str, Any]]]
) -> bytes:
    import matplotlib

    # Titles and legends quote alert text and label values: "$5 and $10" must not be read as
    # mathtext (italics, or a ValueError on "$\\frac{x$" that would lose the chart).
    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw_figure(figure_class, canvas_class, chart, panels)


def _draw_figure(
    figure_class: Any, canvas_class: Any, chart: Mapping[str, Any], panels: list[list[Mapping[str, Any]]]
) -> bytes:
    figure = figure_class(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for number, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        _draw_panel(ax, chart, panel, first=number == 0)
    _time_axis(axes[-1], chart)
    figure.suptitle(_shorten(str(chart.get("title") or "incident"), 90), fontsize=12, fontweight="bold")
    buffer = io.BytesIO()
    # No "Software" chunk naming the version: with the same data and install, the same bytes.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _draw_panel(ax: Any, chart: Mapping[str, Any], panel: list[Mapping[str, Any]], first: bool) -> None:
    for colour, series in zip(COLOURS, panel, strict=False):
        label = _shorten(str(series.get("label") or series.get("signal") or "value"), LEGEND_CHARS)
        ax.plot(_times(series["timestamps"]), series["values"], color=colour, linewidth=1.6, label=label)
    _mark_incident(ax, chart, first)
    unit = panel[0].get("unit")
    threshold = panel[0].get("threshold")
    if threshold:
        value = float(threshold["value"])
        label = f"threshold {threshold['operator']} {format_value(value, unit)}"
        ax.axhline(value, color=THRESHOLD_COLOUR, linestyle=":", linewidth=1.5, label=label)
    _value_axis(ax, unit)
    ax.set_title(_panel_title(chart, panel[0]), fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0)
    # beside the panel, not over it: the baseline is what the incident is compared with
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _value_axis(ax: Any, unit: str | None) -> None:
    """Ticks in the signal's unit, as the report writes values ("500 ms", "1.5 GiB", "12%")."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_value(value, unit)))


def _mark_incident(ax: Any, chart: Mapping[str, Any], first: bool) -> None:
    """Shade the incident, from where the change started (the onset, else the alert) to the window's
    end, and mark both moments; named in the first panel's legend only ("_" labels are not shown)."""
    alert_at, onset, end = chart.get("alert_at"), chart.get("onset"), chart.get("end")
    since = min((t for t in (onset, alert_at) if t is not None), default=None)
    if since is not None and end is not None and end > since:
        ax.axvspan(
            *_times([since, end]), color=INCIDENT_SHADE, alpha=0.08, label="incident" if first else "_"
        )
    if onset is not None:
        moment = _times([onset])[0]
        ax.axvline(moment, color=ONSET_COLOUR, linestyle="--", linewidth=1.5, label="onset" if first else "_")
    if alert_at is not None:
        moment = _times([alert_at])[0]
        ax.axvline(moment, color=ALERT_COLOUR, linewidth=1.5, label="alert" if first else "_")


def _time_axis(ax: Any, chart: Mapping[str, Any]) -> None:
    """Clock times at ticks that suit the window; seconds when it is short enough to need them."""
    from matplotlib.dates import AutoDateLocator, DateFormatter

    span = float(chart.get("end") or 0) - float(chart.get("start") or 0)
    ax.xaxis.set_major_locator(AutoDateLocator(tz=UTC, maxticks=8))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S" if span < SHORT_WINDOW else "%H:%M", tz=UTC))
    ax.set_xlabel("time (UTC)", fontsize=9)


def _panel_title(chart: Mapping[str, Any], series: Mapping[str, Any]) -> str:
    if series.get("role") != "hypothesis":
        return _shorten(str(series.get("title") or "alert"), 110)
    entity = f"{chart.get('entity_label') or 'entity'} {series.get('entity', '?')}"
    return f"Hypothesis {series.get('rank', '?')}: {entity} · {series.get('signal', '?')}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _times(timestamps: Sequence[float]) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), UTC) for t in timestamps]
