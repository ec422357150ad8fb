"""One changelog reader per worker: every table's restores, standby copies and global
tables read through one restore consumer (one Kafka client), whatever the number of
tables (as Kafka Streams keeps one restore consumer per stream thread).

::

    reader nursery
    └── fetch task        the only caller of the shared consumer's poll/assign/seek/
                          pause/resume: applies the views' changes, polls, and hands
                          each partition's records to the view that assigned it

Each table task opens a *view* (:meth:`SharedChangelogReader.open_consumer`): a
:class:`~._base.RestoreConsumer` of its own. A view's ``assign``, ``seek``, ``pause``
and ``resume`` only record what it wants (the fetch task applies it before its next
poll); its ``poll`` takes records from its own buffer. Views assign disjoint partitions
(two views cannot share one consumer position).

Fairness: the shared consumer fetches every unpaused partition; a view whose buffer
holds more than ``buffer_records`` records (by default twice the larger of its
``max_poll_records`` and one shared poll: pausing a librdkafka partition drops what it
prefetched, so the bound must not be hit by every poll) has its partitions paused in the
shared consumer until its task took them, so a slow table never holds up the others'
reads and memory stays bounded.

Threads: everything here runs on the Trio thread; the shared consumer's own threads are
its transport's business.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from ..errors import TransportClosed
from ._base import TP, IsolationLevel, Record, RestoreConsumer

__all__ = ["SharedChangelogReader", "open_shared_reader"]

logger = logging.getLogger("trio_tables.transport")

#: Records one poll of the shared consumer may return (over every view).
SHARED_POLL_RECORDS = 10_000
#: How long the fetch task's poll waits for records; bounds how late a change of a view
#: (assign, seek, pause) reaches the shared consumer while nothing arrives.
POLL_TIMEOUT = 0.1


class _Round:
    __slots__ = ("done", "error", "result", "tps")

    def __init__(self) -> None:
        self.tps: set[TP] = set()
        self.done = False
        self.result: dict[TP, int] = {}
        self.error: Exception | None = None


class _Coalescer:
    """Offset requests of many views share calls to the shared client: a request made
    while a call is in flight joins the next call, which asks for every partition
    requested meanwhile (100 tables restoring at once make a few calls, not 100).

    Cancellation: a cancelled request leaves its round to the next requester of it,
    which makes the call instead."""

    def __init__(self, fetch: Callable[[list[TP]], Awaitable[dict[TP, int]]]) -> None:
        self._fetch = fetch
        self._lock = trio.Lock()  # FIFO: rounds are served in order
        self._open: _Round | None = None

    async def get(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = frozenset(tps)
        if not wanted:
            await trio.lowlevel.checkpoint()
            return {}
        if self._open is None:
            self._open = _Round()
        current = self._open
        current.tps |= wanted
        async with self._lock:
            if not current.done:
                if self._open is current:
                    self._open = None  # later requests make the next round
                try:
                    current.result = await self._fetch(sorted(current.tps))
                except Exception as exc:
                    current.error = exc
                current.done = True
        if current.error is not None:
            raise current.error
        return {tp: current.result[tp] for tp in wanted}


class _View:
    """Implements :class:`~._base.RestoreConsumer` over a :class:`SharedChangelogReader`.

    Cancellation: ``poll`` takes records from the buffer in one step after its last
    checkpoint (a cancelled poll took nothing); ``assign`` asks for the beginning of new
    partitions first and changes nothing if cancelled there; ``seek``, ``pause`` and
    ``resume`` change state in one step.
    """

    def __init__(
        self, reader: SharedChangelogReader, name: str, max_poll_records: int, buffer_records: int
    ) -> None:
        self._reader = reader
        self.name = name
        self.max_poll_records = max(max_poll_records, 1)
        self.high_water = max(buffer_records, 1)
        self._assignment: frozenset[TP] = frozenset()
        self._paused: frozenset[TP] = frozenset()
        self.buffer: dict[TP, list[Record]] = {}
        self.buffered = 0
        self.arrived = trio.Event()
        self.closed = False

    # -- reading ------------------------------------------------------------------------
    def _ready(self) -> list[TP]:
        paused = self._paused
        return [tp for tp, records in self.buffer.items() if records and tp not in paused]

    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        self._check()
        if not self._ready():
            self.arrived = trio.Event()
            with trio.move_on_after(timeout):
                await self.arrived.wait()
            self._check()
        else:
            await trio.lowlevel.checkpoint()
        # No checkpoint from here on: taken records are the caller's.
        limit = max_records or self.max_poll_records
        out: dict[TP, list[Record]] = {}
        for tp in self._ready():
            if limit <= 0:
                break
            records = self.buffer[tp]
            if len(records) <= limit:
                out[tp] = records
                del self.buffer[tp]
            else:
                out[tp] = records[:limit]
                del records[:limit]
            limit -= len(out[tp])
        if out:
            was_full = self.buffered > self.high_water
            self.buffered -= sum(len(r) for r in out.values())
            if was_full and self.buffered <= self.high_water:
                self._reader.wake()
        return out

    def deliver(self, tp: TP, records: list[Record]) -> None:
        """(Fetch task) Records of ``tp`` read by the shared consumer."""
        waiting = self.buffer.get(tp)
        if waiting:
            waiting.extend(records)
        else:
            self.buffer[tp] = records  # the poll's own list: no copy
        self.buffered += len(records)
        self.arrived.set()

    def drop(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.buffered -= len(self.buffer.pop(tp, ()))

    @property
    def full(self) -> bool:
        return self.buffered > self.high_water

    # -- positions and assignment -------------------------------------------------------
    async def assign(self, tps: Iterable[TP]) -> None:
        self._check()
        wanted = frozenset(tps)
        taken = {tp for tp in wanted if self._reader.owner_of(tp) not in (None, self)}
        if taken:
            raise ValueError(
                f"{', '.join(sorted(map(str, taken)))} already read by another consumer of "
                "this changelog reader: partitions of one reader are disjoint"
            )
        new = sorted(wanted - self._assignment)
        starts = await self._reader.beginnings.get(new)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        self._set_assignment(wanted, starts)

    def _set_assignment(self, wanted: frozenset[TP], starts: Mapping[TP, int]) -> None:
        self.drop(self._assignment - wanted)
        self._reader.change_owner(self, self._assignment - wanted, starts)
        self._assignment = wanted
        self._paused &= wanted

    def assignment(self) -> frozenset[TP]:
        return self._assignment

    async def seek(self, tp: TP, offset: int) -> None:
        self._check_assigned([tp])
        await trio.lowlevel.checkpoint()
        self.drop([tp])
        self._reader.seek(tp, offset)

    async def position(self, tp: TP) -> int:
        self._check_assigned([tp])
        async with self._reader.lock:  # no poll of the shared consumer in between
            self._check()
            self._check_assigned([tp])
            pending = self._reader.pending_seek(tp)
            if pending is not None:
                return pending
            if records := self.buffer.get(tp):
                return records[0].offset
            return await self._reader.consumer.position(tp)

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        self._check()
        return await self._reader.beginnings.get(tps)

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        self._check()
        return await self._reader.ends.get(tps)

    async def pause(self, tps: Iterable[TP]) -> None:
        wanted = self._check_assigned(tps)
        await trio.lowlevel.checkpoint()
        self._paused |= frozenset(wanted)
        self._reader.wake()

    async def resume(self, tps: Iterable[TP]) -> None:
        wanted = self._check_assigned(tps)
        await trio.lowlevel.checkpoint()
        self._paused -= frozenset(wanted)
        self._reader.wake()
        if self._ready():
            self.arrived.set()

    def paused(self) -> frozenset[TP]:
        return self._paused

    def close(self) -> None:
        """Give every partition back (no checkpoint: safe in a cancelled scope)."""
        if not self.closed:
            self._set_assignment(frozenset(), {})
            self.closed = True
            self.arrived.set()

    def _check(self) -> None:
        if self.closed:
            raise TransportClosed(f"changelog reader consumer {self.name!r} is closed")
        if self._reader.error is not None:
            raise TransportClosed(
                f"the worker's changelog reader failed: {self._reader.error!r}"
            ) from self._reader.error

    def _check_assigned(self, tps: Iterable[TP]) -> list[TP]:
        self._check()
        wanted = list(tps)
        if missing := [tp for tp in wanted if tp not in self._assignment]:
            raise ValueError(
                f"{', '.join(sorted(map(str, missing)))} not assigned to this consumer"
            )
        return wanted


class SharedChangelogReader:
    """Serves many :class:`~._base.RestoreConsumer` views from one restore consumer.

    Created by :func:`open_shared_reader`; its fetch task runs in that block's nursery.
    If the shared consumer fails, every view's next call raises
    :class:`~trio_tables.errors.TransportClosed` naming the error.
    """

    def __init__(self, consumer: RestoreConsumer) -> None:
        self.consumer = consumer
        self.beginnings = _Coalescer(consumer.beginning_offsets)
        self.ends = _Coalescer(consumer.end_offsets)
        self.lock = trio.Lock()  # held around every state change and poll of `consumer`
        self.error: BaseException | None = None
        self._owners: dict[TP, _View] = {}
        self._seeks: dict[TP, int] = {}  # wanted positions not yet applied
        self._epochs: dict[TP, int] = {}  # bumped by every seek or change of owner
        self._wake = trio.Event()
        self._views: set[_View] = set()

    # -- for the views ------------------------------------------------------------------
    def owner_of(self, tp: TP) -> _View | None:
        return self._owners.get(tp)

    def pending_seek(self, tp: TP) -> int | None:
        return self._seeks.get(tp)

    def wake(self) -> None:
        self._wake.set()

    def change_owner(self, view: _View, removed: Iterable[TP], starts: Mapping[TP, int]) -> None:
        for tp in removed:
            del self._owners[tp]
            self._seeks.pop(tp, None)
            self._bump(tp)
        for tp, start in starts.items():
            self._owners[tp] = view
            self._seeks[tp] = start
            self._bump(tp)
        self.wake()

    def seek(self, tp: TP, offset: int) -> None:
        self._seeks[tp] = offset
        self._bump(tp)
        self.wake()

    def _bump(self, tp: TP) -> None:
        self._epochs[tp] = self._epochs.get(tp, 0) + 1

    @asynccontextmanager
    async def open_consumer(
        self, name: str = "", *, max_poll_records: int = 10_000, buffer_records: int | None = None
    ) -> AsyncIterator[RestoreConsumer]:
        """A restore consumer of its own for the block, reading through the shared one.
        Leaving the block gives its partitions back (buffered records are dropped).
        ``buffer_records`` (default: twice the larger of ``max_poll_records`` and one
        shared poll) is the bound above which its partitions pause."""
        if buffer_records is None:
            buffer_records = 2 * max(max_poll_records, SHARED_POLL_RECORDS)
        if self.error is not None:
            raise TransportClosed(f"the worker's changelog reader failed: {self.error!r}")
        view = _View(self, name, max_poll_records, buffer_records)
        self._views.add(view)
        try:
            yield view
        finally:
            view.close()
            self._views.discard(view)

    # -- the fetch task ---------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the views' changes, poll, hand out records; until cancelled. An error of
        the shared consumer ends the task (the views raise it)."""
        task_status.started()
        try:
            while True:
                if not self._fetchable() and not self._changes_pending():
                    self._wake = trio.Event()
                    await self._wake.wait()
                async with self.lock:
                    await self._apply()
                    if self._fetchable():
                        await self._poll_once()
                # Tasks waiting for the lock (a view's position) go first.
                await trio.lowlevel.checkpoint()
        except Exception as exc:
            logger.exception("changelog reader failed")
            self.error = exc
            for view in list(self._views):
                view.arrived.set()

    def _wanted_paused(self) -> frozenset[TP]:
        paused: set[TP] = set()
        for view in self._views:
            paused |= view.assignment() if view.full else view.paused()
        return frozenset(paused)

    def _fetchable(self) -> bool:
        return bool(self._owners.keys() - self._wanted_paused())

    def _changes_pending(self) -> bool:
        consumer = self.consumer
        return (
            bool(self._seeks)
            or consumer.assignment() != self._owners.keys()
            or consumer.paused() != self._wanted_paused()
        )

    async def _apply(self) -> None:
        consumer = self.consumer
        # Views change their wishes while this awaits: loop until the consumer has them.
        while True:
            wanted = frozenset(self._owners)
            if consumer.assignment() != wanted:
                await consumer.assign(wanted)
                continue
            if not self._seeks:
                break
            tp, offset = next(iter(self._seeks.items()))
            await consumer.seek(tp, offset)
            if self._seeks.get(tp) == offset:
                del self._seeks[tp]
        paused = self._wanted_paused() & consumer.assignment()
        current = consumer.paused()
        if resume := current - paused:
            await consumer.resume(resume)
        if pause := paused - current:
            await consumer.pause(pause)

    async def _poll_once(self) -> None:
        epochs = dict(self._epochs)
        owners = dict(self._owners)
        batch = await self.consumer.poll(timeout=POLL_TIMEOUT, max_records=SHARED_POLL_RECORDS)
        for tp, records in batch.items():
            view = owners.get(tp)
            if (
                not records
                or view is None
                or self._owners.get(tp) is not view
                or self._epochs.get(tp) != epochs.get(tp)
            ):
                continue  # sought or given back meanwhile: read again from the new place
            view.deliver(tp, records if isinstance(records, list) else list(records))


OpenRestoreConsumer = Callable[..., AbstractAsyncContextManager[RestoreConsumer]]


@asynccontextmanager
async def open_shared_reader(
    open_restore_consumer: OpenRestoreConsumer, *, isolation_level: IsolationLevel
) -> AsyncIterator[SharedChangelogReader]:
    """Open one restore consumer (``open_restore_consumer`` of a transport) and serve
    views of it for the block. Leaving the block stops the fetch task and closes the
    consumer; views still open raise :class:`~trio_tables.errors.TransportClosed`."""
    async with (
        open_restore_consumer(
            isolation_level=isolation_level, max_poll_records=SHARED_POLL_RECORDS
        ) as consumer,
        trio.open_nursery() as nursery,
    ):
        reader = SharedChangelogReader(consumer)
        await nursery.start(reader.run)
        try:
            yield reader
        finally:
            reader.error = reader.error or TransportClosed("the changelog reader is closed")
            for view in list(reader._views):
                view.arrived.set()
            nursery.cancel_scope.cancel()
