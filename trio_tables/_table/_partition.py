"""One partition of one table in memory: :class:`PartitionState`.

Data of a partition lives in layers, newest first:

* ``overlay``: changes since the last commit cycle began;
* ``persisting``: changes of the cycle in progress (sent to the changelog, being
  written to the store once the broker acknowledged them);
* the store, with ``cache`` in front of a persistent one (what the store holds for some
  keys, ``MISSING`` for a key it does not have).

Beside them, ``buffer`` holds the changelog records not yet sent. A commit cycle calls
:meth:`PartitionState.prepare` (the buffer becomes records, the overlay becomes the
persisting layer), then :meth:`PartitionState.flush_batch` (what the store must write)
and, once the store wrote it, :meth:`PartitionState.flushed`.

Threads: only the Trio thread touches a PartitionState (the store write of a cycle
happens in a worker thread on the immutable :class:`PersistBatch`, not on this).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from .._changelog import ChangelogBuffer, ChangelogWrite, to_records
from .._codecs import Codec
from .._store._base import MISSING
from .._transport._base import OutgoingRecord
from ._keyfilter import KeyFilter
from ._values import TOMBSTONE

__all__ = ["NOT_CACHED", "READ_CACHE_LIMIT", "PartitionState", "PersistBatch"]

# Most values a partition keeps cached from a persistent store.
READ_CACHE_LIMIT = 50_000

NOT_CACHED: Any = object()
"""What :meth:`PartitionState.lookup` answers when only the store knows."""


@attrs.frozen
class PersistBatch:
    """One partition's share of a commit cycle's store write: ``changes`` (``None``
    deletes), the last acknowledged changelog ``offset``, the ``sources`` offsets the
    data is consistent with and the window ``meta`` (stream time)."""

    partition: int
    changes: dict[Any, Any]
    offset: int | None
    sources: dict[str, int] | None
    meta: dict[str, int] | None


class PartitionState:
    """The in-memory layers of one table partition (see the module docstring)."""

    __slots__ = (
        "buffer",
        "cache",
        "cache_complete",
        "keys",
        "overlay",
        "partition",
        "persisting",
    )

    def __init__(self, partition: int, *, coalesce: bool) -> None:
        self.partition = partition
        self.overlay: dict[Any, Any] = {}
        self.persisting: dict[Any, Any] = {}
        self.buffer = ChangelogBuffer(coalesce=coalesce)
        # key -> value the (persistent) store holds, MISSING if none; None: no cache.
        self.cache: dict[Any, Any] | None = None
        # The cache, or past READ_CACHE_LIMIT values the key filter, knows every key the
        # store has (a key neither knows is absent).
        self.cache_complete = False
        # Every key written to the store since the cache became complete (else None).
        self.keys: KeyFilter | None = None

    # -- reads ---------------------------------------------------------------------------
    def lookup(self, key: Any) -> Any:
        """The value of ``key`` in the layers (``TOMBSTONE``: deleted, ``MISSING``: not
        in the store), or :data:`NOT_CACHED` when only the store can tell."""
        value = self.overlay.get(key, NOT_CACHED)
        if value is not NOT_CACHED:
            return value
        persisting = self.persisting
        if persisting:
            value = persisting.get(key, NOT_CACHED)
            if value is not NOT_CACHED:
                return value
        cache = self.cache
        if cache is not None:
            value = cache.get(key, NOT_CACHED)
            if value is NOT_CACHED and self.cache_complete:
                keys = self.keys
                if keys is None or key not in keys:
                    return MISSING
        return value

    def start_complete_cache(self, store_is_empty: bool) -> bool:
        """Start the read cache of a persistent store; when the store holds nothing for
        this partition, the cache is *complete* from now on: every store change updates
        it (:meth:`flushed`, :meth:`remember` of applied changelog records), so a key it
        does not know is not in the store and needs no store read. When the cache starts
        over (``READ_CACHE_LIMIT``) the key filter (:mod:`._keyfilter`) keeps it complete:
        a key it never saw needs no store read. Whether it is complete."""
        self.cache = {}
        self.cache_complete = store_is_empty
        self.keys = KeyFilter() if store_is_empty else None
        return store_is_empty

    def forget_store(self) -> None:
        """The store may change hands: forget what it held."""
        self.cache, self.cache_complete, self.keys = None, False, None

    def remember(self, values: Iterable[tuple[Any, Any]]) -> None:
        """What the store holds for these keys (``MISSING``: absent), so that a
        persistent store is read at most once per key while it keeps its value. Bounded:
        the cache starts over when it holds ``READ_CACHE_LIMIT`` values (complete only if
        the key filter is kept: it holds every key stored since completeness began)."""
        cache = self.cache
        if cache is None:
            cache = self.cache = {}
        elif len(cache) >= READ_CACHE_LIMIT:
            self.cache_complete = self.keys is not None
            cache.clear()
        keys = self.keys
        if keys is None:
            cache.update(values)
            return
        add = keys.add
        for key, value in values:
            cache[key] = value
            if value is not MISSING:
                add(key)

    def merged(self, store_items: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        """The partition's items: ``store_items`` under the layers, deleted keys left
        out."""
        merged = dict(store_items)
        merged.update(self.persisting)
        merged.update(self.overlay)
        for key, value in merged.items():
            if value is not TOMBSTONE:
                yield key, value

    # -- writes --------------------------------------------------------------------------
    def put(self, key: Any, value: Any, write: ChangelogWrite) -> None:
        """Record ``value`` (``None`` deletes) for ``key`` and queue its changelog record
        (``write``: value, cause, stream time)."""
        self.overlay[key] = TOMBSTONE if value is None else value
        self.buffer.add(key, write)

    @property
    def has_changes(self) -> bool:
        """Whether anything here is not in the store yet."""
        return bool(self.overlay or self.persisting or len(self.buffer))

    def discard(self) -> None:
        """Forget every change not in the store (the partition was lost)."""
        self.overlay = {}
        self.persisting = {}
        self.buffer = ChangelogBuffer(coalesce=self.buffer.coalesce)

    # -- commit cycle ----------------------------------------------------------------------
    def prepare(self, topic: str, key_codec: Codec, value_codec: Codec) -> list[OutgoingRecord]:
        """Start a commit cycle: the changelog records to send; the overlay becomes (or
        joins, if a cycle failed before persisting) the persisting layer."""
        records = (
            to_records(topic, self.partition, self.buffer.drain(), key_codec, value_codec)
            if len(self.buffer)
            else []
        )
        if self.overlay:
            if self.persisting:
                self.persisting.update(self.overlay)  # newest last
            else:
                self.persisting = self.overlay
            self.overlay = {}
        return records

    def flush_batch(
        self, offset: int | None, sources: dict[str, int] | None, meta: dict[str, int] | None
    ) -> PersistBatch | None:
        """What the store must write for this cycle (``None``: nothing)."""
        if not self.persisting and offset is None and sources is None:
            return None
        changes = {k: (None if v is TOMBSTONE else v) for k, v in self.persisting.items()}
        return PersistBatch(self.partition, changes, offset, sources, meta)

    def flushed(self, batch: PersistBatch, *, persistent: bool) -> None:
        """``batch`` is in the store: remember its values (persistent stores), then drop
        the persisting layer (in that order: a read never misses both)."""
        if persistent and batch.changes:
            self.remember((k, MISSING if v is None else v) for k, v in batch.changes.items())
        self.persisting = {}
