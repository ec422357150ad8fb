"""``GlobalTable``: every partition on every worker, kept current by tailing."""

from __future__ import annotations

from typing import Any

from ._table import Table

__all__ = ["GlobalTable"]


class GlobalTable(Table):
    """A table that every worker holds whole.

    The table's changelog consumer task tails every partition of the changelog with a
    group-less consumer, from the store's saved offset, for as long as the manager runs:
    a write on any worker (or by another app writing the changelog) reaches every worker
    within a poll. It takes no part in rebalances and has no recovery step: ``async
    with`` (and :meth:`TableManager.wait_until_recovered`) waits until the end offsets
    seen at start are read.

    Writes go to the key's partition (Kafka's default partitioner) unless ``with
    table.partition(p)`` says otherwise, and need no current event. A worker reads its own
    writes at once; other workers see them after the next commit of the writer (every
    ``commit_interval``). Concurrent writes of one key by several workers: the last
    one in the changelog wins everywhere.

    Guarantee: the changelog order is the truth, and every worker converges to it. Under
    ``at_least_once`` an event processed again after a crash writes again (an increment
    may count twice); keep global tables for reference data and idempotent writes.

    The changelog's partition count is ``partitions=`` if given, else that of an
    existing changelog topic, else the app's source topics' count, else 1.
    """

    is_global = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("use_partitioner", True)
        super().__init__(*args, **kwargs)

    def _write_partition(self, key: Any) -> int:
        partition = self._context_partition(key)
        if partition is None:  # no explicit partition and use_partitioner=False
            partition = self.partition_for_key(key)
        return partition

    def _context_partition(self, key: Any) -> int | None:
        # Reads look in every partition (another app may partition the changelog its
        # own way); only ``with table.partition(p)`` narrows them.
        return self._explicit_partition.get()

    # Rebalances of the source topics do not concern a global table.
    def activate(self, partitions: frozenset[int]) -> None:
        pass

    def deactivate(self, partitions: frozenset[int]) -> None:
        pass

    def discard_uncommitted(self, partitions: set[int] | frozenset[int]) -> None:
        pass

    def take_changes(self, busy: frozenset[int] = frozenset()) -> Any:
        # Partitions of a global table are key partitions, not source partitions: an
        # event still in process elsewhere does not hold its changes back.
        return super().take_changes(frozenset())

    def persist_plan(self, last_offsets: Any, source_offsets: Any) -> Any:
        # The data is written now (read-your-writes after the cycle); the saved offset
        # advances only with the tailer, which applies the changelog in order.
        return super().persist_plan({}, {})

    def open_all_partitions(self, count: int) -> None:
        """Called by the manager once the changelog's partition count is known."""
        self.partitions = count
        self._active = set(range(count))
