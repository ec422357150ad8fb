"""``sqlite://PATH``: one SQLite file per table through sqlitedict, in WAL mode.

Each partition is its own SQLite table (``p<N>``) in the table's file; its last applied
changelog offset and the source offsets it is consistent with are rows of that same table
(text keys ``"__offset__"`` and ``"__source__"``, which never equal an encoded key: those
are blobs). Data and offsets therefore commit in one SQLite transaction.

sqlitedict runs each connection on a thread of its own and reports errors only on a
later call; :meth:`SqliteStore.write_batch` commits with ``blocking=True`` so that an
error surfaces there, and the batch counts as written only if that commit returned. It
writes up to 1,000 rows per statement (``_ROWS_PER_STATEMENT``), not a statement per row:
each statement gives the GIL up and must get it back from the busy Trio thread.

:meth:`SqliteStore.get` (a table's read of a key its read cache does not know, on the
Trio thread) does not queue behind those writes on sqlitedict's thread: it reads with a
connection of its own, which in WAL mode sees every committed write and never waits for
the writer (a few microseconds, not a thread hop of ~30 us to milliseconds).

Threads: a store is used from the Trio thread (reads) and from worker threads (the
committer's writes, restores, resets) at the same time, and each SqliteDict runs a
thread of its own that only touches its own connection. Partitions are opened lazily by
whichever thread comes first: ``_dicts``, ``_selects`` and ``_on_disk`` hold immutable
values replaced whole under ``_lock`` (read without it), and ``_reader`` is created
under it. The reader connection may be used by several threads (SQLite serialises
calls on one connection; ``sqlite3.threadsafety`` is 3 in the supported builds).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from .._codecs import Codec
from ._base import MISSING

__all__ = ["SqliteStore"]

_OFFSET_KEY = "__offset__"
_SOURCE_KEY = "__source__"
_META_KEY = "__meta__"
_PREFIX = "p"


# Rows per statement: a write of many rows is a few statements of many rows each, not
# one statement per row (executemany), because sqlite3 gives the GIL up around every
# statement step, and getting it back while the Trio thread runs Python takes up to
# the interpreter's switch interval (5 ms): 125k rows written by executemany beside a
# busy thread took 237 s, in statements of 1,000 rows 1.1 s. 1,000 rows are 2,000
# parameters: SQLite before 3.32 allowed 999.
_ROWS_PER_STATEMENT = 1000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 499


@functools.lru_cache(maxsize=64)
def _statement(head: str, row: str, rows: int, tail: str) -> str:
    """``head``, ``rows`` comma-separated copies of ``row``, ``tail``."""
    return head + ",".join((row,) * rows) + tail


def _identity(value: Any) -> Any:
    return value


def _to_blob(value: bytes) -> Any:
    return sqlite3.Binary(value)


class SqliteStore:
    persistent = True

    def __init__(self, path: Path, key_codec: Codec, value_codec: Codec) -> None:
        self.path = path
        self._key_codec = key_codec
        self._value_codec = value_codec
        # The Trio thread and worker threads open partitions: the three below are
        # replaced whole under _lock (copy on write) and read without it.
        self._lock = threading.Lock()
        self._dicts: Mapping[int, SqliteDict] = {}
        self._selects: Mapping[int, str] = {}
        existing = SqliteDict.get_tablenames(str(path)) if path.exists() else []
        self._on_disk = frozenset(
            int(name[len(_PREFIX) :])
            for name in existing
            if name.startswith(_PREFIX) and name[len(_PREFIX) :].isdigit()
        )
        self._reader: sqlite3.Connection | None = None  # created under _lock

    def _dict(self, partition: int) -> SqliteDict:
        table = self._dicts.get(partition)
        if table is not None:
            return table
        with self._lock:  # one SqliteDict per partition, whichever thread opens it
            table = self._dicts.get(partition)
            if table is None:
                table = SqliteDict(
                    str(self.path),
                    tablename=f"{_PREFIX}{partition}",
                    journal_mode="WAL",
                    autocommit=False,
                    encode=_to_blob,
                    decode=bytes,
                    encode_key=_identity,
                    decode_key=_identity,
                    outer_stack=False,
                )
                self._dicts = {**self._dicts, partition: table}
                self._on_disk = self._on_disk | {partition}
        return table

    def _select(self, partition: int) -> str:
        # The partition's table exists once its SqliteDict was opened (created and
        # committed by sqlitedict).
        tablename = self._dict(partition).tablename
        with self._lock:
            select = self._selects.get(partition)
            if select is None:
                select = f'SELECT value FROM "{tablename}" WHERE key = ? LIMIT 1'
                self._selects = {**self._selects, partition: select}
        return select

    def _open_reader(self) -> sqlite3.Connection:
        with self._lock:
            if self._reader is None:
                # Autocommit: every SELECT is its own read transaction, so it sees the
                # latest commit.
                self._reader = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
            return self._reader

    def get(self, partition: int, key: Any) -> Any:
        if partition not in self._on_disk:
            return MISSING
        select = self._selects.get(partition) or self._select(partition)
        reader = self._reader or self._open_reader()
        row = reader.execute(select, (self._key_codec.encode(key),)).fetchone()
        if row is None:
            return MISSING
        return self._value_codec.decode(bytes(row[0]))

    def items(self, partition: int) -> Iterator[tuple[Any, Any]]:
        if partition not in self._on_disk:
            return
        decode_key, decode_value = self._key_codec.decode, self._value_codec.decode
        for key, raw in self._dict(partition).items():
            if isinstance(key, bytes):
                yield decode_key(key), decode_value(raw)

    def count(self, partition: int) -> int:
        if partition not in self._on_disk:
            return 0
        table = self._dict(partition)
        return len(table) - sum(key in table for key in (_OFFSET_KEY, _SOURCE_KEY, _META_KEY))

    def partitions(self) -> frozenset[int]:
        return frozenset(self._on_disk)

    def write_batch(
        self,
        partition: int,
        changes: Mapping[Any, Any],
        offset: int | None,
        *,
        source_offsets: Mapping[str, int] | None = None,
        meta: Mapping[str, int] | None = None,
    ) -> None:
        table = self._dict(partition)
        encode_key, encode_value = self._key_codec.encode, self._value_codec.encode
        upserts: list[Any] = []  # key, value, key, value, ...: a statement's parameters
        deletes: list[bytes] = []
        for key, value in changes.items():
            if value is None:
                deletes.append(encode_key(key))
            else:
                upserts += (encode_key(key), encode_value(value))
        if offset is not None:
            upserts += (_OFFSET_KEY, b"%d" % offset)
        if source_offsets is not None:
            upserts += (_SOURCE_KEY, json.dumps(dict(source_offsets), sort_keys=True).encode())
        if meta:
            merged = {**self.persisted_meta(partition), **meta}
            upserts += (_META_KEY, json.dumps(merged, sort_keys=True).encode())
        upsert = f'REPLACE INTO "{table.tablename}" (key, value) VALUES '
        for start in range(0, len(upserts), 2 * _ROWS_PER_STATEMENT):
            chunk = upserts[start : start + 2 * _ROWS_PER_STATEMENT]
            table.conn.execute(_statement(upsert, "(?,?)", len(chunk) // 2, ""), chunk)
        delete = f'DELETE FROM "{table.tablename}" WHERE key IN ('
        for start in range(0, len(deletes), _ROWS_PER_STATEMENT):
            chunk = deletes[start : start + _ROWS_PER_STATEMENT]
            table.conn.execute(_statement(delete, "?", len(chunk), ")"), chunk)
        table.commit(blocking=True)

    def persisted_offset(self, partition: int) -> int | None:
        if partition not in self._on_disk:
            return None
        try:
            return int(self._dict(partition)[_OFFSET_KEY])
        except KeyError:
            return None

    def persisted_source_offsets(self, partition: int) -> dict[str, int]:
        if partition not in self._on_disk:
            return {}
        try:
            raw = self._dict(partition)[_SOURCE_KEY]
        except KeyError:
            return {}
        return {str(k): int(v) for k, v in json.loads(raw).items()}

    def persisted_meta(self, partition: int) -> dict[str, int]:
        if partition not in self._on_disk:
            return {}
        try:
            raw = self._dict(partition)[_META_KEY]
        except KeyError:
            return {}
        return {str(k): int(v) for k, v in json.loads(raw).items()}

    def reset_partition(self, partition: int) -> None:
        if partition not in self._on_disk:
            return
        table = self._dict(partition)
        table.clear()
        table.commit(blocking=True)

    def close(self) -> None:
        with self._lock:
            reader, self._reader = self._reader, None
            tables, self._dicts, self._selects = self._dicts, {}, {}
        if reader is not None:
            reader.close()
        for table in tables.values():
            table.close()
