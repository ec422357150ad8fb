"""The worker's tables: registration, each table's nursery, and changelog topics.

:class:`TableRegistry` knows every table by name, starts each one's nursery
(:func:`~._recovery.run_table`: its recovery task and changelog consumer task) in the
manager's nursery, keeps the channel to it, and creates or checks each changelog topic
(co-partitioned with the source topics: the app's partition count is fixed by the first
stream opened).

Threads: only the Trio thread touches it, except :meth:`TableRegistry.freshness`, which
kafka-python's IO thread calls (it reads whole-replaced dicts only).
"""

from __future__ import annotations

from collections.abc import Iterator

import trio

from ._recovery import CommittedOffsets, TableMessage, run_table
from ._table import Collection, GlobalTable, StandbyUpdate
from ._transport._base import ChangelogReader, Transport
from .errors import PartitionCountMismatch, UnknownTopic

__all__ = ["TableRegistry"]


class TableRegistry:
    """Every table of one worker, by name."""

    def __init__(self, *, changelog_replication_factor: int) -> None:
        self.tables: dict[str, Collection] = {}
        self.channels: dict[str, trio.MemorySendChannel[TableMessage]] = {}
        self._started: dict[str, trio.Event] = {}
        self._ready: dict[str, trio.Event] = {}
        self._changelogs_ready: set[str] = set()
        self._changelog_locks: dict[str, trio.Lock] = {}
        self._replication_factor = changelog_replication_factor
        # The source topics' partition count, once a stream fixed it.
        self.partition_count: int | None = None

    def __iter__(self) -> Iterator[Collection]:
        return iter(list(self.tables.values()))

    def register(self, table: Collection) -> None:
        if table.name in self.tables:
            raise ValueError(f"a table named {table.name!r} already exists")
        self.tables[table.name] = table
        self._started[table.name] = trio.Event()
        self._ready[table.name] = trio.Event()

    @property
    def partitioned(self) -> list[Collection]:
        """The tables that follow the group's assignment (every one but global ones)."""
        return [table for table in self.tables.values() if not table.is_global]

    # -- the tables' nurseries --------------------------------------------------------
    async def open(
        self,
        nursery: trio.Nursery,
        table: Collection,
        reader: ChangelogReader,
        committed_offsets: CommittedOffsets,
        refresh_interval: float,
    ) -> trio.MemorySendChannel[TableMessage]:
        """Open ``table``'s store (in a worker thread) and start its nursery in
        ``nursery``; the channel to its recovery task."""
        await table.open()
        channel: trio.MemorySendChannel[TableMessage] = await nursery.start(
            run_table, table, reader, committed_offsets, refresh_interval
        )
        self.channels[table.name] = channel
        return channel

    def mark_started(self, table: Collection) -> None:
        self._started[table.name].set()

    def mark_ready(self, table: Collection) -> None:
        self._ready[table.name].set()

    async def wait_until_started(self) -> None:
        """Wait until every registered table's nursery has started (tables registered
        meanwhile included). Cancellation: safe."""
        for event in list(self._started.values()):
            await event.wait()

    async def wait_until_ready(self, table: Collection) -> None:
        """Wait until ``table`` started and has its changelog (and, for a table added
        while partitions were active, recovered them). Cancellation: safe."""
        await self._ready[table.name].wait()

    async def start_global(
        self,
        transport: Transport,
        table: Collection,
        channel: trio.MemorySendChannel[TableMessage],
    ) -> None:
        """A global table tails every partition of its changelog from now on."""
        assert isinstance(table, GlobalTable)
        count = table.partitions
        if count is None:
            try:
                count = (await transport.describe_topic(table.changelog_topic_name)).partitions
            except UnknownTopic:
                count = self.partition_count or 1
        await self.ensure_changelog(transport, table, count)
        table.open_all_partitions(count)
        channel.send_nowait(StandbyUpdate(frozenset(range(count))))

    # -- changelog topics ---------------------------------------------------------------
    async def co_partition(self, transport: Transport, topic: str) -> int:
        """Check that source ``topic`` has the app's partition count (the first one
        fixes it) and that every partitioned table's changelog has it too, creating the
        missing ones; the count."""
        count = (await transport.describe_topic(topic)).partitions
        if self.partition_count is not None and count != self.partition_count:
            raise PartitionCountMismatch(
                topic,
                expected=self.partition_count,
                actual=count,
                reason="all source topics of an app must have the same partition count",
            )
        # The partition count becomes the app's only once every changelog agrees with it
        # (a table started meanwhile sees no count and is checked by this loop instead).
        while pending := [t for t in self.partitioned if t.name not in self._changelogs_ready]:
            for table in pending:
                await self.ensure_changelog(transport, table, count)
        self.partition_count = count
        return count

    async def ensure_changelog(self, transport: Transport, table: Collection, count: int) -> None:
        """Create the table's changelog with ``count`` partitions, or check that it has
        them. Concurrent calls for one table (a stream opening while the table starts)
        run one after the other; the second finds the work done."""
        async with self._changelog_locks.setdefault(table.name, trio.Lock()):
            if table.name in self._changelogs_ready:
                return
            if table.partitions is not None and table.partitions != count:
                raise PartitionCountMismatch(
                    table.changelog_topic_name,
                    expected=count,
                    actual=table.partitions,
                    reason=f"table {table.name!r} declares partitions={table.partitions} "
                    f"but the source topics have {count}; tables are co-partitioned with "
                    "their source",
                )
            configs = {"cleanup.policy": "compact", **table.extra_topic_configs}
            await transport.create_topic(
                table.changelog_topic_name,
                count,
                replication_factor=self._replication_factor,
                configs=configs,
            )
            table.changelog_created(count)
            self._changelogs_ready.add(table.name)

    # -- reports -----------------------------------------------------------------------------
    def freshness(self) -> dict[int, int]:
        """Per partition, how much of it the stores hold (reported to the group leader,
        which prefers the freshest member when a partition moves). Runs on
        kafka-python's IO thread: it only reads dicts that the Trio thread replaces
        whole (``local_offsets``) and copies the table list."""
        fresh: dict[int, int] = {}
        for table in list(self.tables.values()):
            if table.is_global:
                continue
            for partition, offset in table.local_offsets.items():
                fresh[partition] = fresh.get(partition, 0) + offset + 1
        return fresh

    def close(self) -> None:
        for table in self.tables.values():
            table.close()
