"""``TableManager``: the root nursery of an application's tables, and its public API.

Task tree (one nursery, owned by the ``async with TableManager(...)`` block)::

    manager nursery
    ├── group task            _group.GroupMembership: polls source topics, feeds streams,
    │                         pauses full partitions, commits offsets between polls;
    │                         revocations run inside its poll (_rebalance)
    ├── recovery supervisor   _rebalance.RebalanceSupervisor.run: one task per
    │                         assignment: restore every table, then release the
    │                         partitions to the streams
    ├── committer             every commit_interval: _commit.CommitCycle, then the
    │                         offsets go to the group task
    └── per table: run_table  _recovery: the table's nursery (recovery task, changelog
                              consumer task)

    changelog reader nursery  (outside the manager's, entered before it) one fetch task
                              for every table's changelog reads (_transport.
                              _changelog_reader): one restore client per worker

The manager wires these owners together and keeps the lifecycle, the table registry
(:mod:`._registry`) and the public API; each concern lives in its own module with the
state it owns: processed/committed offsets in :mod:`._ledger`, the streams' hold and
flow control in :mod:`._flow`, the commit cycle in :mod:`._commit` (with
:mod:`._exactly_once` as its transactional strategy).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any, Literal

import trio

from ._asyncio import AsyncioLoop, reset_current_asyncio_loop, set_current_asyncio_loop
from ._codecs import JsonCodec, resolve_codec
from ._core import build_core
from ._exception_groups import single_error
from ._gc import DEFAULT_GC_THRESHOLD, checked_gc_threshold, raised_gc_threshold
from ._hooks import ManagerHooks
from ._partitioner import key_bytes
from ._serving import ManagerWeb
from ._signals import StopControl
from ._status import ManagerStatus
from ._stream import DecodeErrorPolicy, Stream, current_event
from ._table import (
    Collection,
    GlobalSetTable,
    GlobalTable,
    SetTable,
    StandbyUpdate,
    Table,
)
from ._transport import open_transport
from ._transport._base import (
    TP,
    ChangelogReader,
    Delivery,
    IsolationLevel,
    Producer,
    RebalanceProtocol,
    Transport,
)
from ._web import load as load_web

__all__ = ["TableManager"]

logger = logging.getLogger("trio_tables.manager")

ProcessingGuarantee = Literal["at_least_once", "exactly_once"]


class TableManager(ManagerStatus, ManagerHooks, ManagerWeb):
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

    ``web_port=PORT`` serves the worker's HTTP endpoint (metrics, status, table queries
    from any worker; the ``web`` extra) on ``web_host:PORT`` for the block's lifetime,
    as :meth:`serve_web` does; ``0`` picks a free port (see :attr:`web_url`).

    Commit cycles run every ``commit_interval`` seconds, and at once when the tables
    hold ``max_cycle_changes`` changelog records not sent yet (a class attribute, 25,000;
    ``None``: the interval only); while one is in flight, streams wait at that many new
    changes or ``max_commit_backlog`` (50,000) events. This bounds a cycle's memory when
    a stream changes many distinct keys (docs/operations.md, "Cycle size").

    ``gc_threshold``: while the block runs, Python's cyclic garbage collector examines
    its youngest generation after at least this many net allocations of container
    objects (CPython: 700); only ever raised, restored when the last running manager
    stops unless the application changed it meanwhile; ``None`` leaves the collector
    alone (docs/operations.md, "Garbage collection").
    """

    # Events processed past a commit cycle in flight before streams wait for it.
    max_commit_backlog = 50_000
    # Changes not taken yet that start a cycle early (None: only the interval does).
    max_cycle_changes: int | None = 25_000

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
        commit_timeout: float = 300.0,
        poll_timeout: float = 0.1,
        advertised_host: str | None = None,
        transport_options: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
        handle_signals: bool = False,
        web_port: int | None = None,
        web_host: str = "0.0.0.0",
        gc_threshold: int | None = DEFAULT_GC_THRESHOLD,
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
        self.commit_timeout = commit_timeout
        self.poll_timeout = poll_timeout
        self.transport_options = dict(transport_options or {})
        self.handle_signals = handle_signals
        self.advertised_host = advertised_host
        self.web_port = web_port
        self.web_host = web_host
        self.gc_threshold = checked_gc_threshold(gc_threshold)
        self.logger = logger
        # exactly_once: the producer's transactional id is "{app_id}-{worker_id}". A
        # stable worker_id lets a restarted worker fence its zombie at once (and abort
        # what it left open); without one, KIP-447 group fencing still stops a zombie's
        # commits but its open transaction blocks read_committed readers until it
        # times out on the broker.
        self.worker_id = worker_id if worker_id is not None else uuid.uuid4().hex[:12]

        # The owners (one concern each), wired together in _core.
        core = build_core(
            app_id,
            hooks=self,
            producer=self._the_producer,
            transactional_id=(
                f"{app_id}-{self.worker_id}" if processing_guarantee == "exactly_once" else None
            ),
            isolation_level=self.isolation_level,
            rebalance_protocol=rebalance_protocol,
            standby_replicas=standby_replicas,
            advertised_host=advertised_host,
            changelog_replication_factor=changelog_replication_factor,
            max_commit_backlog=self.max_commit_backlog,
            max_cycle_changes=self.max_cycle_changes,
            event_grace=event_grace,
            commit_timeout=commit_timeout,
            revoke_timeout=revoke_timeout,
            poll_timeout=poll_timeout,
            on_released=self._released,
        )
        self._registry, self._ledger, self._flow = core.registry, core.ledger, core.flow
        self._health, self._assignor, self._cycle = core.health, core.assignor, core.cycle
        self._supervisor, self._membership = core.supervisor, core.membership
        self._transactions = core.transactions
        self.tables = self._registry.tables
        self._stopper = StopControl(
            app_id,
            streams=lambda: list(self._flow.streams.values()),
            offsets=lambda: (dict(self._ledger.processed), dict(self._ledger.committed)),
            timeout=shutdown_timeout,
        )
        self._stack: AsyncExitStack | None = None
        self._transport: Transport | None = None
        self._reader: ChangelogReader | None = None
        self._producer: Producer | None = None
        self._nursery: trio.Nursery | None = None
        # asyncio callbacks and run_asyncio(): a trio-asyncio loop opened on first use.
        self._asyncio = AsyncioLoop()
        self._asyncio_token: Any = None

    def _the_producer(self) -> Producer:
        assert self._producer is not None, "the manager is not running"
        return self._producer

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> TableManager:
        if self.web_port is not None:
            load_web()  # MissingExtra before anything is opened
        stack = AsyncExitStack()
        try:
            stack.enter_context(self._stopper.running(handle_signals=self.handle_signals))
            stack.enter_context(raised_gc_threshold(self.gc_threshold))
            self._transport = await stack.enter_async_context(
                open_transport(self.broker_url, **self.transport_options)
            )
            self._producer = await stack.enter_async_context(
                self._transport.open_producer(transactional_id=self.transactional_id)
            )
            if self._transactions is not None:
                await stack.enter_async_context(self._transactions.running(self._producer))
            # Every table reads its changelog through this one reader (closed after the
            # tables' nurseries, which live in the manager's nursery below).
            self._reader = await stack.enter_async_context(
                self._transport.open_changelog_reader(isolation_level=self.isolation_level)
            )
            stack.callback(self._registry.close)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._health.scope = self._nursery.cancel_scope
        self._asyncio.attach(self._nursery)
        self._asyncio_token = set_current_asyncio_loop(self._asyncio)
        self._nursery.start_soon(self._committer)
        self._nursery.start_soon(self._supervisor.run, self._nursery)
        self._stopper.start(self._nursery)
        for table in self.tables.values():
            self._nursery.start_soon(self._start_table, table)
        if self.web_port is not None:
            try:
                await self._nursery.start(
                    partial(self.serve_web, self.web_port, host=self.web_host)
                )
            except BaseException as exc:  # e.g. the port is taken: close what was opened
                self._health.fail()
                self._nursery.cancel_scope.cancel()
                await self._stack.__aexit__(type(exc), exc, exc.__traceback__)
                raise
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
        self._supervisor.stopped()
        try:
            if exc is None:
                with self._stopper.shutdown_scope(), trio.fail_after(self.shutdown_timeout):
                    await self._membership.leave()
                    await self.on_stop()
                    if self._transactions is not None and not self._health.failing():
                        # Outputs and changes since the group was left.
                        async with self._cycle.lock:
                            await self._cycle.run()
            else:
                self._health.fail()
            self._nursery.cancel_scope.cancel()
        except BaseException as shutdown_error:
            self._health.fail()
            self._nursery.cancel_scope.cancel()
            exc_type, exc, tb = type(shutdown_error), shutdown_error, shutdown_error.__traceback__
        try:
            try:
                suppressed = await self._stack.__aexit__(exc_type, exc, tb)
            finally:
                self._asyncio.detach()
                reset_current_asyncio_loop(self._asyncio_token)
        except BaseExceptionGroup as group:
            single = single_error(group)
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
        if self.processing_guarantee == "exactly_once":
            return "read_committed"
        return "read_uncommitted"

    def request_stop(self) -> None:
        """Ask the manager to stop as a first SIGINT/SIGTERM does under
        ``handle_signals=True``: every stream's ``async for`` loop ends after its current
        event (a stream opened later ends at once, without joining the group), so the
        ``async with`` block can run to its end; leaving it makes the last commit and
        leaves the group. If the stop is not done within ``shutdown_timeout`` seconds,
        the manager stops at once (see the class). Returns at once; idempotent."""
        self._stopper.request("stop requested")

    def _released(self, partitions: frozenset[int]) -> None:
        """Partitions left this worker (revoked or lost): for the stop report."""
        self._stopper.released(
            {tp: o for tp, o in self._ledger.committed.items() if tp.partition in partitions}
        )

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
        self._registry.register(table)
        if self._nursery is not None:
            self._nursery.start_soon(self._start_table, table)
        return table

    async def _start_table(self, table: Collection) -> None:
        assert self._nursery is not None
        assert self._transport is not None
        assert self._reader is not None
        registry = self._registry
        channel = await registry.open(
            self._nursery,
            table,
            self._reader,
            self._membership.committed_sources,
            self.commit_interval,
        )
        await table.on_start()
        if table.is_global:
            await registry.start_global(self._transport, table, channel)
            registry.mark_started(table)
            registry.mark_ready(table)
            return
        if self._supervisor.standbys:
            channel.send_nowait(StandbyUpdate(self._supervisor.standbys))
        if registry.partition_count is not None:
            await registry.ensure_changelog(self._transport, table, registry.partition_count)
        registry.mark_started(table)
        await self._supervisor.recover_new_table(table)
        registry.mark_ready(table)

    async def wait_until_tables_registered(self) -> None:
        """Wait until every registered table's nursery has started.
        Cancellation: safe, nothing is waiting on the caller."""
        await self._registry.wait_until_started()

    async def wait_until_table_ready(self, table: Collection) -> None:
        """Wait until ``table`` runs and is usable here: a global table has read up to
        the end offsets seen when it started; outside an event, every assigned
        partition is recovered. (What ``async with table`` waits for.)
        Cancellation: safe, nothing is waiting on the caller."""
        await self._registry.wait_until_ready(table)
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
        streams = self._flow.streams
        if topic in streams:
            raise ValueError(f"topic {topic!r} already has a stream in this manager")
        await self._registry.co_partition(self._transport, topic)
        stream = Stream(
            self._flow,
            topic,
            key_codec=resolve_codec(key_serializer, key_type, default="raw"),
            value_codec=resolve_codec(value_serializer, value_type, default="json"),
            on_decode_error=on_decode_error,
            buffer_size=buffer_size or self.stream_buffer_size,
        )
        streams[topic] = stream
        try:
            if self._stopper.requested:
                stream.stop()  # stopping: the stream ends at once, no group is joined
            else:
                await self._subscribe(self._membership.topics | {topic})
            yield stream
        except BaseException:
            # The event in progress did not finish: it is not processed, and the changes
            # it made so far must never reach a store or a commit. The manager stops
            # committing (leave its block too); the next owner processes the event again.
            self._health.fail()
            stream.abort()
            streams.pop(topic, None)
            raise
        stream.close()
        streams.pop(topic, None)
        # Re-join without this topic (leave the group if it was the last stream): the
        # revocation commits what was processed, and records fetched for the stream but
        # not processed go to whoever consumes the topic next.
        # While stopping, streams still ending keep the group as it is, and the last one
        # leaves it.
        remaining = self._membership.topics - {topic}
        if self._stopper.requested:
            remaining = self._membership.topics if streams else frozenset()
        await self._subscribe(remaining)

    async def _subscribe(self, topics: frozenset[str]) -> None:
        assert self._nursery is not None
        assert self._transport is not None
        if topics != self._membership.topics or not self._membership.joined:
            # A new group session: recovery waiters wait for its first assignment, not
            # the last session's (which left with every partition revoked).
            self._supervisor.new_group_session()
        await self._membership.subscribe(self._nursery, self._transport, topics)

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

    # -- commits ---------------------------------------------------------------------------
    async def _committer(self) -> None:
        # Every commit_interval, or when the streams ask (max_cycle_changes), then again
        # a full interval later.
        deadline = trio.current_time()
        while True:
            deadline += self.commit_interval
            with trio.move_on_at(deadline) as interval:
                await self._flow.wait_cycle_wanted()
            await self.commit()
            if not interval.cancelled_caught:
                deadline = trio.current_time()

    async def commit(self) -> None:
        """Run a commit cycle now and commit the source offsets.

        Must not be called while processing an event (it waits for events in progress
        to finish). Cancellation: before the tables' changes are taken, nothing happened;
        once taken, sending and persisting them finish shielded (bounded by
        ``commit_timeout``) and the cancellation is delivered after, before or while the
        offsets are committed (an offset not committed now is committed by the next
        cycle). A failure there stops the worker's commits and raises (see
        docs/architecture.md, "The commit cycle").
        """
        if self._health.failing():
            return
        if current_event.get() is not None:
            raise RuntimeError(
                "manager.commit() was called while processing an event; commits happen "
                "between events (every commit_interval, and on rebalance and shutdown)"
            )
        async with self._cycle.lock:
            result = await self._cycle.run()
        if self._transactions is not None:  # committed with the transaction
            for tp in sorted(result.offsets):
                await self.on_commit_tp(tp)
            return
        if self._membership.consumer is None:  # no stream: nothing to commit
            return
        await self.on_commit(result.snapshot)
        await self._membership.commit(result.snapshot)

    def persist_offset_on_commit(self, store: Any, tp: TP, offset: int) -> None:
        """Record in ``store`` (a table's ``data``) that partition ``tp.partition`` holds
        the changelog up to ``offset``. Stores here save their offset with every commit
        cycle, so this is only for code that writes a store itself."""
        store.write_batch(tp.partition, {}, offset)
