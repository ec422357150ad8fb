"""The in-process transport (URL ``memory://NAME``): a product feature, not a mock.

Brokers live in a process-wide registry: every transport opened on the same name talks to
the same :class:`~._broker.MemoryBroker` (:func:`get_memory_broker`,
:func:`reset_memory_broker`). It implements the whole contract of :mod:`._base` with
Kafka's semantics (offsets with gaps, high watermark and last stable offset, consumer
groups with eager and cooperative rebalancing, transactions with fencing and
``read_committed``) and uses no thread: it runs under ``trio.testing.MockClock``.

Cancellation: every operation except waiting is synchronous, so a cancelled call either
did nothing or completed. ``poll()`` moves positions only in the step that returns the
records, so a cancelled poll loses nothing. Rebalance steps inside ``poll()`` (a listener
call and the commit of what it returned) run shielded to completion; waiting for the other
members is cancellable and simply resumes at the next ``poll()``.

Acknowledgements are immediate: a record is in the log when ``send`` returns and its
:class:`~._base.Delivery` is already settled, so ``in_flight`` is always 0.

Threads: none. Every object of the in-process broker (here, :mod:`._broker`,
:mod:`._consumer`, :mod:`._group`) belongs to the Trio thread.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio
from kafka.partitioner.default import murmur2

from ...errors import TransactionError
from .._assignment import CoPartitionedAssignor
from .._base import (
    TP,
    Assignor,
    Delivery,
    GroupConsumer,
    GroupMetadata,
    IsolationLevel,
    OutgoingRecord,
    Producer,
    RebalanceListener,
    RebalanceProtocol,
    RestoreConsumer,
    SendOneAsBatch,
    TopicDescription,
)
from .._changelog_reader import open_shared_reader
from ._broker import MemoryBroker, Transaction
from ._consumer import MemoryGroupConsumer, MemoryRestoreConsumer

__all__ = [
    "MemoryBroker",
    "MemoryProducer",
    "MemoryTransport",
    "get_memory_broker",
    "open_memory_transport",
    "reset_memory_broker",
]

_BROKERS: dict[str, MemoryBroker] = {}


def get_memory_broker(name: str = "default") -> MemoryBroker:
    """The broker behind ``memory://NAME`` (created empty on first use)."""
    broker = _BROKERS.get(name)
    if broker is None:
        broker = _BROKERS[name] = MemoryBroker(name)
    return broker


def reset_memory_broker(name: str = "default") -> None:
    """Forget the broker ``name``: the next use starts with an empty one. Clients of the
    old broker keep talking to it."""
    _BROKERS.pop(name, None)


def default_partition(key: bytes | None, partitions: int, counter: Iterable[int]) -> int:
    """Kafka's default partitioner for keyed records (murmur2 of the key, positive,
    modulo the partition count); keyless records take the next value of ``counter``."""
    if key is None:
        return next(iter(counter)) % partitions
    digest: int = murmur2(key)
    return (digest & 0x7FFFFFFF) % partitions


class MemoryProducer(SendOneAsBatch):
    """Implements :class:`~._base.Producer` on a :class:`MemoryBroker`.

    Records are appended when sent and their deliveries settled at once. Transactional
    calls check this producer's epoch first: once a newer producer with the same
    ``transactional_id`` called ``init_transactions``, they raise
    :class:`~trio_tables.errors.ProducerFenced`.
    """

    def __init__(
        self, broker: MemoryBroker, *, transactional_id: str | None, max_in_flight: int
    ) -> None:
        self._broker = broker
        self._transactional_id = transactional_id
        self.max_in_flight = max_in_flight
        self._epoch: int | None = None
        self._transaction: Transaction | None = None
        self._transaction_error: BaseException | None = None
        self._keyless: dict[str, itertools.count[int]] = {}
        self._first_error: Delivery | None = None

    @property
    def in_flight(self) -> int:
        return 0

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Append ``records`` and settle them. Cancellation: its one checkpoint comes
        first, so a cancelled call appended nothing; otherwise every record is appended.

        Raises :class:`~trio_tables.errors.UnknownTopic` before appending anything if a
        topic does not exist. A partition index out of range, or a record with neither key
        nor value, fails that record's delivery (and the next :meth:`flush`). A
        transactional producer needs an open transaction.
        """
        await trio.lowlevel.checkpoint()
        counts = {r.topic: self._broker.partition_count(r.topic) for r in records}
        transaction = None
        if self._transactional_id is not None:
            transaction = self._open_transaction()
        deliveries = []
        for record in records:
            delivery = Delivery(record)
            deliveries.append(delivery)
            partition = record.partition
            if partition is None:
                counter = self._keyless.setdefault(record.topic, itertools.count())
                partition = default_partition(record.key, counts[record.topic], counter)
            try:
                if record.key is None and record.value is None:
                    # As kafka-python: such a record means nothing to a table or a stream.
                    raise ValueError("a record needs a key or a value (or both)")
                metadata = self._broker.append(
                    TP(record.topic, partition),
                    record.key,
                    record.value,
                    headers=record.headers,
                    timestamp=record.timestamp,
                    transaction=transaction,
                )
            except (IndexError, ValueError) as exc:
                delivery.settle(None, exc)
                if self._first_error is None:
                    self._first_error = delivery
            else:
                delivery.settle(metadata, None)
        return deliveries

    async def flush(self) -> None:
        """Every record is acknowledged already; raises
        :class:`~trio_tables.errors.DeliveryFailed` for the first failure since the last
        flush. Cancelled (at its one checkpoint, before anything): a failure stays to be
        reported by the next flush."""
        await trio.lowlevel.checkpoint()
        failed, self._first_error = self._first_error, None
        if failed is not None:
            failed.result()

    # -- transactions ----------------------------------------------------------------
    def _id_and_epoch(self) -> tuple[str, int]:
        if self._transactional_id is None:
            raise TransactionError("this producer has no transactional_id")
        if self._epoch is None:
            raise TransactionError("call init_transactions() first")
        self._broker.check_epoch(self._transactional_id, self._epoch)
        return self._transactional_id, self._epoch

    def _open_transaction(self) -> Transaction:
        self._id_and_epoch()
        if self._transaction is None:
            raise TransactionError(
                "a transactional producer sends only inside a transaction: call "
                "begin_transaction() first"
            )
        return self._transaction

    async def init_transactions(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._transactional_id is None:
            raise TransactionError("this producer has no transactional_id")
        self._epoch = self._broker.init_transactions(self._transactional_id)
        self._transaction = None

    async def begin_transaction(self) -> None:
        await trio.lowlevel.checkpoint()
        transactional_id, epoch = self._id_and_epoch()
        if self._transaction is not None:
            raise TransactionError("a transaction is already open: commit or abort it first")
        self._transaction = self._broker.begin_transaction(transactional_id, epoch)
        self._transaction_error = None

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TP, int], group: GroupMetadata
    ) -> None:
        """Raises :class:`~trio_tables.errors.CommitFailed` (and the transaction can then
        only be aborted) if ``group`` is not the group's current generation (KIP-447)."""
        await trio.lowlevel.checkpoint()
        transaction = self._open_transaction()
        try:
            self._broker.group(group.group_id).check_transactional_commit(
                group.member_id, group.generation_id
            )
        except Exception as exc:
            self._transaction_error = exc
            raise
        transaction.offsets.setdefault(group.group_id, {}).update(offsets)

    async def commit_transaction(self) -> None:
        await trio.lowlevel.checkpoint()
        transaction = self._open_transaction()
        if self._transaction_error is not None:
            raise TransactionError(
                f"the transaction cannot commit after {self._transaction_error!r}: abort it"
            ) from self._transaction_error
        self._transaction = None
        self._broker.end_transaction(transaction, commit=True)

    async def abort_transaction(self) -> None:
        """Abort the open transaction (no-op when none is open)."""
        await trio.lowlevel.checkpoint()
        self._id_and_epoch()
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            self._broker.end_transaction(transaction, commit=False)

    def close(self) -> None:
        """Abort a transaction left open (Kafka would keep it open until it times out)."""
        transaction, self._transaction = self._transaction, None
        if transaction is not None and transaction.status == "open":
            # Fenced meanwhile: the new producer aborted it already.
            with contextlib.suppress(TransactionError):
                self._broker.end_transaction(transaction, commit=False)


class MemoryTransport:
    """Implements :class:`~._base.Transport` on a :class:`MemoryBroker`.

    ``session_timeout`` and ``rebalance_timeout`` (seconds of :func:`trio.current_time`)
    bound how long a group member may stay out of ``poll()`` and how long a rebalance
    waits for members to rejoin.
    """

    def __init__(
        self, broker: MemoryBroker, *, session_timeout: float, rebalance_timeout: float
    ) -> None:
        self.broker = broker
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout

    @property
    def url(self) -> str:
        return f"memory://{self.broker.name}"

    async def create_topic(
        self,
        name: str,
        partitions: int,
        *,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
        exist_ok: bool = True,
    ) -> TopicDescription:
        await trio.lowlevel.checkpoint()
        return self.broker.create_topic(name, partitions, configs, exist_ok=exist_ok)

    async def describe_topic(self, name: str) -> TopicDescription:
        await trio.lowlevel.checkpoint()
        return self.broker.describe_topic(name)

    async def list_topics(self) -> frozenset[str]:
        await trio.lowlevel.checkpoint()
        return self.broker.list_topics()

    async def group_offsets(self, group_id: str) -> dict[TP, int]:
        await trio.lowlevel.checkpoint()
        return self.broker.group_offsets(group_id)

    @asynccontextmanager
    async def _open_producer(
        self, transactional_id: str | None, max_in_flight: int
    ) -> AsyncIterator[Producer]:
        producer = MemoryProducer(
            self.broker, transactional_id=transactional_id, max_in_flight=max_in_flight
        )
        try:
            yield producer
        except BaseException:
            producer.close()
            raise
        try:
            await producer.flush()
        finally:
            producer.close()

    def open_producer(
        self,
        *,
        transactional_id: str | None = None,
        max_in_flight: int = 10_000,
        linger: float = 0.005,
    ) -> Any:
        return self._open_producer(transactional_id, max_in_flight)

    @asynccontextmanager
    async def _open_group_consumer(
        self,
        group_id: str,
        topics: Iterable[str],
        listener: RebalanceListener,
        assignors: Sequence[Assignor] | None,
        rebalance_protocol: RebalanceProtocol,
        isolation_level: IsolationLevel,
        auto_offset_reset: Literal["earliest", "latest"],
        max_poll_records: int,
    ) -> AsyncIterator[GroupConsumer]:
        wanted = frozenset(topics)
        for topic in sorted(wanted):
            self.broker.describe_topic(topic)  # UnknownTopic before joining anything
        consumer = MemoryGroupConsumer(
            self.broker,
            group_id,
            wanted,
            listener=listener,
            assignors=list(assignors or [CoPartitionedAssignor()]),
            rebalance_protocol=rebalance_protocol,
            isolation_level=isolation_level,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=max_poll_records,
            session_timeout=self.session_timeout,
            rebalance_timeout=self.rebalance_timeout,
        )
        try:
            yield consumer
        finally:
            await consumer.close()

    def open_group_consumer(
        self,
        group_id: str,
        topics: Iterable[str],
        *,
        listener: RebalanceListener,
        assignors: Sequence[Assignor] | None = None,
        rebalance_protocol: RebalanceProtocol = "eager",
        isolation_level: IsolationLevel = "read_uncommitted",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        max_poll_records: int = 5000,
    ) -> Any:
        return self._open_group_consumer(
            group_id,
            topics,
            listener,
            assignors,
            rebalance_protocol,
            isolation_level,
            auto_offset_reset,
            max_poll_records,
        )

    @asynccontextmanager
    async def _open_restore_consumer(
        self, isolation_level: IsolationLevel, max_poll_records: int
    ) -> AsyncIterator[RestoreConsumer]:
        yield MemoryRestoreConsumer(
            self.broker, isolation_level=isolation_level, max_poll_records=max_poll_records
        )
        await trio.lowlevel.checkpoint()

    def open_changelog_reader(self, *, isolation_level: IsolationLevel = "read_uncommitted") -> Any:
        return open_shared_reader(self.open_restore_consumer, isolation_level=isolation_level)

    def open_restore_consumer(
        self,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        max_poll_records: int = 10_000,
    ) -> Any:
        return self._open_restore_consumer(isolation_level, max_poll_records)


@asynccontextmanager
async def open_memory_transport(
    name: str = "default",
    *,
    session_timeout: float = 10.0,
    rebalance_timeout: float = 30.0,
    session_timeout_ms: int | None = None,
    **kafka_only: Any,
) -> AsyncIterator[MemoryTransport]:
    """Open a transport on the in-process broker ``name`` for the block.

    ``session_timeout_ms`` (as for Kafka) overrides ``session_timeout``; other Kafka
    client settings (``heartbeat_interval_ms``, ``connect_timeout``, ...) are accepted and
    ignored so that one set of options works with both transports.
    """
    if session_timeout_ms is not None:
        session_timeout = session_timeout_ms / 1000
    await trio.lowlevel.checkpoint()
    yield MemoryTransport(
        get_memory_broker(name),
        session_timeout=session_timeout,
        rebalance_timeout=rebalance_timeout,
    )
