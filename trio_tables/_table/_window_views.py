"""The views ``WindowWrapper.keys()``, ``.items()`` and ``.values()`` return (Faust's
``WindowedKeysView``, ``WindowedItemsView``, ``WindowedValuesView``): iterate them, or
pick the window with ``.now()`` (wall clock), ``.current(event=None)`` (the event's
timestamp) or ``.delta(d, event=None)`` (``d`` before the wrapper's timestamp)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._stream import Event
from ._protocols import WrapperCore
from ._window_set import WindowSet

__all__ = ["WindowedItemsView", "WindowedKeysView", "WindowedValuesView"]


class _WindowedView:
    __slots__ = ("_wrapper", "event")

    def __init__(self, wrapper: WrapperCore, event: Event | None = None) -> None:
        self._wrapper = wrapper
        self.event = event

    def _items_at(self, how: str, d: Any = None, event: Event | None = None) -> Iterator[Any]:
        """``(key, value)`` of every key with a value in the window chosen by ``how``
        (``"relative"``: the wrapper's relativity, ``"now"``, ``"current"``,
        ``"delta"``)."""
        wrapper = self._wrapper
        event = event or self.event
        for key in wrapper._index_keys():
            found, value = WindowSet(key, wrapper, event)._pick(how, d)
            if found:
                yield key, value


class WindowedItemsView(_WindowedView):
    """``(key, value)`` pairs of the keys' windows (see the module docstring)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """The window the wrapper's relativity picks (keys without one are left out)."""
        return self._items_at("relative")

    def now(self) -> Iterator[tuple[Any, Any]]:
        """In the window of wall-clock now."""
        return self._items_at("now")

    def current(self, event: Event | None = None) -> Iterator[tuple[Any, Any]]:
        """In the window of the event's timestamp (whatever the relativity)."""
        return self._items_at("current", event=event)

    def delta(self, d: Any, event: Event | None = None) -> Iterator[tuple[Any, Any]]:
        """In the window ``d`` (seconds, timedelta, "30s") before the timestamp."""
        return self._items_at("delta", d, event)


class WindowedValuesView(_WindowedView):
    """The values of the keys' windows (see the module docstring)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self._items_at("relative"))

    def now(self) -> Iterator[Any]:
        return (value for _, value in self._items_at("now"))

    def current(self, event: Event | None = None) -> Iterator[Any]:
        return (value for _, value in self._items_at("current", event=event))

    def delta(self, d: Any, event: Event | None = None) -> Iterator[Any]:
        return (value for _, value in self._items_at("delta", d, event))


class WindowedKeysView(_WindowedView):
    """Iterating gives every key with at least one window (in the active partitions,
    or the current event's partition while processing one); ``now()``, ``current()``
    and ``delta()`` give the keys with a value in that window."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self._wrapper._index_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self._wrapper._index_keys())

    def __contains__(self, key: object) -> bool:
        return any(k == key for k in self._wrapper._index_keys())

    def now(self) -> Iterator[Any]:
        return (key for key, _ in self._items_at("now"))

    def current(self, event: Event | None = None) -> Iterator[Any]:
        return (key for key, _ in self._items_at("current", event=event))

    def delta(self, d: Any, event: Event | None = None) -> Iterator[Any]:
        return (key for key, _ in self._items_at("delta", d, event))
