"""Source streams: :class:`Event`, the current-event context, and :class:`Stream`.

The manager's group-consumer task routes fetched records into each stream's
per-partition buffers. A stream yields records only of partitions that are *ready*
(assigned and recovered by every table); records of other partitions wait, and are
dropped if their partition is revoked. An event is *processed* when the iteration asks
for the next one (or the stream closes): only then does its offset count for commits.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, Literal, Protocol

import attrs
import trio

from ._codecs import Codec, CodecError
from ._transport._base import TP, Headers, Record
from .errors import RecordDecodeError

__all__ = ["Event", "Stream", "StreamHost", "current_event"]

logger = logging.getLogger("trio_tables.stream")

DecodeErrorPolicy = Literal["raise", "skip"]


@attrs.frozen
class Event:
    """One source record, decoded. ``timestamp`` is in milliseconds since the epoch."""

    key: Any
    value: Any
    topic: str
    partition: int
    offset: int
    timestamp: int
    headers: Headers = ()

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


current_event: ContextVar[Event | None] = ContextVar("trio_tables_current_event", default=None)
"""The event being processed in this task (``None`` outside of a stream)."""

# How many records of one partition a stream yields before it looks at the next
# partition: fairness between partitions at low cost per event.
_BURST = 256
# How many events a stream hands out from its buffers between two calls to the
# manager's _between_events: a checkpoint (a loop over a full buffer would otherwise
# never let another task run) or a wait for a commit cycle that fell behind.
_CHECKPOINT_EVERY = 1024


class StreamHost(Protocol):
    """What a stream asks of the worker it belongs to (``_flow.StreamFlow``)."""

    # Set while a commit cycle holds the streams between two events.
    hold: trio.Event | None

    def event_processed(self, tp: TP, offset: int) -> None:
        """The event at ``offset`` of ``tp`` is finished."""

    async def between_events(self) -> None:
        """Called every ``_CHECKPOINT_EVERY`` events, no event held."""

    async def wait_for_hold(self) -> None:
        """Wait until no commit cycle holds the streams."""

    def partition_has_room(self, topic: str, partition: int) -> None:
        """Half of ``partition``'s buffer was drained."""


class Stream:
    """An async iterator over the :class:`Event` s of one source topic.

    Created by :meth:`TableManager.stream`; iterate it with ``async for``, from one task
    at a time: a task that asks for an event while another task holds one of this
    stream (or waits for one) gets :class:`trio.BusyResourceError` (each would mark the
    other's events processed). Another task may take over once the holder finished its
    event (``ack()``, or the iteration ended).
    Cancellation: cancelling a task blocked in ``__anext__`` loses nothing; the previous
    event still counts as processed.
    """

    def __init__(
        self,
        host: StreamHost,
        topic: str,
        *,
        key_codec: Codec,
        value_codec: Codec,
        on_decode_error: DecodeErrorPolicy,
        buffer_size: int,
    ) -> None:
        self.topic = topic
        self._host = host
        self._event_processed = host.event_processed
        self._key_decode: Callable[[bytes], Any] = key_codec.decode
        self._value_decode: Callable[[bytes], Any] = value_codec.decode
        self._on_decode_error = on_decode_error
        self.buffer_size = buffer_size
        self._buffers: dict[int, deque[Record]] = {}
        self._ready: set[int] = set()
        self._order: deque[int] = deque()
        # The run in progress: the buffer of ``_order[0]`` being drained, and how many
        # more records it may yield before the next partition's turn. ``None`` when the
        # next call must pick a partition (set_ready/unready/drop reset it).
        self._run: deque[Record] | None = None
        self._run_partition = 0
        self._burst = 0
        self._since_checkpoint = 0
        self._changed = trio.Event()
        self._current: Event | None = None
        # Created only when a commit waits for the event in process (not per event).
        self._current_done: trio.Event | None = None
        self._tps: dict[int, TP] = {}
        # The task iterating (holding an event or waiting for one), else None.
        self._reader: trio.lowlevel.Task | None = None
        self.skipped = 0
        self.closed = False

    # -- fed by the manager --------------------------------------------------------
    def buffered(self, partition: int) -> int:
        buffer = self._buffers.get(partition)
        return len(buffer) if buffer else 0

    def feed(self, partition: int, records: list[Record]) -> None:
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._buffers[partition] = deque()
        buffer.extend(records)
        if partition in self._ready:
            self._changed.set()

    def set_ready(self, partition: int) -> None:
        if partition not in self._ready:
            self._ready.add(partition)
            self._order.append(partition)
            self._run = None
            self._changed.set()

    def unready(self, partition: int) -> None:
        """Stop yielding ``partition`` (its buffered records stay until dropped)."""
        self._ready.discard(partition)
        self._run = None
        if partition in self._order:
            self._order.remove(partition)

    def drop(self, partition: int) -> None:
        """Forget a revoked partition and what was buffered for it."""
        self._ready.discard(partition)
        self._buffers.pop(partition, None)
        self._run = None
        if partition in self._order:
            self._order.remove(partition)

    @property
    def current(self) -> Event | None:
        """The event handed out and not yet processed (``None`` between events)."""
        return self._current

    async def wait_idle(self) -> None:
        """Wait until no event of this stream is being processed."""
        while self._current is not None:
            if self._current_done is None:
                self._current_done = trio.Event()
            await self._current_done.wait()

    # -- iteration --------------------------------------------------------------------
    def _finish_current(self) -> None:
        event = self._current
        if event is not None:
            self._current = None
            current_event.set(None)
            self._processed(event)

    def _processed(self, event: Event) -> None:
        """``event`` counts as processed: its offset may be committed."""
        tp = self._tps.get(event.partition)
        if tp is None:
            tp = self._tps[event.partition] = event.tp
        self._event_processed(tp, event.offset)
        if self._current_done is not None:
            self._set_current_done()

    def _set_current_done(self) -> None:
        done = self._current_done
        if done is not None:
            self._current_done = None
            done.set()

    def _next_record(self) -> Record | None:
        """The first record of the next ready partition with buffered records (which
        starts a run of up to ``_BURST`` records), or ``None``. Called when the run in
        progress is over: empty, out of turns, or reset."""
        order = self._order
        if self._run is not None:
            self._run = None
            if order:
                order.rotate(-1)
        for _ in range(len(order)):
            partition = order[0]
            buffer = self._buffers.get(partition)
            if buffer:
                self._run = buffer
                self._run_partition = partition
                self._burst = _BURST - 1
                record = buffer.popleft()
                if len(buffer) == self.buffer_size // 2:
                    self._host.partition_has_room(self.topic, partition)
                return record
            order.rotate(-1)
        return None

    def _decode(self, record: Record) -> Event | None:
        try:
            key = None if record.key is None else self._key_decode(record.key)
        except CodecError as exc:
            self._decode_failed(record, "key", exc)
            return None
        try:
            value = None if record.value is None else self._value_decode(record.value)
        except CodecError as exc:
            self._decode_failed(record, "value", exc)
            return None
        return Event(
            key,
            value,
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.headers,
        )

    def _decode_failed(self, record: Record, what: str, exc: CodecError) -> None:
        error = RecordDecodeError(record.topic, record.partition, record.offset, what, exc)
        if self._on_decode_error == "raise":
            current_event.set(None)
            raise error
        self.skipped += 1
        logger.warning("skipped undecodable record (%d so far): %s", self.skipped, error)
        self._event_processed(record.tp, record.offset)

    def __aiter__(self) -> _Loop:
        return _Loop(self)

    async def __anext__(self) -> Event:
        # The hot path: one call per event. The previous event is finished here, and
        # the current-event context variable is set once per event: to the next event
        # when one is at hand, to None only before waiting or leaving (a task blocked in
        # here, cancelled, or done with the stream has no current event).
        task = trio.lowlevel.current_task()
        reader = self._reader
        if reader is not task:
            if reader is not None:
                raise trio.BusyResourceError(
                    f"another task ({reader.name}) is iterating the stream of "
                    f"{self.topic!r}; iterate a stream from one task at a time (fan out "
                    "to worker tasks through a memory channel)"
                )
            self._reader = task
        previous = self._current
        if previous is not None:
            self._current = None
            self._processed(previous)
        self._since_checkpoint += 1
        if self._since_checkpoint >= _CHECKPOINT_EVERY:
            # Before a record is taken: a cancellation delivered here loses nothing.
            self._since_checkpoint = 0
            current_event.set(None)
            await self._waiting(self._host.between_events())
        while True:
            if self.closed:
                current_event.set(None)
                self._reader = None
                raise StopAsyncIteration
            if self._host.hold is not None:
                current_event.set(None)
                await self._waiting(self._host.wait_for_hold())
                continue
            run = self._run
            if run and self._burst:
                self._burst -= 1
                record = run.popleft()
                if len(run) == self.buffer_size // 2:
                    self._host.partition_has_room(self.topic, self._run_partition)
            else:
                next_record = self._next_record()
                if next_record is None:
                    current_event.set(None)
                    await self._waiting(self._changed.wait())
                    self._changed = trio.Event()
                    continue
                record = next_record
            event = self._decode(record)
            if event is None:
                continue
            self._current = event
            current_event.set(event)
            return event

    async def _waiting(self, wait: Coroutine[Any, Any, None]) -> None:
        """Await ``wait`` with no event held; a cancellation (or error) there lets
        another task take the stream over."""
        try:
            await wait
        except BaseException:
            self._reader = None
            raise

    def _loop_left(self) -> None:
        """An ``async for`` loop over this stream was left (``break``, ``return``, an
        exception): the event in progress is no longer the *current* event of the task
        that left (reads and writes there are outside an event again). It still counts
        as processed only when the stream asks for the next one, is acked or closes."""
        event = self._current
        if event is not None and current_event.get() is event:
            current_event.set(None)

    def ack(self) -> None:
        """Mark the event in progress as processed now (its offset may be committed and
        it is no longer the current event), as asking for the next event would. For
        code that leaves ``async for`` with ``break`` and keeps the stream open. Another
        task may then iterate the stream."""
        self._finish_current()
        self._reader = None

    def stop(self) -> None:
        """End the iteration after the event in progress: the ``async for`` loop ends
        when it asks for the next event (which also finishes the current one), or at
        once if it is waiting for one. What the manager does on a stop request (see
        ``TableManager(handle_signals=True)``)."""
        self.closed = True
        self._changed.set()

    def close(self) -> None:
        """Stop iterating; the event in progress (if any) counts as processed.

        The stream cannot tell a finished event from one whose processing task was
        cancelled half-way: if you cancel the processing task and then leave the
        ``async with manager.stream(...)`` block *normally*, an interrupted event counts
        as processed. Leave the block with the cancellation or an exception instead (the
        event is then processed again), or cancel only tasks that wait for events."""
        self._finish_current()
        self.closed = True
        self._changed.set()

    def abort(self) -> None:
        """Stop iterating; the event in progress (if any) does not count as processed."""
        if self._current is not None:
            self._current = None
            current_event.set(None)
            self._set_current_done()
        self.closed = True
        self._changed.set()


class _Loop:
    """One ``async for`` loop over a :class:`Stream` (what ``__aiter__`` returns).

    It exists to notice that the loop was left: Python drops the loop's iterator right
    when ``break``/``return``/an exception leaves an ``async for`` (CPython frees it at
    once), and ``__del__`` then tells the stream, which ends the current-event scope of
    the last event (table reads after the loop see every active partition, not only
    that event's; SPEC section 1). Per event it costs one call."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def __aiter__(self) -> _Loop:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Event]:
        return self._stream.__anext__()

    def __del__(self) -> None:
        self._stream._loop_left()
