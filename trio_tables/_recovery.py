"""Each table's own nursery: its recovery task and its changelog consumer task.

::

    table nursery
    ├── recovery task         receives RecoveryRequest / StandbyUpdate messages from the
    │                         manager; restores active partitions through its consumer
    │                         of the worker's changelog reader; forwards standby sets to
    │                         the tailer and waits until the tailer let go of partitions
    │                         being promoted
    └── changelog consumer    tails the standby partitions (every partition of a
                              GlobalTable) through a second consumer of the reader and
                              applies records as they arrive

Neither task owns a Kafka client: the worker's one
:class:`~._transport._base.ChangelogReader` fetches for every table and hands each
consumer (a memory buffer per task) only its own partitions' records.

A request's cancel scope belongs to the manager: revoking a partition while it is being
restored cancels the request, and the task goes on with the next one.

Standby copies must never hold the effect of an event that will be processed again (the
promoted copy would count it twice). The tailer therefore applies a partition's records
only up to the first one caused by an event at or past the group's committed offset
(the source-offset header); the rest wait in memory until a later commit covers them.
On promotion they are dropped and the recovery replays them from the store's offset:
only the lag.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping

import attrs
import trio

from ._changelog import committed_records
from ._progress import RestoreProgressLog
from ._table import Collection, RecoveryRequest, StandbyUpdate
from ._table._collection import RestoreReport
from ._transport._base import TP, ChangelogReader, Record, RestoreConsumer
from .errors import TransportClosed

__all__ = [
    "CommittedOffsets",
    "RecoveryStatus",
    "TableMessage",
    "restore",
    "resume_offsets",
    "run_table",
]

logger = logging.getLogger("trio_tables.recovery")

TableMessage = RecoveryRequest | StandbyUpdate


@attrs.frozen
class RecoveryStatus:
    """Progress of every table: ``active[table][partition] = (position, target)`` of the
    current or last restore, ``standby[table][partition] = (next offset, records held
    back until the group commits their events)``, and whether all actives are ready."""

    active: Mapping[str, Mapping[int, tuple[int, int]]]
    standby: Mapping[str, Mapping[int, tuple[int, int]]]
    actives_ready: bool

    def active_remaining_total(self) -> int:
        """Changelog records still to restore, over every table and partition."""
        return sum(
            max(target - position, 0)
            for partitions in self.active.values()
            for position, target in partitions.values()
        )


CommittedOffsets = Callable[[frozenset[int]], Awaitable[Mapping[TP, int | None] | None]]
"""The group's committed source offsets for some partition numbers (``None``: unknown
now, for instance while this worker is not in the group)."""


async def run_table(
    table: Collection,
    reader: ChangelogReader,
    committed_offsets: CommittedOffsets,
    refresh_interval: float,
    *,
    task_status: trio.TaskStatus[trio.MemorySendChannel[TableMessage]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The table's nursery. Started by the manager; ``task_status.started`` hands back the
    channel for messages once both consumers are connected. Runs until cancelled (or
    until the message channel is closed)."""
    # Unbounded: messages are few (one per assignment change) and the manager must never
    # block on sending one while it holds a rebalance in progress.
    send, receive = trio.open_memory_channel[TableMessage](math.inf)
    to_tailer, from_recovery = trio.open_memory_channel[StandbyUpdate](math.inf)
    tailer = _Tailer(table, committed_offsets, refresh_interval)
    async with trio.open_nursery() as nursery:
        await nursery.start(tailer.run, reader, from_recovery)
        await nursery.start(_recovery_task, table, reader, receive, to_tailer)
        task_status.started(send)


async def _recovery_task(
    table: Collection,
    reader: ChangelogReader,
    messages: trio.MemoryReceiveChannel[TableMessage],
    to_tailer: trio.MemorySendChannel[StandbyUpdate],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with (
        reader.open_consumer(
            f"{table.name} recovery", max_poll_records=max(table.recovery_buffer_size, 1)
        ) as consumer,
        messages,
        to_tailer,
    ):
        task_status.started()
        async for message in messages:
            if isinstance(message, StandbyUpdate):
                # In order with the requests: a partition promoted by the next request
                # is released by the tailer before it is restored.
                await to_tailer.send(message)
                await message.done.wait()
                continue
            await _recover(table, consumer, message)


async def _recover(table: Collection, consumer: RestoreConsumer, request: RecoveryRequest) -> None:
    try:
        with request.scope:
            await restore(table, consumer, request)
            request.completed = True
    except Exception as exc:
        logger.exception("%s: recovery of %s failed", table.label, sorted(request.partitions))
        request.error = exc
    finally:
        # A cancelled restore gives its partitions back at once (the tailer may take
        # them next; partitions of one changelog reader are disjoint).
        with trio.CancelScope(shield=True), contextlib.suppress(TransportClosed):
            await consumer.assign(())
        request.done.set()


class _Tailer:
    """The changelog consumer task: keeps standby partitions (or, for a global table,
    every partition) up to date."""

    def __init__(
        self, table: Collection, committed_offsets: CommittedOffsets, refresh_interval: float
    ) -> None:
        self.table = table
        self.topic = table.changelog_topic_name
        self._committed_offsets = committed_offsets
        self._refresh_interval = refresh_interval
        self._next: dict[int, int] = {}
        self._held: dict[int, list[Record]] = {}
        self._committed: Mapping[TP, int | None] | None = None
        self._committed_at = -math.inf
        if not table.is_global:
            table.tailing_caught_up()  # no standby copies yet: nothing to catch up with
        self._targets: dict[int, int] = {}

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._next)

    async def run(
        self,
        reader: ChangelogReader,
        updates: trio.MemoryReceiveChannel[StandbyUpdate],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with updates:
            task_status.started()
            while True:
                # Idle (no partition to follow): no consumer of the reader is open.
                try:
                    update = await updates.receive()
                except trio.EndOfChannel:
                    return
                if not update.partitions:
                    update.done.set()
                    continue
                async with reader.open_consumer(
                    f"{self.table.name} standby",
                    max_poll_records=max(self.table.standby_buffer_size, 1),
                ) as consumer:
                    await self._change(consumer, update)
                    while self._next:
                        try:
                            update = updates.receive_nowait()
                        except trio.WouldBlock:
                            await self._step(consumer)
                            continue
                        except trio.EndOfChannel:
                            return
                        await self._change(consumer, update)

    async def _change(self, consumer: RestoreConsumer, update: StandbyUpdate) -> None:
        table = self.table
        wanted = update.partitions
        for partition in self.partitions - wanted:
            del self._next[partition]
            self._held.pop(partition, None)
            table.standby_progress.pop(partition, None)
        entering = sorted(wanted - self.partitions)
        if entering and not table.is_global:
            # New copies to catch up with (a global table's event is set once, at start).
            table.tailing_started()
        if entering:
            starts, end = await resume_offsets(
                table, consumer, {p: TP(self.topic, p) for p in entering}
            )
            for tp, start in starts.items():
                self._next[tp.partition] = start
                self._targets[tp.partition] = end[tp]
        await consumer.assign(TP(self.topic, p) for p in sorted(self._next))
        for p, offset in self._next.items():
            await consumer.seek(TP(self.topic, p), offset)
        self._report()
        update.done.set()

    async def _step(self, consumer: RestoreConsumer) -> None:
        batch = await consumer.poll(timeout=0.2)
        for tp, records in batch.items():
            if tp.partition in self._next and records:
                self._held.setdefault(tp.partition, []).extend(records)
                self._next[tp.partition] = records[-1].offset + 1
        if any(self._held.values()):
            await self._apply_confirmed()
        self._report()

    async def _apply_confirmed(self) -> None:
        table = self.table
        if table.is_global:
            committed: Mapping[TP, int | None] | None = None  # every record counts
        else:
            committed = await self._fresh_committed()
            if committed is None:
                return
        for partition, records in list(self._held.items()):
            cut = _confirmed_prefix(records, committed)
            if cut:
                table.standby_applied += await table.apply_changelog_batch(
                    partition, records[:cut], None
                )
                self._held[partition] = records[cut:]

    async def _fresh_committed(self) -> Mapping[TP, int | None] | None:
        now = trio.current_time()
        if self._committed is None or now - self._committed_at >= self._refresh_interval:
            self._committed = await self._committed_offsets(self.partitions)
            self._committed_at = now
        return self._committed

    def _report(self) -> None:
        progress = self.table.standby_progress
        for p, offset in self._next.items():
            progress[p] = (offset, len(self._held.get(p, ())))
        if all(self._next[p] >= target for p, target in self._targets.items() if p in self._next):
            self.table.tailing_caught_up()
        self.table.notify_progress()


def _confirmed_prefix(records: Iterable[Record], committed: Mapping[TP, int | None] | None) -> int:
    """How many leading ``records`` were caused by events the group has committed."""
    records = list(records)
    if committed is None:
        return len(records)
    count = 0
    for record, kept in zip(records, committed_records(records, committed), strict=False):
        if record is not kept:
            break
        count += 1
    return count


# -- restoring partitions from the changelog ------------------------------------------------
async def restore(table: Collection, consumer: RestoreConsumer, request: RecoveryRequest) -> None:
    """Rebuild ``request.partitions`` of ``table`` from its changelog, up to the end
    offsets taken now: from the store's saved offset on (a store ahead of the group's
    committed offsets, or whose offset is outside the changelog, is rebuilt from the
    beginning), skipping records of events past the committed offsets. Cancellation:
    stops between batches; every batch applied so far is in the store with its offset,
    so a later restore continues from there."""
    topic = table.changelog_topic_name
    tps = {p: TP(topic, p) for p in request.partitions}
    sources = {p: _committed_sources(p, request.committed) for p in tps}
    for p in tps:
        if table.check_store_not_ahead(p, sources[p]):
            await table.reset_partition(p)
    starts, end = await resume_offsets(table, consumer, tps)
    todo: dict[TP, int] = {}
    for p, tp in tps.items():
        start = starts[tp]
        table.recovery_progress[p] = (start, end[tp])
        if start < end[tp]:
            todo[tp] = start
    total = sum(end[tp] - start for tp, start in todo.items())
    progress_log = RestoreProgressLog(table.logger, table.name, total)
    if todo:
        table.logger.info(
            "%s: restoring %d records of partitions %s from %s",
            table.name,
            total,
            sorted(tp.partition for tp in todo),
            topic,
        )
        await consumer.assign(todo)
        for tp, start in todo.items():
            await consumer.seek(tp, start)
    remaining = dict(todo)
    applied = dict.fromkeys(tps, 0)
    while remaining:
        batch = await consumer.poll(timeout=0.2)
        for tp in list(remaining):
            records = batch.get(tp)
            if records:
                count = await table.apply_changelog_batch(
                    tp.partition, records, request.committed, sources=sources[tp.partition]
                )
                table.replayed += count
                applied[tp.partition] += count
                # At least past the last record. The consumer's position (a thread hop)
                # is asked only after a poll that returned nothing at all: offsets have
                # gaps (transaction markers), so the end may be reached without a record
                # at end - 1.
                position = records[-1].offset + 1
            elif not batch:
                position = await consumer.position(tp)
            else:
                continue  # records of other partitions came first
            table.recovery_progress[tp.partition] = (position, end[tp])
            if position >= end[tp]:
                del remaining[tp]
        table.notify_progress()
        progress_log.update(
            sum(
                min(table.recovery_progress[tp.partition][0], end[tp]) - start
                for tp, start in todo.items()
            )
        )
    progress_log.finish(total)
    if todo:
        await consumer.assign(())
    for p, tp in tps.items():
        start = todo.get(tp, end[tp])
        table.restores.append(RestoreReport(p, start, end[tp], applied[p]))
    for p in tps:
        # Record the source offsets this state is consistent with, even if no record was
        # replayed (so a later commit check compares with the right numbers).
        await table.record_sources(p, sources[p])


async def resume_offsets(
    table: Collection, consumer: RestoreConsumer, tps: Mapping[int, TP]
) -> tuple[dict[TP, int], dict[TP, int]]:
    """Where reading the changelog of ``tps`` (by partition) continues, and its end
    offsets now: after the store's saved offset, or at the beginning. A saved offset
    outside the changelog means the local copy cannot be continued: it is discarded (with
    a log line) and read again from the beginning."""
    begin = await consumer.beginning_offsets(tps.values())
    end = await consumer.end_offsets(tps.values())
    starts: dict[TP, int] = {}
    for p, tp in tps.items():
        saved = table.local_offsets.get(p)
        start = begin[tp] if saved is None else saved + 1
        if saved is not None and not begin[tp] <= start <= end[tp]:
            table.logger.warning(
                "%s[%d]: saved changelog offset %d is outside the changelog [%d, %d): "
                "discarding local state and rebuilding from the changelog",
                table.name,
                p,
                saved,
                begin[tp],
                end[tp],
            )
            await table.reset_partition(p)
            start = begin[tp]
        starts[tp] = start
    return starts, end


def _committed_sources(partition: int, committed: Mapping[TP, int | None]) -> dict[str, int]:
    return {
        tp.topic: offset
        for tp, offset in committed.items()
        if tp.partition == partition and offset is not None
    }
