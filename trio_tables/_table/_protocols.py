"""What the table's helper modules (type checks, options, windows) use of a table.

:class:`TableCore` is the part of :class:`~trio_tables.Collection` they may touch: the
helpers depend on this protocol, not on the class, so the table package has no import
circle. Members with a leading underscore are the table package's own: code outside
``_table/`` does not use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .._codecs import Codec
from ._host import TableHost

__all__ = ["TableCore"]


class TableCore(Protocol):
    """A table, as its helper modules see it."""

    name: str
    manager: TableHost
    default: Callable[[], Any] | None
    use_partitioner: bool
    window: Any
    key_codec: Codec
    value_codec: Codec
    # The windowing state (``_windowed.Windowing``) of a windowed table, else None.
    _windowing: Any
    _window_options: dict[str, Any]
    _active: set[int]
    _changelog_callbacks: list[Callable[..., Any]]

    @property
    def label(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def partition_for_key(self, key: Any) -> int: ...

    def partition(self, partition: int) -> AbstractContextManager[None]: ...

    def on_recover(self, callback: Callable[..., Any]) -> Callable[..., Any]: ...

    def as_ansitable(
        self,
        title: str = ...,
        *,
        limit: int = ...,
        color: bool | None = ...,
        **options: Any,
    ) -> str: ...

    def _read(self, key: Any) -> Any: ...

    def _lookup(self, partition: int, key: Any) -> Any: ...

    def _put(self, partition: int, key: Any, value: Any) -> None: ...

    def _write_partition(self, key: Any) -> int: ...

    def _context_partition(self, key: Any) -> int | None: ...

    def _partition_items(self, partition: int) -> Iterator[tuple[Any, Any]]: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class WrapperCore(Protocol):
    """A ``WindowWrapper``, as ``WindowSet`` and the windowed views see it."""

    table: TableCore

    @property
    def name(self) -> str: ...

    @property
    def _windowing(self) -> Any: ...

    def get_timestamp(self, event: Any = None) -> int: ...

    def _index_keys(self) -> Iterator[Any]: ...

    def on_set_key(self, key: Any, value: Any) -> None: ...

    def on_del_key(self, key: Any) -> None: ...
