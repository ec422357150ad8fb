"""THE commit cycle, written once, with a small strategy per processing guarantee.

A cycle (:meth:`CommitCycle.run`):

1. closes the windows whose time has come (their tombstones commit with the changes
   before them);
2. *holds* the streams between two events (events in process get a grace period;
   partitions whose event is still in process sit the cycle out);
3. *snapshots* the processed source offsets and *takes* every table's changes
   (changelog records and the overlay, which becomes the persisting layer): atomic, no
   checkpoint in between;
4. *delivers*: sends the changelog records and waits for the acknowledgements (under
   ``exactly_once`` also adds the source offsets to the transaction and commits it);
5. *persists*: writes the persisting layers to the stores with the last acknowledged
   changelog offset and the snapshot's source offsets (one store transaction per table
   partition);
6. returns the offsets that may now be committed (under ``at_least_once`` the caller
   commits them through the group consumer; under ``exactly_once`` they were committed
   with the transaction).

Cancellation: steps 1 and 2 may be cancelled (nothing was taken). From the moment the
changes are taken (3) until they are persisted (5) the cycle is shielded, bounded by
``commit_timeout``: a cancellation waits for it, so taken changes never vanish while
the same changes reach the store or the offsets move. A failure (or the timeout) there
stops the worker's commits for good (:class:`WorkerHealth`) and raises: the next owner
of the partitions rebuilds from what was persisted and committed.

Threads: only the Trio thread runs a cycle; persistent stores are written in a worker
thread (the store's own data only), the tables' bookkeeping happens back on the Trio
thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Protocol

import attrs
import trio

from ._flow import StreamFlow
from ._ledger import PartitionLedger
from ._memory import TRIM_EVERY_ROWS, release_freed_memory
from ._metrics import CycleMetrics
from ._table import Collection, PersistBatch
from ._transport._base import TP, Delivery, OutgoingRecord, Producer
from .errors import CommitFailed

__all__ = [
    "AtLeastOnce",
    "CommitCycle",
    "CommitStrategy",
    "CycleResult",
    "WorkerHealth",
    "critical_section",
]

Taken = list[tuple[Collection, list[OutgoingRecord]]]


@contextmanager
def critical_section(deadline: float) -> Iterator[None]:
    """Shielded from every outside cancellation, bounded by ``deadline``
    (:class:`trio.TooSlowError` when it passes)."""
    with trio.CancelScope(shield=True, deadline=deadline) as scope:
        yield
    if scope.cancelled_caught:
        raise trio.TooSlowError


class WorkerHealth:
    """Whether the worker is stopping because something failed: then nothing more is
    committed (a half-processed event's changes must never reach a store or a commit).
    A clean shutdown leaves the group before the manager's nursery is cancelled, so only
    a failure (or a cancellation of the whole manager) turns commits off."""

    def __init__(self) -> None:
        self._failed = False
        self.scope: trio.CancelScope | None = None  # the manager's nursery scope

    def fail(self) -> None:
        self._failed = True

    def failing(self) -> bool:
        return self._failed or (self.scope is not None and self.scope.cancel_called)


@attrs.frozen
class CycleResult:
    """What a cycle did: ``snapshot``, the processed offsets whose effects are now
    persisted; ``offsets``, those of them that move past the last commit (under
    ``exactly_once``: committed with the transaction); ``busy``, partitions left out
    because an event of theirs was still in process."""

    snapshot: Mapping[TP, int] = attrs.field(factory=dict)
    offsets: Mapping[TP, int] = attrs.field(factory=dict)
    busy: frozenset[int] = frozenset()


class CommitStrategy(Protocol):
    """What differs between ``at_least_once`` and ``exactly_once``."""

    #: Keep the streams held until the delivery is over (``exactly_once``: an output
    #: sent by a new event would join a transaction whose offsets exclude it).
    holds_streams: bool
    #: The offsets are committed by :meth:`deliver` (in the transaction).
    commits_offsets: bool

    async def proceed(
        self, busy: frozenset[int], releasing: frozenset[int], grace: float
    ) -> bool:
        """Whether the cycle goes on with ``busy`` partitions in process (``False``:
        skip it; raising fails the worker)."""

    async def deliver(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TP, int], deadline: float
    ) -> list[Delivery]:
        """Send ``records`` and make them durable (and ``offsets``, if this strategy
        commits them) by ``deadline``. What must not be interrupted runs in a
        :func:`critical_section`; a cancellation elsewhere fails the cycle."""

    async def failed(self, exc: BaseException) -> BaseException:
        """The cycle failed after the changes were taken: clean up (shielded) and
        return the error to raise."""


class AtLeastOnce:
    """``at_least_once``: send and flush; offsets are committed after the cycle."""

    holds_streams = False
    commits_offsets = False

    def __init__(self, producer: Callable[[], Producer]) -> None:
        self._producer = producer

    async def proceed(
        self, busy: frozenset[int], releasing: frozenset[int], grace: float
    ) -> bool:
        return True

    async def deliver(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TP, int], deadline: float
    ) -> list[Delivery]:
        producer = self._producer()
        with critical_section(deadline):
            deliveries = await producer.send_batch(records) if records else []
            # Also acknowledges every output of manager.send() before the commit.
            await producer.flush()
        return deliveries

    async def failed(self, exc: BaseException) -> BaseException:
        return exc


class CommitCycle:
    """The one commit cycle of a worker (see the module docstring). ``lock`` serialises
    cycles (periodic, explicit, revocation, shutdown)."""

    def __init__(
        self,
        *,
        tables: Mapping[str, Collection],
        ledger: PartitionLedger,
        flow: StreamFlow,
        health: WorkerHealth,
        strategy: CommitStrategy,
        assigned: Callable[[], frozenset[TP]],
        event_grace: float,
        commit_timeout: float,
        app_id: str,
    ) -> None:
        self._tables = tables
        self._ledger = ledger
        self._flow = flow
        self._health = health
        self.strategy = strategy
        self._assigned = assigned
        self.event_grace = event_grace
        self.commit_timeout = commit_timeout
        self._app_id = app_id
        self.lock = trio.Lock()
        # Counted once per cycle (metrics; see _metrics.py).
        self.metrics = CycleMetrics()
        # Store rows written since glibc last returned freed memory (see _memory.py).
        self._rows_since_trim = 0
        # Test seam: awaited (shielded) between taking the changes and delivering them.
        self.before_delivery: Callable[[], Awaitable[None]] | None = None

    async def run(
        self, releasing: frozenset[int] = frozenset(), *, grace: float | None = None
    ) -> CycleResult:
        """One cycle over the ready partitions and ``releasing`` (being revoked). Call
        with :attr:`lock` held. Cancellation: see the module docstring."""
        if self._health.failing():
            return CycleResult()
        grace = self.event_grace if grace is None else grace
        started = trio.current_time()
        included = self._ledger.ready | releasing
        for table in list(self._tables.values()):
            # Windows closed now are committed with the changes that closed them (in the
            # same transaction under exactly_once, final results included).
            await table.close_expired_windows(included)
        async with AsyncExitStack() as hold:
            busy = await hold.enter_async_context(self._flow.quiesced(grace))
            if self._health.failing():  # failed while this cycle waited
                return CycleResult()
            if not await self.strategy.proceed(busy, releasing, grace):
                return CycleResult(busy=busy)
            # Atomic (no checkpoint): the snapshot and the changes belong together.
            snapshot = self._ledger.snapshot(included, busy)
            offsets = self._ledger.offsets_to_commit(snapshot, self._assigned())
            taken: Taken = [
                (table, table.take_changes(busy)[0]) for table in self._tables.values()
            ]
            done = self._flow.changes_taken()
            failed = True
            try:
                if not self.strategy.holds_streams:
                    with trio.CancelScope(shield=True):
                        await hold.aclose()
                await self._deliver_and_persist(taken, snapshot, offsets)
                failed = False
            finally:
                self._flow.cycle_over(done)
                self.metrics.cycle_done(trio.current_time() - started, failed=failed)
            for table, records in taken:
                self.metrics.records_sent(table.name, len(records))
        if self.strategy.commits_offsets:
            self._ledger.record_committed(offsets)
        return CycleResult(snapshot, offsets, busy)

    async def _deliver_and_persist(
        self, taken: Taken, snapshot: Mapping[TP, int], offsets: Mapping[TP, int]
    ) -> None:
        """Deliver (the strategy shields what must not be interrupted) and persist
        (shielded), both within ``commit_timeout``. Any failure turns the worker's
        commits off and raises the strategy's error."""
        records = [record for _, table_records in taken for record in table_records]
        deadline = trio.current_time() + self.commit_timeout
        try:
            if self.before_delivery is not None:
                with critical_section(deadline):
                    await self.before_delivery()
            deliveries = await self.strategy.deliver(records, offsets, deadline)
            with critical_section(deadline):
                await self._persist(taken, deliveries, snapshot)
        except BaseException as exc:
            self._health.fail()
            error: BaseException = exc
            if isinstance(exc, trio.TooSlowError):
                error = CommitFailed(
                    f"{self._app_id}: a commit cycle did not finish within commit_timeout="
                    f"{self.commit_timeout:g}s (changelog not acknowledged or stores not "
                    "written); this worker stops committing: restart it (the next owner "
                    "of its partitions processes their uncommitted events again)"
                )
            error = await self.strategy.failed(error)
            if error is exc:
                raise
            raise error from exc

    async def _persist(
        self, taken: Taken, deliveries: list[Delivery], snapshot: Mapping[TP, int]
    ) -> None:
        """Write the changes ``taken`` to the stores with the last acknowledged changelog
        offset of each partition (``deliveries``, in the order of ``taken``) and the
        source offsets of ``snapshot``."""
        last_offsets: dict[str, dict[int, int]] = {}
        position = 0
        for table, table_records in taken:
            table_offsets = last_offsets.setdefault(table.name, {})
            for delivery in deliveries[position : position + len(table_records)]:
                # A changelog record names its partition.
                partition, offset = delivery.record.partition, delivery.offset
                assert partition is not None
                if offset > table_offsets.get(partition, -1):
                    table_offsets[partition] = offset
            position += len(table_records)
        changed_sources = self._ledger.changed_sources(snapshot)
        for table in list(self._tables.values()):
            plan = table.persist_plan(last_offsets.get(table.name, {}), changed_sources)
            if table.data.persistent:
                self._rows_since_trim += sum(len(batch.changes) for batch in plan)
                trim = self._rows_since_trim >= TRIM_EVERY_ROWS
                await trio.to_thread.run_sync(_write_plan, table, plan, trim)
                if trim:
                    self._rows_since_trim = 0
            else:
                table.write_persist_plan(plan)
            table.persisted(plan)
        self._ledger.sources_persisted(changed_sources)


def _write_plan(table: Collection, plan: list[PersistBatch], release_memory: bool) -> None:
    """(Worker thread) Write ``plan`` to ``table``'s persistent store; with
    ``release_memory`` first return what earlier cycles freed to the system (see
    :mod:`._memory`)."""
    if release_memory:
        release_freed_memory()
    table.write_persist_plan(plan)
