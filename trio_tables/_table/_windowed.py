"""Windowed tables: :class:`WindowWrapper` (a view of a table whose keys are windows)
and :class:`WindowSet` (the windows of one key).

A windowed table is a :class:`~trio_tables.Table` whose stored key is
``(key, window start in ms)``; its changelog record key is the key's own encoding
followed by the start as 8 big-endian bytes (as Kafka Streams does), so each window of a
key is compacted on its own and decodes without ambiguity.

Expiry runs on **stream time per partition**: the newest timestamp a partition has used
with this table, minus ``grace``. At each commit cycle, windows of a partition that end
``expires`` or more before that are *closed*: removed from the store, tombstoned in the
changelog, and handed to ``on_window_close((key, (start, end)), value)`` and, if
configured, to the final-results topic. Partitions never share a clock: one busy
partition does not close another's windows. The stream time travels with the data
(store meta and a header on every changelog record), so a restarted or new owner knows
which windows were closed already and drops late events for them instead of opening
them again; together with the tombstones this makes each window close once.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from .._codecs import Codec, CodecError, trivially_encodable
from .._stream import Event, current_event
from .._windows import Window, WindowRange
from ..errors import NoWindowTimestamp
from ._protocols import TableCore
from ._window_set import WindowSet, explicit_timestamp
from ._window_views import WindowedItemsView, WindowedKeysView, WindowedValuesView

__all__ = ["Expiry", "WindowSet", "WindowWrapper", "WindowedKeyCodec", "Windowing"]

logger = logging.getLogger("trio_tables.windows")

Expiry = Literal["stream_time", "wall_clock"]
STREAM_TIME = "stream_time"  # name of the stream time in a store's meta
_START = struct.Struct(">q")


class WindowedKeyCodec:
    """Codec of a windowed table's stored keys ``(key, start)``."""

    __slots__ = ("inner", "plain")

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        # Inner keys of these exact types need no check (see _checks.check_key).
        self.plain = trivially_encodable(inner) - {float}

    def encode(self, value: Any) -> bytes:
        if not (isinstance(value, tuple) and len(value) == 2 and type(value[1]) is int):
            raise TypeError(
                f"a windowed table stores (key, window start ms) pairs, not {value!r}; "
                "use the table through its WindowWrapper (table.tumbling(...)[key])"
            )
        return self.inner.encode(value[0]) + _START.pack(value[1])

    def decode(self, data: bytes) -> Any:
        if len(data) < _START.size:
            raise CodecError(f"not a windowed key (shorter than 8 bytes): {data!r}")
        return (self.inner.decode(data[: -_START.size]), _START.unpack(data[-_START.size :])[0])


def _timestamp_ms(value: Any) -> int:
    """ms of a timestamp given as a ``datetime`` or as seconds (Faust's convention)."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(value * 1000)
    raise TypeError(f"a window timestamp must be a datetime or seconds, not {value!r}")


class Windowing:
    """The window state of one table: the window kind, each partition's stream time,
    and an index of the windows each partition holds (start -> keys), used for expiry
    and for ``keys()``. Rebuilt from the store whenever a partition becomes active."""

    def __init__(
        self,
        window: Window,
        *,
        inner_key_codec: Codec,
        grace: int,
        expiry: Expiry,
        clock: Callable[[], float],
        final_results_topic: str | None,
    ) -> None:
        if expiry not in ("stream_time", "wall_clock"):
            raise ValueError(f"expiry must be 'stream_time' or 'wall_clock', not {expiry!r}")
        self.window = window
        self.span = window.span
        self.inner_key_codec = inner_key_codec
        self.grace = grace
        self.expiry: Expiry = expiry
        self.clock = clock
        self.final_results_topic = final_results_topic
        self.index: dict[int, dict[int, set[Any]]] = {}
        self.stream_time: dict[int, int] = {}
        self.closed = 0  # windows closed by this process
        self.late = 0  # updates dropped because their window was closed already

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def observe(self, partition: int, timestamp: int) -> None:
        current = self.stream_time.get(partition)
        if current is None or timestamp > current:
            self.stream_time[partition] = timestamp

    def restore_stream_time(self, partition: int, timestamp: int | None) -> None:
        if timestamp is not None:
            self.observe(partition, timestamp)

    def closing_time(self, partition: int) -> int | None:
        """Windows ending ``expires`` ms or more before this are closed (``None``:
        nothing closes: no ``expires``, or no time seen yet)."""
        if self.window.expires is None:
            return None
        if self.expiry == "wall_clock":
            now: int | None = self.now_ms()
        else:
            now = self.stream_time.get(partition)
        return None if now is None else now - self.grace

    def is_closed(self, partition: int, start: int) -> bool:
        closing = self.closing_time(partition)
        expires = self.window.expires
        if closing is None or expires is None:
            return False
        return start + self.span + expires <= closing

    def track(self, partition: int, key: Any, deleted: bool) -> None:
        user_key, start = key
        starts = self.index.setdefault(partition, {})
        if deleted:
            keys = starts.get(start)
            if keys is not None:
                keys.discard(user_key)
                if not keys:
                    del starts[start]
        else:
            starts.setdefault(start, set()).add(user_key)

    def rebuild(self, partition: int, keys: Iterator[Any]) -> None:
        starts: dict[int, set[Any]] = {}
        for user_key, start in keys:
            starts.setdefault(start, set()).add(user_key)
        self.index[partition] = starts

    def forget(self, partition: int) -> None:
        self.index.pop(partition, None)
        self.stream_time.pop(partition, None)

    def due(self, partition: int) -> list[tuple[int, list[Any]]]:
        """The windows of ``partition`` to close now, oldest first: (start, keys)."""
        starts = self.index.get(partition)
        if not starts:
            return []
        due = []
        for start in sorted(starts):
            if not self.is_closed(partition, start):
                break
            due.append((start, list(starts[start])))
        return due

    def keys(self, partitions: Iterator[int]) -> Iterator[Any]:
        seen: set[Any] = set()
        for partition in partitions:
            for keys in self.index.get(partition, {}).values():
                for key in keys:
                    if key not in seen:
                        seen.add(key)
                        yield key


_RELATIVE_TO_NOW: Any = object()
_RELATIVE_TO_STREAM: Any = object()  # clone(relative_to=None) keeps the relativity


def _relative_handler(relative_to: Any) -> Any:
    """What a wrapper stores for Faust's ``relative_to`` argument: ``None`` (the
    event's timestamp), the now marker, or a function of the event giving a
    ``datetime`` or seconds. A ``datetime`` or a number of seconds is a fixed time."""
    if relative_to is None or relative_to is _RELATIVE_TO_STREAM:
        return None
    if relative_to is _RELATIVE_TO_NOW:
        return relative_to
    if isinstance(relative_to, datetime):
        fixed: float = relative_to.timestamp()
        return lambda event: fixed
    if isinstance(relative_to, (int, float)) and not isinstance(relative_to, bool):
        seconds = float(relative_to)
        return lambda event: seconds
    if callable(relative_to):
        return relative_to
    raise TypeError(
        f"relative_to needs a function of the event, a datetime or seconds since the "
        f"epoch, not {relative_to!r} (a field: relative_to_field(...))"
    )


class WindowWrapper:
    """A windowed view of a table (Faust's ``WindowWrapper``), returned by
    ``table.tumbling(...)``, ``.hopping(...)``, ``.sliding(...)`` and
    ``.using_window(...)``.

    ``wrapper[key]`` is the :class:`WindowSet` of ``key``; ``wrapper[key] += 1`` adds 1
    in every window that the current timestamp falls into. Which timestamp is current
    is the wrapper's *relativity*: the current event's timestamp (default,
    :meth:`relative_to_stream`), wall-clock time (:meth:`relative_to_now`), a field of
    the event's value (:meth:`relative_to_field`) or any function of the event
    (:meth:`relative_to`); ``with wrapper.at(timestamp_ms):`` sets it explicitly.
    The ``relative_to_*`` methods return a new wrapper over the same table.
    """

    def __init__(
        self,
        table: TableCore,
        *,
        relative_to: Any = None,
        key_index: bool = False,
    ) -> None:
        if table._windowing is None:
            raise TypeError(f"{table.label} is not windowed: use table.tumbling(...) etc.")
        self.table = table
        self.key_index = key_index
        self._relative_to = _relative_handler(relative_to)

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def window(self) -> Window:
        return self._windowing.window

    @property
    def _windowing(self) -> Windowing:
        windowing: Windowing | None = self.table._windowing
        assert windowing is not None
        return windowing

    def __repr__(self) -> str:
        return f"<WindowWrapper: {self.table.label} {self.window!r}>"

    # -- relativity ---------------------------------------------------------------------
    @property
    def get_relative_timestamp(self) -> Callable[[Event | None], Any] | None:
        """The function that picks the timestamp of an event (``None``: the event's
        own timestamp)."""
        if self._relative_to is _RELATIVE_TO_NOW:
            return lambda event: self._windowing.clock()
        relative_to: Callable[[Event | None], Any] | None = self._relative_to
        return relative_to

    def get_timestamp(self, event: Event | None = None) -> int:
        """The timestamp (ms) this wrapper windows by, for ``event`` (default: the
        current event). Raises :class:`~trio_tables.errors.NoWindowTimestamp` when
        there is none."""
        explicit = explicit_timestamp.get()
        if explicit is not None:
            return explicit
        if self._relative_to is _RELATIVE_TO_NOW:
            return self._windowing.now_ms()
        if event is None:
            event = current_event.get()
        if self._relative_to is None:
            if event is None:
                raise NoWindowTimestamp(self.name)
            return event.timestamp
        return _timestamp_ms(self._relative_to(event))

    def clone(self, relative_to: Any = None) -> WindowWrapper:
        """A wrapper over the same table with another relativity (as
        :meth:`relative_to`); ``None`` keeps this wrapper's."""
        wrapper = WindowWrapper(self.table, key_index=self.key_index)
        wrapper._relative_to = (
            self._relative_to if relative_to is None else _relative_handler(relative_to)
        )
        return wrapper

    def relative_to(self, ts: Any) -> WindowWrapper:
        """Window by ``ts``: a function of the event giving a ``datetime`` or seconds
        since the epoch, or a fixed time (a ``datetime`` or seconds)."""
        return self.clone(relative_to=ts)

    def relative_to_now(self) -> WindowWrapper:
        """Window by wall-clock time."""
        return self.clone(relative_to=_RELATIVE_TO_NOW)

    def relative_to_stream(self) -> WindowWrapper:
        """Window by the current event's timestamp (the default)."""
        return self.clone(relative_to=_RELATIVE_TO_STREAM)

    def relative_to_field(self, field: Any) -> WindowWrapper:
        """Window by a field of the event's value (an attribute or mapping key named
        ``field``, or a Faust-style descriptor with a ``field`` attribute) holding a
        ``datetime`` or seconds since the epoch."""
        name = field if isinstance(field, str) else getattr(field, "field", None)
        if not isinstance(name, str):
            raise TypeError(f"relative_to_field needs a field name, not {field!r}")

        def from_field(event: Event | None) -> Any:
            if event is None:
                raise NoWindowTimestamp(self.name)
            value = event.value
            if isinstance(value, dict):
                return value[name]
            return getattr(value, name)

        return self.clone(relative_to=from_field)

    @contextmanager
    def at(self, timestamp: int) -> Iterator[None]:
        """Use ``timestamp`` (ms) as the current timestamp in this block (for reads and
        writes outside a stream; combine with ``table.partition(p)`` for writes)."""
        token = explicit_timestamp.set(int(timestamp))
        try:
            yield
        finally:
            explicit_timestamp.reset(token)

    def partition(self, partition: int) -> contextlib.AbstractContextManager[None]:
        """Same as ``table.partition(partition)``."""
        return self.table.partition(partition)

    def partition_for_key(self, key: Any) -> int:
        """The partition Kafka's default partitioner picks for ``key``."""
        return self.table.partition_for_key((key, 0))

    # -- mapping -------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(key, self, current_event.get())

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):
            return  # `wrapper[key] += 1` already applied the operator
        WindowSet(key, self, current_event.get()).apply(lambda _old, new: new, value)

    def __delitem__(self, key: Any) -> None:
        """Delete ``key`` from every window the current timestamp falls into."""
        WindowSet(key, self, current_event.get()).delete()

    def _partitions(self) -> list[int]:
        partition = self.table._context_partition(None) if not self.table.use_partitioner else None
        return [partition] if partition is not None else sorted(self.table._active)

    def _index_keys(self) -> Iterator[Any]:
        return self._windowing.keys(iter(self._partitions()))

    def keys(self) -> WindowedKeysView:
        """Keys with at least one window in the active partitions (in scope: the
        current event's partition while processing an event); the view's ``now()``,
        ``current()``, ``delta()`` give the keys with a value in that window."""
        return WindowedKeysView(self)

    def __iter__(self) -> Iterator[Any]:
        return self._index_keys()

    def __contains__(self, key: object) -> bool:
        """Whether the window of the wrapper's timestamp (its relativity, as
        ``wrapper[key].value()``) holds a value for ``key`` (Faust's semantics)."""
        return WindowSet(key, self, current_event.get())._pick("relative")[0]

    def __len__(self) -> int:
        return sum(1 for _ in self._index_keys())

    def items(self, event: Event | None = None) -> WindowedItemsView:
        """``(key, value)`` of each key's window by the wrapper's relativity (relative
        to ``event``, default the current one); keys without one are left out. The
        view's ``now()``, ``current()``, ``delta(d)`` pick another window."""
        return WindowedItemsView(self, event or current_event.get())

    def values(self, event: Event | None = None) -> WindowedValuesView:
        """The values of :meth:`items` (a view with ``now``/``current``/``delta``)."""
        return WindowedValuesView(self, event or current_event.get())

    def windows(self) -> dict[tuple[Any, WindowRange], Any]:
        """Every window of the active partitions: ``{(key, (start, end)): value}``."""
        span = self._windowing.span
        return {
            (key, (start, start + span)): value
            for partition in sorted(self.table._active)
            for (key, start), value in self.table._partition_items(partition)
        }

    @property
    def key_index_table(self) -> dict[Any, bool] | None:
        """With ``key_index=True``: the keys that have windows (a snapshot), else
        ``None``. The index is rebuilt from the windows on recovery, so it needs no
        changelog of its own."""
        if not self.key_index:
            return None
        return dict.fromkeys(self.keys(), True)

    def as_ansitable(self, title: str = "{table.name}", **kwargs: Any) -> str:
        """Every window of the active partitions as a terminal table (see
        :meth:`Table.as_ansitable`; ``title`` is formatted with ``table=`` the table)."""
        return self.table.as_ansitable(title, **kwargs)

    def on_recover(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        return self.table.on_recover(callback)

    def on_set_key(self, key: Any, value: Any) -> None:
        """Hook: ``key`` was updated in its windows (the index is kept by the table)."""

    def on_del_key(self, key: Any) -> None:
        """Hook: ``key`` was deleted from its windows."""

    async def __aenter__(self) -> WindowWrapper:
        await self.table.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.table.__aexit__(*exc_info)
