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
    SourceOffset,
    changelog_topic_name,
    decode_stream_time,
    source_of,
    uncommitted_filter,
)
from .._codecs import Codec, resolve_codec, trivially_encodable
from .._partitioner import partition_of
from .._store import Store, open_store
from .._store._base import MISSING
from .._stream import Stream, current_event
from .._transport._base import TP, OutgoingRecord, Record
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
from ._partition import NOT_CACHED, PartitionState, PersistBatch
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
        # partition -> its in-memory layers (overlay, persisting, changelog buffer, read
        # cache): see _partition.py.
        self._states: dict[int, PartitionState] = {}
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
    def _state(self, partition: int) -> PartitionState:
        state = self._states.get(partition)
        if state is None:
            state = self._states[partition] = PartitionState(
                partition, coalesce=self.manager.coalesce_changelog
            )
        return state

    def _lookup(self, partition: int, key: Any) -> Any:
        state = self._states.get(partition) or self._state(partition)
        value = state.lookup(key)
        if value is not NOT_CACHED:
            return value
        data = self.data
        if not data.persistent:
            return data.get(partition, key)
        # A persistent store's partition starts its read cache on the first miss: a
        # complete one when the store holds nothing for it (no store read for new keys;
        # a read can cost a GIL hand-over of milliseconds while another thread polls).
        if state.cache is None and state.start_complete_cache(
            partition not in data.partitions()
        ):
            return MISSING
        value = data.get(partition, key)
        state.remember(((key, value),))
        return value

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
        items: Iterator[tuple[Any, Any]] = self._state(partition).merged(
            self.data.items(partition)
        )
        return items

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
        stream_time = None
        if self._windowing is not None:
            self._windowing.track(partition, key, deleted=value is None)
            stream_time = self._windowing.stream_time.get(partition)
        (self._states.get(partition) or self._state(partition)).put(
            key,
            value,
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
        self._state(partition).buffer.add(key, (value, source_of(source), None))

    # -- commit cycle (called by the manager) ---------------------------------------------
    def take_changes(
        self, busy: frozenset[int] = frozenset()
    ) -> tuple[list[OutgoingRecord], list[int]]:
        """Start a commit cycle: the changelog records to send, and the partitions whose
        overlay moved to the persisting layer. Partitions in ``busy`` (an event of theirs
        is half processed) keep their changes for a later cycle."""
        records: list[OutgoingRecord] = []
        moved = []
        topic, key_codec, value_codec = self._changelog_topic_name, self.key_codec, self.value_codec
        for partition, state in self._states.items():
            if partition in busy:
                continue
            had_overlay = bool(state.overlay)
            records.extend(state.prepare(topic, key_codec, value_codec))
            if had_overlay:
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
        for partition in set(self._states) | set(last_offsets) | set(source_offsets):
            sources = source_offsets.get(partition)
            batch = self._state(partition).flush_batch(
                last_offsets.get(partition),
                None if sources is None else dict(sources),
                self._window_meta(partition),
            )
            if batch is not None:
                plan.append(batch)
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
        persistent = self.data.persistent
        for batch in plan:
            self._state(batch.partition).flushed(batch, persistent=persistent)
            if batch.offset is not None:
                offsets[batch.partition] = batch.offset
        # Replaced whole: kafka-python's IO thread reads it (the assignor's freshness).
        self.local_offsets = offsets

    def uncommitted_partitions(self) -> frozenset[int]:
        """Partitions with changes not written to the store yet."""
        return frozenset(p for p, state in self._states.items() if state.has_changes)

    def discard_uncommitted(self, partitions: set[int] | frozenset[int]) -> None:
        """Forget changes of ``partitions`` that were not persisted (lost partitions)."""
        for partition in partitions:
            state = self._states.get(partition)
            if state is not None:
                state.discard()

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
            state = self._states.get(partition)
            if state is not None:  # the store may change hands: forget what it held
                state.cache, state.cache_complete = None, False
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
        self._states.clear()
        if self._windowing is not None:
            self._windowing.index.clear()
            self._windowing.stream_time.clear()

    # -- recovery (driven by _recovery.py) ---------------------------------------------
    @property
    def saved_offsets(self) -> Mapping[int, int]:
        """partition -> last changelog offset the store holds (read without I/O)."""
        return self.local_offsets

    def check_store_not_ahead(self, partition: int, committed: Mapping[str, int]) -> bool:
        """Whether the store's data of ``partition`` includes events past the group's
        ``committed`` source offsets (the worker stopped between persisting and
        committing): then the partition must be rebuilt from the changelog (logged)."""
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
        return bool(ahead)

    async def reset_partition(self, partition: int) -> None:
        """Forget ``partition``'s local data (store, offsets, layers, windows): it is
        rebuilt from the changelog. Cancellation: the store reset finishes (in a worker
        thread for persistent stores); the table forgets the partition either way."""
        try:
            await self._run_store(self.data.reset_partition, partition)
        finally:
            self.local_offsets = {p: o for p, o in self.local_offsets.items() if p != partition}
            self._states.pop(partition, None)
            if self._windowing is not None:
                self._windowing.forget(partition)

    async def record_sources(self, partition: int, sources: Mapping[str, int]) -> None:
        """Record in the store that ``partition``'s data is consistent with the source
        offsets ``sources`` (after a restore, even if nothing was replayed)."""
        if dict(sources) != self.data.persisted_source_offsets(partition):
            await self._run_store(
                partial(self.data.write_batch, source_offsets=sources), partition, {}, None
            )

    def tailing_started(self) -> None:
        """The changelog consumer follows new standby copies: not caught up until
        :meth:`tailing_caught_up`."""
        if self._tailer_caught_up.is_set():
            self._tailer_caught_up = trio.Event()

    def tailing_caught_up(self) -> None:
        """The changelog consumer read up to the end offsets seen when it started."""
        self._tailer_caught_up.set()

    def notify_progress(self) -> None:
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
        state = self._states.get(partition)
        if state is not None and state.cache is not None:
            state.remember((k, MISSING if v is None else v) for k, v in changes.items())
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
