"""``TableManager``: the root nursery of an application's tables.

Task tree (one nursery, owned by the ``async with TableManager(...)`` block)::

    manager nursery
    ├── group consumer task   polls source topics, feeds streams, pauses full partitions,
    │                         runs commit requests between polls
    ├── recovery supervisor   one task per assignment: restore every table, then release
    │                         the partitions to the streams
    ├── committer             every commit_interval: commit cycle, then commit offsets
    └── per table: run_table  the table's nursery (recovery task with a restore consumer)

A *commit cycle* pauses the streams between two events (so no event is half applied),
takes the changed keys of every table and the processed source offsets, lets the streams
go on, sends the changes to the changelog, waits for the acknowledgements, writes them
to the stores with the changelog offsets and the source offsets, and finally commits the
source offsets (at least once: an offset is committed only after the effects of every
event before it are acknowledged and persisted).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Literal

import trio

from ._assignor import KeyMetadata, TablesAssignor
from ._asyncio import AsyncioLoop, reset_current_asyncio_loop, set_current_asyncio_loop
from ._codecs import JsonCodec, resolve_codec
from ._exactly_once import Transactions
from ._partitioner import key_bytes
from ._rebalance import Assignment, RebalanceSupervisor
from ._recovery import RecoveryStatus, TableMessage, run_table
from ._signals import StopControl
from ._stream import DecodeErrorPolicy, Stream, current_event
from ._table import (
    Collection,
    GlobalSetTable,
    GlobalTable,
    RecoveryRequest,
    SetTable,
    StandbyUpdate,
    Table,
)
from ._transport import open_transport
from ._transport._base import (
    TP,
    Delivery,
    GroupConsumer,
    IsolationLevel,
    OutgoingRecord,
    Producer,
    RebalanceProtocol,
    Transport,
)
from .errors import CommitFailed, PartitionCountMismatch, RecoveryFailed, UnknownTopic

__all__ = ["TableManager"]

logger = logging.getLogger("trio_tables.manager")

ProcessingGuarantee = Literal["at_least_once", "exactly_once"]


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one non-cancellation error inside ``group``, if there is exactly one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled) and all(exc is not seen for seen in leaves):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


class TableManager:
    """Owns an application's tables, its consumer group membership and its commits.

    ``async with TableManager(app_id, broker=..., store=...) as manager:`` connects,
    starts the manager's nursery and returns the manager. Leaving the block normally
    leaves the group after a last commit (the revocation flushes the changelog, persists
    the stores and commits the offsets), then closes everything. An exception in the
    block (or in a task of the manager) cancels all work without committing; state stays
    consistent (stores record which source offsets their data belongs to). Internal
    exception groups are unwrapped when they hold a single error.

    Cancellation of the ``async with`` block behaves like an exception: nothing more is
    committed, and events processed since the last commit are processed again by the next
    owner of their partitions.

    ``handle_signals=True`` (for a worker process; main thread only): the first SIGINT or
    SIGTERM ends every stream's ``async for`` loop after its current event, so the block
    runs to its end and leaves normally: a last commit, the group is left (the partitions
    move at once), one log line says what was committed. A second signal, or a stop not
    done within ``shutdown_timeout``, stops at once: the manager's work is cancelled
    without committing, one log line says what was left uncommitted, and the block
    raises ``SystemExit(130)`` (SIGINT) or ``SystemExit(143)`` (SIGTERM). Without it,
    signals are Trio's (SIGINT raises ``KeyboardInterrupt``). :meth:`request_stop` does
    what the first signal does (docs/operations.md, "Stopping workers").

    ``processing_guarantee="exactly_once"`` puts the changelog records, the outputs of
    :meth:`send` and the source offsets of each commit interval in one Kafka transaction
    (see :mod:`trio_tables._exactly_once`); stores are written only after it commits,
    restores read ``read_committed``. A commit that fails aborts and stops the worker
    (:class:`~trio_tables.errors.TransactionAborted`, or
    :class:`~trio_tables.errors.WorkerFenced` when a newer instance took over). Give each
    worker a stable ``worker_id`` (its transactional id is ``"{app_id}-{worker_id}"``) so
    that a restarted worker fences its predecessor and aborts what it left open at once.
    """

    # Events processed past a commit cycle in flight before streams wait for it.
    max_commit_backlog = 50_000

    def __init__(
        self,
        app_id: str,
        *,
        broker: str = "memory://",
        store: str = "memory://",
        processing_guarantee: ProcessingGuarantee = "at_least_once",
        standby_replicas: int = 0,
        commit_interval: float = 1.0,
        coalesce_changelog: bool = True,
        rebalance_protocol: RebalanceProtocol = "eager",
        changelog_replication_factor: int = 1,
        stream_buffer_size: int = 10_000,
        revoke_timeout: float = 60.0,
        event_grace: float = 0.5,
        shutdown_timeout: float = 60.0,
        poll_timeout: float = 0.1,
        advertised_host: str | None = None,
        transport_options: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
        handle_signals: bool = False,
    ) -> None:
        if processing_guarantee not in ("at_least_once", "exactly_once"):
            raise ValueError(
                f"processing_guarantee must be 'at_least_once' or 'exactly_once', "
                f"not {processing_guarantee!r}"
            )
        self.app_id = app_id
        self.broker_url = broker
        self.store_url = store
        self.processing_guarantee = processing_guarantee
        self.standby_replicas = standby_replicas
        self.commit_interval = commit_interval
        self.coalesce_changelog = coalesce_changelog
        self.rebalance_protocol: RebalanceProtocol = rebalance_protocol
        self.changelog_replication_factor = changelog_replication_factor
        self.stream_buffer_size = stream_buffer_size
        self.revoke_timeout = revoke_timeout
        self.event_grace = event_grace
        self.shutdown_timeout = shutdown_timeout
        self.poll_timeout = poll_timeout
        self.transport_options = dict(transport_options or {})
        self.handle_signals = handle_signals
        self.logger = logger
        # exactly_once: the producer's transactional id is "{app_id}-{worker_id}". A
        # stable worker_id lets a restarted worker fence its zombie at once (and abort
        # what it left open); without one, KIP-447 group fencing still stops a zombie's
        # commits but its open transaction blocks read_committed readers until it
        # times out on the broker.
        self.worker_id = worker_id if worker_id is not None else uuid.uuid4().hex[:12]
        self._transactions: Transactions | None = (
            Transactions(self, f"{app_id}-{self.worker_id}")
            if processing_guarantee == "exactly_once"
            else None
        )

        self.tables: dict[str, Collection] = {}
        self._table_channels: dict[str, trio.MemorySendChannel[TableMessage]] = {}
        self._table_started: dict[str, trio.Event] = {}
        self._table_ready: dict[str, trio.Event] = {}
        self._changelogs_ready: set[str] = set()
        self._changelog_locks: dict[str, trio.Lock] = {}
        self._streams: dict[str, Stream] = {}
        self._partition_count: int | None = None

        self._processed: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self._ready: set[int] = set()
        self._hold: trio.Event | None = None
        self._commit_lock = trio.Lock()
        self._commit_requests: list[tuple[dict[TP, int], trio.Event]] = []
        self._persisted_sources: dict[int, dict[str, int]] = {}
        self._to_pause: set[TP] = set()
        self._to_resume: set[TP] = set()
        self._recovery_event = trio.Event()
        self._recovery_error: RecoveryFailed | None = None
        self._stopped = False
        self._failing = False
        self._events_since_take = 0
        self._cycle_done: trio.Event | None = None

        self.advertised_host = advertised_host
        self._assignor = TablesAssignor(standby_replicas=standby_replicas, host=advertised_host)
        self._assignor.freshness = self._freshness
        self._standbys: frozenset[int] = frozenset()
        self._supervisor = RebalanceSupervisor(self)
        self._assignments_send, self._assignments_receive = trio.open_memory_channel[Assignment](
            math.inf
        )
        self._stopper = StopControl(
            app_id,
            streams=lambda: list(self._streams.values()),
            offsets=lambda: (dict(self._processed), dict(self._committed)),
            timeout=shutdown_timeout,
        )
        self._stack: AsyncExitStack | None = None
        self._transport: Transport | None = None
        self._producer: Producer | None = None
        self._nursery: trio.Nursery | None = None
        self._consumer: GroupConsumer | None = None
        self._group_topics: frozenset[str] = frozenset()
        self._group_stop = trio.Event()
        self._group_done: trio.Event | None = None
        # asyncio callbacks and run_asyncio(): a trio-asyncio loop opened on first use.
        self._asyncio = AsyncioLoop()
        self._asyncio_token: Any = None

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> TableManager:
        stack = AsyncExitStack()
        try:
            stack.enter_context(self._stopper.running(handle_signals=self.handle_signals))
            self._transport = await stack.enter_async_context(
                open_transport(self.broker_url, **self.transport_options)
            )
            self._producer = await stack.enter_async_context(
                self._transport.open_producer(transactional_id=self.transactional_id)
            )
            if self._transactions is not None:
                await stack.enter_async_context(self._transactions.running(self._producer))
            stack.callback(self._close_tables)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._asyncio.attach(self._nursery)
        self._asyncio_token = set_current_asyncio_loop(self._asyncio)
        self._nursery.start_soon(self._committer)
        self._nursery.start_soon(self._recovery_supervisor)
        self._stopper.start(self._nursery)
        for table in self.tables.values():
            self._nursery.start_soon(self._start_table, table)
        await self.on_start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._stack is not None
        assert self._nursery is not None
        self._stopped = True
        self._recovery_changed()
        try:
            if exc is None:
                with self._stopper.shutdown_scope(), trio.fail_after(self.shutdown_timeout):
                    await self._stop_group()
                    await self.on_stop()
                    if self._transactions is not None and not self._stopping_on_error():
                        # Outputs and changes since the group was left.
                        async with self._commit_lock:
                            await self._commit_cycle(frozenset())
            else:
                self._failing = True
            self._nursery.cancel_scope.cancel()
        except BaseException as shutdown_error:
            self._failing = True
            self._nursery.cancel_scope.cancel()
            exc_type, exc, tb = type(shutdown_error), shutdown_error, shutdown_error.__traceback__
        try:
            try:
                suppressed = await self._stack.__aexit__(exc_type, exc, tb)
            finally:
                self._asyncio.detach()
                reset_current_asyncio_loop(self._asyncio_token)
        except BaseExceptionGroup as group:
            single = _single_error(group)
            if single is not None:
                raise single from group
            raise
        if exc is not None and not suppressed:
            raise exc
        return bool(suppressed)

    @property
    def transactional_id(self) -> str | None:
        """The producer's transactional id under ``exactly_once`` (else ``None``)."""
        return None if self._transactions is None else self._transactions.transactional_id

    @property
    def isolation_level(self) -> IsolationLevel:
        """How this app reads sources and changelogs (``read_committed`` under
        ``exactly_once``: records of aborted transactions are never applied)."""
        return "read_uncommitted" if self._transactions is None else "read_committed"

    def request_stop(self) -> None:
        """Ask the manager to stop as a first SIGINT/SIGTERM does under
        ``handle_signals=True``: every stream's ``async for`` loop ends after its current
        event (a stream opened later ends at once, without joining the group), so the
        ``async with`` block can run to its end; leaving it makes the last commit and
        leaves the group. If the stop is not done within ``shutdown_timeout`` seconds,
        the manager stops at once (see the class). Returns at once; idempotent."""
        self._stopper.request("stop requested")

    def _close_tables(self) -> None:
        for table in self.tables.values():
            table.close()

    async def on_start(self) -> None:
        """Hook: called when the manager has started (override in a subclass)."""

    async def on_stop(self) -> None:
        """Hook: called before the manager stops (after the group was left)."""

    # -- tables -------------------------------------------------------------------------
    def Table(self, name: str, **kwargs: Any) -> Table:
        """Create and register a :class:`Table` (see SPEC.md section 1 for keywords;
        ``is_global=True``, Faust's flag, makes a :class:`GlobalTable`)."""
        if kwargs.get("is_global"):
            return self.GlobalTable(name, **kwargs)
        table = Table(self, name, **kwargs)
        self.add(table)
        return table

    def GlobalTable(self, name: str, **kwargs: Any) -> GlobalTable:
        """Create and register a :class:`GlobalTable` (every partition on every worker)."""
        table = GlobalTable(self, name, **kwargs)
        self.add(table)
        return table

    def SetTable(self, name: str, **kwargs: Any) -> SetTable:
        """Create and register a :class:`SetTable` (values are sets;
        ``is_global=True`` makes a :class:`GlobalSetTable`)."""
        if kwargs.get("is_global"):
            return self.GlobalSetTable(name, **kwargs)
        table = SetTable(self, name, **kwargs)
        self.add(table)
        return table

    def GlobalSetTable(self, name: str, **kwargs: Any) -> GlobalSetTable:
        """Create and register a :class:`GlobalSetTable`."""
        table = GlobalSetTable(self, name, **kwargs)
        self.add(table)
        return table

    def add(self, table: Collection) -> Collection:
        """Register ``table``. While the manager runs, the table starts at once and is
        recovered for the partitions this worker owns, without a group rebalance."""
        if table.name in self.tables:
            raise ValueError(f"a table named {table.name!r} already exists")
        self.tables[table.name] = table
        self._table_started[table.name] = trio.Event()
        self._table_ready[table.name] = trio.Event()
        if self._nursery is not None:
            self._nursery.start_soon(self._start_table, table)
        return table

    async def _start_table(self, table: Collection) -> None:
        assert self._nursery is not None
        assert self._transport is not None
        channel = await self._nursery.start(
            run_table, table, self._transport, self._committed_sources, self.commit_interval
        )
        self._table_channels[table.name] = channel
        await table.on_start()
        if table.is_global:
            await self._start_global_table(table, channel)
            self._table_started[table.name].set()
            self._table_ready[table.name].set()
            return
        if self._standbys:
            channel.send_nowait(StandbyUpdate(self._standbys))
        if self._partition_count is not None:
            await self._ensure_changelog(table, self._partition_count)
        self._table_started[table.name].set()
        if self._ready:
            await self._recover_new_table(table)
        self._table_ready[table.name].set()

    async def _start_global_table(
        self, table: Collection, channel: trio.MemorySendChannel[TableMessage]
    ) -> None:
        """A global table tails every partition of its changelog from now on."""
        assert self._transport is not None
        count = table.partitions
        if count is None:
            try:
                topic = await self._transport.describe_topic(table.changelog_topic_name)
                count = topic.partitions
            except UnknownTopic:
                count = self._partition_count or 1
        await self._ensure_changelog(table, count)
        assert isinstance(table, GlobalTable)
        table.open_all_partitions(count)
        channel.send_nowait(StandbyUpdate(frozenset(range(count))))

    async def _recover_new_table(self, table: Collection) -> None:
        """Recover a table added while partitions are being processed. Those partitions
        stop handing out events until the new table has them (an event already in
        process goes on: it may be the one waiting for this table)."""
        assert self._consumer is not None
        partitions = frozenset(self._ready)
        tps = frozenset(tp for tp in self._supervisor.assigned if tp.partition in partitions)
        for stream in self._streams.values():
            for partition in partitions:
                stream.unready(partition)
        try:
            committed = await self._consumer.committed(tps)
            request = RecoveryRequest(partitions, committed)
            await self._table_channels[table.name].send(request)
            await request.done.wait()
            if request.error is not None:
                raise self._recovery_failed(table.name, partitions, request.error) from (
                    request.error
                )
            still_ready = partitions & self._ready
            if request.completed:
                table.activate(still_ready)
                await table.on_recovery_completed(still_ready)
        finally:
            for stream in self._streams.values():
                for tp in tps:
                    if tp.topic == stream.topic and tp.partition in self._ready:
                        stream.set_ready(tp.partition)
            self._recovery_changed()

    async def _ensure_changelog(self, table: Collection, count: int) -> None:
        """Create the table's changelog with ``count`` partitions, or check that it has
        them. Concurrent calls for one table (a stream opening while the table starts)
        run one after the other; the second finds the work done."""
        assert self._transport is not None
        async with self._changelog_locks.setdefault(table.name, trio.Lock()):
            if table.name not in self._changelogs_ready:
                await self._create_changelog(table, count)

    async def _create_changelog(self, table: Collection, count: int) -> None:
        assert self._transport is not None
        if table.partitions is not None and table.partitions != count:
            raise PartitionCountMismatch(
                table.changelog_topic_name,
                expected=count,
                actual=table.partitions,
                reason=f"table {table.name!r} declares partitions={table.partitions} but the "
                f"source topics have {count}; tables are co-partitioned with their source",
            )
        configs = {"cleanup.policy": "compact", **table.extra_topic_configs}
        await self._transport.create_topic(
            table.changelog_topic_name,
            count,
            replication_factor=self.changelog_replication_factor,
            configs=configs,
        )
        table.partitions = count
        self._changelogs_ready.add(table.name)

    async def wait_until_tables_registered(self) -> None:
        """Wait until every registered table's nursery has started."""
        for event in list(self._table_started.values()):
            await event.wait()

    async def _table_entered(self, table: Collection) -> None:
        await self._table_ready[table.name].wait()
        if table.is_global:
            await table.wait_caught_up()
        elif current_event.get() is None:
            await self.wait_until_recovered()

    # -- streams ------------------------------------------------------------------------
    @asynccontextmanager
    async def stream(
        self,
        topic: str,
        *,
        key_type: type | None = None,
        value_type: type | None = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
        on_decode_error: DecodeErrorPolicy = "raise",
        buffer_size: int | None = None,
    ) -> AsyncIterator[Stream]:
        """Consume ``topic`` as part of the app's consumer group for the block.

        Checks that the topic exists and is co-partitioned with the other source topics
        and the tables' changelogs (typed errors otherwise, before anything is
        processed), joins the group (or re-joins with the new topic added) and yields the
        :class:`Stream`. Leaving the block normally stops the iteration (the event in
        progress counts as processed) and re-joins the group without this topic, which
        commits what was processed; leaving it with an exception does not count the
        event in progress. Cancellation while joining: nothing was consumed.
        """
        assert self._transport is not None, "use the stream inside `async with manager`"
        if topic in self._streams:
            raise ValueError(f"topic {topic!r} already has a stream in this manager")
        description = await self._transport.describe_topic(topic)
        count = description.partitions
        if self._partition_count is not None and count != self._partition_count:
            raise PartitionCountMismatch(
                topic,
                expected=self._partition_count,
                actual=count,
                reason="all source topics of an app must have the same partition count",
            )
        # The partition count becomes the app's only once every changelog agrees with it
        # (a table started meanwhile sees no count and is checked by this loop instead).
        while pending := [
            t
            for t in self.tables.values()
            if not t.is_global and t.name not in self._changelogs_ready
        ]:
            for table in pending:
                await self._ensure_changelog(table, count)
        self._partition_count = count
        stream = Stream(
            self,
            topic,
            key_codec=resolve_codec(key_serializer, key_type, default="raw"),
            value_codec=resolve_codec(value_serializer, value_type, default="json"),
            on_decode_error=on_decode_error,
            buffer_size=buffer_size or self.stream_buffer_size,
        )
        self._streams[topic] = stream
        try:
            if self._stopper.requested:
                stream.stop()  # stopping: the stream ends at once, no group is joined
            else:
                await self._subscribe(self._group_topics | {topic})
            yield stream
        except BaseException:
            # The event in progress did not finish: it is not processed, and the changes
            # it made so far must never reach a store or a commit. The manager stops
            # committing (leave its block too); the next owner processes the event again.
            self._failing = True
            stream.abort()
            self._streams.pop(topic, None)
            raise
        stream.close()
        self._streams.pop(topic, None)
        # Re-join without this topic (leave the group if it was the last stream): the
        # revocation commits what was processed, and records fetched for the stream but
        # not processed go to whoever consumes the topic next. While stopping, streams
        # still ending keep the group as it is, and the last one leaves it.
        remaining = self._group_topics - {topic}
        if self._stopper.requested:
            remaining = self._group_topics if self._streams else frozenset()
        await self._subscribe(remaining)

    def _event_processed(self, tp: TP, offset: int) -> None:
        self._processed[tp] = offset + 1
        self._events_since_take += 1

    async def _between_events(self) -> None:
        """Called by streams every few events: lets other tasks run, and holds the
        stream while a commit cycle is sending and persisting and ``max_commit_backlog``
        events were processed since it took its changes (bounds the memory that changes
        waiting for the next cycle take when the changelog is slower than processing,
        e.g. a new key per event). Cancellation: nothing is lost (no event is held)."""
        done = self._cycle_done
        if done is not None and self._events_since_take >= self.max_commit_backlog:
            await done.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _stream_has_room(self, topic: str, partition: int) -> None:
        self._to_resume.add(TP(topic, partition))

    async def _wait_for_hold(self) -> None:
        while self._hold is not None:
            await self._hold.wait()

    @asynccontextmanager
    async def _quiesced(self, grace: float) -> AsyncIterator[frozenset[int]]:
        """Streams hand out no new event for the block; before it, events in process get
        ``grace`` seconds to finish. Yields the partitions whose event is still in process
        (a task may hold an event indefinitely: those partitions sit out this commit)."""
        hold = trio.Event()
        self._hold = hold
        try:
            with trio.move_on_after(grace):
                for stream in list(self._streams.values()):
                    await stream.wait_idle()
            yield frozenset(
                stream.current.partition
                for stream in self._streams.values()
                if stream.current is not None
            )
        finally:
            self._hold = None
            hold.set()

    # -- asyncio ----------------------------------------------------------------------------
    async def run_asyncio(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``await fn(*args)`` where ``fn`` is an asyncio coroutine function (an asyncio
        library's client call, say), from Trio code such as stream processing; returns its
        result. Runs on the manager's trio-asyncio loop, opened in the manager's nursery
        on first use. The current event is visible inside (context variables are copied),
        so table writes there go to the event's partition. Cancellation: the asyncio task
        is cancelled (it sees ``asyncio.CancelledError``) and waited for."""
        return await self._asyncio.run(fn, *args)

    # -- output ---------------------------------------------------------------------------
    async def send(
        self,
        topic: str,
        key: Any,
        value: Any,
        *,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        """Produce an output record; returns its :class:`Delivery` (await
        ``delivery.wait()`` for the acknowledgement). Keys that are ``bytes``/``str`` are
        sent raw (``str`` as UTF-8), other keys and all non-bytes values as JSON; with
        ``partition=None`` the key picks the partition as ``table.partition_for_key``
        says (murmur2 of those key bytes, Kafka's default partitioner). The next commit
        waits for its acknowledgement. Cancelled while waiting for room: nothing was
        sent.

        Under ``exactly_once`` the record joins the open transaction: ``read_committed``
        consumers see it when the commit interval's transaction commits (together with
        the offset of the event that sent it), never if it aborts. The delivery settles
        on the broker's acknowledgement, before that commit."""
        assert self._producer is not None, "use send() inside `async with manager`"
        key_data = None if key is None else key_bytes(key)
        value_bytes = (
            value if isinstance(value, bytes) or value is None else JsonCodec().encode(value)
        )
        if self._transactions is not None:
            return await self._transactions.send(
                topic, value_bytes, key=key_data, partition=partition, headers=headers
            )
        return await self._producer.send(
            topic, value_bytes, key=key_data, partition=partition, headers=headers
        )

    # -- group membership ------------------------------------------------------------------
    async def _subscribe(self, topics: frozenset[str]) -> None:
        """(Re-)join the group for ``topics``; leave it when ``topics`` is empty."""
        assert self._nursery is not None
        if topics == self._group_topics and self._group_done is not None:
            return
        await self._stop_group()
        self._group_topics = topics
        if not topics:
            return
        self._group_stop = trio.Event()
        self._group_done = trio.Event()
        await self._nursery.start(self._group_task, topics, self._group_done)

    async def _stop_group(self) -> None:
        if self._group_done is not None:
            self._group_stop.set()
            await self._group_done.wait()
            self._group_done = None
            self._group_topics = frozenset()

    async def _group_task(
        self,
        topics: frozenset[str],
        done: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self._transport is not None
        try:
            async with self._transport.open_group_consumer(
                self.app_id,
                sorted(topics),
                listener=self._supervisor,
                assignors=[self._assignor],
                rebalance_protocol=self.rebalance_protocol,
                isolation_level=self.isolation_level,
            ) as consumer:
                self._consumer = consumer
                task_status.started()
                while not self._group_stop.is_set():
                    await self._serve_commit_requests(consumer)
                    await self._flow_control(consumer)
                    batch = await consumer.poll(timeout=self.poll_timeout)
                    for tp, records in batch.items():
                        stream = self._streams.get(tp.topic)
                        if stream is None or stream.closed or not records:
                            continue
                        stream.feed(tp.partition, list(records))
                        if stream.buffered(tp.partition) >= stream.buffer_size:
                            self._to_pause.add(tp)
                # Leaving the block revokes everything through the supervisor, which
                # commits (unless the manager is failing) before the group is left.
        finally:
            self._consumer = None
            for _, event in self._commit_requests:
                event.set()
            self._commit_requests.clear()
            done.set()

    async def _flow_control(self, consumer: GroupConsumer) -> None:
        assigned = consumer.assignment()
        if self._to_pause:
            pause = (self._to_pause & assigned) - consumer.paused()
            self._to_pause.clear()
            if pause:
                await consumer.pause(pause)
        if self._to_resume:
            resume = self._to_resume & consumer.paused()
            self._to_resume.clear()
            if resume:
                await consumer.resume(resume)

    async def _serve_commit_requests(self, consumer: GroupConsumer) -> None:
        while self._commit_requests:
            offsets, done = self._commit_requests.pop(0)
            try:
                await self._commit_filtered(consumer, offsets)
            finally:
                done.set()

    def _offsets_to_commit(
        self, offsets: Mapping[TP, int], assigned: frozenset[TP] | set[TP]
    ) -> dict[TP, int]:
        """The ``offsets`` of partitions still assigned that move past the last commit."""
        return {
            tp: offset
            for tp, offset in offsets.items()
            if tp in assigned and offset > self._committed.get(tp, -1)
        }

    async def _commit_filtered(self, consumer: GroupConsumer, offsets: Mapping[TP, int]) -> None:
        wanted = self._offsets_to_commit(offsets, consumer.assignment())
        if not wanted:
            return
        try:
            await consumer.commit(wanted)
        except CommitFailed as exc:
            logger.warning("%s: %s", self.app_id, exc)
            return
        self._committed.update(wanted)
        for tp in sorted(wanted):
            await self.on_commit_tp(tp)

    # -- commits ---------------------------------------------------------------------------
    async def _committer(self) -> None:
        deadline = trio.current_time()
        while True:
            deadline += self.commit_interval
            await trio.sleep_until(deadline)
            await self.commit()

    async def commit(self) -> None:
        """Run a commit cycle now and commit the source offsets.

        Must not be called while processing an event (it waits for events in progress
        to finish). Cancellation: a cycle interrupted after the changelog was sent leaves
        the changes to the next cycle; nothing is committed that was not persisted.
        """
        if self._stopping_on_error():
            return
        if current_event.get() is not None:
            raise RuntimeError(
                "manager.commit() was called while processing an event; commits happen "
                "between events (every commit_interval, and on rebalance and shutdown)"
            )
        if self._consumer is None or self._transactions is not None:
            async with self._commit_lock:
                offsets, _ = await self._commit_cycle(frozenset())
            for tp in sorted(offsets):  # exactly_once: committed with the transaction
                await self.on_commit_tp(tp)
            return
        async with self._commit_lock:
            offsets, _ = await self._commit_cycle(frozenset())
        await self.on_commit(offsets)
        if offsets and self._consumer is not None:
            done = trio.Event()
            self._commit_requests.append((offsets, done))
            await done.wait()

    async def on_commit(self, offsets: Mapping[TP, int]) -> None:
        """Hook: called with the offsets about to be committed. Under ``at_least_once``
        the changes are acknowledged and persisted already; under ``exactly_once`` this
        runs inside the transaction, after the changelog records, the outputs and the
        offsets were sent and before the transaction commits (stores are written after
        the commit)."""

    async def on_commit_tp(self, tp: TP) -> None:
        """Hook: called for each source partition whose offset was just committed by a
        periodic or explicit commit (commits made by a revocation are handed to the
        group protocol and not reported here; :meth:`on_commit` sees them)."""

    async def on_rebalance_start(self) -> None:
        """Hook: a rebalance began (partitions are about to be revoked or assigned)."""

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> None:
        """Hook: ``revoked`` were released (their changes persisted and committed)."""

    async def on_rebalance(
        self,
        assigned: frozenset[TP],
        revoked: frozenset[TP],
        newly_assigned: frozenset[TP],
        generation_id: int = 0,
    ) -> None:
        """Hook: an assignment arrived (``assigned``: everything owned now); recovery of
        the new partitions starts right after. Also calls every table's
        ``on_rebalance``."""

    async def on_actives_ready(self) -> None:
        """Hook: every assigned partition is recovered by every table."""

    async def on_standbys_ready(self) -> None:
        """Hook: every table's standby copies read up to the changelog's end offsets
        seen when they started following the latest standby assignment."""

    def persist_offset_on_commit(self, store: Any, tp: TP, offset: int) -> None:
        """Record in ``store`` (a table's ``data``) that partition ``tp.partition`` holds
        the changelog up to ``offset``. Stores here save their offset with every commit
        cycle, so this is only for code that writes a store itself."""
        store.write_batch(tp.partition, {}, offset)

    @property
    def changelog_topics(self) -> frozenset[str]:
        """Every table's changelog topic."""
        return frozenset(table.changelog_topic_name for table in self.tables.values())

    @property
    def actives_ready(self) -> bool:
        """Whether every assigned partition is recovered by every table."""
        return self._fully_recovered()

    @property
    def standbys_ready(self) -> bool:
        """Whether every table's standby copies (and global tables) have caught up."""
        return all(table._tailer_caught_up.is_set() for table in self.tables.values())

    @property
    def recovery(self) -> RecoveryStatus:
        """A snapshot of recovery and standby progress (Faust's ``recovery`` service)."""
        return RecoveryStatus(
            {name: dict(t.recovery_progress) for name, t in self.tables.items()},
            {name: dict(t.standby_progress) for name, t in self.tables.items()},
            self.actives_ready,
        )

    async def _commit_cycle(
        self, releasing: frozenset[int], *, grace: float | None = None
    ) -> tuple[dict[TP, int], frozenset[int]]:
        """Send, acknowledge and persist the tables' changes; the source offsets that may
        now be committed, and the partitions left out because an event of theirs was
        still being processed (their changes wait for the next cycle)."""
        assert self._producer is not None
        included = self._ready | releasing
        for table in list(self.tables.values()):
            # Windows closed now are committed with the changes that closed them (in the
            # same transaction under exactly_once, final results included).
            await table.close_expired_windows(included)
        if self._transactions is not None:
            grace = self.event_grace if grace is None else grace
            return await self._transactions.commit_cycle(releasing, grace)
        async with self._quiesced(self.event_grace if grace is None else grace) as busy:
            snapshot = {
                tp: o
                for tp, o in self._processed.items()
                if tp.partition in included and tp.partition not in busy
            }
            taken = [(table, table.take_changes(busy)[0]) for table in self.tables.values()]
            self._events_since_take = 0
        cycle_done = self._cycle_done = trio.Event()
        try:
            return await self._send_and_persist(taken, snapshot, busy)
        finally:
            self._cycle_done = None
            cycle_done.set()

    async def _send_and_persist(
        self,
        taken: list[tuple[Collection, list[Any]]],
        snapshot: dict[TP, int],
        busy: frozenset[int],
    ) -> tuple[dict[TP, int], frozenset[int]]:
        assert self._producer is not None
        records = [record for _, table_records in taken for record in table_records]
        deliveries = await self._producer.send_batch(records) if records else []
        await self._producer.flush()
        await self._persist(taken, deliveries, snapshot)
        return snapshot, busy

    async def _persist(
        self,
        taken: list[tuple[Collection, list[OutgoingRecord]]],
        deliveries: list[Delivery],
        snapshot: Mapping[TP, int],
    ) -> None:
        """Write the changes ``taken`` to the stores with the last acknowledged changelog
        offset of each partition (``deliveries``, in the order of ``taken``) and the
        source offsets of ``snapshot``."""
        last_offsets: dict[str, dict[int, int]] = {}
        position = 0
        for table, table_records in taken:
            offsets = last_offsets.setdefault(table.name, {})
            for delivery in deliveries[position : position + len(table_records)]:
                metadata = delivery.result()
                if metadata.offset > offsets.get(metadata.partition, -1):
                    offsets[metadata.partition] = metadata.offset
            position += len(table_records)
        sources: dict[int, dict[str, int]] = {}
        for tp, offset in snapshot.items():
            sources.setdefault(tp.partition, {})[tp.topic] = offset
        changed_sources = {p: s for p, s in sources.items() if self._persisted_sources.get(p) != s}
        for table in self.tables.values():
            args = (last_offsets.get(table.name, {}), changed_sources)
            if table.data.persistent:
                await trio.to_thread.run_sync(table.persist, *args)
            else:
                table.persist(*args)
        self._persisted_sources.update(changed_sources)

    # -- rebalances (called by the supervisor) ----------------------------------------------
    async def _release(self, partitions: frozenset[int], *, commit: bool) -> dict[TP, int] | None:
        for stream in self._streams.values():
            for partition in partitions:
                stream.unready(partition)
        releasing = frozenset(partitions & self._ready)
        self._ready -= partitions
        offsets: dict[TP, int] | None = None
        try:
            if commit and not self._stopping_on_error():
                async with self._commit_lock:
                    snapshot, busy = await self._commit_cycle(releasing, grace=self.revoke_timeout)
                # An event still in process after revoke_timeout: its partition's changes
                # are dropped and the new owner processes the event again.
                for table in self.tables.values():
                    table.discard_uncommitted(busy & partitions)
                offsets = self._offsets_to_commit(snapshot, self._supervisor.assigned)
                self._committed.update(offsets)
                if self._transactions is not None:
                    offsets = None  # committed with the transaction (on_commit was called)
                else:
                    await self.on_commit(offsets)
            else:
                async with self._quiesced(self.event_grace):
                    pass
                for table in self.tables.values():
                    table.discard_uncommitted(partitions)
                if self._transactions is not None and not self._stopping_on_error():
                    await self._transactions.roll_back(partitions)
        finally:
            self._stopper.released(
                {tp: o for tp, o in self._committed.items() if tp.partition in partitions}
            )
            for table in self.tables.values():
                table.deactivate(partitions)
            for stream in self._streams.values():
                for partition in partitions:
                    stream.drop(partition)
            for tp in [tp for tp in self._processed if tp.partition in partitions]:
                del self._processed[tp]
            for tp in [tp for tp in self._committed if tp.partition in partitions]:
                del self._committed[tp]
            for partition in partitions:
                self._persisted_sources.pop(partition, None)
        return offsets

    def _stopping_on_error(self) -> bool:
        """Whether work is being cancelled because something failed (commits are off).
        A clean shutdown leaves the group before the manager's nursery is cancelled."""
        return self._failing or (
            self._nursery is not None and self._nursery.cancel_scope.cancel_called
        )

    async def _recovery_supervisor(self) -> None:
        assert self._nursery is not None
        async for assignment in self._assignments_receive:
            self._nursery.start_soon(self._recover_assignment, assignment)

    async def _recover_assignment(self, assignment: Assignment) -> None:
        try:
            with assignment.scope:
                await self.wait_until_tables_registered()
                consumer = self._consumer
                if consumer is None:
                    return
                committed = await consumer.committed(assignment.tps)
                for tp, offset in committed.items():
                    if offset is not None:
                        self._committed[tp] = offset
                partitions = assignment.partitions
                done: set[str] = set()
                while missing := [
                    name
                    for name, table in self.tables.items()
                    if not table.is_global and name not in done
                ]:
                    # A table added meanwhile is recovered for these partitions too.
                    await self.wait_until_tables_registered()
                    requests = []
                    for name in missing:
                        request = RecoveryRequest(partitions, committed)
                        assignment.requests.append(request)
                        requests.append(request)
                        await self._table_channels[name].send(request)
                    for request in requests:
                        await request.done.wait()
                    for name, request in zip(missing, requests, strict=True):
                        if request.error is not None:
                            raise self._recovery_failed(
                                name, partitions, request.error
                            ) from request.error
                    if not all(request.completed for request in requests):
                        return
                    done.update(missing)
                if assignment.is_revoked():
                    # Revoked while the last table finished: the cancellation would only
                    # land at the next checkpoint, after the partitions were activated
                    # again behind the revocation's back.
                    return
                # on_recover callbacks see the recovered tables before any event of these
                # partitions is processed (as in Faust); then the streams get them.
                for table in self.tables.values():
                    table.activate(partitions)
                for table in self.tables.values():
                    await table.on_recovery_completed(partitions)
                if assignment.is_revoked():
                    return
                self._activate(partitions, assignment.tps)
                self._supervisor.assignment_done(assignment)
                if self._fully_recovered():
                    await self.on_actives_ready()
        finally:
            self._supervisor.assignment_done(assignment)
            self._recovery_changed()

    # -- standbys and the group layout --------------------------------------------------
    def _freshness(self) -> dict[int, int]:
        """Per partition, how much of it the stores hold (reported to the group leader,
        which prefers the freshest member when a partition moves). Runs on
        kafka-python's IO thread: it only copies dicts."""
        fresh: dict[int, int] = {}
        for table in list(self.tables.values()):
            if table.is_global:
                continue
            for partition, offset in dict(table.local_offsets).items():
                fresh[partition] = fresh.get(partition, 0) + offset + 1
        return fresh

    def _update_standbys(self) -> None:
        """After an assignment: tell every table which partitions to keep warm (the
        assignor's standbys that are not active here). Sent before the recovery requests
        of the assignment, so a promoted standby is released first."""
        active = {tp.partition for tp in self._supervisor.assigned}
        standbys = self._assignor.view.standbys - active
        if standbys == self._standbys:
            return
        self._standbys = standbys
        logger.info("%s: standby partitions %s", self.app_id, sorted(standbys))
        updates = []
        for name, channel in self._table_channels.items():
            if not self.tables[name].is_global:
                update = StandbyUpdate(standbys)
                channel.send_nowait(update)
                updates.append((self.tables[name], update))
        if self._nursery is not None and standbys:
            self._nursery.start_soon(self._announce_standbys_ready, updates)

    async def _announce_standbys_ready(
        self, updates: list[tuple[Collection, StandbyUpdate]]
    ) -> None:
        for table, update in updates:
            await update.done.wait()
            await table.wait_caught_up()
        if updates and all(update.partitions == self._standbys for _, update in updates):
            await self.on_standbys_ready()

    async def _committed_sources(self, partitions: frozenset[int]) -> dict[TP, int | None] | None:
        """The group's committed offsets of every source partition numbered in
        ``partitions`` (``None`` when not in the group: standbys then wait)."""
        consumer = self._consumer
        if consumer is None or not self._group_topics or not partitions:
            return None
        tps = [TP(topic, p) for topic in sorted(self._group_topics) for p in sorted(partitions)]
        try:
            return await consumer.committed(tps)
        except Exception as exc:  # the group is being left or re-joined: ask again later
            logger.debug("%s: committed offsets unavailable: %r", self.app_id, exc)
            return None

    @property
    def standby_partitions(self) -> frozenset[int]:
        """Partition numbers this worker keeps warm copies of."""
        return self._standbys

    def metadata_for_key(self, table: str | Collection, key: Any) -> KeyMetadata:
        """Which member serves ``key`` of ``table`` (by the key's partition under Kafka's
        default partitioner), as of the latest assignment: the advertised host of its
        owner and of the members holding standbys (``advertised_host=`` setting)."""
        collection = self.tables[table] if isinstance(table, str) else table
        partition = collection.partition_for_key(key)
        view = self._assignor.view
        return KeyMetadata(
            partition,
            view.active_hosts.get(partition),
            tuple(view.standby_hosts.get(partition, ())),
        )

    def _activate(self, partitions: frozenset[int], tps: frozenset[TP]) -> None:
        for table in self.tables.values():
            table.activate(partitions)
        self._ready |= partitions
        for tp in tps:
            stream = self._streams.get(tp.topic)
            if stream is not None:
                stream.set_ready(tp.partition)
        logger.info("%s: partitions %s recovered and active", self.app_id, sorted(partitions))

    def _recovery_changed(self) -> None:
        self._recovery_event.set()
        self._recovery_event = trio.Event()

    def _recovery_failed(
        self, table: str, partitions: frozenset[int], error: BaseException
    ) -> RecoveryFailed:
        """Remember a failed restore: the error the manager stops with, which recovery
        waiters raise too (the same object: the manager reports it once)."""
        if self._recovery_error is None:
            self._recovery_error = RecoveryFailed(table, sorted(partitions), error)
        self._recovery_changed()
        return self._recovery_error

    def _check_recovery(self) -> None:
        if self._recovery_error is not None:
            raise self._recovery_error

    def _fully_recovered(self) -> bool:
        if not self._supervisor.assignment_seen.is_set():
            return False
        assigned = {tp.partition for tp in self._supervisor.assigned}
        return not self._supervisor.pending and assigned <= self._ready

    async def wait_until_recovered(self) -> None:
        """Wait until this worker has its first assignment and every assigned partition is
        recovered by every table (at once when no stream was opened), and every global
        table has read up to the end offsets seen when it started. Raises
        :class:`~trio_tables.errors.RecoveryFailed` when a restore failed (the manager
        stops with its cause) instead of returning over a half-restored table.
        Cancellation: safe, nothing is waiting on the caller."""
        await self._wait_recovered()

    async def _wait_recovered(self) -> bool:
        """:meth:`wait_until_recovered`; ``True`` if the manager stopped first."""
        while not (self._group_done is None or self._fully_recovered()):
            self._check_recovery()
            if self._stopped:
                return True
            await self._recovery_event.wait()
        self._check_recovery()
        for table in list(self.tables.values()):
            if table.is_global:
                await self._table_ready[table.name].wait()
                await table.wait_caught_up()
        return False

    async def wait_until_recovery_completed(self) -> bool:
        """Faust's name for :meth:`wait_until_recovered`, with Faust's result: ``False``
        once recovered, ``True`` if the manager stopped before (Faust: "stopped").
        Raises :class:`~trio_tables.errors.RecoveryFailed` when a restore failed.
        Cancellation: safe."""
        return await self._wait_recovered()

    def recovery_progress(self) -> dict[str, dict[int, tuple[int, int]]]:
        """Per table and partition: ``(position, target)`` of the current or last
        restore."""
        return {name: dict(table.recovery_progress) for name, table in self.tables.items()}

    @property
    def assignment(self) -> frozenset[TP]:
        """Source partitions assigned to this worker."""
        return self._supervisor.assigned

    @property
    def active_partitions(self) -> frozenset[int]:
        """Partition numbers recovered and being processed here."""
        return frozenset(self._ready)
