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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import attrs
import trio

from .._changelog import (
    SourceOffset,
    changelog_topic_name,
    source_of,
)
from .._codecs import Codec, resolve_codec, trivially_encodable
from .._partitioner import partition_of
from .._store import Store, open_store
from .._store._base import MISSING
from .._stream import current_event
from .._transport._base import TP, OutgoingRecord
from .._windows import (
    Window,
)
from ..errors import PartitionNotOwned, TableWriteOutsideStream
from ._apply import ChangelogApply
from ._checks import check_key, check_value, partition_key_error
from ._faust import FaustPlumbing
from ._host import TableHost
from ._options import check_options, from_schema
from ._partition import NOT_CACHED, PartitionState, PersistBatch
from ._values import IMMUTABLE_TYPES, TOMBSTONE
from ._values import detached as _detached
from ._window_setup import WindowSetup
from ._windowed import STREAM_TIME, Windowing

__all__ = [
    "TOMBSTONE",
    "Collection",
    "RecoveryRequest",
    "RestoreReport",
    "StandbyUpdate",
]

logger = logging.getLogger("trio_tables.table")




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


class Collection(ChangelogApply, WindowSetup, FaustPlumbing):
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
        # Opened by open() when the table starts, or at first use (no I/O here).
        self._data: Store | None = None
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
        # writes it. Read from the store when it is opened.
        self.local_offsets: dict[int, int] = {}
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
    def pending_changes(self) -> int:
        """Changelog records the next commit cycle would send (one per key changed
        with coalescing, one per write without)."""
        return sum(len(state.buffer) for state in self._states.values())

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
                state.forget_store()
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

    # -- the store --------------------------------------------------------------------
    @property
    def data(self) -> Store:
        """The table's local store (opened on first use if :meth:`open` did not)."""
        data = self._data
        if data is None:
            data = self._attach(self._open_store())
        return data

    @data.setter
    def data(self, store: Store) -> None:
        self._attach((store, _saved_offsets(store)))

    def _open_store(self) -> tuple[Store, dict[int, int]]:
        """Open the store and read its saved changelog offsets. Blocking (disk) for a
        persistent store; touches no table state, so any thread may run it."""
        store = open_store(
            self.store_url,
            name=f"{self.manager.app_id}-{self.name}",
            key_codec=self.key_codec,
            value_codec=self.value_codec,
        )
        return store, _saved_offsets(store)

    def _attach(self, opened: tuple[Store, dict[int, int]]) -> Store:
        store, self.local_offsets = opened
        self._data = store
        return store

    async def open(self) -> None:
        """Open the store when the table starts: a persistent one in a worker thread
        (disk I/O stays off the Trio thread), a memory one at once (no thread: tests on
        trio's MockClock stay deterministic). Cancellation: the open finishes in its
        thread; a store opened after the caller was cancelled is attached all the same."""
        if self._data is not None:
            return
        if self.store_url.partition("://")[0] == "memory":
            self._attach(self._open_store())
        else:
            self._attach_unless_open(await trio.to_thread.run_sync(self._open_store))

    def _attach_unless_open(self, opened: tuple[Store, dict[int, int]]) -> None:
        if self._data is None:
            self._attach(opened)
        else:  # a first use opened it meanwhile
            opened[0].close()

    def reopen_store(self) -> None:
        """Close the store; the next use opens it again (after a codec change)."""
        if self._data is not None:
            self._data.close()
            self._data = None

    def close(self) -> None:
        if self._data is not None:
            self._data.close()


def _saved_offsets(store: Store) -> dict[int, int]:
    return {
        p: offset for p in store.partitions() if (offset := store.persisted_offset(p)) is not None
    }
