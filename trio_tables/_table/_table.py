"""``Table``: a partitioned, changelog-backed ``MutableMapping``."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from .._store._base import MISSING
from ._collection import Collection
from ._values import IMMUTABLE_TYPES, TOMBSTONE
from ._values import detached as _detached
from ._windowed import WindowWrapper

__all__ = ["Table"]

_KEY_HOOKS = ("on_key_get", "on_key_set", "on_key_del")


class Table(Collection, MutableMapping[Any, Any]):
    """A dict whose changes are written to a compacted changelog topic.

    Reads and writes use the partition of the event being processed (or the one chosen
    with ``with table.partition(p)``, or the key's partition with
    ``use_partitioner=True``). A missing key with ``default`` set reads as ``default()``
    (stored on the first write, like ``defaultdict``). Setting ``None`` deletes the key.
    Values read are copies (or immutable): mutating them never changes the table; write
    the value back instead.

    ``table.tumbling(...)``, ``.hopping(...)``, ``.sliding(...)`` make it windowed and
    return its :class:`WindowWrapper`.
    """

    WindowWrapper = WindowWrapper

    # Whether the class overrides a per-key hook (on_key_get/set/del); if not, reads and
    # writes skip calling them. Hooks are overridden in a subclass (as in Faust).
    _key_hooks = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._key_hooks = any(getattr(cls, hook) is not getattr(Table, hook) for hook in _KEY_HOOKS)

    def __getitem__(self, key: Any) -> Any:
        value = self._read(key)
        if self._key_hooks:
            self.on_key_get(key)
        if value is MISSING or value is TOMBSTONE:
            if self.default is not None:
                return self.default()
            raise KeyError(key)
        return value if type(value) in IMMUTABLE_TYPES else _detached(value)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._write(key, value)
        if self._key_hooks:
            if value is None:
                self.on_key_del(key)
            else:
                self.on_key_set(key, value)

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        self._write(key, None)
        if self._key_hooks:
            self.on_key_del(key)

    def __contains__(self, key: object) -> bool:
        value = self._read(key)
        return value is not MISSING and value is not TOMBSTONE

    def _partitions_in_scope(self) -> list[int]:
        partition = self._context_partition(None) if not self.use_partitioner else None
        if partition is not None:
            return [partition]
        return sorted(self._active)

    def __iter__(self) -> Iterator[Any]:
        for partition in self._partitions_in_scope():
            for key, _ in self._partition_items(partition):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def items(self) -> Any:  # ItemsView semantics, values detached
        return [
            (key, _detached(value))
            for partition in self._partitions_in_scope()
            for key, value in self._partition_items(partition)
        ]

    def as_dict(self) -> dict[Any, Any]:
        """Every key and value of this worker's active partitions (a copy)."""
        return {
            key: _detached(value)
            for partition in sorted(self._active)
            for key, value in self._partition_items(partition)
        }

    # Faust's per-key hooks: called after each access; override them in a subclass to
    # observe (only overrides are called, see _key_hooks).
    def on_key_get(self, key: Any) -> None:
        pass

    def on_key_set(self, key: Any, value: Any) -> None:
        pass

    def on_key_del(self, key: Any) -> None:
        pass
