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

Threads: :func:`release_freed_memory` runs the call in a Trio worker thread (the GIL is
released during it); glibc locks each arena while trimming it, so other threads keep
allocating.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

import trio

__all__ = ["can_release_freed_memory", "release_freed_memory"]

logger = logging.getLogger("trio_tables.memory")


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


async def release_freed_memory() -> None:
    """Return the C allocator's free pages to the system (glibc ``malloc_trim(0)``) in a
    worker thread; nothing elsewhere. Cancellation: the call finishes first (a few
    milliseconds), then the cancellation is delivered."""
    if _malloc_trim is not None:
        await trio.to_thread.run_sync(_malloc_trim, 0)
