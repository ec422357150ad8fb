"""The part every table shares: partitions, the write-behind layers, the changelog
buffers, and restoring from the changelog.

Data of a partition lives in three layers, newest first:

* ``overlay``: changes since the last commit cycle began;
* ``persisting``: changes of the cycle in progress (sent to the changelog, being
  written to the store once the broker acknowledged them);
* the store.

A commit cycle (run by the manager) takes the changelog buffers and the overlay at once,
sends the records, waits for the acknowledgements and writes the layer to the store with
the offset of the last acknowledged record, in one store transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import attrs
import trio

from .._changelog import (
    ChangelogBuffer,
    SourceOffset,
    changelog_topic_name,
    decode_stream_time,
    source_of,
    to_records,
    uncommitted_filter,
)
from .._codecs import Codec, resolve_codec, trivially_encodable
from .._partitioner import partition_of
from .._progress import RestoreProgressLog
from .._store import Store, open_store
from .._store._base import MISSING
from .._stream import Stream, current_event
from .._transport._base import TP, OutgoingRecord, Record, RestoreConsumer
from .._windows import (
    Duration,
    HoppingWindow,
    SlidingWindow,
    TumblingWindow,
    Window,
    to_ms,
)
from ..errors import PartitionNotOwned, TableWriteOutsideStream, UnsupportedOperation
from ._callbacks import call_callback
from ._checks import check_key, check_value, partition_key_error
from ._display import render_table
from ._host import TableHost
from ._joins import Joined, JoinKey, lookup_join
from ._options import check_options, clone_table, from_schema
from ._values import IMMUTABLE_TYPES, TOMBSTONE
from ._values import detached as _detached
from ._windowed import STREAM_TIME, Expiry, WindowedKeyCodec, Windowing, WindowWrapper

__all__ = [
    "TOMBSTONE",
    "Collection",
    "PersistBatch",
    "RecoveryRequest",
    "RestoreReport",
    "StandbyUpdate",
]

logger = logging.getLogger("trio_tables.table")

# Most values a table keeps cached from a persistent store (see Collection._lookup).
READ_CACHE_LIMIT = 50_000  # per partition
_NOT_CACHED: Any = object()

# Extra changelog retention of windowed tables past a window's expiry (as Kafka
# Streams' windowstore.changelog.additional.retention.ms).
_RETENTION_MARGIN = 24 * 3600 * 1000


@attrs.define(eq=False)
class RecoveryRequest:
    """ "Restore these partitions" for one assignment, sent to a table's recovery task.

    ``scope`` is cancelled by the manager when a partition of it is revoked first;
    ``done`` is set when the task is finished with the request (recovered, cancelled or
    failed: ``completed`` and ``error`` tell which).
    """

    partitions: frozenset[int]
    committed: Mapping[TP, int | None]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    completed: bool = False
    error: BaseException | None = None


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


@attrs.frozen
class RestoreReport:
    """One partition's restore: replayed the changelog from ``start`` to ``end``
    (exclusive), applying ``applied`` records (the others were skipped)."""

    partition: int
    start: int
    end: int
    applied: int


@attrs.define(eq=False)
class StandbyUpdate:
    """ "Keep these partitions warm from now on" (the whole set, not a change), sent to a
    table's nursery; ``done`` is set once its changelog consumer tails exactly them
    (partitions that left the set are no longer touched by it)."""

    partitions: frozenset[int]
    done: trio.Event = attrs.field(factory=trio.Event)


class Collection:
    """Base of every table: a named, partitioned, changelog-backed collection."""

    is_global = False
    window: Any = None

    def __init__(
        self,
        manager: TableHost,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: type | None = None,
        value_type: type | None = None,
        partitions: int | None = None,
        store: str | None = None,
        changelog_topic: str | None = None,
        help: str = "",
        on_recover: Callable[..., Any] | None = None,
        on_changelog_event: Callable[..., Any] | None = None,
        recovery_buffer_size: int = 1000,
        standby_buffer_size: int | None = None,
        extra_topic_configs: Mapping[str, str] | None = None,
        use_partitioner: bool = False,
        on_window_close: Callable[..., Any] | None = None,
        options: Mapping[str, Any] | None = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
        schema: Any = None,
        window: Window | None = None,
        recover_callbacks: Iterable[Callable[..., Any]] | None = None,
        is_global: bool | None = None,
        **unknown: Any,
    ) -> None:
        # Faust's keywords: ``schema`` (key/value types and serializers), ``window``
        # (as using_window(window)), ``recover_callbacks``, ``is_global`` (must match
        # the class); anything else is an error listing the accepted keywords.
        check_options(type(self), unknown, is_global)
        key_type = from_schema(schema, "key_type", key_type)
        value_type = from_schema(schema, "value_type", value_type)
        key_serializer = from_schema(schema, "key_serializer", key_serializer)
        value_serializer = from_schema(schema, "value_serializer", value_serializer)
        self.manager = manager
        self.app = manager
        self.name = name
        self.default = default
        self.key_type = key_type
        self.value_type = value_type
        self.schema = schema
        self._serializers = (key_serializer, value_serializer)
        self.partitions = partitions
        self.help = help
        self.recovery_buffer_size = recovery_buffer_size
        self.standby_buffer_size = standby_buffer_size or recovery_buffer_size
        self.extra_topic_configs = dict(extra_topic_configs or {})
        self._user_topic_configs = dict(self.extra_topic_configs)
        self.use_partitioner = use_partitioner
        self.options = dict(options or {})
        self.last_closed_window = 0.0
        self._on_window_close = on_window_close
        self._changelog_topic_name = changelog_topic or changelog_topic_name(manager.app_id, name)
        self.key_codec: Codec = resolve_codec(key_serializer, key_type, default="json", keys=True)
        self.value_codec: Codec = self._stored_value_codec(
            resolve_codec(value_serializer, value_type, default="json")
        )
        self.store_url = store or manager.store_url
        self.data: Store = open_store(
            self.store_url,
            name=f"{manager.app_id}-{name}",
            key_codec=self.key_codec,
            value_codec=self.value_codec,
        )
        self.logger = logging.getLogger(f"trio_tables.table.{name}")
        self._recover_callbacks: list[Callable[..., Any]] = [
            *(recover_callbacks or ()),
            *([on_recover] if on_recover else []),
        ]
        self._changelog_callbacks: list[Callable[..., Any]] = (
            [on_changelog_event] if on_changelog_event else []
        )
        self._active: set[int] = set()
        self._overlay: dict[int, dict[Any, Any]] = {}
        self._persisting: dict[int, dict[Any, Any]] = {}
        self._buffers: dict[int, ChangelogBuffer] = {}
        self._explicit_partition: ContextVar[int | None] = ContextVar(
            f"trio_tables_partition_{name}", default=None
        )
        # partition -> (position, target) of the restore in progress or last done.
        self.recovery_progress: dict[int, tuple[int, int]] = {}
        # partition -> (next offset, records held back) of the standby copies tailed.
        self.standby_progress: dict[int, tuple[int, int]] = {}
        self._progress_event = trio.Event()
        # Set by the changelog consumer task when it has read up to the end offsets seen
        # when it started tailing (what entering a global table waits for).
        self._tailer_caught_up = trio.Event()
        # partition -> last changelog offset in the store (what the store says, cached
        # so that the assignor's freshness report costs no store read). Replaced whole,
        # never changed in place: kafka-python's IO thread reads it, the Trio thread
        # writes it.
        self.local_offsets: dict[int, int] = {
            p: offset
            for p in self.data.partitions()
            if (offset := self.data.persisted_offset(p)) is not None
        }
        self.replayed = 0  # changelog records applied by recovery, since start
        self.standby_applied = 0  # changelog records applied by tailing, since start
        self.restores: list[RestoreReport] = []  # every restore done, oldest first
        # partition -> key -> value the (persistent) store holds, MISSING if none.
        self._read_cache: dict[int, dict[Any, Any]] = {}
        # partition -> its read cache, when that cache holds every key the store has
        # (see _lookup). Compared by identity: a cache replaced or dropped is no longer
        # complete; one about to be cleared leaves this first.
        self._complete_caches: dict[int, dict[Any, Any]] = {}
        # Set once the manager created (or checked) the changelog topic.
        self._changelog_created = False
        # Set by using_window(): the table's keys are then (key, window start).
        self._windowing: Windowing | None = None
        self._window_options: dict[str, Any] = {}  # using_window's options (for clone)
        if window is not None:
            self.using_window(window)
            self._window_options["from_constructor"] = True

    # The codecs are properties: each remembers which exact types it accepts without a
    # check (what a write tests first, see _put).
    @property
    def key_codec(self) -> Codec:
        """The codec of keys in the store and the changelog."""
        return self._key_codec

    @key_codec.setter
    def key_codec(self, codec: Codec) -> None:
        self._key_codec = codec
        # Keys needing no check (a float may be NaN: never a key).
        self._plain_keys = trivially_encodable(codec) - {float}

    @property
    def value_codec(self) -> Codec:
        """The codec of values in the store and the changelog."""
        return self._value_codec

    @value_codec.setter
    def value_codec(self, codec: Codec) -> None:
        self._value_codec = codec
        # Values needing neither a check nor a detached copy.
        self._plain_values = trivially_encodable(codec) & IMMUTABLE_TYPES

    def _stored_value_codec(self, codec: Codec) -> Codec:
        """The codec of values as stored and written to the changelog (a subclass may
        wrap the user's codec)."""
        return codec

    # -- names --------------------------------------------------------------------------
    @property
    def changelog_topic_name(self) -> str:
        return self._changelog_topic_name

    @property
    def changelog_topic(self) -> str:
        return self._changelog_topic_name

    @property
    def label(self) -> str:
        return f"{type(self).__name__}: {self.name}"

    @property
    def shortlabel(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"<{self.label}>"

    def info(self) -> dict[str, Any]:
        """The keyword arguments that re-create this table (Faust's ``info()``):
        ``changelog_topic`` is ``None`` unless a custom one was given, ``window`` is the
        window of a windowed table (its other options: see :meth:`clone`)."""
        derived = changelog_topic_name(self.manager.app_id, self.name)
        return {
            "name": self.name,
            "default": self.default,
            "key_type": self.key_type,
            "value_type": self.value_type,
            "key_serializer": self._serializers[0],
            "value_serializer": self._serializers[1],
            "schema": self.schema,
            "partitions": self.partitions,
            "store": self.store_url,
            "changelog_topic": (
                None if self._changelog_topic_name == derived else self._changelog_topic_name
            ),
            "help": self.help,
            "recover_callbacks": list(self._recover_callbacks),
            "on_changelog_event": (
                self._changelog_callbacks[0] if self._changelog_callbacks else None
            ),
            "on_window_close": self._on_window_close,
            "window": self.window,
            "recovery_buffer_size": self.recovery_buffer_size,
            "standby_buffer_size": self.standby_buffer_size,
            "extra_topic_configs": self._user_topic_configs,
            "use_partitioner": self.use_partitioner,
            "options": self.options,
            "is_global": self.is_global,
        }

    def changelog_created(self, partitions: int) -> None:
        """The manager created (or checked) the changelog with ``partitions``."""
        self.partitions = partitions
        self._changelog_created = True

    # -- partitions -------------------------------------------------------------------
    def partition_for_key(self, key: Any) -> int:
        """The partition Kafka's default partitioner picks for ``key`` sent as
        :meth:`TableManager.send` sends it (``str`` as UTF-8, ``bytes`` as they are,
        other keys as JSON: see :mod:`trio_tables._partitioner`), so the same as
        ``manager.send(topic, key, ...)`` and a default Kafka producer. For a windowed
        table ``key`` is ``(key, window start)``; all windows of a key share its
        partition."""
        if not self.partitions:
            raise RuntimeError(
                f"{self.label}: partition count not known yet (no source topic joined); "
                "pass partitions= to the table"
            )
        if self._windowing is not None:
            key = key[0]
        try:
            return partition_of(key, self.partitions)
        except TypeError as exc:
            raise partition_key_error(self, key, exc) from None

    @contextmanager
    def partition(self, partition: int) -> Iterator[None]:
        """Direct reads and writes in this block to ``partition`` (for writes outside a
        stream: timers, request handlers)."""
        token = self._explicit_partition.set(partition)
        try:
            yield
        finally:
            self._explicit_partition.reset(token)

    def _context_partition(self, key: Any) -> int | None:
        partition = self._explicit_partition.get()
        if partition is not None:
            return partition
        if self.use_partitioner:
            return self.partition_for_key(key)
        event = current_event.get()
        return None if event is None else event.partition

    def _write_partition(self, key: Any) -> int:
        partition = self._context_partition(key)
        if partition is None:
            raise TableWriteOutsideStream(self.name)
        if partition not in self._active:
            raise PartitionNotOwned(self.name, partition)
        return partition

    # -- reads -------------------------------------------------------------------------
    def _lookup(self, partition: int, key: Any) -> Any:
        layer = self._overlay.get(partition)
        if layer is not None:
            value = layer.get(key, _NOT_CACHED)
            if value is not _NOT_CACHED:
                return value
        layer = self._persisting.get(partition)
        if layer is not None:
            value = layer.get(key, _NOT_CACHED)
            if value is not _NOT_CACHED:
                return value
        cache = self._read_cache.get(partition)
        if cache is not None:
            value = cache.get(key, _NOT_CACHED)
            if value is not _NOT_CACHED:
                return value
            if self._complete_caches.get(partition) is cache:
                return MISSING
        elif self.data.persistent and self._start_complete_cache(partition):
            return MISSING
        value = self.data.get(partition, key)
        if self.data.persistent:
            self._cache_values(partition, ((key, value),))
        return value

    def _start_complete_cache(self, partition: int) -> bool:
        """Whether the store holds nothing for ``partition``; if so its (new, empty) read
        cache is *complete* from now on: every store change updates it (persist, applied
        changelog records), so a key it does not know is not in the store and needs no
        store read (a new key costs no read; reads can cost a GIL hand-over of up to
        milliseconds while another thread polls). Completeness ends when the cache
        starts over (``READ_CACHE_LIMIT``) or is dropped.

        The cache is installed before the store is asked: a persist running on a worker
        thread meanwhile either wrote the partition first (then it is not empty here) or
        caches what it wrote in this cache."""
        new: dict[Any, Any] = {}
        cache = self._read_cache.setdefault(partition, new)
        if cache is not new or partition in self.data.partitions():
            return False
        self._complete_caches[partition] = cache
        return True

    def _cache_values(self, partition: int, values: Iterable[tuple[Any, Any]]) -> None:
        """Remember what the store holds for these keys (``MISSING``: absent), so that a
        persistent store is read at most once per key while it keeps its value. Bounded:
        a partition's cache starts over when it holds ``READ_CACHE_LIMIT`` values (and
        is no longer complete)."""
        cache = self._read_cache.get(partition)
        if cache is None:
            cache = self._read_cache[partition] = {}
        elif len(cache) >= READ_CACHE_LIMIT:
            self._complete_caches.pop(partition, None)  # before a reader sees it empty
            cache.clear()
        cache.update(values)

    def _read(self, key: Any) -> Any:
        """The raw value of ``key`` (or MISSING/TOMBSTONE) where the context says, or in
        any active partition when no context says."""
        partition = self._context_partition(key)
        if partition is not None:
            return self._lookup(partition, key)
        for partition in sorted(self._active):
            value = self._lookup(partition, key)
            if value is not MISSING and value is not TOMBSTONE:
                return value
        return MISSING

    def _partition_items(self, partition: int) -> Iterator[tuple[Any, Any]]:
        merged: dict[Any, Any] = {}
        for key, value in self.data.items(partition):
            merged[key] = value
        merged.update(self._persisting.get(partition, {}))
        merged.update(self._overlay.get(partition, {}))
        for key, value in merged.items():
            if value is not TOMBSTONE:
                yield key, value

    # -- writes ------------------------------------------------------------------------
    def _write(self, key: Any, value: Any) -> None:
        """Record ``value`` (``None`` deletes) for ``key``; checks types first."""
        self._put(self._write_partition(key), key, value)

    def _put(self, partition: int, key: Any, value: Any) -> None:
        """Record ``value`` (``None`` deletes) for ``key`` in ``partition``, caused by
        the current event (if any). Checks that key and value encode first (a
        ``TypeError`` now, not at commit time); JSON scalars of the codec's type need no
        check and no copy (the per-event path)."""
        if type(key) not in self._plain_keys:
            check_key(self, key)
        if value is not None and type(value) not in self._plain_values:
            check_value(self, value)
            value = _detached(value)
        event = current_event.get()
        overlay = self._overlay.get(partition)
        if overlay is None:
            overlay = self._overlay[partition] = {}
        overlay[key] = TOMBSTONE if value is None else value
        stream_time = None
        if self._windowing is not None:
            self._windowing.track(partition, key, deleted=value is None)
            stream_time = self._windowing.stream_time.get(partition)
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._new_buffer(partition)
        buffer.add(
            key,
            (
                value,
                None if event is None else (event.topic, event.partition, event.offset),
                stream_time,
            ),
        )

    def send_changelog(
        self, partition: int, key: Any, value: Any, *, source: SourceOffset | None = None
    ) -> None:
        """Queue a changelog record for ``key`` in ``partition`` (sent at the next commit)."""
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._new_buffer(partition)
        buffer.add(key, (value, source_of(source), None))

    def _new_buffer(self, partition: int) -> ChangelogBuffer:
        buffer = self._buffers[partition] = ChangelogBuffer(
            coalesce=self.manager.coalesce_changelog
        )
        return buffer

    # -- commit cycle (called by the manager) ---------------------------------------------
    def take_changes(
        self, busy: frozenset[int] = frozenset()
    ) -> tuple[list[OutgoingRecord], list[int]]:
        """Start a commit cycle: the changelog records to send, and the partitions whose
        overlay moved to the persisting layer. Partitions in ``busy`` (an event of theirs
        is half processed) keep their changes for a later cycle."""
        records: list[OutgoingRecord] = []
        for partition, buffer in self._buffers.items():
            if len(buffer) and partition not in busy:
                records.extend(
                    to_records(
                        self._changelog_topic_name,
                        partition,
                        buffer.drain(),
                        self.key_codec,
                        self.value_codec,
                    )
                )
        moved = []
        for partition, overlay in self._overlay.items():
            if overlay and partition not in busy:
                if self._persisting.get(partition):
                    # A previous cycle failed before persisting: keep both, newest last.
                    self._persisting[partition].update(overlay)
                else:
                    self._persisting[partition] = overlay
                self._overlay[partition] = {}
                moved.append(partition)
        return records, moved

    def persist(
        self,
        last_offsets: Mapping[int, int],
        source_offsets: Mapping[int, Mapping[str, int]],
    ) -> None:
        """Write the persisting layer to the store with the last acknowledged changelog
        offset of each partition, all in this thread (blocking for persistent stores).
        The commit cycle does the same in three steps: :meth:`persist_plan`,
        :meth:`write_persist_plan` (in a worker thread), :meth:`persisted`."""
        plan = self.persist_plan(last_offsets, source_offsets)
        self.write_persist_plan(plan)
        self.persisted(plan)

    def persist_plan(
        self,
        last_offsets: Mapping[int, int],
        source_offsets: Mapping[int, Mapping[str, int]],
    ) -> list[PersistBatch]:
        """What the store must write: the persisting layer of each partition with the
        last acknowledged changelog offset and the source offsets. Trio thread; the
        plan is immutable once made."""
        plan = []
        for partition in set(self._persisting) | set(last_offsets) | set(source_offsets):
            changes = self._persisting.get(partition, {})
            offset = last_offsets.get(partition)
            sources = source_offsets.get(partition)
            if not changes and offset is None and sources is None:
                continue
            plan.append(
                PersistBatch(
                    partition,
                    {k: (None if v is TOMBSTONE else v) for k, v in changes.items()},
                    offset,
                    None if sources is None else dict(sources),
                    self._window_meta(partition),
                )
            )
        return plan

    def write_persist_plan(self, plan: list[PersistBatch]) -> None:
        """Write ``plan`` to the store. Blocking (disk) for persistent stores: the commit
        cycle runs it in a worker thread. Touches only the store (no table state)."""
        for batch in plan:
            self.data.write_batch(
                batch.partition,
                batch.changes,
                batch.offset,
                source_offsets=batch.sources,
                meta=batch.meta,
            )

    def persisted(self, plan: list[PersistBatch]) -> None:
        """``plan`` is in the store: update what the table remembers of it and drop the
        persisting layer (in that order: a read never misses both). Trio thread."""
        offsets = dict(self.local_offsets)
        for batch in plan:
            if self.data.persistent and batch.changes:
                self._cache_values(
                    batch.partition,
                    ((k, MISSING if v is None else v) for k, v in batch.changes.items()),
                )
            if batch.offset is not None:
                offsets[batch.partition] = batch.offset
        # Replaced whole: kafka-python's IO thread reads it (the assignor's freshness).
        self.local_offsets = offsets
        self._persisting.clear()

    def uncommitted_partitions(self) -> frozenset[int]:
        """Partitions with changes not written to the store yet."""
        return frozenset(self._overlay) | frozenset(self._persisting) | frozenset(self._buffers)

    def discard_uncommitted(self, partitions: set[int] | frozenset[int]) -> None:
        """Forget changes of ``partitions`` that were not persisted (lost partitions)."""
        for partition in partitions:
            self._overlay.pop(partition, None)
            self._persisting.pop(partition, None)
            self._buffers.pop(partition, None)

    def _window_meta(self, partition: int) -> dict[str, int] | None:
        if self._windowing is None:
            return None
        stream_time = self._windowing.stream_time.get(partition)
        return None if stream_time is None else {STREAM_TIME: stream_time}

    # -- ownership (called by the manager) ------------------------------------------------
    def activate(self, partitions: frozenset[int]) -> None:
        if self._windowing is not None:
            for partition in partitions - self._active:
                # Restored windows expire like any other (Faust never expired them).
                self._windowing.rebuild(
                    partition, (key for key, _ in self._partition_items(partition))
                )
                meta = self.data.persisted_meta(partition)
                self._windowing.restore_stream_time(partition, meta.get(STREAM_TIME))
        self._active |= partitions

    def deactivate(self, partitions: frozenset[int]) -> None:
        self._active -= partitions
        for partition in partitions:
            self._read_cache.pop(partition, None)
        if self._windowing is not None:
            for partition in partitions:
                self._windowing.forget(partition)

    @property
    def active_partitions(self) -> frozenset[int]:
        return frozenset(self._active)

    @property
    def standbys_caught_up(self) -> bool:
        """Whether the changelog consumer read its standby copies (every partition of a
        global table) up to the end offsets seen when it started following them."""
        return self._tailer_caught_up.is_set()

    def persisted_offset(self, tp: TP) -> int | None:
        """The last changelog offset persisted in the store for ``tp``."""
        return self.data.persisted_offset(tp.partition)

    def reset_state(self) -> None:
        """Forget all local data (it is rebuilt from the changelog by the next
        recovery)."""
        for partition in self.data.partitions():
            self.data.reset_partition(partition)
        self.local_offsets = {}  # replaced whole (see persisted)
        self._read_cache.clear()
        self._complete_caches.clear()
        if self._windowing is not None:
            self._windowing.index.clear()
            self._windowing.stream_time.clear()
        self._overlay.clear()
        self._persisting.clear()
        self._buffers.clear()

    # -- recovery ----------------------------------------------------------------------
    async def restore(self, consumer: RestoreConsumer, request: RecoveryRequest) -> None:
        """Rebuild ``request.partitions`` from the changelog, up to the end offsets taken
        now. Cancellation: stops between batches; every batch applied so far is in the
        store with its offset, so a later restore continues from there."""
        topic = self._changelog_topic_name
        tps = {p: TP(topic, p) for p in request.partitions}
        sources = {p: self._committed_sources(p, request.committed) for p in tps}
        for p in tps:
            self._check_store_not_ahead(p, sources[p])
        starts, end = await self.resume_offsets(consumer, tps)
        todo: dict[TP, int] = {}
        for p, tp in tps.items():
            start = starts[tp]
            self.recovery_progress[p] = (start, end[tp])
            if start < end[tp]:
                todo[tp] = start
        total = sum(end[tp] - start for tp, start in todo.items())
        progress_log = RestoreProgressLog(self.logger, self.name, total)
        if todo:
            self.logger.info(
                "%s: restoring %d records of partitions %s from %s",
                self.name,
                total,
                sorted(tp.partition for tp in todo),
                topic,
            )
            await consumer.assign(todo)
            for tp, start in todo.items():
                await consumer.seek(tp, start)
        remaining = dict(todo)
        applied = dict.fromkeys(tps, 0)
        while remaining:
            batch = await consumer.poll(timeout=0.2)
            for tp in list(remaining):
                records = batch.get(tp)
                if records:
                    applied[tp.partition] += await self._apply_restored(
                        tp.partition, records, request.committed, sources[tp.partition]
                    )
                    # At least past the last record. The consumer's position (a thread
                    # hop) is asked only after a poll that returned nothing at all:
                    # offsets have gaps (transaction markers), so the end may be reached
                    # without a record at end - 1.
                    position = records[-1].offset + 1
                elif not batch:
                    position = await consumer.position(tp)
                else:
                    continue  # records of other partitions came first
                self.recovery_progress[tp.partition] = (position, end[tp])
                if position >= end[tp]:
                    del remaining[tp]
            self._notify_progress()
            progress_log.update(
                sum(
                    min(self.recovery_progress[tp.partition][0], end[tp]) - start
                    for tp, start in todo.items()
                )
            )
        progress_log.finish(total)
        if todo:
            await consumer.assign(())
        for p, tp in tps.items():
            start = todo.get(tp, end[tp])
            self.restores.append(RestoreReport(p, start, end[tp], applied[p]))
        for p in tps:
            # Record the source offsets this state is consistent with, even if no record
            # was replayed (so a later commit check compares with the right numbers).
            if sources[p] != self.data.persisted_source_offsets(p):
                await self._run_store(
                    partial(self.data.write_batch, source_offsets=sources[p]), p, {}, None
                )

    async def resume_offsets(
        self, consumer: RestoreConsumer, tps: Mapping[int, TP]
    ) -> tuple[dict[TP, int], dict[TP, int]]:
        """Where reading the changelog of ``tps`` (by partition) continues, and its end
        offsets now: after the store's saved offset, or at the beginning. A saved offset
        outside the changelog means the local copy cannot be continued: it is discarded
        (with a log line) and read again from the beginning."""
        begin = await consumer.beginning_offsets(tps.values())
        end = await consumer.end_offsets(tps.values())
        starts: dict[TP, int] = {}
        for p, tp in tps.items():
            saved = self.local_offsets.get(p)
            start = begin[tp] if saved is None else saved + 1
            if saved is not None and not begin[tp] <= start <= end[tp]:
                self.logger.warning(
                    "%s[%d]: saved changelog offset %d is outside the changelog [%d, %d): "
                    "discarding local state and rebuilding from the changelog",
                    self.name,
                    p,
                    saved,
                    begin[tp],
                    end[tp],
                )
                await self._run_store(self._reset_partition, p)
                start = begin[tp]
            starts[tp] = start
        return starts, end

    def _committed_sources(
        self, partition: int, committed: Mapping[TP, int | None]
    ) -> dict[str, int]:
        return {
            tp.topic: offset
            for tp, offset in committed.items()
            if tp.partition == partition and offset is not None
        }

    def _check_store_not_ahead(self, partition: int, committed: Mapping[str, int]) -> None:
        recorded = self.data.persisted_source_offsets(partition)
        ahead = {
            topic: (offset, committed.get(topic))
            for topic, offset in recorded.items()
            if committed.get(topic, -1) < offset
        }
        if ahead:
            self.logger.warning(
                "%s[%d]: local state includes events past the group's committed offsets %s "
                "(the worker stopped between persisting and committing): rebuilding this "
                "partition from the changelog",
                self.name,
                partition,
                ahead,
            )
            self._reset_partition(partition)

    def _notify_progress(self) -> None:
        self._progress_event.set()
        self._progress_event = trio.Event()

    async def wait_progress(self) -> None:
        """Wait until the next change of :attr:`recovery_progress` or
        :attr:`standby_progress` (for progress displays and tests)."""
        await self._progress_event.wait()

    async def wait_caught_up(self) -> None:
        """Wait until the changelog consumer task has read up to the end offsets it saw
        when it started tailing (for a global table: every partition)."""
        await self._tailer_caught_up.wait()

    def _reset_partition(self, partition: int) -> None:
        self.data.reset_partition(partition)
        self.local_offsets = {p: o for p, o in self.local_offsets.items() if p != partition}
        self._read_cache.pop(partition, None)
        if self._windowing is not None:
            self._windowing.forget(partition)

    async def _apply_restored(
        self,
        partition: int,
        records: list[Record] | Any,
        committed: Mapping[TP, int | None],
        sources: Mapping[str, int] | None,
    ) -> int:
        count = await self.apply_changelog_batch(partition, records, committed, sources=sources)
        self.replayed += count
        return count

    async def apply_changelog_batch(
        self,
        partition: int,
        records: list[Record] | Any,
        committed: Mapping[TP, int | None] | None = None,
        *,
        sources: Mapping[str, int] | None = None,
    ) -> int:
        """Apply changelog ``records`` of ``partition`` (in offset order) to the store,
        with the offset of the last one, in one store transaction; the number applied.
        Records caused by events at or past ``committed`` are skipped (they will be
        written again); ``sources`` replaces the source offsets the store records."""
        if not records:
            return 0
        changes: dict[Any, Any] = {}
        decode_key, decode_value = self.key_codec.decode, self.value_codec.decode
        uncommitted = None if committed is None else uncommitted_filter(committed)
        callbacks = self._changelog_callbacks
        # Recovery replays every record of a changelog through here: no work per record
        # that the batch does not need.
        kept = records if uncommitted is None else [r for r in records if not uncommitted(r)]
        for record in kept:
            key, value = record.key, record.value
            changes[None if key is None else decode_key(key)] = (
                None if value is None else decode_value(value)
            )
            if callbacks:
                for callback in callbacks:
                    await call_callback(callback, record)
        meta = None
        if self._windowing is not None:
            times = [t for r in records if (t := decode_stream_time(r.headers)) is not None]
            if times:
                stored = self.data.persisted_meta(partition).get(STREAM_TIME)
                meta = {STREAM_TIME: max(times) if stored is None else max(stored, *times)}
        await self._run_store(
            partial(self.data.write_batch, source_offsets=sources, meta=meta),
            partition,
            changes,
            records[-1].offset,
        )
        cache = self._read_cache.get(partition)
        if cache is not None:
            for key, value in changes.items():
                cache[key] = MISSING if value is None else value
        # Past the skipped records too: they are written again when their events are.
        self.local_offsets = {**self.local_offsets, partition: records[-1].offset}
        return len(kept)

    async def _run_store(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.data.persistent:
            return await trio.to_thread.run_sync(fn, *args)
        return fn(*args)

    # -- display ---------------------------------------------------------------------------
    def as_ansitable(
        self,
        title: str = "{table.name}",
        *,
        limit: int = 100,
        color: bool | None = None,
        **_: Any,
    ) -> str:
        """This worker's content (active partitions, sorted by key when keys allow) as
        a terminal table, at most ``limit`` rows. ``title`` is formatted with
        ``table=self`` (Faust's default: ``"{table.name}"``). ``color``: ANSI colours;
        ``None`` means only when standard output is a terminal."""
        rows = [
            (key, value)
            for partition in sorted(self._active)
            for key, value in self._partition_items(partition)
        ]
        return render_table(rows, title=title.format(table=self), limit=limit, color=color)

    async def on_window_close(self, key: Any, value: Any) -> None:
        """Called when a window closes, with ``key`` = ``(key, (start, end))`` and the
        window's final ``value`` (windowed tables); calls the ``on_window_close=``
        callback given to the table (awaited when it is a coroutine function; a
        callback marked with ``asyncio_callback`` runs on the manager's trio-asyncio
        loop). Cancellation: propagates into the callback."""
        callback = self._on_window_close
        if callback is not None:
            await call_callback(callback, key, value)

    # -- windows ------------------------------------------------------------------------------
    def tumbling(
        self,
        size: Duration,
        expires: Duration | None = None,
        *,
        key_index: bool = False,
        **options: Any,
    ) -> WindowWrapper:
        """Make this table windowed by back-to-back windows of ``size`` (see
        :meth:`using_window` for ``expires`` and the options)."""
        return self.using_window(
            TumblingWindow(size, expires=expires), key_index=key_index, **options
        )

    def hopping(
        self,
        size: Duration,
        step: Duration,
        expires: Duration | None = None,
        *,
        key_index: bool = False,
        **options: Any,
    ) -> WindowWrapper:
        """Make this table windowed by windows of ``size`` starting every ``step``."""
        return self.using_window(
            HoppingWindow(size, step, expires=expires), key_index=key_index, **options
        )

    def sliding(
        self,
        before: Duration,
        after: Duration,
        expires: Duration | None = None,
        *,
        key_index: bool = False,
        **options: Any,
    ) -> WindowWrapper:
        """Make this table windowed by one window ``[t - before, t + after]`` per
        timestamp ``t``."""
        return self.using_window(
            SlidingWindow(before, after, expires=expires), key_index=key_index, **options
        )

    def using_window(
        self,
        window: Window,
        *,
        key_index: bool = False,
        grace: Duration = 0,
        expiry: Expiry = "stream_time",
        clock: Callable[[], float] = time.time,
        final_results_topic: str | None = None,
    ) -> WindowWrapper:
        """Make this table windowed by ``window`` and return its :class:`WindowWrapper`.
        Call it right after creating the table (before the manager starts it).

        - ``window.expires``: how long a window is kept after it ends, measured on the
          partition's stream time (newest timestamp seen) minus ``grace``, or on
          ``clock()`` with ``expiry="wall_clock"``. Then the window *closes*: it is
          removed from the store, tombstoned in the changelog, passed to
          ``on_window_close((key, (start, end)), value)`` and, with
          ``final_results_topic``, sent there (key: the key; value:
          ``{"start", "end", "value"}``). Updates arriving for a closed window are
          dropped (counted in ``late_updates``). ``expires=None``: windows never close.
        - ``key_index``: Faust's option; ``keys()``/``items()``/``values()`` work
          either way, and ``key_index_table`` is offered when it is set.
        - The changelog gets ``cleanup.policy=compact,delete`` and ``retention.ms`` of
          window span + expires + grace + one day, unless ``extra_topic_configs`` says
          otherwise (a custom ``changelog_topic`` is kept).
        """
        if self.is_global:
            raise TypeError(f"{self.label}: global tables cannot be windowed")
        if self._changelog_created or self._active:
            raise RuntimeError(
                f"{self.label} is running already: make a table windowed right after "
                "creating it, before the manager starts it"
            )
        if self._windowing is not None:
            if not self._window_options.get("from_constructor"):
                raise RuntimeError(f"{self.label} is windowed already")
            # window= gave the window; this call gives the wrapper (and options).
            self.key_codec = self._windowing.inner_key_codec
            self.extra_topic_configs = dict(self._user_topic_configs)
        self.window = window
        self._window_options = {
            "key_index": key_index,
            "grace": grace,
            "expiry": expiry,
            "clock": clock,
            "final_results_topic": final_results_topic,
        }
        self._windowing = Windowing(
            window,
            inner_key_codec=self.key_codec,
            grace=to_ms(grace),
            expiry=expiry,
            clock=clock,
            final_results_topic=final_results_topic,
        )
        self.key_codec = WindowedKeyCodec(self.key_codec)
        self.data.close()
        self.data = open_store(
            self.store_url,
            name=f"{self.manager.app_id}-{self.name}",
            key_codec=self.key_codec,
            value_codec=self.value_codec,
        )
        if window.expires is not None:
            retention = window.span + window.expires + self._windowing.grace + _RETENTION_MARGIN
            self.extra_topic_configs = {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(retention),
                **self.extra_topic_configs,
            }
        return WindowWrapper(self, key_index=key_index)

    @property
    def late_updates(self) -> int:
        """Updates of a windowed table dropped because their window had closed."""
        return 0 if self._windowing is None else self._windowing.late

    async def close_expired_windows(self, partitions: frozenset[int] | set[int]) -> int:
        """Close the windows of ``partitions`` (active ones) whose time has come (see
        :meth:`using_window`); the number closed. Called by the manager at the start of
        each commit cycle, so closings are committed with the changes before them.
        Cancellation: windows whose callbacks did not run yet stay closed in the table
        (their tombstones are queued); a crash before the commit opens them again, so
        callbacks run at least once, and exactly once when the worker stops cleanly."""
        windowing = self._windowing
        if windowing is None:
            return 0
        closed: list[tuple[int, Any, int, Any]] = []
        for partition in sorted(set(partitions) & self._active):
            for start, keys in windowing.due(partition):
                for key in keys:
                    value = self._lookup(partition, (key, start))
                    self._put(partition, (key, start), None)
                    if value is not MISSING and value is not TOMBSTONE:
                        closed.append((partition, key, start, value))
        span = windowing.span
        for partition, key, start, value in closed:
            windowing.closed += 1
            # Informational only (Faust's name, in seconds): expiry never reads it.
            self.last_closed_window = max(self.last_closed_window, (start + span) / 1000)
            await call_callback(self.on_window_close, (key, (start, start + span)), value)
            if windowing.final_results_topic is not None:
                await self.manager.send(
                    windowing.final_results_topic,
                    key,
                    {"start": start, "end": start + span, "value": value},
                    partition=partition,
                )
        return len(closed)

    # -- joins and Faust's stream plumbing ---------------------------------------------------
    def _join_lookup(self, key: Any) -> tuple[bool, Any]:
        """``(found, value)`` of ``key`` for a join, in the event's partition."""
        raw = self._read(key)
        if raw is MISSING or raw is TOMBSTONE:
            return False, None
        return True, _detached(raw)

    def join(self, stream: Stream, on: JoinKey = None) -> AsyncIterator[Joined]:
        """Inner stream-table lookup join: iterate ``stream``, yielding
        :class:`Joined` ``(event, value)`` for events whose join key ``on`` (see
        :data:`JoinKey`) is in the table; other events are processed (skipped) silently.
        Cancellation: as iterating the stream."""
        return lookup_join(self._join_lookup, stream, on, keep_missing=False)

    def inner_join(self, stream: Stream, on: JoinKey = None) -> AsyncIterator[Joined]:
        """Same as :meth:`join`."""
        return self.join(stream, on)

    def left_join(self, stream: Stream, on: JoinKey = None) -> AsyncIterator[Joined]:
        """Left stream-table lookup join: every event of ``stream``, with the table's
        value for its join key or ``None`` when the key is missing."""
        return lookup_join(self._join_lookup, stream, on, keep_missing=True)

    def outer_join(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: an outer join would also emit on table changes. Raises
        :class:`~trio_tables.errors.UnsupportedOperation` naming :meth:`left_join`
        (every event) and :meth:`join` (matching events)."""
        raise UnsupportedOperation(
            "outer_join",
            "stream-table joins are lookups; use table.left_join(stream) for every "
            "event or table.join(stream) for the events whose key is in the table",
        )

    def combine(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported (Faust never implemented it either): raises
        :class:`~trio_tables.errors.UnsupportedOperation` naming the alternatives."""
        raise UnsupportedOperation(
            "combine",
            "run one task per stream in a nursery (they may share tables), or use "
            "table.join(stream) / table.left_join(stream)",
        )

    def contribute_to_stream(self, active: Any) -> None:
        """Faust's hook for stream-side joins (``stream.join(table)``), which do not
        exist here: raises :class:`~trio_tables.errors.UnsupportedOperation` naming the
        table-side join to use."""
        raise UnsupportedOperation(
            "contribute_to_stream",
            "join from the table instead: `async for joined in table.join(stream)` "
            "(or left_join); tables are fed by the manager, not by streams",
        )

    async def remove_from_stream(self, stream: Any) -> None:
        """Faust's hook to undo :meth:`contribute_to_stream`: raises
        :class:`~trio_tables.errors.UnsupportedOperation` (a table-side join ends when
        its ``async for`` loop does)."""
        raise UnsupportedOperation(
            "remove_from_stream",
            "a table.join(stream) / left_join(stream) ends when its `async for` loop "
            "is left; nothing is attached to the stream",
        )

    def clone(self, **kwargs: Any) -> Any:
        """A new, unregistered table of the same class and settings (serializers,
        callbacks, window and window options), with ``kwargs`` overriding them; register
        it with ``manager.add``. A clone with another ``name`` is a separate table with
        its own changelog ``{app_id}-{name}-changelog`` (unless ``changelog_topic=``)."""
        return clone_table(self, kwargs)

    async def need_active_standby_for(self, tp: TP) -> bool:
        """Whether partition ``tp.partition`` needs a standby copy somewhere else for
        this worker to have its data (Faust: ``False`` when the data is accessible
        here): ``False`` for a partition active or kept warm here and for every
        partition of a global table, ``True`` otherwise. Cancellation: nothing to
        cancel (it answers at once)."""
        if self.is_global:
            return False
        return not (tp.partition in self._active or tp.partition in self.standby_progress)

    # -- callbacks --------------------------------------------------------------------------
    def on_recover(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``callback`` to run after each recovery (usable as a decorator)."""
        self._recover_callbacks.append(callback)
        return callback

    def on_changelog_event(self, event: Any) -> Any:
        """Two uses. With a callable: register ``callback(record)`` for every
        changelog record applied, and return it (usable as a decorator; same as
        ``on_changelog_event=``). With a changelog record (Faust's hook): a coroutine
        that calls every registered callback with it, as applying it does.
        Cancellation: propagates into the callback."""
        if callable(event):
            self._changelog_callbacks.append(event)
            return event
        return self._changelog_event(event)

    async def _changelog_event(self, record: Any) -> None:
        for callback in self._changelog_callbacks:
            await call_callback(callback, record)

    async def call_recover_callbacks(self) -> None:
        for callback in self._recover_callbacks:
            await call_callback(callback)

    async def on_recovery_completed(
        self, active: frozenset[int], standby: frozenset[int] = frozenset()
    ) -> None:
        await self.call_recover_callbacks()

    def close(self) -> None:
        self.data.close()

    # -- async with table ----------------------------------------------------------------
    async def __aenter__(self) -> Any:
        """Wait until the table's nursery runs and its assigned partitions are
        recovered. Cancellation: safe, the table keeps running under the manager."""
        await self.manager.wait_until_table_ready(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """The table keeps running until the manager stops."""

    async def on_start(self) -> None:
        """Hook: called when the table's nursery has started."""

    async def on_rebalance(
        self,
        assigned: frozenset[TP],
        revoked: frozenset[TP],
        newly_assigned: frozenset[TP],
        generation_id: int = 0,
    ) -> None:
        """Hook: called by the manager on every rebalance."""
