"""Faust's abstract table types as :class:`typing.Protocol` s, for type hints and
``isinstance`` checks (``runtime_checkable``: members are checked by name only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ._transport._base import TP

__all__ = ["CollectionT", "GlobalTableT", "TableManagerT", "TableT"]


@runtime_checkable
class CollectionT(Protocol):
    """What every table offers (see :class:`~trio_tables.Collection`)."""

    name: str
    partitions: int | None
    is_global: bool

    @property
    def changelog_topic(self) -> str: ...

    def partition_for_key(self, key: Any) -> int: ...

    def persisted_offset(self, tp: TP) -> int | None: ...

    def reset_state(self) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def send_changelog(self, partition: int, key: Any, value: Any) -> None: ...

    async def apply_changelog_batch(
        self, partition: int, records: Any, committed: Any = None
    ) -> int: ...


@runtime_checkable
class TableT(CollectionT, Protocol):
    """A partitioned table (see :class:`~trio_tables.Table`)."""

    def __getitem__(self, key: Any) -> Any: ...

    def __setitem__(self, key: Any, value: Any) -> None: ...

    def on_key_get(self, key: Any) -> None: ...

    def on_key_set(self, key: Any, value: Any) -> None: ...

    def on_key_del(self, key: Any) -> None: ...


@runtime_checkable
class GlobalTableT(TableT, Protocol):
    """A table every worker holds whole (see :class:`~trio_tables.GlobalTable`)."""


@runtime_checkable
class TableManagerT(Protocol):
    """See :class:`~trio_tables.TableManager`."""

    tables: Mapping[str, Any]

    def add(self, table: Any) -> Any: ...

    @property
    def changelog_topics(self) -> frozenset[str]: ...

    async def wait_until_tables_registered(self) -> None: ...

    async def wait_until_recovery_completed(self) -> None: ...

    async def on_commit(self, offsets: Mapping[TP, int]) -> None: ...
