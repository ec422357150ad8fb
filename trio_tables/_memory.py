"""Giving memory that was freed back to the operating system: :func:`release_freed_memory`.

A commit cycle allocates and frees tens of megabytes: changelog records and their
deliveries, the store's statement parameters, librdkafka's copies of the records, dicts
of the cycle's changes (all but the smallest objects come from the C allocator, from
whichever thread made them). glibc keeps what was freed in its per-thread arenas for
reuse; fragmented, most of it never returns to the system. In the 1M-key sqlite build
(``bench.py --only big``) ``mallinfo2`` showed 60-110 MB of the process's ~300 MB as
free blocks held by malloc. ``malloc_trim(0)`` returns the free pages of every arena
(``madvise(MADV_DONTNEED)``); it took 0.1-10 ms per call there. Dask's workers do the
same for the same reason.

Only glibc has ``malloc_trim``; elsewhere (musl, macOS, Windows) this does nothing.

Each trim makes the next allocations fault pages in again (system time): trimming after
every cycle cost the 200k-event word count on sqlite 8.8-10.1 instead of 7.2-7.9 us of
CPU per event, and asking glibc how much it holds freed (``mallinfo2``) walks every free
block under the arenas' locks (up to 6 ms). So the commit cycle of a worker with a
persistent store trims once at least ``TRIM_EVERY_ROWS`` store rows were written since
the last trim (the volume that makes the garbage), in the worker thread that writes the
stores (no extra thread hop; the in-memory store has no such thread and no trim).

Threads: any thread; glibc locks each arena while trimming it (other threads keep
allocating) and ctypes releases the GIL during the call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["TRIM_EVERY_ROWS", "can_release_freed_memory", "release_freed_memory"]

#: Store rows written between two trims (the 1M-key build writes ~60k per cycle).
TRIM_EVERY_ROWS = 100_000


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def can_release_freed_memory() -> bool:
    """Whether :func:`release_freed_memory` does anything here (glibc)."""
    return _malloc_trim is not None


def release_freed_memory() -> bool:
    """Return the C allocator's free pages to the system (glibc ``malloc_trim(0)``);
    nothing elsewhere. Whether it could. Blocking (0.1-10 ms): call it in a worker
    thread."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
