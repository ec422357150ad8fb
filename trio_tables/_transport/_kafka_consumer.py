"""Kafka consumers: the group member, the group-less restore consumer and the
high-watermark probe that gives correct end offsets.

Rebalances reach Trio through :class:`_ListenerBridge`: kafka-python awaits it on its IO
loop (heartbeats keep flowing), it starts the user's listener as a task in the consumer's
nursery, waits for a kafka Future that the task resolves, and commits the offsets the
listener returned before kafka-python releases the partitions.
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

from ..errors import CommitFailed, TransportClosed
from ._base import TP, GroupMetadata, RebalanceListener, Record
from ._kafka_bridge import (
    ClientOwner,
    commit_on_io_loop,
    from_kafka_tp,
    release_parked_records,
    resolve_on_io_loop,
    to_kafka_offsets,
    to_kafka_tp,
)
from ._retry import RetryPolicy

__all__ = ["HighWatermarkProbe", "KafkaGroupConsumer", "KafkaRestoreConsumer"]

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

    def _probe(self, tps: list[TP]) -> dict[TP, int]:
        consumer = self._consumer
        ktps = [to_kafka_tp(tp) for tp in tps]
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                lower = consumer.end_offsets(ktps, timeout_ms=int(self._timeout * 1000))
                break
            except (KeyError, kafka_errors.KafkaTimeoutError):
                # Metadata of a just-created topic may not have arrived yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        consumer.assign([])  # forget high watermarks of an earlier probe
        consumer.assign(ktps)
        for ktp in ktps:
            consumer.seek(ktp, max(lower[ktp] - 1, 0))
        found: dict[TP, int] = {}
        while len(found) < len(tps):
            consumer.poll(timeout_ms=50)
            for tp, ktp in zip(tps, ktps, strict=True):
                if tp not in found and (hw := consumer.highwater(ktp)) is not None:
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
        self._paused: set[TP] = set()
        self._retry = retry or RetryPolicy("the Kafka cluster")

    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        box: list[Batch] = []

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
        except trio.Cancelled:
            if box and box[0]:
                await self._hand_back(box[0])
            raise
        self._after_poll()
        return box[0]

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
        """Rewind to the first record of a batch that the caller never received."""
        with trio.CancelScope(shield=True):
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
        wanted = list(tps)
        await self._owner.run(lambda: self._consumer.pause(*map(to_kafka_tp, wanted)))
        self._paused.update(wanted)

    async def resume(self, tps: Iterable[TP]) -> None:
        wanted = list(tps)
        await self._owner.run(lambda: self._consumer.resume(*map(to_kafka_tp, wanted)))
        self._paused.difference_update(wanted)

    def paused(self) -> frozenset[TP]:
        return frozenset(self._paused)

    async def close(self) -> None:
        """Close the client (shielded from cancellation); later calls raise
        :class:`~trio_tables.errors.TransportClosed`."""
        await self._owner.close(self._close_client)

    def _close_client(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaRestoreConsumer(_KafkaFetching):
    """Implements :class:`~trio_tables._transport._base.RestoreConsumer`."""

    def __init__(
        self,
        owner: ClientOwner,
        consumer: Any,
        probe: HighWatermarkProbe,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(owner, consumer, probe, retry=retry)
        self._assignment: frozenset[TP] = frozenset()

    async def assign(self, tps: Iterable[TP]) -> None:
        wanted = frozenset(tps)
        await self._owner.run(self._consumer.assign, [to_kafka_tp(tp) for tp in sorted(wanted)])
        self._assignment = wanted
        self._paused &= wanted

    def assignment(self) -> frozenset[TP]:
        return self._assignment


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
        # Partitions assigned during the current poll: where they start is checked
        # after it (see _fix_positions). For a "latest" reset, the true end offset at
        # assignment, else None.
        self._fresh: dict[TP, int | None] = {}
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._assignment: frozenset[TP] = frozenset()
        self._listener_errors: list[BaseException] = []
        self.bridge = _ListenerBridge(self)

    # -- rebalance bridge ------------------------------------------------------------
    async def _call_listener_from_io_loop(
        self, kind: str, ktps: set[Any]
    ) -> Mapping[TP, int] | None:
        """Runs on kafka-python's IO loop: hand the event to Trio and wait for it."""
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
                self._assignment -= tps
                self._paused -= tps
                result = await self._listener.on_partitions_revoked(tps)
            elif kind == "assigned":
                self._assignment |= tps
                if self._reset_to_latest and tps:
                    self._fresh.update(await self._probe.end_offsets(tps))
                else:
                    self._fresh.update(dict.fromkeys(tps))
                await self._listener.on_partitions_assigned(tps)
            else:
                self._assignment -= tps
                self._paused -= tps
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
        """
        owned = self._assignment
        for tp in [tp for tp in batch if tp not in owned]:
            del batch[tp]
        fresh, self._fresh = self._fresh, {}
        if not fresh:
            return
        try:
            starts = self._group_starts(fresh)
        except Exception:
            self._fresh = {**fresh, **self._fresh}  # checked again after the next poll
            raise
        consumer = self._consumer
        for tp, start in starts.items():
            records = batch.get(tp)
            if records and records[0].offset == start:
                continue  # fetched from the right place
            batch.pop(tp, None)
            consumer.seek(to_kafka_tp(tp), start)

    def _group_starts(self, fresh: dict[TP, int | None]) -> dict[TP, int]:
        """Where each newly assigned partition starts: the group's commit, else the
        "latest" floor, else the beginning (asks the broker)."""
        consumer = self._consumer
        assigned = consumer.assignment()
        starts: dict[TP, int] = {}
        uncommitted: list[TP] = []
        for tp, floor in fresh.items():
            ktp = to_kafka_tp(tp)
            if ktp not in assigned:
                continue
            committed = consumer.committed(ktp)
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

    def _after_poll(self) -> None:
        if self._listener_errors:
            error = self._listener_errors.pop(0)
            self._listener_errors.clear()
            raise error

    # -- GroupConsumer -------------------------------------------------------------------
    def assignment(self) -> frozenset[TP]:
        return self._assignment

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
            return {tp: self._consumer.committed(to_kafka_tp(tp)) for tp in wanted}

        return await self._retry.run("fetching committed offsets", lambda: self._owner.run(fetch))

    async def group_metadata(self) -> GroupMetadata:
        """A snapshot of the membership (generation, member id). Unlike every other call
        it does not wait for this client's turn: it only reads the coordinator's state,
        and an exactly-once commit needs it inside the rebalance listener, while the
        ``poll()`` that runs the listener holds the client."""
        if self._owner.closed:
            raise TransportClosed(f"{self._owner.name} is closed")
        raw = await trio.to_thread.run_sync(self._consumer.group_metadata)
        return GroupMetadata(raw.group_id, raw.generation_id, raw.member_id, raw.group_instance_id)


def new_kafka_consumer(config: dict[str, Any]) -> Any:
    return KafkaConsumer(**config)
