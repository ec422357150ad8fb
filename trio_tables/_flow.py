"""What the streams share with the rest of the worker: :class:`StreamFlow`.

Streams are fed by the group consumer task and drained by the application's tasks. The
flow is the one object between them and the manager's machinery:

* the registry of open streams (by topic) and which partitions they may hand out;
* the *hold*: a commit cycle stops the streams between two events while it takes the
  tables' changes (:meth:`StreamFlow.quiesced`);
* the backlog bound: while a cycle is sending and persisting, streams wait once
  ``max_commit_backlog`` events were processed since it took its changes;
* flow control requests for the group consumer (pause full partitions, resume drained
  ones);
* processed offsets, recorded in the :class:`~._ledger.PartitionLedger`.

Threads: only the Trio thread touches it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import trio

from ._ledger import PartitionLedger
from ._stream import Stream
from ._transport._base import TP

__all__ = ["StreamFlow"]


class StreamFlow:
    """Streams, their hold and flow control (implements the streams' ``StreamHost``)."""

    def __init__(
        self,
        ledger: PartitionLedger,
        *,
        max_commit_backlog: int,
        max_cycle_changes: int | None,
        pending_changes: Callable[[], int],
    ) -> None:
        self.ledger = ledger
        self.max_commit_backlog = max_commit_backlog
        self.max_cycle_changes = max_cycle_changes
        self._pending_changes = pending_changes
        # Set when the tables hold max_cycle_changes changes not taken yet: the
        # committer starts a cycle before commit_interval is over (replaced per wait).
        self.cycle_wanted = trio.Event()
        self.streams: dict[str, Stream] = {}
        # Set while a commit cycle holds the streams (they hand out no new event).
        self.hold: trio.Event | None = None
        # Set while a commit cycle sends and persists what it took.
        self._cycle_done: trio.Event | None = None
        # Flow control requests, served by the group consumer task between polls.
        self.to_pause: set[TP] = set()
        self.to_resume: set[TP] = set()
        # The streams' per-event call, bound once: no extra call layer per event.
        self.event_processed = ledger.event_processed

    # -- StreamHost ----------------------------------------------------------------------
    async def between_events(self) -> None:
        """Called by streams every few events: lets other tasks run, and bounds the
        changes that wait for a commit cycle (their records, acknowledgements and store
        rows grow with them):

        * while a cycle is sending and persisting, holds the stream once
          ``max_commit_backlog`` events were processed since the cycle took its
          changes, or the tables hold ``max_cycle_changes`` changes not taken yet (the
          changelog is slower than processing);
        * with no cycle in flight, asks for one (:attr:`cycle_wanted`) once the tables
          hold ``max_cycle_changes`` changes not taken yet (processing is fast).

        Changes are counted only once as many events were processed since the last
        take (each event makes at most a few). Cancellation: nothing is lost (no event
        is held)."""
        done = self._cycle_done
        since_take = self.ledger.events_since_take
        if done is not None:
            if since_take >= self.max_commit_backlog or self._many_changes(since_take):
                await done.wait()
                return
        elif not self.cycle_wanted.is_set() and self._many_changes(since_take):
            self.cycle_wanted.set()
        await trio.lowlevel.checkpoint()

    def _many_changes(self, since_take: int) -> bool:
        limit = self.max_cycle_changes
        return limit is not None and since_take >= limit and self._pending_changes() >= limit

    async def wait_cycle_wanted(self) -> None:
        """Wait until a commit cycle is wanted before its interval is over; each call
        waits for a new request. Cancellation: nothing happens."""
        self.cycle_wanted = trio.Event()
        await self.cycle_wanted.wait()

    async def wait_for_hold(self) -> None:
        """Wait until no commit cycle holds the streams."""
        while self.hold is not None:
            await self.hold.wait()

    def partition_has_room(self, topic: str, partition: int) -> None:
        """A stream drained half of ``partition``'s buffer: resume fetching it."""
        self.to_resume.add(TP(topic, partition))

    # -- commit cycles --------------------------------------------------------------------
    @asynccontextmanager
    async def quiesced(self, grace: float) -> AsyncIterator[frozenset[int]]:
        """Streams hand out no new event for the block; before it, events in process get
        ``grace`` seconds to finish. Yields the partitions whose event is still in process
        (a task may hold an event, or a ``take()`` batch, indefinitely: those partitions
        sit out this commit).
        Cancellation: while waiting for events to finish, nothing was taken; the hold
        ends with the block whatever happens."""
        hold = trio.Event()
        self.hold = hold
        try:
            with trio.move_on_after(grace):
                for stream in list(self.streams.values()):
                    await stream.wait_idle()
            yield frozenset(
                partition
                for stream in self.streams.values()
                for partition in stream.busy_partitions()
            )
        finally:
            self.hold = None
            hold.set()

    def changes_taken(self) -> trio.Event:
        """A commit cycle took the tables' changes and now sends them: the backlog
        counts from here. Set the returned event when the cycle is over."""
        self.ledger.changes_taken()
        done = self._cycle_done = trio.Event()
        return done

    def cycle_over(self, done: trio.Event) -> None:
        if self._cycle_done is done:
            self._cycle_done = None
        done.set()

    # -- partitions -----------------------------------------------------------------------
    def release(self, tps: Iterable[TP]) -> None:
        """Hand the recovered ``tps`` to the streams of their topics."""
        for tp in tps:
            stream = self.streams.get(tp.topic)
            if stream is not None:
                stream.set_ready(tp.partition)

    def withhold(self, partitions: Iterable[int]) -> None:
        """Stop handing out events of ``partitions`` (buffered records stay)."""
        partitions = list(partitions)
        for stream in self.streams.values():
            for partition in partitions:
                stream.unready(partition)

    def drop(self, partitions: Iterable[int]) -> None:
        """``partitions`` left: forget what the streams buffered for them."""
        partitions = list(partitions)
        for stream in self.streams.values():
            for partition in partitions:
                stream.drop(partition)
