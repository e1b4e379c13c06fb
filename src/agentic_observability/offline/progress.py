"""A progress bar for long offline runs (stderr)."""

from __future__ import annotations

import time
from typing import TextIO


def show_progress(done: int, total: int, started: float, out: TextIO, unit: str = "cases") -> None:
    """A bar redrawn in place on a terminal; in logs, a line every tenth of the way."""
    if not out.isatty() and done != total and done % max(total // 10, 1):
        return
    width = 30
    filled = int(width * done / total)
    rate = done / max(time.perf_counter() - started, 1e-9)
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}  {rate:.1f} {unit}/s"
    out.write(f"\r{line}" if out.isatty() else f"{line}\n")
    if done == total and out.isatty():
        out.write("\n")
    out.flush()
