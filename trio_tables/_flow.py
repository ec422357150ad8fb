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

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from ._ledger import PartitionLedger
from ._stream import Stream
from ._transport._base import TP

__all__ = ["StreamFlow"]


class StreamFlow:
    """Streams, their hold and flow control (implements the streams' ``StreamHost``)."""

    def __init__(self, ledger: PartitionLedger, *, max_commit_backlog: int) -> None:
        self.ledger = ledger
        self.max_commit_backlog = max_commit_backlog
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
        """Called by streams every few events: lets other tasks run, and holds the
        stream while a commit cycle is sending and persisting and ``max_commit_backlog``
        events were processed since it took its changes (bounds the memory that changes
        waiting for the next cycle take when the changelog is slower than processing).
        Cancellation: nothing is lost (no event is held)."""
        done = self._cycle_done
        if done is not None and self.ledger.events_since_take >= self.max_commit_backlog:
            await done.wait()
        else:
            await trio.lowlevel.checkpoint()

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
