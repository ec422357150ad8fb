"""Faust's table API around the data: joins, callbacks, hooks, display, cloning.

:class:`FaustPlumbing` is a mixin of :class:`~trio_tables.Collection` (it holds no state
of its own): what a Faust user calls on a table beyond reading and writing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._changelog import changelog_topic_name
from .._store._base import MISSING
from .._stream import Stream
from .._transport._base import TP
from ..errors import UnsupportedOperation
from ._callbacks import call_callback
from ._display import render_table
from ._host import TableHost
from ._joins import Joined, JoinKey, lookup_join
from ._options import clone_table
from ._values import TOMBSTONE
from ._values import detached as _detached

__all__ = ["FaustPlumbing"]


class FaustPlumbing:
    """Joins, callbacks, hooks, display and cloning (mixed into ``Collection``)."""

    # Provided by Collection.
    manager: TableHost
    name: str
    default: Callable[[], Any] | None
    key_type: type | None
    value_type: type | None
    schema: Any
    partitions: int | None
    store_url: str
    help: str
    window: Any
    recovery_buffer_size: int
    standby_buffer_size: int
    use_partitioner: bool
    options: dict[str, Any]
    _serializers: tuple[Any, Any]
    _changelog_topic_name: str
    _user_topic_configs: dict[str, str]
    is_global: bool
    standby_progress: dict[int, tuple[int, int]]
    _active: set[int]
    _on_window_close: Callable[..., Any] | None
    _recover_callbacks: list[Callable[..., Any]]
    _changelog_callbacks: list[Callable[..., Any]]
    if TYPE_CHECKING:

        def _read(self, key: Any) -> Any: ...

        def _partition_items(self, partition: int) -> Iterator[tuple[Any, Any]]: ...

    # -- display ---------------------------------------------------------------------------
    def as_ansitable(
        self,
        title: str = "{table.name}",
        *,
        limit: int = 100,
        color: bool | None = None,
        **_: Any,
    ) -> str:
        """This worker's content (active partitions, sorted by key when keys allow) as
        a terminal table, at most ``limit`` rows. ``title`` is formatted with
        ``table=self`` (Faust's default: ``"{table.name}"``). ``color``: ANSI colours;
        ``None`` means only when standard output is a terminal."""
        rows = [
            (key, value)
            for partition in sorted(self._active)
            for key, value in self._partition_items(partition)
        ]
        return render_table(rows, title=title.format(table=self), limit=limit, color=color)

    async def on_window_close(self, key: Any, value: Any) -> None:
        """Called when a window closes, with ``key`` = ``(key, (start, end))`` and the
        window's final ``value`` (windowed tables); calls the ``on_window_close=``
        callback given to the table (awaited when it is a coroutine function; a
        callback marked with ``asyncio_callback`` runs on the manager's trio-asyncio
        loop). Cancellation: propagates into the callback."""
        callback = self._on_window_close
        if callback is not None:
            await call_callback(callback, key, value)

    # -- joins and Faust's stream plumbing ---------------------------------------------------
    def _join_lookup(self, key: Any) -> tuple[bool, Any]:
        """``(found, value)`` of ``key`` for a join, in the event's partition."""
        raw = self._read(key)
        if raw is MISSING or raw is TOMBSTONE:
            return False, None
        return True, _detached(raw)

    def join(self, stream: Stream, on: JoinKey = None) -> AsyncIterator[Joined]:
        """Inner stream-table lookup join: iterate ``stream``, yielding
        :class:`Joined` ``(event, value)`` for events whose join key ``on`` (see
        :data:`JoinKey`) is in the table; other events are processed (skipped) silently.
        Cancellation: as iterating the stream."""
        return lookup_join(self._join_lookup, stream, on, keep_missing=False)

    def inner_join(self, stream: Stream, on: JoinKey = None) -> AsyncIterator[Joined]:
        """Same as :meth:`join`."""
        return self.join(stream, on)

    def left_join(self, stream: Stream, on: JoinKey = None) -> AsyncIterator[Joined]:
        """Left stream-table lookup join: every event of ``stream``, with the table's
        value for its join key or ``None`` when the key is missing."""
        return lookup_join(self._join_lookup, stream, on, keep_missing=True)

    def outer_join(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: an outer join would also emit on table changes. Raises
        :class:`~trio_tables.errors.UnsupportedOperation` naming :meth:`left_join`
        (every event) and :meth:`join` (matching events)."""
        raise UnsupportedOperation(
            "outer_join",
            "stream-table joins are lookups; use table.left_join(stream) for every "
            "event or table.join(stream) for the events whose key is in the table",
        )

    def combine(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported (Faust never implemented it either): raises
        :class:`~trio_tables.errors.UnsupportedOperation` naming the alternatives."""
        raise UnsupportedOperation(
            "combine",
            "run one task per stream in a nursery (they may share tables), or use "
            "table.join(stream) / table.left_join(stream)",
        )

    def contribute_to_stream(self, active: Any) -> None:
        """Faust's hook for stream-side joins (``stream.join(table)``), which do not
        exist here: raises :class:`~trio_tables.errors.UnsupportedOperation` naming the
        table-side join to use."""
        raise UnsupportedOperation(
            "contribute_to_stream",
            "join from the table instead: `async for joined in table.join(stream)` "
            "(or left_join); tables are fed by the manager, not by streams",
        )

    async def remove_from_stream(self, stream: Any) -> None:
        """Faust's hook to undo :meth:`contribute_to_stream`: raises
        :class:`~trio_tables.errors.UnsupportedOperation` (a table-side join ends when
        its ``async for`` loop does)."""
        raise UnsupportedOperation(
            "remove_from_stream",
            "a table.join(stream) / left_join(stream) ends when its `async for` loop "
            "is left; nothing is attached to the stream",
        )

    def info(self) -> dict[str, Any]:
        """The keyword arguments that re-create this table (Faust's ``info()``):
        ``changelog_topic`` is ``None`` unless a custom one was given, ``window`` is the
        window of a windowed table (its other options: see :meth:`clone`)."""
        derived = changelog_topic_name(self.manager.app_id, self.name)
        return {
            "name": self.name,
            "default": self.default,
            "key_type": self.key_type,
            "value_type": self.value_type,
            "key_serializer": self._serializers[0],
            "value_serializer": self._serializers[1],
            "schema": self.schema,
            "partitions": self.partitions,
            "store": self.store_url,
            "changelog_topic": (
                None if self._changelog_topic_name == derived else self._changelog_topic_name
            ),
            "help": self.help,
            "recover_callbacks": list(self._recover_callbacks),
            "on_changelog_event": (
                self._changelog_callbacks[0] if self._changelog_callbacks else None
            ),
            "on_window_close": self._on_window_close,
            "window": self.window,
            "recovery_buffer_size": self.recovery_buffer_size,
            "standby_buffer_size": self.standby_buffer_size,
            "extra_topic_configs": self._user_topic_configs,
            "use_partitioner": self.use_partitioner,
            "options": self.options,
            "is_global": self.is_global,
        }

    def clone(self, **kwargs: Any) -> Any:
        """A new, unregistered table of the same class and settings (serializers,
        callbacks, window and window options), with ``kwargs`` overriding them; register
        it with ``manager.add``. A clone with another ``name`` is a separate table with
        its own changelog ``{app_id}-{name}-changelog`` (unless ``changelog_topic=``)."""
        return clone_table(self, kwargs)  # type: ignore[arg-type]

    async def need_active_standby_for(self, tp: TP) -> bool:
        """Whether partition ``tp.partition`` needs a standby copy somewhere else for
        this worker to have its data (Faust: ``False`` when the data is accessible
        here): ``False`` for a partition active or kept warm here and for every
        partition of a global table, ``True`` otherwise. Cancellation: nothing to
        cancel (it answers at once)."""
        if self.is_global:
            return False
        return not (tp.partition in self._active or tp.partition in self.standby_progress)

    # -- callbacks --------------------------------------------------------------------------
    def on_recover(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``callback`` to run after each recovery (usable as a decorator)."""
        self._recover_callbacks.append(callback)
        return callback

    def on_changelog_event(self, event: Any) -> Any:
        """Two uses. With a callable: register ``callback(record)`` for every
        changelog record applied, and return it (usable as a decorator; same as
        ``on_changelog_event=``). With a changelog record (Faust's hook): a coroutine
        that calls every registered callback with it, as applying it does.
        Cancellation: propagates into the callback."""
        if callable(event):
            self._changelog_callbacks.append(event)
            return event
        return self._changelog_event(event)

    async def _changelog_event(self, record: Any) -> None:
        for callback in self._changelog_callbacks:
            await call_callback(callback, record)

    async def call_recover_callbacks(self) -> None:
        for callback in self._recover_callbacks:
            await call_callback(callback)

    async def on_recovery_completed(
        self, active: frozenset[int], standby: frozenset[int] = frozenset()
    ) -> None:
        await self.call_recover_callbacks()


    # -- async with table ----------------------------------------------------------------
    async def __aenter__(self) -> Any:
        """Wait until the table's nursery runs and its assigned partitions are
        recovered. Cancellation: safe, the table keeps running under the manager."""
        await self.manager.wait_until_table_ready(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """The table keeps running until the manager stops."""

    async def on_start(self) -> None:
        """Hook: called when the table's nursery has started."""

    async def on_rebalance(
        self,
        assigned: frozenset[TP],
        revoked: frozenset[TP],
        newly_assigned: frozenset[TP],
        generation_id: int = 0,
    ) -> None:
        """Hook: called by the manager on every rebalance."""
