"""``memory://``: a store in this process's memory.

Threads: the Trio thread only (tables call a non-persistent store inline, never from a
worker thread), so its dicts need no lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._base import MISSING

__all__ = ["MemoryStore"]


class MemoryStore:
    """Dicts per partition. Nothing survives the process, so recovery always replays the
    whole changelog."""

    persistent = False

    def __init__(self) -> None:
        self._data: dict[int, dict[Any, Any]] = {}
        self._offsets: dict[int, int] = {}
        self._sources: dict[int, dict[str, int]] = {}
        self._meta: dict[int, dict[str, int]] = {}

    def get(self, partition: int, key: Any) -> Any:
        return self._data.get(partition, {}).get(key, MISSING)

    def items(self, partition: int) -> Iterator[tuple[Any, Any]]:
        return iter(list(self._data.get(partition, {}).items()))

    def count(self, partition: int) -> int:
        return len(self._data.get(partition, {}))

    def partitions(self) -> frozenset[int]:
        return frozenset(self._data) | frozenset(self._offsets)

    def write_batch(
        self,
        partition: int,
        changes: Mapping[Any, Any],
        offset: int | None,
        *,
        source_offsets: Mapping[str, int] | None = None,
        meta: Mapping[str, int] | None = None,
    ) -> None:
        data = self._data.setdefault(partition, {})
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        if offset is not None:
            self._offsets[partition] = offset
        if source_offsets is not None:
            self._sources[partition] = dict(source_offsets)
        if meta is not None:
            self._meta.setdefault(partition, {}).update(meta)

    def persisted_meta(self, partition: int) -> dict[str, int]:
        return dict(self._meta.get(partition, {}))

    def persisted_source_offsets(self, partition: int) -> dict[str, int]:
        return dict(self._sources.get(partition, {}))

    def persisted_offset(self, partition: int) -> int | None:
        return self._offsets.get(partition)

    def reset_partition(self, partition: int) -> None:
        self._data.pop(partition, None)
        self._offsets.pop(partition, None)
        self._sources.pop(partition, None)
        self._meta.pop(partition, None)

    def close(self) -> None:
        self._data.clear()
        self._offsets.clear()
        self._sources.clear()
        self._meta.clear()
