"""The ``exactly_once`` commit path: one Kafka transaction per commit interval.

This is the ``exactly_once`` strategy of the one commit cycle (:mod:`._commit`). The
manager's producer is transactional (``transactional_id = "{app_id}-{worker_id}"``).
A transaction is always open while the manager runs; everything produced goes into it:
changelog records (sent by the commit cycle) and outputs of :meth:`TableManager.send`
(sent at once). A commit cycle, with the streams held between two events for its whole
duration:

1. takes the tables' changes and the processed source offsets (no event in process:
   if one is, the cycle is skipped, because its outputs may already be in the
   transaction while its offset is not; the next interval tries again);
2. sends the changelog records and flushes;
3. adds the source offsets to the transaction with the consumer's group metadata
   (KIP-447: a member of an older generation, a zombie, cannot commit);
4. commits the transaction and begins the next one;
5. only then writes the changes to the stores (with the changelog and source offsets).

So a store never holds data of a transaction that did not commit: the changes of the
interval wait in the tables' in-memory layers (``overlay``/``persisting``) until the
commit. Rollback is *crash-only*: when a commit fails (fenced, stale generation,
delivery error, cancellation), the interval's local changes are discarded, the
transaction is aborted (readers with ``read_committed`` never see its records, and its
offsets are not committed) and the worker stops with a typed error. Restarting it (or
the partitions' next owner) rebuilds from committed data only and processes the
interval's events again. A worker that dies without aborting (``kill -9``) leaves its
transaction open: a restarted worker with the same ``worker_id`` aborts it when it
registers its transactional id, before restoring anything (restores and standbys read
``read_committed``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._commit import WorkerHealth, critical_section
from ._ledger import PartitionLedger
from ._table import Collection
from ._transport._base import TP, Delivery, GroupMetadata, OutgoingRecord, Producer
from .errors import (
    DeliveryFailed,
    ProducerFenced,
    TransactionAborted,
    TrioTablesError,
    WorkerFenced,
)

__all__ = ["Transactions"]

logger = logging.getLogger("trio_tables.exactly_once")

#: How long an abort after a failure may take before the worker stops anyway (a fenced
#: producer's abort may never be answered).
ABORT_TIMEOUT = 10.0


class Transactions:
    """The transactional side of one worker: a commit strategy (see
    :class:`~._commit.CommitStrategy`) and the home of :meth:`send` for outputs."""

    holds_streams = True
    commits_offsets = True

    def __init__(
        self,
        transactional_id: str,
        *,
        tables: Mapping[str, Collection],
        ledger: PartitionLedger,
        health: WorkerHealth,
        group_metadata: Callable[[], Awaitable[GroupMetadata]],
        on_commit: Callable[[Mapping[TP, int]], Awaitable[None]],
    ) -> None:
        self.transactional_id = transactional_id
        self._tables = tables
        self._ledger = ledger
        self._health = health
        self._group_metadata = group_metadata
        self._on_commit = on_commit
        self._producer: Producer | None = None
        # Held while a transaction ends and the next begins: manager.send() from a task
        # that is not processing an event waits instead of finding no transaction open.
        self._switch = trio.Lock()
        self._open = False
        self.outputs_pending = 0  # outputs of manager.send() in the open transaction
        self.committed = 0  # transactions committed by this manager
        self.aborted = 0  # transactions aborted by this manager

    # -- lifecycle ---------------------------------------------------------------------
    @asynccontextmanager
    async def running(self, producer: Producer) -> AsyncIterator[None]:
        """Register the transactional id (fencing an older instance with the same id and
        aborting what it left open) and open the first transaction. Leaving the block
        with an error aborts the open transaction; leaving it normally aborts it only if
        it is empty (the manager commits what is pending before)."""
        self._producer = producer
        await self._call(producer.init_transactions)
        await self._call(producer.begin_transaction)
        self._open = True
        try:
            yield
        except BaseException:
            await self._abort_quietly()
            raise
        if self.outputs_pending:
            logger.warning(
                "%s: %d output(s) sent after the last commit are discarded (aborted)",
                self.transactional_id,
                self.outputs_pending,
            )
        await self._abort_quietly()

    async def _call(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await fn(*args)
        except WorkerFenced:
            raise
        except ProducerFenced as exc:
            self._open = False
            raise WorkerFenced(self.transactional_id, str(exc)) from exc

    async def _abort_quietly(self) -> None:
        """Abort the open transaction, if any, ignoring a producer that cannot any more
        (fenced, closed): the broker then aborts it itself. Shielded, bounded."""
        if not self._open or self._producer is None:
            return
        self._open = False
        with trio.CancelScope(shield=True), trio.move_on_after(ABORT_TIMEOUT):
            try:
                await self._producer.abort_transaction()
                self.aborted += 1
            except TrioTablesError as exc:
                logger.info("%s: abort not possible (%r)", self.transactional_id, exc)

    # -- outputs -----------------------------------------------------------------------
    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        partition: int | None,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> Delivery:
        """Produce an output inside the open transaction (see ``TableManager.send``)."""
        assert self._producer is not None
        async with self._switch:
            if not self._open:
                raise TransactionAborted(
                    self.transactional_id, RuntimeError("no transaction is open any more")
                )
            delivery = await self._producer.send(
                topic, value, key=key, partition=partition, headers=headers
            )
            self.outputs_pending += 1
            return delivery

    # -- the commit strategy ---------------------------------------------------------------
    async def proceed(self, busy: frozenset[int], releasing: frozenset[int], grace: float) -> bool:
        """No transaction commits while an event is in process: its outputs may be in
        the transaction already while its offset is not. Skipped (the next interval
        tries again), or, when ``releasing`` partitions cannot wait, aborted."""
        if not busy:
            return True
        if releasing:
            raise await self.failed(
                RuntimeError(
                    f"an event of partitions {sorted(busy)} was still in process after "
                    f"{grace:g}s while its partitions were being released"
                )
            )
        logger.debug("%s: commit skipped, events in process", self.transactional_id)
        return False

    async def deliver(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TP, int], deadline: float
    ) -> list[Delivery]:
        """One transaction: the changelog records, the outputs sent meanwhile and the
        source offsets, committed together; the next one begins. The Kafka steps run in
        critical sections; ``on_commit`` (the user's hook) may be cancelled, which
        aborts the transaction like any failure."""
        producer = self._producer
        assert producer is not None
        deliveries: list[Delivery] = []
        if not (records or offsets or self.outputs_pending):
            return deliveries
        with critical_section(deadline):
            if records:
                deliveries = await producer.send_batch(records)
            await producer.flush()
            if offsets:
                metadata = await self._group_metadata()
                await producer.send_offsets_to_transaction(offsets, metadata)
        await self._on_commit(offsets)
        with critical_section(deadline):
            async with self._switch:
                self._open = False
                await self._call(producer.commit_transaction)
                self.outputs_pending = 0
                self.committed += 1
                await self._call(producer.begin_transaction)
                self._open = True
        return deliveries

    async def failed(self, exc: BaseException) -> BaseException:
        """Crash-only rollback: forget the interval locally, abort it, stop committing;
        the typed error to raise (``Cancelled`` and fencing pass through as they are)."""
        self._health.fail()
        self._discard_local_changes()
        await self._abort_quietly()
        if isinstance(exc, (WorkerFenced, trio.Cancelled)):
            return exc
        if isinstance(exc, ProducerFenced) or (
            isinstance(exc, DeliveryFailed) and "ProducerFenced" in repr(exc.__cause__)
        ):
            return WorkerFenced(self.transactional_id, str(exc))
        logger.error("%s: transaction aborted: %r", self.transactional_id, exc)
        return TransactionAborted(self.transactional_id, exc)

    async def roll_back(self, partitions: frozenset[int]) -> None:
        """``partitions`` were lost (this member was evicted): abort what the open
        transaction holds and drop every uncommitted local change. Partitions still
        active here would then have processed events that nothing records: the worker
        stops (:class:`TransactionAborted`)."""
        if self._ledger.ready - partitions:
            raise await self.failed(
                RuntimeError(f"partitions {sorted(partitions)} were lost while others stay")
            )
        self._discard_local_changes()
        await self._abort_quietly()
        assert self._producer is not None
        with trio.CancelScope(shield=True):
            async with self._switch:
                self.outputs_pending = 0
                await self._call(self._producer.begin_transaction)
                self._open = True

    def _discard_local_changes(self) -> None:
        for table in self._tables.values():
            table.discard_uncommitted(table.uncommitted_partitions())
