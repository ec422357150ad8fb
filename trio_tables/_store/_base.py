"""The store contract: what a table keeps locally, per partition.

A store holds, for each partition, the table's data and the offset of the last changelog
record applied to it. Both change together in :meth:`Store.write_batch`, in one
transaction, so after a crash a store is never ahead of (or behind) the offset it
claims. Stores are synchronous: a persistent store's calls may block on disk and are
made from a worker thread by the table's committer.

Threads: a *persistent* store is called from the Trio thread (reads) and from worker
threads (writes, restores, resets) at the same time, and must be safe for that (see
:mod:`._sqlite`); a non-persistent one is called from the Trio thread only.

Keys and values are Python objects; a persistent store encodes them with the table's
codecs. ``None`` is never stored as a value: writing ``None`` deletes the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

__all__ = ["MISSING", "Store"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Returned by :meth:`Store.get` for an absent key (``None`` is not a value)."""


class Store(Protocol):
    persistent: bool
    """Whether the data survives a restart of the process."""

    def get(self, partition: int, key: Any) -> Any:
        """The value of ``key`` in ``partition`` or :data:`MISSING`. Falsy values (0, "",
        []) are values like any other."""
        ...

    def items(self, partition: int) -> Iterator[tuple[Any, Any]]: ...

    def count(self, partition: int) -> int: ...

    def partitions(self) -> frozenset[int]:
        """Partitions that hold data or a persisted offset."""
        ...

    def write_batch(
        self,
        partition: int,
        changes: Mapping[Any, Any],
        offset: int | None,
        *,
        source_offsets: Mapping[str, int] | None = None,
        meta: Mapping[str, int] | None = None,
    ) -> None:
        """Apply ``changes`` (``None`` deletes) and record ``offset`` as the last applied
        changelog offset, atomically. ``offset=None`` keeps the recorded offset.

        ``source_offsets`` (source topic -> offset, for this partition number) records
        the source offsets that this data is consistent with: the ones about to be
        committed. On restart, a group commit below them means the worker died between
        persisting and committing, so the store is ahead of the changelog's committed
        state and is rebuilt. ``None`` keeps what was recorded.

        ``meta`` updates named integers kept with the partition's data (a windowed
        table's stream time), in the same transaction.
        """
        ...

    def persisted_meta(self, partition: int) -> dict[str, int]:
        """Every ``meta`` value recorded for ``partition``."""
        ...

    def persisted_source_offsets(self, partition: int) -> dict[str, int]:
        """The ``source_offsets`` recorded with the last write of ``partition``."""
        ...

    def persisted_offset(self, partition: int) -> int | None:
        """The last changelog offset applied to ``partition`` (``None``: nothing yet)."""
        ...

    def reset_partition(self, partition: int) -> None:
        """Forget ``partition``'s data and offset (it is rebuilt from the changelog)."""
        ...

    def close(self) -> None:
        """Release files and threads. Uncommitted writes do not exist: every
        :meth:`write_batch` was committed when it returned."""
        ...
