"""Log lines for long recoveries: progress with a rate and an estimated time left.

A restore that finishes within ``interval`` seconds logs nothing here (the table logs
one line when it starts). A longer one logs at INFO every ``interval`` seconds, and once
at the end::

    counts: restored 120,000 of 500,000 changelog records (24%), 31,250 records/s, about 12s left
    counts: restored 500,000 changelog records in 16.1s (31,056 records/s)

Progress for displays is the table's ``recovery_progress`` (``(position, target)`` per
partition), which this module does not change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

__all__ = ["RESTORE_LOG_INTERVAL", "RestoreProgressLog", "format_duration"]

RESTORE_LOG_INTERVAL = 5.0  # seconds between two progress lines of one restore


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RestoreProgressLog:
    """Progress lines of one restore of ``total`` changelog records (see module doc)."""

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        total: int,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.logger = logger
        self.label = label
        self.total = total
        self.interval = RESTORE_LOG_INTERVAL if interval is None else interval
        self._clock = clock
        self.started = clock()
        self._next = self.started + self.interval
        self.lines = 0

    def update(self, done: int) -> None:
        """``done`` of the ``total`` records are read; log a line if one is due."""
        now = self._clock()
        if now < self._next or self.total <= 0:
            return
        self._next = now + self.interval
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (
            f"about {format_duration((self.total - done) / rate)} left"
            if rate > 0
            else "no progress yet"
        )
        self.logger.info(
            "%s: restored %s of %s changelog records (%d%%), %s records/s, %s",
            self.label,
            f"{done:,}",
            f"{self.total:,}",
            100 * done // self.total,
            f"{rate:,.0f}",
            left,
        )
        self.lines += 1

    def finish(self, done: int) -> None:
        """The restore ended; a closing line when progress lines were logged."""
        if not self.lines:
            return
        elapsed = self._clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        self.logger.info(
            "%s: restored %s changelog records in %s (%s records/s)",
            self.label,
            f"{done:,}",
            format_duration(elapsed),
            f"{rate:,.0f}",
        )
