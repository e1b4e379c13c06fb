"""Keep a long-running process's heap from fragmenting (glibc only; a no-op elsewhere).

Watches create and drop detectors as pods come and go; each holds numpy buffers of a few hundred
KiB, allocated in worker threads. glibc raises its mmap threshold after such a buffer is freed, so
later ones land in the thread arenas, which fragment and are not given back: RSS crept by several
MiB a minute under pod churn while every tracked object stayed bounded. A fixed threshold keeps
large buffers in mmap, returned to the system when freed. Same as MALLOC_MMAP_THRESHOLD_=131072.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE = 128 * 1024  # bytes: allocations from here on get their own mapping


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def release_free_memory() -> bool:
    """Give the free pages inside the allocator's arenas back to the system (glibc ``malloc_trim``).

    Python's own allocations stay flat under churn (tracemalloc), yet RSS crept ~1.5 MiB a minute:
    native allocations (SQLite, the sinks' and Prometheus clients' C code) freed in worker threads
    leave holes in glibc's arenas that it only returns at the top of the heap. Trimming after each
    retention pass returns them; it takes milliseconds and changes no data. False without glibc."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def limit_fragmentation() -> bool:
    """Pin glibc's mmap and trim thresholds; False where there is no glibc ``mallopt``."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, LARGE)) and bool(mallopt(M_TRIM_THRESHOLD, LARGE))
    if not done:
        log.info("mallopt refused the heap settings; running with the allocator's defaults")
    return done
