"""Group membership: the group consumer task and the offset commits it serves.

:class:`GroupMembership` owns the worker's :class:`~._transport._base.GroupConsumer`
while the app has source topics (one stream per topic): joining, re-joining with another
set of topics, leaving. Its task polls, feeds the streams' per-partition buffers, pauses
partitions whose buffer is full and resumes drained ones (requests collected by the
:class:`~._flow.StreamFlow`), and commits offsets between polls (the consumer is not
shared with other tasks: a commit asked by another task waits for the next turn).
Revocations run inside ``poll`` through the rebalance listener.

Threads: only the Trio thread touches it (the consumer does its own thread hops).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import trio

from ._flow import StreamFlow
from ._ledger import PartitionLedger
from ._transport._base import (
    TP,
    Assignor,
    GroupConsumer,
    GroupMetadata,
    IsolationLevel,
    RebalanceListener,
    RebalanceProtocol,
    Transport,
)
from .errors import CommitFailed

__all__ = ["GroupMembership"]

logger = logging.getLogger("trio_tables.group")


class GroupMembership:
    """The worker's membership in the app's consumer group (see the module docstring)."""

    def __init__(
        self,
        app_id: str,
        *,
        listener: RebalanceListener,
        assignors: Sequence[Assignor],
        rebalance_protocol: RebalanceProtocol,
        isolation_level: IsolationLevel,
        poll_timeout: float,
        flow: StreamFlow,
        ledger: PartitionLedger,
        on_commit_tp: Callable[[TP], Awaitable[None]],
    ) -> None:
        self.app_id = app_id
        self._listener = listener
        self._assignors = list(assignors)
        self._rebalance_protocol: RebalanceProtocol = rebalance_protocol
        self._isolation_level: IsolationLevel = isolation_level
        self._poll_timeout = poll_timeout
        self._flow = flow
        self._ledger = ledger
        self._on_commit_tp = on_commit_tp
        self.consumer: GroupConsumer | None = None
        self.topics: frozenset[str] = frozenset()
        self._stop = trio.Event()
        self._done: trio.Event | None = None
        self._commit_requests: list[tuple[dict[TP, int], trio.Event]] = []

    @property
    def joined(self) -> bool:
        """Whether the group task runs (between joining and leaving)."""
        return self._done is not None

    async def subscribe(
        self, nursery: trio.Nursery, transport: Transport, topics: frozenset[str]
    ) -> None:
        """(Re-)join the group for ``topics`` (the group task runs in ``nursery``); leave
        it when ``topics`` is empty. Leaving revokes every partition through the
        listener, which commits what was processed. Cancellation: the group task is
        either not started, or started and owned by ``nursery``."""
        if topics == self.topics and self._done is not None:
            return
        await self.leave()
        self.topics = topics
        if not topics:
            return
        self._stop = trio.Event()
        self._done = trio.Event()
        await nursery.start(self._run, transport, topics, self._done)

    async def leave(self) -> None:
        """Stop the group task (revoking and committing through the listener) and wait
        for it. Cancellation: the task still stops; the caller stops waiting."""
        if self._done is not None:
            self._stop.set()
            await self._done.wait()
            self._done = None
            self.topics = frozenset()

    async def _run(
        self,
        transport: Transport,
        topics: frozenset[str],
        done: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        streams = self._flow.streams
        try:
            async with transport.open_group_consumer(
                self.app_id,
                sorted(topics),
                listener=self._listener,
                assignors=self._assignors,
                rebalance_protocol=self._rebalance_protocol,
                isolation_level=self._isolation_level,
            ) as consumer:
                self.consumer = consumer
                task_status.started()
                while not self._stop.is_set():
                    await self._serve_commit_requests(consumer)
                    await self._flow_control(consumer)
                    batch = await consumer.poll(timeout=self._poll_timeout)
                    for tp, records in batch.items():
                        stream = streams.get(tp.topic)
                        if stream is None or stream.closed or not records:
                            continue
                        stream.feed(tp.partition, list(records))
                        self._ledger.fed(tp, records[0].offset)
                        if stream.buffered(tp.partition) >= stream.buffer_size:
                            self._flow.to_pause.add(tp)
                # Leaving the block revokes everything through the listener, which
                # commits (unless the worker is failing) before the group is left.
        finally:
            self.consumer = None
            for _, event in self._commit_requests:
                event.set()
            self._commit_requests.clear()
            done.set()

    async def _flow_control(self, consumer: GroupConsumer) -> None:
        flow = self._flow
        assigned = consumer.assignment()
        if flow.to_pause:
            pause = (flow.to_pause & assigned) - consumer.paused()
            flow.to_pause.clear()
            if pause:
                await consumer.pause(pause)
        if flow.to_resume:
            resume = flow.to_resume & consumer.paused()
            flow.to_resume.clear()
            if resume:
                await consumer.resume(resume)

    # -- commits ---------------------------------------------------------------------------
    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit ``offsets`` (of partitions still assigned, past the last commit) at the
        group task's next turn, and wait for it. A commit the group rejects (it
        rebalanced meanwhile) is logged and skipped: the next owner processes those
        events again. Cancellation: the commit still happens; the caller stops
        waiting."""
        if not offsets or self.consumer is None:
            return
        done = trio.Event()
        self._commit_requests.append((dict(offsets), done))
        await done.wait()

    async def _serve_commit_requests(self, consumer: GroupConsumer) -> None:
        while self._commit_requests:
            offsets, done = self._commit_requests.pop(0)
            try:
                await self._commit_filtered(consumer, offsets)
            finally:
                done.set()

    async def _commit_filtered(self, consumer: GroupConsumer, offsets: Mapping[TP, int]) -> None:
        wanted = self._ledger.offsets_to_commit(offsets, consumer.assignment())
        if not wanted:
            return
        try:
            await consumer.commit(wanted)
        except CommitFailed as exc:
            logger.warning("%s: %s", self.app_id, exc)
            return
        self._ledger.record_committed(wanted)
        for tp in sorted(wanted):
            await self._on_commit_tp(tp)

    # -- reads -----------------------------------------------------------------------------
    async def committed(self, tps: Iterable[TP]) -> dict[TP, int | None] | None:
        """The group's committed offsets of ``tps`` (``None`` when not in the group)."""
        consumer = self.consumer
        if consumer is None:
            return None
        return await consumer.committed(tps)

    async def committed_sources(self, partitions: frozenset[int]) -> dict[TP, int | None] | None:
        """The group's committed offsets of every source partition numbered in
        ``partitions`` (``None`` when not in the group: standbys then wait)."""
        consumer = self.consumer
        if consumer is None or not self.topics or not partitions:
            return None
        tps = [TP(topic, p) for topic in sorted(self.topics) for p in sorted(partitions)]
        try:
            return await consumer.committed(tps)
        except Exception as exc:  # the group is being left or re-joined: ask again later
            logger.debug("%s: committed offsets unavailable: %r", self.app_id, exc)
            return None

    async def group_metadata(self) -> GroupMetadata:
        """The consumer's group metadata (for offsets sent in a transaction)."""
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("the group was left before the commit")
        return await consumer.group_metadata()
