"""Figures counted per commit cycle: :class:`CycleMetrics`.

What the ledger and the tables do not already know is counted here, once per commit
cycle (never per event): cycles run, cycles failed, how long each took (a histogram
with fixed buckets), changelog records sent per table. Plain data, no I/O, no
dependency: :mod:`trio_tables._web._prometheus` turns it, with the ledger, the tables
and the status, into Prometheus metrics at scrape time.

Threads: only the Trio thread touches it.
"""

from __future__ import annotations

import bisect

__all__ = ["LATENCY_BUCKETS", "CycleMetrics"]

#: Upper bounds (seconds) of the commit latency histogram's buckets (``+Inf`` added).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class CycleMetrics:
    """Counts of a worker's commit cycles (see the module docstring)."""

    def __init__(self) -> None:
        self.cycles = 0
        self.failed = 0
        # One count per bucket of LATENCY_BUCKETS, and one for +Inf (not cumulative).
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.last_latency: float | None = None
        self.changelog_sent: dict[str, int] = {}

    def cycle_done(self, seconds: float, *, failed: bool) -> None:
        """A cycle that took changes ended after ``seconds`` (``failed``: it raised)."""
        self.cycles += 1
        if failed:
            self.failed += 1
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.last_latency = seconds

    def records_sent(self, table: str, count: int) -> None:
        """``count`` changelog records of ``table`` were sent (and acknowledged)."""
        if count:
            self.changelog_sent[table] = self.changelog_sent.get(table, 0) + count

    def latency_buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(upper bound, count)`` pairs, Prometheus' histogram layout."""
        total = 0
        buckets = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.latency_counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return buckets
