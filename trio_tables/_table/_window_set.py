"""``WindowSet``: the windows of one key of a windowed table (``wrapper[key]``)."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from .._store._base import MISSING
from .._stream import Event, current_event
from ..errors import NoWindowTimestamp, UnsupportedOperation
from ._protocols import TableCore, WrapperCore
from ._values import TOMBSTONE, detached

__all__ = ["WindowSet", "explicit_timestamp"]

logger = logging.getLogger("trio_tables.windows")

explicit_timestamp: ContextVar[int | None] = ContextVar(
    "trio_tables_window_timestamp", default=None
)
"""The timestamp set by ``wrapper.at(ts)`` (ms), ``None`` outside such a block."""


class WindowSet:
    """The windows of one key in a windowed table, relative to a timestamp (the
    current event's, by default: see :class:`WindowWrapper`).

    In-place operators (``+=``, ``-=``, ``*=``, ``/=``, ``//=``, ``%=``, ``**=``,
    ``<<=``, ``>>=``, ``&=``, ``^=``, ``|=``) update *every* window the timestamp falls
    into, starting from the table's ``default`` in a new window. Updates for windows
    that were closed already (late events) are dropped and counted.
    """

    __slots__ = ("event", "key", "wrapper")

    def __init__(self, key: Any, wrapper: WrapperCore, event: Event | None) -> None:
        self.key = key
        self.wrapper = wrapper
        self.event = event

    def __repr__(self) -> str:
        return f"<WindowSet {self.key!r} of {self.wrapper.name}>"

    def _table(self) -> TableCore:
        return self.wrapper.table

    def apply(self, op: Callable[[Any, Any], Any], value: Any, event: Event | None = None) -> Any:
        """Apply ``op(old, value)`` in every window of the current timestamp."""
        table = self._table()
        windowing = self.wrapper._windowing
        timestamp = self.wrapper.get_timestamp(event or self.event)
        partition = table._write_partition((self.key, 0))
        windowing.observe(partition, timestamp)
        for start, _ in windowing.window.ranges(timestamp):
            if windowing.is_closed(partition, start):
                windowing.late += 1
                logger.debug(
                    "%s: dropped a late update of %r for closed window %d",
                    table.name,
                    self.key,
                    start,
                )
                continue
            old = table._lookup(partition, (self.key, start))
            if old is MISSING or old is TOMBSTONE:
                if table.default is None:
                    raise KeyError(self.key)
                old = table.default()
            self._set(partition, start, op(old, value))
        self.wrapper.on_set_key(self.key, value)
        return self

    def _set(self, partition: int, start: int, value: Any) -> None:
        """Write ``value`` (``None``: delete) in the window starting at ``start``, and
        call the table's ``on_key_set``/``on_key_del`` with ``(key, (start, end))`` as
        Faust does for windowed writes (only when a subclass overrides them)."""
        table = self._table()
        table._put(partition, (self.key, start), value)
        if getattr(table, "_key_hooks", False):
            window_key = (self.key, (start, start + self.wrapper._windowing.span))
            if value is None:
                table.on_key_del(window_key)  # type: ignore[attr-defined]
            else:
                table.on_key_set(window_key, value)  # type: ignore[attr-defined]

    def delete(self) -> None:
        table = self._table()
        windowing = self.wrapper._windowing
        timestamp = self.wrapper.get_timestamp(self.event)
        partition = table._write_partition((self.key, 0))
        for start, _ in windowing.window.ranges(timestamp):
            self._set(partition, start, None)
        self.wrapper.on_del_key(self.key)

    # -- Faust's window_set[event] and window_set[(start, end)] --------------------------
    def _window_start(self, window: Any) -> int:
        span = self.wrapper._windowing.span
        if (
            isinstance(window, tuple)
            and len(window) == 2
            and all(isinstance(edge, int) and not isinstance(edge, bool) for edge in window)
            and window[1] - window[0] == span
        ):
            return int(window[0])
        raise KeyError(
            f"{window!r} is not a window of {self.wrapper.name}: use (start, end) in "
            f"integer ms with end - start = {span} (as wrapper.windows() lists them), "
            "or an Event"
        )

    def __getitem__(self, window: Any) -> Any:
        """``window_set[event]``: this key's windows relative to ``event``;
        ``window_set[(start, end)]`` (ms): the value in that window (or the table's
        default; ``KeyError`` without one)."""
        if isinstance(window, Event):
            return WindowSet(self.key, self.wrapper, window)
        raw = self._table()._read((self.key, self._window_start(window)))
        found = raw is not MISSING and raw is not TOMBSTONE
        return self._value_or_default(found, detached(raw) if found else None)

    def __setitem__(self, window: Any, value: Any) -> None:
        """``window_set[(start, end)] = value``: set the value of one window (in the
        partition a write goes to: the current event's, or the explicit one)."""
        if isinstance(window, Event):
            raise UnsupportedOperation(
                "window_set[event] = value", "write window_set[(start, end)] or use +=, ..."
            )
        start = self._window_start(window)
        self._set(self._table()._write_partition((self.key, 0)), start, value)
        self.wrapper.on_set_key(self.key, value)

    def __delitem__(self, window: Any) -> None:
        """``del window_set[(start, end)]``: delete this key's value in one window."""
        if isinstance(window, Event):
            raise UnsupportedOperation("del window_set[event]", "del window_set[(start, end)]")
        start = self._window_start(window)
        self._set(self._table()._write_partition((self.key, 0)), start, None)
        self.wrapper.on_del_key(self.key)

    def _pick(self, how: str, d: Any = None) -> tuple[bool, Any]:
        """``(found, value)`` in the window chosen by ``how``: ``"relative"`` (the
        wrapper's relativity), ``"now"``, ``"current"`` (the event's timestamp),
        ``"delta"`` (``d`` before the wrapper's timestamp)."""
        if how == "now":
            return self._get(None, timestamp=self.wrapper._windowing.now_ms())
        if how == "current":
            return self._get(None, timestamp=self._event_timestamp(self.event))
        return self._get(d if how == "delta" else None)

    def _event_timestamp(self, event: Event | None) -> int:
        """The timestamp of ``event`` (default: the current event), whatever the
        wrapper's relativity; with no event, that of ``wrapper.at(ts)``."""
        if event is None:
            event = current_event.get()
        if event is not None:
            return event.timestamp
        explicit = explicit_timestamp.get()
        if explicit is None:
            raise NoWindowTimestamp(self.wrapper.name)
        return explicit

    def _get(
        self, delta: Any, event: Event | None = None, timestamp: int | None = None
    ) -> tuple[bool, Any]:
        windowing = self.wrapper._windowing
        if timestamp is None:
            timestamp = self.wrapper.get_timestamp(event or self.event)
        if delta is None:
            start, _ = windowing.window.current(timestamp)
        else:
            start, _ = windowing.window.delta(timestamp, delta)
        raw = self._table()._read((self.key, start))
        if raw is MISSING or raw is TOMBSTONE:
            return False, None
        return True, detached(raw)

    def _value_or_default(self, found: bool, value: Any) -> Any:
        if found:
            return value
        default = self._table().default
        if default is None:
            raise KeyError(self.key)
        return default()

    def value(self, event: Event | None = None) -> Any:
        """The value in the newest window holding the current timestamp (or the
        table's default)."""
        return self._value_or_default(*self._get(None, event))

    def current(self, event: Event | None = None) -> Any:
        """The value in the newest window holding the *event's* timestamp (``event``,
        default this set's or the current event), whatever the wrapper's relativity
        (Faust's ``current()``; :meth:`value` follows the relativity)."""
        timestamp = self._event_timestamp(event or self.event)
        return self._value_or_default(*self._get(None, timestamp=timestamp))

    def now(self) -> Any:
        """The value in the newest window holding *wall-clock* now, always (also inside
        a stream, whatever the event's timestamp)."""
        return self._value_or_default(
            *self._get(None, timestamp=self.wrapper._windowing.now_ms())
        )

    def delta(self, d: Any, event: Event | None = None) -> Any:
        """The value in the newest window holding the timestamp minus ``d`` (seconds,
        ``timedelta`` or a string such as ``"30s"``)."""
        return self._value_or_default(*self._get(d, event))

    def __iadd__(self, other: Any) -> WindowSet:
        return self.apply(operator.add, other)  # type: ignore[no-any-return]

    def __isub__(self, other: Any) -> WindowSet:
        return self.apply(operator.sub, other)  # type: ignore[no-any-return]

    def __imul__(self, other: Any) -> WindowSet:
        return self.apply(operator.mul, other)  # type: ignore[no-any-return]

    def __itruediv__(self, other: Any) -> WindowSet:
        return self.apply(operator.truediv, other)  # type: ignore[no-any-return]

    def __ifloordiv__(self, other: Any) -> WindowSet:
        return self.apply(operator.floordiv, other)  # type: ignore[no-any-return]

    def __imod__(self, other: Any) -> WindowSet:
        return self.apply(operator.mod, other)  # type: ignore[no-any-return]

    def __ipow__(self, other: Any) -> WindowSet:
        return self.apply(operator.pow, other)  # type: ignore[no-any-return]

    def __ilshift__(self, other: Any) -> WindowSet:
        return self.apply(operator.lshift, other)  # type: ignore[no-any-return]

    def __irshift__(self, other: Any) -> WindowSet:
        return self.apply(operator.rshift, other)  # type: ignore[no-any-return]

    def __iand__(self, other: Any) -> WindowSet:
        return self.apply(operator.and_, other)  # type: ignore[no-any-return]

    def __ixor__(self, other: Any) -> WindowSet:
        return self.apply(operator.xor, other)  # type: ignore[no-any-return]

    def __ior__(self, other: Any) -> WindowSet:
        return self.apply(operator.or_, other)  # type: ignore[no-any-return]
