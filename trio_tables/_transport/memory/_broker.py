"""State of the in-process broker behind ``memory://NAME``: topics, partition logs,
transactions and (through :mod:`._group`) consumer groups.

Everything here is synchronous and runs in the Trio thread: a method either completes or
has not started, so the clients in :mod:`._transport` get atomicity with respect to
cancellation for free. Whoever changes anything calls :meth:`MemoryBroker.notify`, which
wakes every waiting ``poll()`` (they re-check their condition; nothing busy-loops).

The logs behave like Kafka's: offsets are dense per partition but records may be missing
(a transaction's commit or abort marker occupies one offset and is never returned;
:meth:`MemoryBroker.compact` and :meth:`MemoryBroker.delete_records_before` remove records
and leave their offsets unused), and ``read_committed`` readers stop at the last stable
offset.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping
from typing import Literal

import attrs
import trio

from ...errors import PartitionCountMismatch, ProducerFenced, TransactionError, UnknownTopic
from .._base import TP, Headers, IsolationLevel, Record, RecordMetadata, TopicDescription
from ._group import MemoryGroup

__all__ = ["MemoryBroker", "PartitionLog", "StoredRecord", "Transaction"]

TransactionStatus = Literal["open", "committed", "aborted"]


class Transaction:
    """One transaction of a transactional id. Its records point at it, so ending it
    changes what ``read_committed`` readers see without rewriting the log."""

    __slots__ = ("epoch", "first_offsets", "offsets", "status", "transactional_id")

    def __init__(self, transactional_id: str, epoch: int) -> None:
        self.transactional_id = transactional_id
        self.epoch = epoch
        self.status: TransactionStatus = "open"
        #: First offset this transaction wrote in each partition (bounds the LSO).
        self.first_offsets: dict[TP, int] = {}
        #: Offsets to commit per group when the transaction commits.
        self.offsets: dict[str, dict[TP, int]] = {}


@attrs.frozen
class StoredRecord:
    """A data record in a partition log (control markers are not stored: they are the
    offsets that no record has)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()
    transaction: Transaction | None = attrs.field(default=None, eq=False, repr=False)

    def visible(self, isolation_level: IsolationLevel) -> bool:
        if isolation_level == "read_uncommitted" or self.transaction is None:
            return True
        return self.transaction.status == "committed"


class PartitionLog:
    """The log of one partition: records in offset order, log start, high watermark and
    the first offsets of still-open transactions (which make the last stable offset)."""

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self.records: list[StoredRecord] = []
        self._offsets: list[int] = []
        self.log_start_offset = 0
        self.high_watermark = 0
        self.open_transactions: dict[Transaction, int] = {}

    @property
    def last_stable_offset(self) -> int:
        return min(self.open_transactions.values(), default=self.high_watermark)

    def end_offset(self, isolation_level: IsolationLevel) -> int:
        if isolation_level == "read_committed":
            return self.last_stable_offset
        return self.high_watermark

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp: int,
        headers: Headers,
        transaction: Transaction | None,
    ) -> StoredRecord:
        record = StoredRecord(self.high_watermark, key, value, timestamp, headers, transaction)
        self.records.append(record)
        self._offsets.append(record.offset)
        self.high_watermark += 1
        if transaction is not None and transaction not in self.open_transactions:
            self.open_transactions[transaction] = record.offset
            transaction.first_offsets[self.tp] = record.offset
        return record

    def append_marker(self) -> int:
        """A control marker: takes one offset, holds no record."""
        offset = self.high_watermark
        self.high_watermark += 1
        return offset

    def read(
        self, position: int, isolation_level: IsolationLevel, max_records: int
    ) -> tuple[list[Record], int]:
        """Records from ``position`` (at least the log start) up to the end offset of
        ``isolation_level``, at most ``max_records``, and the position after them.

        The position moves past aborted records and markers that were skipped, and to the
        end offset when everything up to it was read, so a reader that caught up has
        ``position == end offset`` even when the log ends with a gap.
        """
        limit = self.end_offset(isolation_level)
        if position >= limit:
            return [], position
        tp = self.tp
        out: list[Record] = []
        index = bisect.bisect_left(self._offsets, position)
        while index < len(self.records):
            stored = self.records[index]
            if stored.offset >= limit:
                break
            if len(out) >= max_records:
                return out, stored.offset
            if stored.visible(isolation_level):
                out.append(
                    Record(
                        tp.topic,
                        tp.partition,
                        stored.offset,
                        stored.key,
                        stored.value,
                        stored.timestamp,
                        stored.headers,
                    )
                )
            index += 1
        return out, limit

    def remove_where(self, drop: set[int]) -> None:
        self.records = [r for r in self.records if r.offset not in drop]
        self._offsets = [r.offset for r in self.records]


@attrs.define(eq=False)
class _Topic:
    name: str
    logs: list[PartitionLog]
    configs: dict[str, str]

    def describe(self) -> TopicDescription:
        return TopicDescription(self.name, len(self.logs), dict(self.configs))


class MemoryBroker:
    """An in-process Kafka-like broker. One per name in a process (see
    :func:`~trio_tables._transport.memory._transport.get_memory_broker`); clients of every
    ``memory://NAME`` transport with the same name share it.

    Besides what transports use, it offers test hooks that Kafka has only as broker-side
    processes: :meth:`delete_records_before`, :meth:`compact` and
    :meth:`append_control_marker` build logs with gaps.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, MemoryGroup] = {}
        self._epochs: dict[str, int] = {}
        self._open: dict[str, Transaction] = {}
        self._changed = trio.Event()

    # -- change notification -----------------------------------------------------------
    @property
    def changed(self) -> trio.Event:
        """Set at the next change; take it *before* checking a condition, then wait."""
        return self._changed

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- topics --------------------------------------------------------------------
    def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str] | None = None,
        *,
        exist_ok: bool = True,
    ) -> TopicDescription:
        if partitions < 1:
            raise ValueError(f"topic {name!r} needs at least one partition, not {partitions}")
        existing = self._topics.get(name)
        if existing is not None:
            if not exist_ok:
                raise ValueError(f"topic {name!r} already exists")
            if len(existing.logs) != partitions:
                raise PartitionCountMismatch(name, expected=partitions, actual=len(existing.logs))
            return existing.describe()
        logs = [PartitionLog(TP(name, p)) for p in range(partitions)]
        topic = _Topic(name, logs, dict(configs or {}))
        self._topics[name] = topic
        self.notify()
        return topic.describe()

    def describe_topic(self, name: str) -> TopicDescription:
        return self._topic(name).describe()

    def list_topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def partition_count(self, name: str) -> int:
        return len(self._topic(name).logs)

    def _topic(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopic(name) from None

    def log(self, tp: TP) -> PartitionLog:
        """The log of ``tp``; :class:`UnknownTopic` or :class:`IndexError` if none."""
        logs = self._topic(tp.topic).logs
        if not 0 <= tp.partition < len(logs):
            raise IndexError(
                f"partition {tp.partition} does not exist: topic {tp.topic!r} has "
                f"partitions 0..{len(logs) - 1}"
            )
        return logs[tp.partition]

    # -- producing -----------------------------------------------------------------
    def append(
        self,
        tp: TP,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: Headers = (),
        timestamp: int | None = None,
        transaction: Transaction | None = None,
    ) -> RecordMetadata:
        log = self.log(tp)
        if transaction is not None and transaction.status != "open":
            raise TransactionError(f"transaction of {transaction.transactional_id!r} has ended")
        ts = int(time.time() * 1000) if timestamp is None else int(timestamp)
        stored = log.append(key, value, ts, headers, transaction)
        self.notify()
        return RecordMetadata(tp.topic, tp.partition, stored.offset, stored.timestamp)

    # -- transactions --------------------------------------------------------------
    def init_transactions(self, transactional_id: str) -> int:
        """Bump the epoch of ``transactional_id`` (fencing older producers) and abort the
        transaction an older producer left open. Returns the new epoch."""
        left_open = self._open.pop(transactional_id, None)
        if left_open is not None:
            self._end(left_open, commit=False)
        epoch = self._epochs.get(transactional_id, -1) + 1
        self._epochs[transactional_id] = epoch
        self.notify()
        return epoch

    def check_epoch(self, transactional_id: str, epoch: int) -> None:
        if self._epochs.get(transactional_id) != epoch:
            raise ProducerFenced(
                f"producer with transactional id {transactional_id!r} (epoch {epoch}) was "
                "fenced by a newer producer with the same id: this worker must stop, the "
                "newer instance owns its work now"
            )

    def begin_transaction(self, transactional_id: str, epoch: int) -> Transaction:
        self.check_epoch(transactional_id, epoch)
        if transactional_id in self._open:
            raise TransactionError(
                f"a transaction of {transactional_id!r} is already open: commit or abort it"
            )
        transaction = Transaction(transactional_id, epoch)
        self._open[transactional_id] = transaction
        return transaction

    def end_transaction(self, transaction: Transaction, *, commit: bool) -> None:
        """Commit or abort: one marker in every partition the transaction wrote, and (on
        commit) its offsets committed to their groups."""
        self.check_epoch(transaction.transactional_id, transaction.epoch)
        if self._open.get(transaction.transactional_id) is not transaction:
            raise TransactionError(
                f"the transaction of {transaction.transactional_id!r} is not open"
            )
        del self._open[transaction.transactional_id]
        self._end(transaction, commit=commit)
        self.notify()

    def _end(self, transaction: Transaction, *, commit: bool) -> None:
        transaction.status = "committed" if commit else "aborted"
        for tp in transaction.first_offsets:
            log = self.log(tp)
            log.open_transactions.pop(transaction, None)
            log.append_marker()
        if commit:
            for group_id, offsets in transaction.offsets.items():
                self.group(group_id).store_offsets(offsets)

    def pending_offsets(self, group_id: str) -> frozenset[TP]:
        """Partitions whose offsets for ``group_id`` wait in an open transaction (a
        ``read_committed`` member treats their committed offset as unstable, KIP-447)."""
        return frozenset(
            tp
            for transaction in self._open.values()
            for tp in transaction.offsets.get(group_id, {})
        )

    # -- groups ------------------------------------------------------------------------
    def group(self, group_id: str) -> MemoryGroup:
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = MemoryGroup(group_id, self)
        return group

    def group_offsets(self, group_id: str) -> dict[TP, int]:
        """The offsets ``group_id`` committed (empty for an unknown group; looking does
        not create the group)."""
        group = self._groups.get(group_id)
        return {} if group is None else dict(group.committed)

    # -- test hooks ----------------------------------------------------------------
    def delete_records_before(self, tp: TP, offset: int) -> None:
        """Advance the log start offset of ``tp`` to ``offset`` (Kafka's DeleteRecords):
        records before it are gone, readers positioned before it are reset."""
        log = self.log(tp)
        if not log.log_start_offset <= offset <= log.high_watermark:
            raise ValueError(
                f"cannot delete {tp} before {offset}: the log spans "
                f"{log.log_start_offset}..{log.high_watermark}"
            )
        log.remove_where({r.offset for r in log.records if r.offset < offset})
        log.log_start_offset = offset
        self.notify()

    def compact(self, topic: str) -> None:
        """Compact ``topic`` as Kafka's log cleaner would: below the last stable offset,
        keep only the latest record of each key and drop aborted records. Keyless records
        are kept. Removed records leave offset gaps."""
        for log in self._topic(topic).logs:
            stable = log.last_stable_offset
            latest: dict[bytes, int] = {}
            drop: set[int] = set()
            for record in log.records:
                if record.offset >= stable:
                    break
                if record.transaction is not None and record.transaction.status == "aborted":
                    drop.add(record.offset)
                elif record.key is not None:
                    if record.key in latest:
                        drop.add(latest[record.key])
                    latest[record.key] = record.offset
            log.remove_where(drop)
        self.notify()

    def append_control_marker(self, tp: TP) -> int:
        """Append a lone control marker to ``tp`` (an offset without a record) and return
        its offset."""
        offset = self.log(tp).append_marker()
        self.notify()
        return offset
