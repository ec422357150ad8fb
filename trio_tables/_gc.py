"""Fewer cyclic garbage collections while a worker runs: :func:`raised_gc_threshold`.

CPython's cyclic collector examines its youngest generation after every 700 net
allocations of container objects, and each object that survives two such collections
moves to the oldest generation; once those moves add up to a quarter of the oldest
generation, a *full* collection walks every tracked object of the process. A worker
allocates several container objects per event (the fetched ``Record`` named tuples,
librdkafka's messages, ``Event`` objects), and the fetched records wait in the streams'
buffers long enough to survive two young collections. So a worker promoted about one
object per event and ran a full collection every 20-40k events, each walking the
whole heap (kafka-python's and the application's objects, the buffered records:
25-35 ms). Measured over the 200k-event word count (``bench.py``, first to last event,
``gc.callbacks``): 5 full collections, 120-165 ms of the 1.2-1.4 s, and 50-60 ms more
in young collections; 13 % of the time.

Reference counting frees nearly all of those objects (they form no cycles) if the
young generation is examined less often: with the first threshold at 50,000, the same
count ran one young collection (5 ms) and no full one, at 195-220k instead of
142-171k events/s. Cyclic garbage (rare here) waits longer to be freed: at most
``threshold0`` container objects' worth; a young collection walks at most that many
objects (5-13 ms pauses instead of many shorter ones).

The thresholds belong to the process, so this is scoped and reversible (as synapse's
``gc_thresholds`` and inmanta's compile-time thresholds are): the first manager to
start raises the first threshold (never lowers it; the other two are kept) and the
last one to stop restores what was there before, unless the application changed the
thresholds meanwhile (then its setting stays). ``TableManager(gc_threshold=None)``
leaves the collector alone.

Threads: any thread (managers may run in several threads' Trio runs); the module's
counters are changed under ``_lock`` only.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DEFAULT_GC_THRESHOLD", "checked_gc_threshold", "raised_gc_threshold"]

logger = logging.getLogger("trio_tables.manager")

#: The first-generation threshold a worker runs with unless told otherwise.
DEFAULT_GC_THRESHOLD = 50_000

_lock = threading.Lock()
_holders = 0
# The thresholds before the first holder raised them, and what the holders set last.
_before: tuple[int, int, int] | None = None
_ours: tuple[int, int, int] | None = None


def checked_gc_threshold(threshold0: int | None) -> int | None:
    """``threshold0`` if it is a valid ``gc_threshold`` (a positive number, or
    ``None``), else ``ValueError``."""
    if threshold0 is not None and threshold0 < 1:
        raise ValueError(f"gc_threshold must be a positive number or None, not {threshold0}")
    return threshold0


@contextmanager
def raised_gc_threshold(threshold0: int | None) -> Iterator[None]:
    """While the block runs, the cyclic collector's first threshold is at least
    ``threshold0`` (``None``: unchanged). A threshold of 0 (collection disabled) is
    kept. Nested and concurrent blocks share one raise; the last to leave restores the
    thresholds found by the first, unless someone else changed them meanwhile."""
    global _holders, _before, _ours
    if threshold0 is None:
        yield
        return
    checked_gc_threshold(threshold0)
    with _lock:
        current = _thresholds()
        if _holders == 0:
            _before = current
        if 0 < current[0] < threshold0:
            raised = (threshold0, current[1], current[2])
            gc.set_threshold(*raised)
            _ours = raised
            logger.debug("gc thresholds %s -> %s while the manager runs", current, raised)
        elif _holders == 0:
            _ours = current
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                if _before is not None and _thresholds() == _ours:
                    gc.set_threshold(*_before)
                _before = _ours = None


def _thresholds() -> tuple[int, int, int]:
    first, second, third = gc.get_threshold()
    return first, second, third
