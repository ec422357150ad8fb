"""``SetTable`` (and ``GlobalSetTable``): tables whose values are sets.

Every change writes the key's *whole* set to the changelog (as a JSON list; an empty set
deletes the key), so the latest record of a key restores it: the changelog stays
compactable, and recovery is last-write-wins like any table. Faust's SetTable sent
operations instead, which a compacted changelog cannot replay (its data-loss bug).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from .._codecs import Codec
from ._global import GlobalTable
from ._table import Table

__all__ = ["GlobalSetTable", "SetCodec", "SetTable", "SetValue"]


@attrs.frozen
class SetCodec:
    """Encodes a set as a list with ``members`` (sorted when the members allow it, so
    equal sets give equal records) and decodes it as a ``frozenset``."""

    members: Codec

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, (set, frozenset)):
            raise TypeError(f"a SetTable value must be a set, got {type(value).__qualname__}")
        items = list(value)
        with contextlib.suppress(TypeError):  # unorderable: any order gives the same set
            items.sort()
        return self.members.encode(items)

    def decode(self, data: bytes) -> frozenset[Any]:
        decoded = self.members.decode(data)
        return frozenset(_hashable(item) for item in decoded)


def _hashable(item: Any) -> Any:
    return tuple(_hashable(i) for i in item) if isinstance(item, list) else item


class SetValue:
    """The set of one key, as ``table[key]`` returns it: read it like a set; its
    mutating methods write the new set to the table (and so to the changelog)."""

    __slots__ = ("_key", "_table")

    def __init__(self, table: _SetMixin, key: Any) -> None:
        self._table = table
        self._key = key

    def _current(self) -> frozenset[Any]:
        return self._table._current_set(self._key)

    def _replace(self, new: Iterable[Any]) -> None:
        self._table._store_set(self._key, frozenset(new))

    # reading
    def __contains__(self, member: object) -> bool:
        return member in self._current()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SetValue):
            return self._current() == other._current()
        if isinstance(other, (set, frozenset)):
            return self._current() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SetValue({set(self._current())!r})"

    def as_set(self) -> set[Any]:
        """A copy of the set."""
        return set(self._current())

    # writing
    def add(self, member: Any) -> None:
        self._replace(self._current() | {member})

    def discard(self, member: Any) -> None:
        self._replace(self._current() - {member})

    def remove(self, member: Any) -> None:
        current = self._current()
        if member not in current:
            raise KeyError(member)
        self._replace(current - {member})

    def update(self, *others: Iterable[Any]) -> None:
        self._replace(self._current().union(*others))

    def difference_update(self, *others: Iterable[Any]) -> None:
        self._replace(self._current().difference(*others))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._replace(self._current().intersection(*others))

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        self._replace(self._current().symmetric_difference(other))

    def clear(self) -> None:
        self._replace(())

    def __ior__(self, other: Iterable[Any]) -> SetValue:
        self.update(other)
        return self

    def __isub__(self, other: Iterable[Any]) -> SetValue:
        self.difference_update(other)
        return self

    def __iand__(self, other: Iterable[Any]) -> SetValue:
        self.intersection_update(other)
        return self

    def __ixor__(self, other: Iterable[Any]) -> SetValue:
        self.symmetric_difference_update(other)
        return self


class _SetMixin(Table):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default", frozenset)
        super().__init__(*args, **kwargs)

    def _stored_value_codec(self, codec: Codec) -> Codec:
        return SetCodec(codec)

    def _current_set(self, key: Any) -> frozenset[Any]:
        value = Table.__getitem__(self, key) if key in self else frozenset()
        return frozenset(value)

    def _store_set(self, key: Any, members: frozenset[Any]) -> None:
        # An empty set is no set: the key is deleted (a tombstone compacts away).
        Table.__setitem__(self, key, members if members else None)

    def __getitem__(self, key: Any) -> SetValue:
        return SetValue(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, SetValue):  # `table[k] |= {...}` assigns the view back
            if value._table is self and value._key == key:
                return
            value = value.as_set()
        if value is None:
            Table.__setitem__(self, key, None)
            return
        self._store_set(key, frozenset(value))

    def items(self) -> Any:
        return [(key, set(value)) for key, value in super().items()]

    def as_dict(self) -> dict[Any, Any]:
        return {key: set(value) for key, value in super().as_dict().items()}


class SetTable(_SetMixin):
    """A table of sets: ``table[key]`` is a :class:`SetValue` with ``add``,
    ``discard``, ``update``, ``difference_update``, ``intersection_update``,
    ``symmetric_difference_update``, ``clear`` and the in-place operators. Members must
    be JSON-encodable (or encodable by ``value_serializer``) and hashable."""


class GlobalSetTable(SetTable, GlobalTable):
    """A :class:`SetTable` that every worker holds whole (see :class:`GlobalTable`)."""
