"""The transport contract: everything the rest of trio_tables may ask of Kafka.

Two implementations exist: :mod:`.kafka` (kafka-python on worker threads) and
:mod:`.memory` (an in-process broker, URL ``memory://``). Both pass the same contract
test suite (``tests/contract``). Nothing outside ``_transport`` imports kafka-python.

Conventions shared by every implementation:

* Offsets are Kafka offsets. A *committed* offset, like a *position*, is the offset of the
  next record to read. An *end offset* is the partition's high watermark: the offset the
  next produced record will get (under ``read_committed``: the last stable offset).
  Offsets may have gaps (transaction markers, compaction): never count records to decide
  whether a partition was read to its end; compare the position with the end offset.
* Timestamps are integer milliseconds since the epoch.
* **Cancellation.** Every ``async`` method may be cancelled. A call that reached the
  broker completes there (kafka-python calls cannot be interrupted; the Kafka transport
  waits for the worker thread before raising :class:`trio.Cancelled`); the client stays
  usable. A cancelled ``poll()`` hands its records back: the next ``poll()`` returns them
  again, so a cancelled poll loses nothing. A client that hits an unrecoverable error
  closes itself; later calls raise :class:`~trio_tables.errors.TransportClosed`.
* **Rebalance listener.** A group consumer calls its :class:`RebalanceListener` from a
  Trio task while the group waits for it (revocation blocks the rebalance, heartbeats keep
  flowing). The listener must not call the consumer (that consumer's ``poll()`` is what is
  waiting for it); it returns the offsets to commit instead, and the consumer commits them
  before the partitions are released.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import attrs
import trio

from ..errors import DeliveryFailed

__all__ = [
    "TP",
    "Admin",
    "Assignor",
    "ChangelogReader",
    "Delivery",
    "GroupConsumer",
    "GroupMetadata",
    "Headers",
    "IsolationLevel",
    "MemberAssignment",
    "MemberSubscription",
    "OutgoingRecord",
    "Producer",
    "RebalanceListener",
    "RebalanceProtocol",
    "Record",
    "RecordMetadata",
    "RestoreConsumer",
    "SendOneAsBatch",
    "TopicDescription",
    "Transport",
    "normalize_headers",
]

Headers = tuple[tuple[str, bytes], ...]
IsolationLevel = Literal["read_uncommitted", "read_committed"]
RebalanceProtocol = Literal["eager", "cooperative"]


def normalize_headers(value: Iterable[tuple[str, bytes]] | None) -> Headers:
    """``value`` as :data:`Headers`: a tuple of ``(str, bytes)`` pairs."""
    return tuple((str(k), bytes(v)) for k, v in (value or ()))


# cache_hash: TPs key the dicts that every processed event updates.
@attrs.frozen(order=True, cache_hash=True)
class TP:
    """A topic-partition."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


# A named tuple, not an attrs class: consumers build one per record read (on the poll
# thread, holding the GIL), and a tuple is built in a third of the time.
class Record(NamedTuple):
    """A record read from a partition (an immutable named tuple)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


# A named tuple, not an attrs class: a commit cycle builds one per changelog record on
# the Trio thread (271 ns against 1.23 us for the attrs class with its headers converter).
class OutgoingRecord(NamedTuple):
    """A record to produce (an immutable named tuple). ``partition=None`` lets the
    producer's partitioner choose (murmur2 of the key, as Kafka's default partitioner);
    ``timestamp=None`` means now. ``headers`` must be a tuple of ``(str, bytes)`` pairs:
    :func:`normalize_headers` makes one from what a user passed."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers = ()
    timestamp: int | None = None


@attrs.frozen
class RecordMetadata:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int
    timestamp: int


@attrs.frozen
class TopicDescription:
    """A topic as the broker describes it. ``configs`` holds what the broker reported
    (some brokers report only non-default values)."""

    name: str
    partitions: int
    configs: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)


@attrs.frozen
class GroupMetadata:
    """A consumer's group membership, as needed to commit offsets inside a producer
    transaction (KIP-447 fencing of stale members)."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@attrs.frozen
class MemberSubscription:
    """What one member of a group told the group when it joined."""

    topics: frozenset[str]
    user_data: bytes = b""
    owned: frozenset[TP] = frozenset()


@attrs.frozen
class MemberAssignment:
    """What the group leader gave one member."""

    partitions: frozenset[TP]
    user_data: bytes = b""


class Delivery:
    """The acknowledgement of one produced record, awaitable from Trio.

    Created by :meth:`Producer.send`; settled (once) by the transport when the broker
    acknowledged the record or the send failed.
    """

    __slots__ = ("_done", "_error", "_event", "_metadata", "_offset", "_to_metadata", "record")

    def __init__(self, record: OutgoingRecord) -> None:
        self.record = record
        self._done = False
        # Made by the first wait() before the outcome: most deliveries are never waited
        # for one by one (a changelog batch is flushed), so they need no trio.Event.
        self._event: trio.Event | None = None
        # The RecordMetadata, or (settle_lazily) the client's report that _to_metadata
        # makes one of when asked: a commit cycle only needs each changelog record's
        # offset, and building a RecordMetadata per record cost ~0.8 us on the Trio thread.
        self._metadata: Any = None
        self._to_metadata: Callable[[Any], RecordMetadata] | None = None
        self._offset = -1
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def failed(self) -> bool:
        return self._error is not None

    def settle(self, metadata: RecordMetadata | None, error: BaseException | None) -> None:
        """Record the outcome; called by transports from the Trio thread only."""
        if self._done:
            return
        self._metadata = metadata
        if metadata is not None:
            self._offset = metadata.offset
        self._error = error
        self._finish()

    def settle_lazily(
        self, offset: int, report: Any, to_metadata: Callable[[Any], RecordMetadata]
    ) -> None:
        """Record an acknowledgement at ``offset``; ``to_metadata(report)`` makes its
        :class:`RecordMetadata` when first asked for. From the Trio thread only."""
        if self._done:
            return
        self._metadata = report
        self._to_metadata = to_metadata
        self._offset = offset
        self._finish()

    def _finish(self) -> None:
        self._done = True
        if self._event is not None:
            self._event.set()

    def _check(self) -> None:
        if not self._done:
            raise RuntimeError("delivery is not settled yet; await wait() first")
        if self._error is not None:
            raise DeliveryFailed(
                self.record.topic, self.record.partition, self._error
            ) from self._error

    def result(self) -> RecordMetadata:
        """The metadata of a settled delivery, or raise :class:`DeliveryFailed`."""
        self._check()
        if self._to_metadata is not None:
            self._metadata = self._to_metadata(self._metadata)
            self._to_metadata = None
        assert self._metadata is not None
        return self._metadata  # type: ignore[no-any-return]

    @property
    def offset(self) -> int:
        """The acknowledged record's offset (``result().offset`` without building the
        metadata); raises like :meth:`result`."""
        self._check()
        return self._offset

    async def wait(self) -> RecordMetadata:
        """Wait for the broker's acknowledgement.

        Cancelling the wait does not cancel the send: the record is still delivered (or
        fails) and :meth:`Producer.flush` still accounts for it.
        """
        if self._done:
            await trio.lowlevel.checkpoint()
        else:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        return self.result()


@runtime_checkable
class RebalanceListener(Protocol):
    """Receives the group's partition movements, in Trio.

    Called by the consumer while it rebalances; the group waits until each call returns.
    Under the eager protocol every rebalance revokes all partitions and assigns the new
    set; under the cooperative protocol only moved partitions are revoked and only new
    ones are passed to ``on_partitions_assigned``.
    """

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> Mapping[TP, int] | None:
        """Stop using ``revoked``; return the offsets to commit for them (or ``None``).
        The consumer commits them before the partitions are released to another member."""
        ...

    async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
        """``assigned`` now belongs to this member. Fetching starts from the committed
        offsets (or ``auto_offset_reset``) once this returns."""
        ...

    async def on_partitions_lost(self, lost: frozenset[TP]) -> None:
        """The member was evicted (session timeout): ``lost`` may already be owned by
        someone else. Discard uncommitted work for them; nothing can be committed."""
        ...


@runtime_checkable
class Assignor(Protocol):
    """A group assignment strategy, run on the member the group elects as leader.

    ``assign`` returns the *target* assignment. Under the cooperative protocol the
    transport withholds partitions that still belong to another member for one round
    (that member revokes them and the group rebalances again), so an assignor never
    needs to know which protocol is in use.
    """

    @property
    def name(self) -> str: ...

    @property
    def rebalance_protocols(self) -> Sequence[RebalanceProtocol]:
        """Protocols this assignor supports, preferred first."""
        ...

    def metadata(self, topics: frozenset[str]) -> bytes:
        """User data this member sends to the leader when joining."""
        ...

    def assign(
        self, partitions: Mapping[str, int], members: Mapping[str, MemberSubscription]
    ) -> Mapping[str, MemberAssignment]:
        """Compute every member's assignment; ``partitions`` maps each subscribed
        topic to its partition count. Every partition must go to exactly one member."""
        ...

    def on_assignment(self, assignment: MemberAssignment, generation: int) -> None:
        """Called on every member with its own assignment of ``generation``."""
        ...


class Admin(Protocol):
    async def create_topic(
        self,
        name: str,
        partitions: int,
        *,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
        exist_ok: bool = True,
    ) -> TopicDescription:
        """Create ``name``; if it exists (and ``exist_ok``), check its partition count.

        Raises :class:`~trio_tables.errors.PartitionCountMismatch` when an existing topic
        has another partition count. Configs of an existing topic are left alone.
        """
        ...

    async def describe_topic(self, name: str) -> TopicDescription:
        """Raises :class:`~trio_tables.errors.UnknownTopic` if it does not exist."""
        ...

    async def list_topics(self) -> frozenset[str]: ...

    async def group_offsets(self, group_id: str) -> dict[TP, int]:
        """Every offset committed by ``group_id``, without joining the group (so running
        members see no rebalance); empty for an unknown group."""
        ...


class SendOneAsBatch:
    """``send()`` for producers whose only way in is ``send_batch()``: one record is a
    batch of one (same cancellation and backpressure as ``send_batch``)."""

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        raise NotImplementedError

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        record = OutgoingRecord(topic, value, key, partition, normalize_headers(headers), timestamp)
        (delivery,) = await self.send_batch([record])
        return delivery


class Producer(Protocol):
    """Produces records; optionally transactional. One owner task at a time."""

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        """Hand one record to the producer and return its :class:`Delivery`.

        Waits (backpressure) while ``max_in_flight`` records are unacknowledged. Returns
        once the record is accepted, not when it is acknowledged: await the delivery or
        :meth:`flush` for that. Cancelled while waiting for room: nothing was sent.
        """
        ...

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Like :meth:`send` for many records at once (one thread hop on Kafka).

        May exceed ``max_in_flight`` by up to ``len(records)``: the bound is checked before
        the batch is handed over.

        Cancellation: all or nothing. :class:`trio.Cancelled` is raised only while no
        record of the batch was handed over (nothing is sent, nothing counted in flight;
        send it again if it is still wanted). A batch that was handed over is returned
        even if the call was cancelled meanwhile (the cancellation then arrives at the
        caller's next checkpoint), and :meth:`flush` waits for it.
        """
        ...

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged.

        Raises :class:`~trio_tables.errors.DeliveryFailed` for the first record that
        failed since the previous flush. Cancellation leaves the records in flight
        (nothing is lost or taken back): a later ``flush()`` waits for them and reports
        their failures.
        """
        ...

    @property
    def in_flight(self) -> int:
        """Records sent and not yet settled."""
        ...

    async def init_transactions(self) -> None:
        """Register the transactional id, fencing older producers with the same id and
        aborting what they left open. Needs ``transactional_id``."""
        ...

    async def begin_transaction(self) -> None: ...

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TP, int], group: GroupMetadata
    ) -> None:
        """Make committing ``offsets`` for ``group`` part of the open transaction."""
        ...

    async def commit_transaction(self) -> None:
        """Flush and commit. Raises :class:`~trio_tables.errors.ProducerFenced` if a newer
        producer took over, :class:`~trio_tables.errors.TransactionError` otherwise."""
        ...

    async def abort_transaction(self) -> None: ...


class _Fetching(Protocol):
    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        """Records fetched since the last poll, by partition, in offset order.

        Returns an empty mapping when nothing arrived within ``timeout`` seconds.
        Cancelled: the records are handed back and returned by the next poll.
        """
        ...

    async def seek(self, tp: TP, offset: int) -> None: ...

    async def position(self, tp: TP) -> int:
        """The offset of the next record this consumer will return for ``tp``."""
        ...

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]: ...

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """The true end (high watermark; last stable offset under ``read_committed``)
        of each partition, taken from a fetch response (correct on brokers whose
        ListOffsets is not, see BROKER.md). Does not move this consumer's positions."""
        ...

    async def pause(self, tps: Iterable[TP]) -> None:
        """Stop fetching ``tps`` until resumed; records already fetched for them are kept
        and returned after :meth:`resume`."""
        ...

    async def resume(self, tps: Iterable[TP]) -> None: ...

    def paused(self) -> frozenset[TP]: ...


class GroupConsumer(_Fetching, Protocol):
    """A member of a consumer group, subscribed to topics.

    ``poll`` returns records only of partitions the listener was last told this member
    owns, and a partition assigned in a rebalance starts at the group's committed
    offset (or the reset policy), even if this member owned it before.
    """

    def assignment(self) -> frozenset[TP]:
        """Partitions assigned to this member (as of the last completed rebalance)."""
        ...

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit ``offsets`` (next offsets to read) for this group, synchronously.

        Raises :class:`~trio_tables.errors.CommitFailed` when the group rebalanced and
        this member no longer owns a partition it commits.
        """
        ...

    async def committed(self, tps: Iterable[TP]) -> dict[TP, int | None]:
        """The group's committed offsets (``None``: never committed)."""
        ...

    async def group_metadata(self) -> GroupMetadata: ...


class RestoreConsumer(_Fetching, Protocol):
    """A group-less consumer over explicitly assigned partitions (changelog restore)."""

    async def assign(self, tps: Iterable[TP]) -> None:
        """Replace the assignment. New partitions start at their beginning; partitions
        kept keep their position."""
        ...

    def assignment(self) -> frozenset[TP]: ...


class ChangelogReader(Protocol):
    """One worker's reader of changelogs: many restore consumers (one per table task)
    served by one client. Each consumer it opens assigns its own partitions (disjoint
    from the other consumers': ``assign`` of a partition another one holds raises
    ``ValueError``) and polls only its own records; a slow consumer does not hold up the
    others (its partitions pause while it has more than ``buffer_records`` records
    waiting)."""

    def open_consumer(
        self, name: str = "", *, max_poll_records: int = 10_000, buffer_records: int | None = None
    ) -> AbstractAsyncContextManager[RestoreConsumer]:
        """A :class:`RestoreConsumer` for the block (its contract holds); leaving the
        block gives its partitions back. Once the shared client failed or the reader
        closed, calls raise :class:`~trio_tables.errors.TransportClosed`."""
        ...


class Transport(Admin, Protocol):
    """A connection to one Kafka cluster (or the in-process broker)."""

    @property
    def url(self) -> str: ...

    def open_producer(
        self,
        *,
        transactional_id: str | None = None,
        max_in_flight: int = 10_000,
        linger: float = 0.005,
    ) -> AbstractAsyncContextManager[Producer]:
        """A producer for the block; leaving it flushes (unless an error is raised) and
        closes."""
        ...

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
    ) -> AbstractAsyncContextManager[GroupConsumer]:
        """Join ``group_id`` for the block (the join itself happens in ``poll()``);
        leaving it revokes through the listener, commits what it returns and leaves
        the group. Unknown topics raise :class:`~trio_tables.errors.UnknownTopic`."""
        ...

    def open_restore_consumer(
        self,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        max_poll_records: int = 10_000,
    ) -> AbstractAsyncContextManager[RestoreConsumer]: ...

    def open_changelog_reader(
        self, *, isolation_level: IsolationLevel = "read_uncommitted"
    ) -> AbstractAsyncContextManager[ChangelogReader]:
        """The worker's one changelog reader for the block (one restore client, one
        end-offset probe, whatever the number of tables). Leaving the block stops it;
        consumers still open raise :class:`~trio_tables.errors.TransportClosed`."""
        ...
