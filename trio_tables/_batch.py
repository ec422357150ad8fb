"""The lists of events that ``Stream.take(max_, within=)`` hands out: :class:`Batch`.

A batch is a read-only sequence of :class:`~._event.Event` s. Iterating it with ``for``
makes each event the *current event* in turn (table writes go to that event's partition,
windowed tables use its timestamp), exactly as ``async for event in stream`` does; the
scope of the last one ends with the loop. Indexing and slicing give the events without
setting anything; ``with batch.processing(event):`` sets one event as the current event
for a block (for code that handles a batch's events out of order, or in tasks of their
own: each task then sets its own event).

Threads: only the Trio thread touches a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

from ._event import Event, current_event

__all__ = ["Batch", "check_take_arguments"]


class Batch(Sequence[Event]):
    """Up to ``max_`` events handed out together by :meth:`Stream.take` (never empty).

    ``for event in batch:`` makes each event the current event while the loop body runs
    for it (table writes go to its partition); after the loop (``break`` and exceptions
    included) no event is current. ``batch[i]`` and slices do not touch the current
    event: use ``with batch.processing(event):`` around writes made for an event taken
    that way. The whole batch counts as processed (its offsets may be committed) when
    the next batch is asked for, as Faust acks a ``take()`` buffer.
    """

    __slots__ = ("_events",)

    def __init__(self, events: list[Event]) -> None:
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        return self._events[index]

    def __iter__(self) -> Iterator[Event]:
        set_current = current_event.set
        try:
            for event in self._events:
                set_current(event)
                yield event
        finally:
            # Runs when the loop ends, breaks or raises (CPython closes the generator as
            # soon as the loop drops it): writes after the loop are outside an event.
            set_current(None)

    def __repr__(self) -> str:
        return f"Batch({len(self._events)} events, partitions {sorted(self.partitions)})"

    @property
    def values(self) -> list[Any]:
        """The events' values, in order (what Faust's ``take()`` yields)."""
        return [event.value for event in self._events]

    @property
    def partitions(self) -> frozenset[int]:
        """The source partitions the batch's events come from."""
        return frozenset(event.partition for event in self._events)

    @contextmanager
    def processing(self, event: Event) -> Iterator[Event]:
        """Make ``event`` (one of this batch's) the current event for the block; no
        event is current after it. Raises ``ValueError`` for an event of another batch
        (its offset may already be committed: writes for it would not be covered)."""
        if not any(event is mine for mine in self._events):
            raise ValueError(
                f"{event!r} is not an event of this batch: use the events of the batch "
                "being processed (the one the last `take()` step returned)"
            )
        current_event.set(event)
        try:
            yield event
        finally:
            current_event.set(None)


def check_take_arguments(max_: Any) -> int:
    """``max_`` as a positive int, or a ``ValueError``/``TypeError`` saying what to pass."""
    if isinstance(max_, bool) or not isinstance(max_, int):
        raise TypeError(f"take(max_=...) needs an int (events per batch), not {max_!r}")
    if max_ < 1:
        raise ValueError(f"take(max_={max_}): a batch holds at least one event; pass max_ >= 1")
    return max_

