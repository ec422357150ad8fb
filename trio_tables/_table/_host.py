"""What a table asks of the worker that owns it (the :class:`~trio_tables.TableManager`).

Tables depend on this protocol, not on the manager's class: the table layer imports
nothing of the manager, the streams' machinery or a Kafka client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .._transport._base import Delivery, IsolationLevel

__all__ = ["TableHost"]


class TableHost(Protocol):
    """The manager, as its tables see it."""

    app_id: str
    store_url: str
    coalesce_changelog: bool

    @property
    def isolation_level(self) -> IsolationLevel: ...

    def add(self, table: Any) -> Any: ...

    async def send(
        self,
        topic: str,
        key: Any,
        value: Any,
        *,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] | None = None,
    ) -> Delivery: ...

    async def wait_until_table_ready(self, table: Any) -> None:
        """Wait until ``table`` runs and its assigned partitions are recovered."""
