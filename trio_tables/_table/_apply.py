"""What a table does for its changelog consumer and recovery tasks: :class:`ChangelogApply`.

A mixin of :class:`~trio_tables.Collection`: applying changelog records to the store
(restores, standby copies, global tables), resetting a partition to rebuild it, the
store-ahead check, and the progress events that displays and waiters follow. The restore
loop itself (positions, end offsets, batches) is in :mod:`trio_tables._recovery`.

Threads: persistent stores are written in a worker thread that touches only the store;
the table's bookkeeping (``local_offsets`` replaced whole, read caches, windows) happens
on the Trio thread after the write returns.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import trio

from .._changelog import committed_records, decode_stream_time
from .._codecs import Codec
from .._store import Store
from .._store._base import MISSING
from .._transport._base import TP, Record
from ._callbacks import call_callback
from ._partition import PartitionState
from ._windowed import STREAM_TIME, Windowing

__all__ = ["ChangelogApply", "last_values"]

_KEY_AND_VALUE = operator.itemgetter(3, 4)  # (Record.key, Record.value)


def last_values(
    records: list[Record],
    decode_key: Callable[[bytes], Any],
    decode_value: Callable[[bytes], Any],
) -> dict[Any, Any]:
    """The last value of each key of ``records`` (in offset order), decoded (``None``:
    deleted). Each distinct key and its last value are decoded once: a changelog
    without coalescing repeats hot keys (the word count's 200k records hold 10k keys),
    and decoding is most of what replaying costs. So a record a later one of its key
    replaces in the batch is never decoded (an undecodable value raises nothing: it
    would change nothing). Of distinct bytes that decode to one key (a non-canonical
    encoding), the last written wins."""
    last = dict(map(_KEY_AND_VALUE, records))
    keys = {raw: None if raw is None else decode_key(raw) for raw in last}
    if len(set(keys.values())) < len(keys):
        # Distinct bytes of one key: the last of them wins, in offset order.
        last = {keys[raw]: value for raw, value in map(_KEY_AND_VALUE, records)}
        keys = {key: key for key in last}
    return {
        keys[raw]: None if value is None else decode_value(value) for raw, value in last.items()
    }


def _decoded(
    record: Record, decode_key: Callable[[bytes], Any], decode_value: Callable[[bytes], Any]
) -> tuple[Any, Any]:
    key, value = record.key, record.value
    return (
        None if key is None else decode_key(key),
        None if value is None else decode_value(value),
    )


class ChangelogApply:
    """Changelog application and recovery support (mixed into ``Collection``)."""

    # Provided by Collection.
    name: str
    logger: logging.Logger
    data: Store
    key_codec: Codec
    value_codec: Codec
    local_offsets: dict[int, int]
    _states: dict[int, PartitionState]
    _windowing: Windowing | None
    _changelog_callbacks: list[Callable[..., Any]]
    _tailer_caught_up: trio.Event
    _progress_event: trio.Event

    # -- recovery (driven by _recovery.py) ---------------------------------------------
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
        callbacks = self._changelog_callbacks
        # Recovery replays every record of a changelog through here: no work per record
        # that the batch does not need.
        kept = records if committed is None else committed_records(records, committed)
        if callbacks:
            for record in kept:
                key, value = _decoded(record, decode_key, decode_value)
                changes[key] = value
                for callback in callbacks:
                    await call_callback(callback, record)
        else:
            changes = last_values(kept, decode_key, decode_value)
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
