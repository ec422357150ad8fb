"""Kafka consumers: the group member and the high-watermark probe that gives correct
end offsets (restore consumers: :mod:`._restore`).

Rebalances reach Trio through :class:`_ListenerBridge`: kafka-python awaits it on its IO
loop (heartbeats keep flowing), it starts the user's listener as a task in the consumer's
nursery, waits for a kafka Future that the task resolves, and commits the offsets the
listener returned before kafka-python releases the partitions.

Threads: the Trio thread; each client's worker thread (every client call, one at a
time, through :class:`~._bridge.ClientOwner`: ``poll`` and its ``_fix_positions``
and ``_rewind`` run there); kafka-python's IO thread (network, joins, the listener
bridge). What a group consumer's threads share lives in
:class:`~._membership.Membership` (immutable values replaced whole under a lock).
The IO thread touches the client only as kafka-python itself does during a rebalance
(committing on revocation, reading the group membership); the Trio thread reaches the
IO loop only through its thread-safe ``call_soon_threadsafe``. A poll's result crosses
from the worker thread to Trio through the thread hop's return. Everything else here
belongs to the Trio thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trio
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer
from kafka import errors as kafka_errors
from kafka.future import Future as KafkaFuture

from ...errors import CommitFailed, TransportClosed
from .._base import TP, GroupMetadata, RebalanceListener, Record
from .._retry import RetryPolicy
from ._bridge import (
    ClientOwner,
    commit_on_io_loop,
    fetch_committed,
    finish_join_round,
    from_kafka_tp,
    keep_finished_join,
    release_parked_records,
    resolve_on_io_loop,
    to_kafka_offsets,
    to_kafka_tp,
)
from ._membership import Membership

__all__ = ["HighWatermarkProbe", "KafkaGroupConsumer"]

logger = logging.getLogger("trio_tables.transport.kafka")

Batch = dict[TP, list[Record]]


def _poll_and_convert(consumer: Any, timeout_ms: int, max_records: int | None) -> Batch:
    release_parked_records(consumer)
    raw = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    out: Batch = {}
    # Per record, on the poll thread (it holds the GIL the Trio thread waits for): the
    # tuple is built directly, as Record(...) would without its argument handling.
    new = tuple.__new__
    for ktp, records in raw.items():
        topic, partition = ktp.topic, ktp.partition
        out[TP(topic, partition)] = [
            new(
                Record,
                (
                    topic,
                    partition,
                    r.offset,
                    r.key,
                    r.value,
                    r.timestamp,
                    tuple(r.headers) if r.headers else (),
                ),
            )
            for r in records
        ]
    return out


class HighWatermarkProbe:
    """Finds each partition's true end offset from a fetch response.

    Some brokers (Tansu, BROKER.md) answer ListOffsets(latest) with the last *batch's*
    base offset + 1. The probe takes that answer only as a lower bound: it fetches from
    just below it and reads the high watermark of the fetch response, which is right on
    every broker. It owns a group-less consumer of its own, so probing never moves the
    positions of the consumer that asked.
    """

    def __init__(
        self,
        owner: ClientOwner,
        consumer: Any,
        timeout: float,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._owner = owner
        self._consumer = consumer
        self._timeout = timeout
        self._retry = retry or RetryPolicy("the Kafka cluster")

    def _list_offsets(self, ktps: list[Any], *, end: bool) -> dict[Any, int]:
        """(Worker thread) kafka-python's ListOffsets for ``ktps``, waiting (at most the
        probe's timeout) for the metadata of a just-created topic: until it arrives,
        kafka-python raises ``KeyError`` for the partition, or times out."""
        consumer = self._consumer
        ask = consumer.end_offsets if end else consumer.beginning_offsets
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return dict(ask(ktps, timeout_ms=int(self._timeout * 1000)))
            except (KeyError, kafka_errors.KafkaTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _probe(self, tps: list[TP]) -> dict[TP, int]:
        consumer = self._consumer
        ktps = [to_kafka_tp(tp) for tp in tps]
        deadline = time.monotonic() + self._timeout
        lower = self._list_offsets(ktps, end=True)
        consumer.assign([])  # forget high watermarks of an earlier probe
        consumer.assign(ktps)
        for ktp in ktps:
            consumer.seek(ktp, max(lower[ktp] - 1, 0))
        found: dict[TP, int] = {}
        while len(found) < len(tps):
            # One record per poll, positions left where they were sought: kafka-python
            # parses records lazily, in Python, and a fetch returns the whole last batch
            # (thousands of records of a changelog librdkafka produced: ~0.25 s of CPU
            # per 200k-record recovery). The record taken does not move the position,
            # so the next poll drops the rest of that response unparsed and parses the
            # next partition's.
            consumer.poll(timeout_ms=50, max_records=1, update_offsets=False)
            for tp, ktp in zip(tps, ktps, strict=True):
                hw = consumer.highwater(ktp)
                # Below the lower bound: the answer to a fetch of an earlier probe, still
                # in flight when it ended, that asked for the offset this one sought (an
                # empty partition's 0, or the base of the batch written since).
                if tp not in found and hw is not None and hw >= lower[ktp]:
                    found[tp] = hw
            if time.monotonic() > deadline:
                missing = sorted(str(tp) for tp in tps if tp not in found)
                raise kafka_errors.KafkaTimeoutError(f"no high watermark for {missing}")
        consumer.assign([])
        return found

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = sorted(set(tps))
        if not wanted:
            return {}
        return await self._retry.run(
            "fetching end offsets", lambda: self._owner.run(self._probe, wanted)
        )

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Each partition's first offset: one ListOffsets request for all of them (a
        fetcher asking per partition takes a round trip each)."""
        ktps = [to_kafka_tp(tp) for tp in sorted(set(tps))]
        if not ktps:
            return {}
        raw = await self._retry.run(
            "fetching beginning offsets",
            lambda: self._owner.run(lambda: self._list_offsets(ktps, end=False)),
        )
        return {from_kafka_tp(ktp): int(offset) for ktp, offset in raw.items()}

    async def close(self) -> None:
        """Close the probe's client (shielded from cancellation)."""
        await self._owner.close(self._consumer.close)


class _KafkaFetching:
    """What group and restore consumers share: poll, seek, positions, offsets, pausing."""

    def __init__(
        self,
        owner: ClientOwner,
        consumer: Any,
        probe: HighWatermarkProbe,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._owner = owner
        self._consumer = consumer
        self._probe = probe
        self._paused: frozenset[TP] = frozenset()  # Trio thread only (see subclasses)
        self._retry = retry or RetryPolicy("the Kafka cluster")

    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        """Cancellation, or an error of the rebalance listener raised here: the records
        fetched are handed back (the consumer rewinds to them), so none is lost."""
        box: list[Batch] = []  # filled by the worker thread, read after its hop returned

        def work() -> None:
            box.append(self._fetch_batch(timeout, max_records))

        try:
            # Retried while the broker is unreachable: a failed attempt handed nothing
            # out and left every position where it was.
            await self._retry.run("poll", lambda: self._owner.run(work))
            # A cancellation that arrived while the thread ran is delivered here, with the
            # records handed back, rather than at the caller's next checkpoint with the
            # records in the caller's hands.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._after_poll()
        except BaseException:
            if box and box[0]:
                await self._hand_back(box[0])
            raise
        return self._deliverable(box[0])

    def _deliverable(self, batch: Batch) -> Batch:
        """(Trio thread) What of ``batch`` the caller may have, as its poll returns."""
        return batch

    def _fetch_batch(self, timeout: float, max_records: int | None) -> Batch:
        """(Worker thread) One poll's records. A failure hands nothing out and leaves
        every position where it was (the poll is retried)."""
        batch = _poll_and_convert(self._consumer, int(timeout * 1000), max_records)
        try:
            self._fix_positions(batch)
        except Exception:
            # The broker went away in the middle: fetch these records again on the next
            # attempt (a retried poll must not skip them).
            self._rewind(batch)
            raise
        return batch

    def _fix_positions(self, batch: Batch) -> None:
        """Hook for the group consumer, run on the worker thread right after a poll."""

    def _after_poll(self) -> None:
        """Hook for the group consumer (surfaces listener errors)."""

    def _rewind(self, batch: Batch) -> None:
        """(Worker thread) Seek back to the first record of each partition of ``batch``."""
        for tp, records in batch.items():
            # No longer assigned: the next owner starts from the last commit.
            with contextlib.suppress(kafka_errors.IllegalStateError):
                if records:
                    self._consumer.seek(to_kafka_tp(tp), records[0].offset)

    async def _hand_back(self, batch: Batch) -> None:
        """Rewind to the first record of a batch that the caller never received (a
        closed client has nothing to rewind)."""
        with trio.CancelScope(shield=True), contextlib.suppress(TransportClosed):
            await self._owner.run(self._rewind, batch)

    async def seek(self, tp: TP, offset: int) -> None:
        await self._owner.run(self._consumer.seek, to_kafka_tp(tp), offset)

    async def position(self, tp: TP) -> int:
        return int(await self._owner.run(self._consumer.position, to_kafka_tp(tp)))

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        ktps = [to_kafka_tp(tp) for tp in tps]
        raw = await self._retry.run(
            "fetching beginning offsets",
            lambda: self._owner.run(self._consumer.beginning_offsets, ktps),
        )
        return {from_kafka_tp(ktp): int(offset) for ktp, offset in raw.items()}

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return await self._probe.end_offsets(tps)

    async def pause(self, tps: Iterable[TP]) -> None:
        """Cancellation: cancelled before its worker thread started, nothing changed."""
        wanted = list(tps)
        await self._owner.run(lambda: self._consumer.pause(*map(to_kafka_tp, wanted)))
        self._note_paused(wanted, ())

    async def resume(self, tps: Iterable[TP]) -> None:
        """Cancellation: cancelled before its worker thread started, nothing changed."""
        wanted = list(tps)
        await self._owner.run(lambda: self._consumer.resume(*map(to_kafka_tp, wanted)))
        self._note_paused((), wanted)

    def _note_paused(self, add: Iterable[TP], remove: Iterable[TP]) -> None:
        self._paused = (self._paused | frozenset(add)) - frozenset(remove)

    def paused(self) -> frozenset[TP]:
        return self._paused

    async def close(self) -> None:
        """Close the client (shielded from cancellation); later calls raise
        :class:`~trio_tables.errors.TransportClosed`."""
        await self._owner.close(self._close_client)

    def _close_client(self) -> None:
        self._consumer.close(autocommit=False)


class _ListenerBridge(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python's side of the rebalance bridge; runs on the consumer's IO loop."""

    def __init__(self, owner: KafkaGroupConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        offsets = await self._owner._call_listener_from_io_loop("revoked", revoked)
        if offsets:
            try:
                await commit_on_io_loop(self._owner._consumer, offsets)
            except Exception as exc:
                # Not fatal: the next owner re-processes from the last commit (at least
                # once); tables stay exact through the source-offset header.
                logger.warning("commit on revocation of %s failed: %r", sorted(offsets), exc)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self._owner._call_listener_from_io_loop("assigned", assigned)

    async def on_partitions_lost(self, lost: set[Any]) -> None:
        await self._owner._call_listener_from_io_loop("lost", lost)


class KafkaGroupConsumer(_KafkaFetching):
    """Implements :class:`~trio_tables._transport._base.GroupConsumer`."""

    def __init__(
        self,
        owner: ClientOwner,
        consumer: Any,
        probe: HighWatermarkProbe,
        *,
        listener: RebalanceListener,
        nursery: trio.Nursery,
        reset_to_latest: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(owner, consumer, probe, retry=retry)
        self._listener = listener
        self._reset_to_latest = reset_to_latest
        # Shared by the Trio, worker and IO threads (see _membership).
        self._membership = Membership()
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._listener_errors: list[BaseException] = []  # Trio thread only
        self.bridge = _ListenerBridge(self)

    async def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe the client to ``topics`` (the group is joined by ``poll()``)."""

        def work() -> None:
            keep_finished_join(self._consumer)
            self._consumer.subscribe(list(topics), listener=self.bridge)
            self._membership.note_group(self._consumer.group_metadata)

        await self._owner.run(work)

    def note_join(self) -> None:
        """(kafka-python's IO thread) A join round completed: the generation changed."""
        self._membership.note_group(self._consumer.group_metadata)

    # -- rebalance bridge ------------------------------------------------------------
    async def _call_listener_from_io_loop(
        self, kind: str, ktps: set[Any]
    ) -> Mapping[TP, int] | None:
        """Runs on kafka-python's IO loop: hand the event to Trio and wait for it."""
        # The membership this event belongs to (an exactly-once revocation commit reads it).
        self._membership.note_group(self._consumer.group_metadata)
        future = KafkaFuture()
        tps = frozenset(from_kafka_tp(ktp) for ktp in ktps)
        if not tps and kind != "assigned":
            return None  # kafka-python reports empty revocations on a first join
        try:
            self._token.run_sync_soon(self._start_listener_task, kind, tps, future)
        except trio.RunFinishedError:
            return None
        result: Mapping[TP, int] | None = await future
        return result

    def _start_listener_task(self, kind: str, tps: frozenset[TP], future: KafkaFuture) -> None:
        try:
            self._nursery.start_soon(self._run_listener, kind, tps, future)
        except RuntimeError:  # nursery closed: nobody is left to ask
            resolve_on_io_loop(self._consumer, future, None)

    async def _run_listener(self, kind: str, tps: frozenset[TP], future: KafkaFuture) -> None:
        result: Mapping[TP, int] | None = None
        try:
            if kind == "revoked":
                self._membership.release(tps)
                result = await self._listener.on_partitions_revoked(tps)
            elif kind == "assigned":
                floors: Mapping[TP, int | None] = dict.fromkeys(tps)
                if self._reset_to_latest and tps:
                    floors = await self._probe.end_offsets(tps)
                # Owned and fresh in one step: a poll in between either drops their
                # records (not owned yet) or positions them (fresh), never passes
                # records fetched from kafka-python's own choice of start.
                self._membership.assign(floors)
                await self._listener.on_partitions_assigned(tps)
            else:
                self._membership.release(tps)
                await self._listener.on_partitions_lost(tps)
        except Exception as exc:
            self._listener_errors.append(exc)
            result = None
        finally:
            resolve_on_io_loop(self._consumer, future, result)

    def _fix_positions(self, batch: Batch) -> None:
        """Make a poll that completed a rebalance start each newly assigned partition
        where the group says, as the Java client does.

        kafka-python deviates in two ways that would duplicate work: under the eager
        protocol it keeps a partition's old fetch position when the partition comes back
        (another member may have moved it on meanwhile), and after a failed SyncGroup it
        returns records of partitions the listener was told are revoked. And a "latest"
        reset uses ListOffsets, which some brokers answer too low (BROKER.md).
        Also refreshes the group membership snapshot (:meth:`group_metadata`).
        """
        self._membership.note_group(self._consumer.group_metadata)
        ownership = self._membership.take_fresh()
        owned = ownership.assigned
        for tp in [tp for tp in batch if tp not in owned]:
            del batch[tp]
        fresh = ownership.fresh
        if not fresh:
            return
        try:
            starts = self._group_starts(fresh)
        except Exception:
            self._membership.retry_fresh(fresh)  # checked again after the next poll
            raise
        if unplaced := {tp: floor for tp, floor in fresh.items() if tp not in starts}:
            # Not in kafka-python's assignment at this moment (a rebalance in progress):
            # their records come from kafka-python's own choice of start; a later poll
            # places them where the group says.
            self._membership.retry_fresh(unplaced)
            for tp in unplaced:
                batch.pop(tp, None)
        consumer = self._consumer
        for tp, start in starts.items():
            records = batch.get(tp)
            if records and records[0].offset == start:
                continue  # fetched from the right place
            batch.pop(tp, None)
            consumer.seek(to_kafka_tp(tp), start)

    def _group_starts(self, fresh: Mapping[TP, int | None]) -> dict[TP, int]:
        """Where each newly assigned partition starts: the group's commit, else the
        "latest" floor, else the beginning (asks the broker)."""
        consumer = self._consumer
        assigned = consumer.assignment()
        starts: dict[TP, int] = {}
        uncommitted: list[TP] = []
        mine = [tp for tp in fresh if to_kafka_tp(tp) in assigned]
        commits = fetch_committed(consumer, mine)
        for tp in mine:
            floor = fresh[tp]
            committed = commits[tp]
            if committed is not None:
                starts[tp] = committed
            elif floor is not None:
                starts[tp] = floor
            else:
                uncommitted.append(tp)
        if uncommitted:
            ktps = [to_kafka_tp(tp) for tp in uncommitted]
            beginnings = consumer.beginning_offsets(ktps)
            for tp, ktp in zip(uncommitted, ktps, strict=True):
                starts[tp] = beginnings[ktp]
        return starts

    def _deliverable(self, batch: Batch) -> Batch:
        """(Trio thread) Drop partitions the listener revoked (or revoked and assigned
        again: fresh) after the worker thread filtered the batch: their records were
        fetched for an ownership that is over, and the next poll starts a fresh
        partition where the group says."""
        ownership = self._membership.ownership
        owned, fresh = ownership.assigned, ownership.fresh
        for tp in [tp for tp in batch if tp not in owned or tp in fresh]:
            del batch[tp]
        return batch

    def _close_client(self) -> None:
        """(Worker thread) Leave the group and close: after the member's join round in
        flight, if any, ended (at most ``session_timeout_ms``, :func:`finish_join_round`);
        revocations reach the listener (this nursery serves it until the close ends)."""
        session_timeout = self._consumer.config["session_timeout_ms"] / 1000
        finish_join_round(self._consumer, session_timeout)
        super()._close_client()

    def _after_poll(self) -> None:
        if self._listener_errors:
            error = self._listener_errors.pop(0)
            self._listener_errors.clear()
            raise error

    # -- GroupConsumer -------------------------------------------------------------------
    def assignment(self) -> frozenset[TP]:
        return self._membership.ownership.assigned

    def paused(self) -> frozenset[TP]:
        return self._membership.ownership.paused

    def _note_paused(self, add: Iterable[TP], remove: Iterable[TP]) -> None:
        self._membership.pause(add)
        self._membership.resume(remove)

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        if not offsets:
            return
        try:
            await self._retry.run(
                "offset commit",
                lambda: self._owner.run(self._consumer.commit, to_kafka_offsets(offsets)),
            )
        except (
            kafka_errors.CommitFailedError,
            kafka_errors.IllegalGenerationError,
            kafka_errors.UnknownMemberIdError,
            kafka_errors.RebalanceInProgressError,
        ) as exc:
            raise CommitFailed(
                f"commit of {sorted(str(tp) for tp in offsets)} rejected: {exc}; the group "
                "rebalanced, the partitions' new owner continues from the last commit"
            ) from exc

    async def committed(self, tps: Iterable[TP]) -> dict[TP, int | None]:
        wanted = list(tps)

        def fetch() -> dict[TP, int | None]:
            return fetch_committed(self._consumer, wanted)

        return await self._retry.run("fetching committed offsets", lambda: self._owner.run(fetch))

    async def group_metadata(self) -> GroupMetadata:
        """The membership (generation, member id) as of the last poll or rebalance step.

        A snapshot taken by the threads that own the client's group state (the worker
        thread after each poll, kafka-python's IO thread when a join completes and
        before each listener call) and read whole here: it never waits for the client,
        which an exactly-once commit inside the rebalance listener needs (the ``poll()``
        running the listener holds the client). Cancellation: one checkpoint, nothing
        else happens.
        """
        await trio.lowlevel.checkpoint()
        if self._owner.closed:
            raise TransportClosed(f"{self._owner.name} is closed")
        return self._membership.group


def new_kafka_consumer(config: dict[str, Any]) -> Any:
    return KafkaConsumer(**config)
