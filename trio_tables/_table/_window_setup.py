"""Making a table windowed, and closing its windows: :class:`WindowSetup`.

A mixin of :class:`~trio_tables.Collection` (it holds no state of its own): the
``tumbling``/``hopping``/``sliding``/``using_window`` calls that turn a fresh table into
a windowed one (windowed key codec, a store re-opened with it, changelog retention), and
the closing of expired windows that each commit cycle runs first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._codecs import Codec
from .._store import Store
from .._store._base import MISSING
from .._windows import (
    Duration,
    HoppingWindow,
    SlidingWindow,
    TumblingWindow,
    Window,
    to_ms,
)
from ._callbacks import call_callback
from ._host import TableHost
from ._values import TOMBSTONE
from ._windowed import STREAM_TIME, Expiry, WindowedKeyCodec, Windowing, WindowWrapper

__all__ = ["WindowSetup"]

# Extra changelog retention of windowed tables past a window's expiry (as Kafka
# Streams' windowstore.changelog.additional.retention.ms).
_RETENTION_MARGIN = 24 * 3600 * 1000


class WindowSetup:
    """Window setup and expiry of a table (mixed into ``Collection``)."""

    # Provided by Collection.
    manager: TableHost
    name: str
    is_global: bool
    window: Any
    store_url: str
    data: Store
    key_codec: Codec
    value_codec: Codec
    extra_topic_configs: dict[str, str]
    last_closed_window: float
    _windowing: Windowing | None
    _window_options: dict[str, Any]
    _user_topic_configs: dict[str, str]
    _changelog_created: bool
    _active: set[int]
    if TYPE_CHECKING:

        @property
        def label(self) -> str: ...

        def _lookup(self, partition: int, key: Any) -> Any: ...

        def _put(self, partition: int, key: Any, value: Any) -> None: ...

        def _partition_items(self, partition: int) -> Iterator[tuple[Any, Any]]: ...

        async def on_window_close(self, key: Any, value: Any) -> None: ...

        def reopen_store(self) -> None: ...

    # -- windows ------------------------------------------------------------------------------
    def tumbling(
        self,
        size: Duration,
        expires: Duration | None = None,
        *,
        key_index: bool = False,
        **options: Any,
    ) -> WindowWrapper:
        """Make this table windowed by back-to-back windows of ``size`` (see
        :meth:`using_window` for ``expires`` and the options)."""
        return self.using_window(
            TumblingWindow(size, expires=expires), key_index=key_index, **options
        )

    def hopping(
        self,
        size: Duration,
        step: Duration,
        expires: Duration | None = None,
        *,
        key_index: bool = False,
        **options: Any,
    ) -> WindowWrapper:
        """Make this table windowed by windows of ``size`` starting every ``step``."""
        return self.using_window(
            HoppingWindow(size, step, expires=expires), key_index=key_index, **options
        )

    def sliding(
        self,
        before: Duration,
        after: Duration,
        expires: Duration | None = None,
        *,
        key_index: bool = False,
        **options: Any,
    ) -> WindowWrapper:
        """Make this table windowed by one window ``[t - before, t + after]`` per
        timestamp ``t``."""
        return self.using_window(
            SlidingWindow(before, after, expires=expires), key_index=key_index, **options
        )

    def using_window(
        self,
        window: Window,
        *,
        key_index: bool = False,
        grace: Duration = 0,
        expiry: Expiry = "stream_time",
        clock: Callable[[], float] = time.time,
        final_results_topic: str | None = None,
    ) -> WindowWrapper:
        """Make this table windowed by ``window`` and return its :class:`WindowWrapper`.
        Call it right after creating the table (before the manager starts it).

        - ``window.expires``: how long a window is kept after it ends, measured on the
          partition's stream time (newest timestamp seen) minus ``grace``, or on
          ``clock()`` with ``expiry="wall_clock"``. Then the window *closes*: it is
          removed from the store, tombstoned in the changelog, passed to
          ``on_window_close((key, (start, end)), value)`` and, with
          ``final_results_topic``, sent there (key: the key; value:
          ``{"start", "end", "value"}``). Updates arriving for a closed window are
          dropped (counted in ``late_updates``). ``expires=None``: windows never close.
        - ``key_index``: Faust's option; ``keys()``/``items()``/``values()`` work
          either way, and ``key_index_table`` is offered when it is set.
        - The changelog gets ``cleanup.policy=compact,delete`` and ``retention.ms`` of
          window span + expires + grace + one day, unless ``extra_topic_configs`` says
          otherwise (a custom ``changelog_topic`` is kept).
        """
        if self.is_global:
            raise TypeError(f"{self.label}: global tables cannot be windowed")
        if self._changelog_created or self._active:
            raise RuntimeError(
                f"{self.label} is running already: make a table windowed right after "
                "creating it, before the manager starts it"
            )
        if self._windowing is not None:
            if not self._window_options.get("from_constructor"):
                raise RuntimeError(f"{self.label} is windowed already")
            # window= gave the window; this call gives the wrapper (and options).
            self.key_codec = self._windowing.inner_key_codec
            self.extra_topic_configs = dict(self._user_topic_configs)
        self.window = window
        self._window_options = {
            "key_index": key_index,
            "grace": grace,
            "expiry": expiry,
            "clock": clock,
            "final_results_topic": final_results_topic,
        }
        self._windowing = Windowing(
            window,
            inner_key_codec=self.key_codec,
            grace=to_ms(grace),
            expiry=expiry,
            clock=clock,
            final_results_topic=final_results_topic,
        )
        self.key_codec = WindowedKeyCodec(self.key_codec)
        self.reopen_store()  # with the windowed key codec
        if window.expires is not None:
            retention = window.span + window.expires + self._windowing.grace + _RETENTION_MARGIN
            self.extra_topic_configs = {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(retention),
                **self.extra_topic_configs,
            }
        return WindowWrapper(self, key_index=key_index)  # type: ignore[arg-type]

    @property
    def late_updates(self) -> int:
        """Updates of a windowed table dropped because their window had closed."""
        return 0 if self._windowing is None else self._windowing.late

    async def close_expired_windows(self, partitions: frozenset[int] | set[int]) -> int:
        """Close the windows of ``partitions`` (active ones) whose time has come (see
        :meth:`using_window`); the number closed. Called by the manager at the start of
        each commit cycle, so closings are committed with the changes before them.
        Cancellation: windows whose callbacks did not run yet stay closed in the table
        (their tombstones are queued); a crash before the commit opens them again, so
        callbacks run at least once, and exactly once when the worker stops cleanly."""
        windowing = self._windowing
        if windowing is None:
            return 0
        closed: list[tuple[int, Any, int, Any]] = []
        for partition in sorted(set(partitions) & self._active):
            for start, keys in windowing.due(partition):
                for key in keys:
                    value = self._lookup(partition, (key, start))
                    self._put(partition, (key, start), None)
                    if value is not MISSING and value is not TOMBSTONE:
                        closed.append((partition, key, start, value))
        span = windowing.span
        for partition, key, start, value in closed:
            windowing.closed += 1
            # Informational only (Faust's name, in seconds): expiry never reads it.
            self.last_closed_window = max(self.last_closed_window, (start + span) / 1000)
            await call_callback(self.on_window_close, (key, (start, start + span)), value)
            if windowing.final_results_topic is not None:
                await self.manager.send(
                    windowing.final_results_topic,
                    key,
                    {"start": start, "end": start + span, "value": value},
                    partition=partition,
                )
        return len(closed)


    def _window_meta(self, partition: int) -> dict[str, int] | None:
        if self._windowing is None:
            return None
        stream_time = self._windowing.stream_time.get(partition)
        return None if stream_time is None else {STREAM_TIME: stream_time}

