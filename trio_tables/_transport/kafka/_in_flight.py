"""What both Kafka producers (kafka-python's and librdkafka's) share about records in
flight: the acknowledgements' way back into Trio (:class:`AckQueue`) and the accounting
of records handed to a client and not yet settled (:class:`InFlight`).

Threads: a client's threads only call :meth:`AckQueue.on_done` (its lock guards
``_pending`` and ``_scheduled``); everything else, :class:`InFlight` whole, is the Trio
thread's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import trio

from .._base import Delivery

__all__ = ["AckQueue", "InFlight", "Outcome"]

Outcome = tuple[Delivery, Any, BaseException | None]
"""A delivery, the client's report of it (its own form) and the error that stopped it."""


class AckQueue:
    """Hands a client's reports to the Trio thread in bursts: one ``run_sync_soon`` per
    burst, not one per record."""

    def __init__(self, settle: Callable[[list[Outcome]], None]) -> None:
        self._settle = settle
        self._token = trio.lowlevel.current_trio_token()
        # Guards _pending and _scheduled: written by the client's threads (on_done) and
        # the Trio thread (_drain).
        self._lock = threading.Lock()
        self._pending: list[Outcome] = []
        self._scheduled = False

    def on_done(self, delivery: Delivery, outcome: Any) -> None:
        """Client callback (any thread): ``outcome`` is the client's report, or the
        exception that stopped the record."""
        error = outcome if isinstance(outcome, BaseException) else None
        with self._lock:
            self._pending.append((delivery, None if error else outcome, error))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(trio.RunFinishedError):  # the run is over; nobody waits
            self._token.run_sync_soon(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        self._settle(pending)


class InFlight:
    """Records handed to a client and not yet settled: the bound senders wait for, and
    the first failure since it was last taken (what ``flush()`` raises). Trio thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._room = trio.lowlevel.ParkingLot()
        self._first_error: Delivery | None = None

    async def wait_for_room(self) -> None:
        """Wait while ``limit`` records are in flight (a batch may pass it by its size)."""
        while self.count >= self.limit:
            await self._room.park()

    def add(self, count: int) -> None:
        """``count`` records are about to be handed over (counted before: their reports
        can only come after)."""
        self.count += count

    def withdraw(self, count: int) -> None:
        """``count`` records counted by :meth:`add` were never handed over."""
        self.count -= count
        self._room.unpark_all()

    def settled(self, count: int, failed: Delivery | None) -> None:
        """``count`` records were settled; ``failed`` is the first of them that failed."""
        if failed is not None and self._first_error is None:
            self._first_error = failed
        self.count -= count
        self._room.unpark_all()

    async def wait_settled(self, *, raise_failure: bool = True) -> None:
        """Wait until nothing is in flight, then take the first failure since the last
        call: raise it (:class:`~trio_tables.errors.DeliveryFailed` naming the record),
        or forget it. Cancellation: the records stay in flight; a later call waits for
        them and reports their failures."""
        while self.count:
            await self._room.park()
        failed, self._first_error = self._first_error, None
        if failed is not None and raise_failure:
            failed.result()
