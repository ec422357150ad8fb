"""Source streams: :class:`Stream` (its events: ``_event``; its ``take()`` batches: ``_batch``).

The manager's group-consumer task routes fetched records into each stream's
per-partition buffers. A stream yields records only of partitions that are *ready*
(assigned and recovered by every table); records of other partitions wait, and are
dropped if their partition is revoked. An event is *processed* when the iteration asks
for the next one (or the stream closes): only then does its offset count for commits.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal, Protocol

import trio

from ._batch import Batch, check_take_arguments
from ._codecs import Codec, CodecError, record_decoder
from ._event import Event, current_event
from ._transport._base import TP, Record
from ._windows import Duration, to_ms
from .errors import RecordDecodeError

__all__ = ["Batch", "Event", "Stream", "StreamHost", "current_event"]

logger = logging.getLogger("trio_tables.stream")

DecodeErrorPolicy = Literal["raise", "skip"]

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
        # None: the bytes as they are (the raw codec without a type).
        self._key_decode = record_decoder(key_codec)
        self._value_decode = record_decoder(value_codec)
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
        # take(): records taken from the buffers for the batch being collected (not
        # handed out yet), and those of the batch handed out and not yet processed
        # (a record whose decoding failed under "skip" has no event).
        self._pending: list[tuple[Record, Event | None]] | None = None
        self._batch: list[tuple[Record, Event | None]] | None = None
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
        """Stop yielding ``partition`` (its buffered records stay until dropped; those
        of a batch being collected go back to the front of its buffer)."""
        self._ready.discard(partition)
        self._unpend(partition, keep=True)
        self._run = None
        if partition in self._order:
            self._order.remove(partition)

    def drop(self, partition: int) -> None:
        """Forget a revoked partition and what was buffered for it."""
        self._ready.discard(partition)
        self._unpend(partition, keep=False)
        self._buffers.pop(partition, None)
        self._run = None
        if partition in self._order:
            self._order.remove(partition)

    @property
    def current(self) -> Event | None:
        """The event handed out and not yet processed (``None`` between events)."""
        return self._current

    def busy_partitions(self) -> frozenset[int]:
        """The partitions of the event (or the ``take()`` batch) in process."""
        if self._current is not None:
            return frozenset((self._current.partition,))
        if self._batch is not None:
            return frozenset(record.partition for record, _ in self._batch)
        return frozenset()

    async def wait_idle(self) -> None:
        """Wait until no event (or batch) of this stream is being processed."""
        while self._current is not None or self._batch is not None:
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
        if self._batch is not None:
            current_event.set(None)
            self._finish_batch()

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

    def _decode(self, record: Record, defer: bool = False) -> Event | None:
        # One unpacking instead of seven attribute reads of the named tuple.
        topic, partition, offset, key, value, timestamp, headers = record
        try:
            if key is not None and self._key_decode is not None:
                key = self._key_decode(key)
        except CodecError as exc:
            self._decode_failed(record, "key", exc, defer)
            return None
        try:
            if value is not None and self._value_decode is not None:
                value = self._value_decode(value)
        except CodecError as exc:
            self._decode_failed(record, "value", exc, defer)
            return None
        return Event(key, value, topic, partition, offset, timestamp, headers)

    def _decode_failed(self, record: Record, what: str, exc: CodecError, defer: bool) -> None:
        """Raise, or skip ``record``: processed at once unless ``defer`` (a ``take()``
        batch counts it processed with the events before it)."""
        error = RecordDecodeError(record.topic, record.partition, record.offset, what, exc)
        if self._on_decode_error == "raise":
            current_event.set(None)
            raise error
        self.skipped += 1
        logger.warning("skipped undecodable record (%d so far): %s", self.skipped, error)
        if not defer:
            self._event_processed(record.tp, record.offset)

    def __aiter__(self) -> _Loop:
        return _Loop(self)

    async def __anext__(self) -> Event:
        # The hot path: one call per event. The previous event is finished here, and
        # the current-event context variable is set once per event: to the next event
        # when one is at hand, to None only before waiting or leaving (a task blocked in
        # here, cancelled, or done with the stream has no current event).
        if self._reader is not trio.lowlevel.current_task():
            self._claim_reader()  # the first event of this task (or another's: an error)
        previous = self._current
        if previous is not None:
            self._current = None
            self._processed(previous)
        elif self._batch is not None:
            self._finish_batch()
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
            if run and self._burst:  # _run_record, inlined: one call less per event
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
        """Mark the event (or ``take()`` batch) in progress as processed now (its
        offsets may be committed and no event is current), as asking for the next one
        would. For code that leaves ``async for`` with ``break`` and keeps the stream
        open. Another task may then iterate the stream."""
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
        """Stop iterating; the event (or batch) in progress, if any, does not count as
        processed."""
        if self._current is not None or self._batch is not None:
            self._current = None
            self._batch = None
            current_event.set(None)
            self._set_current_done()
        self.closed = True
        self._changed.set()


    # -- take(): batches ----------------------------------------------------------------
    def take(self, max_: int, within: Duration) -> AsyncIterator[Batch]:
        """Iterate the stream in lists: ``async for batch in stream.take(100, within=1.0)``
        yields :class:`Batch` es of 1 to ``max_`` events, as Faust's ``Stream.take``
        (which yields values; a :class:`Batch` has ``.values``). A batch is handed out
        when it holds ``max_`` events, or ``within`` (seconds, a ``timedelta`` or
        ``"500ms"``) after its first event was taken, whichever comes first; with no
        events it waits without limit, as ``async for event in stream`` does.

        Process it with ``for event in batch:``: each event is the current event while
        the loop body runs for it, so its table writes go to its partition (see
        :class:`Batch`). The whole batch counts as processed (its offsets may be
        committed) when the next batch is asked for, the stream is acked or closed.

        Commit cycles: a batch in process is what an event in process is to
        ``async for``: a cycle waits up to ``event_grace`` for it to finish, then lets
        the batch's partitions sit the cycle out. A cycle that starts while a batch is
        being collected (nothing handed out yet) does not wait for it: the collection
        pauses until the cycle releases the streams, and the ``within`` clock goes on.

        Cancellation: cancelling a task that waits for the next batch loses nothing:
        the events collected so far go back to the stream's buffers, in order, and the
        previous batch still counts as processed. A partition revoked (or withheld)
        while a batch is collected takes its collected events with it.
        Raises ``TypeError``/``ValueError`` for a bad ``max_`` or ``within``."""
        max_events = check_take_arguments(max_)
        seconds = to_ms(within) / 1000
        return _TakeLoop(self, max_events, seconds)

    def _claim_reader(self) -> None:
        """This task iterates the stream now (``BusyResourceError`` if another does)."""
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

    async def _next_batch(self, max_: int, within: float) -> Batch:
        """The next batch (see :meth:`take`); finishes the previous event or batch."""
        self._claim_reader()
        self._finish_current()
        current_event.set(None)
        await self._waiting(self._host.between_events())
        pending: list[tuple[Record, Event | None]] = []
        self._pending = pending
        try:
            return await self._collect(pending, max_, within)
        except BaseException:
            self._reader = None
            self._unpend(None, keep=True)
            raise
        finally:
            self._pending = None

    async def _collect(
        self, pending: list[tuple[Record, Event | None]], max_: int, within: float
    ) -> Batch:
        events = 0
        deadline = math.inf
        taken = 0
        while events < max_:
            if self.closed:
                raise StopAsyncIteration  # the collected events go back (not processed)
            if events and trio.current_time() >= deadline:
                break
            if self._host.hold is not None:
                await self._host.wait_for_hold()
                continue
            record = self._run_record()
            if record is None:
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                    self._changed = trio.Event()
                continue
            taken += 1
            if taken % _CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()
            try:
                # A skipped record after an event of the batch counts with the batch.
                event = self._decode(record, defer=events > 0)
            except RecordDecodeError:
                if not events:
                    raise
                # Hand out what came before it; the next batch starts with (raises) it.
                self._buffers.setdefault(record.partition, deque()).appendleft(record)
                self._run = None
                break
            if event is None:
                if events:
                    pending.append((record, None))
                continue
            pending.append((record, event))
            events += 1
            if events == 1:
                deadline = trio.current_time() + within
        batch = list(pending)
        pending.clear()
        self._batch = batch
        return Batch([event for _, event in batch if event is not None])

    def _run_record(self) -> Record | None:
        """The next record in turn, as ``__anext__`` takes it."""
        run = self._run
        if run and self._burst:
            self._burst -= 1
            record = run.popleft()
            if len(run) == self.buffer_size // 2:
                self._host.partition_has_room(self.topic, self._run_partition)
            return record
        return self._next_record()

    def _finish_batch(self) -> None:
        """The batch handed out is processed: its offsets count, in order."""
        batch = self._batch
        self._batch = None
        if batch:
            for record, _ in batch:
                tp = self._tps.get(record.partition)
                if tp is None:
                    tp = self._tps[record.partition] = record.tp
                self._event_processed(tp, record.offset)
        self._set_current_done()

    def _unpend(self, partition: int | None, *, keep: bool) -> None:
        """Take the records of ``partition`` (all with ``None``) out of the batch being
        collected; with ``keep``, back to the front of their buffers, in order."""
        pending = self._pending
        if not pending:
            return
        leaving = [item for item in pending if partition in (None, item[0].partition)]
        pending[:] = [item for item in pending if partition not in (None, item[0].partition)]
        if keep:
            for record, _ in reversed(leaving):
                buffer = self._buffers.get(record.partition)
                if buffer is None:
                    buffer = self._buffers[record.partition] = deque()
                buffer.appendleft(record)
            self._run = None

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


class _TakeLoop:
    """One ``async for`` loop over :meth:`Stream.take`."""

    __slots__ = ("_max", "_stream", "_within")

    def __init__(self, stream: Stream, max_: int, within: float) -> None:
        self._stream = stream
        self._max = max_
        self._within = within

    def __aiter__(self) -> _TakeLoop:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Batch]:
        return self._stream._next_batch(self._max, self._within)
