"""Stream-table lookup joins: each event of a stream together with a table's value.

``table.join(stream)`` (inner) yields a :class:`Joined` only for events whose join key is
in the table; ``table.left_join(stream)`` yields every event, with ``value=None`` when the
key is missing. The lookup happens when the event is handed out, in the table as this
worker sees it then (a table's default is *not* used: a join is about presence).

Where the key is looked up: in a :class:`GlobalTable` in every partition (so any field
can be the join key: a foreign-key join); in a partitioned table in the event's own
partition, which is right when the table is keyed like the stream (co-partitioned).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs

from .._stream import Event, Stream

__all__ = ["JoinKey", "Joined", "lookup_join"]

JoinKey = Callable[[Event], Any] | str | None
"""How to get an event's join key: a callable, the name of a field of the event's value
(a mapping or an object), or ``None`` for the event's key."""


@attrs.frozen
class Joined:
    """An event and the table's value for its join key (``None`` if missing, in a left
    join). Processing it is processing ``event``: writes go to the event's partition."""

    event: Event
    value: Any

    @property
    def key(self) -> Any:
        return self.event.key


def _key_getter(on: JoinKey) -> Callable[[Event], Any]:
    if on is None:
        return lambda event: event.key
    if isinstance(on, str):
        field = on

        def by_field(event: Event) -> Any:
            value = event.value
            if isinstance(value, dict):
                return value.get(field)
            return getattr(value, field, None)

        return by_field
    return on


async def lookup_join(
    lookup: Callable[[Any], tuple[bool, Any]],
    stream: Stream,
    on: JoinKey,
    *,
    keep_missing: bool,
) -> AsyncIterator[Joined]:
    """Iterate ``stream``, yielding each event with ``lookup(join key)`` =
    ``(found, value)`` (events without a match only with ``keep_missing``)."""
    get_key = _key_getter(on)
    async for event in stream:
        key = get_key(event)
        found, value = (False, None) if key is None else lookup(key)
        if found or keep_missing:
            yield Joined(event, value)
