"""``GET /tables/{table}/{key}``: where a key is answered, and the local answer.

:func:`route` decides, for one request, between answering here (the key's partition is
recovered and processed by this worker, or the table is global and caught up),
forwarding to the worker that owns the partition (as the assignor's latest layout says,
the one :meth:`TableManager.metadata_for_key` reads), and ``503`` with ``Retry-After``
(the partition is moving or recovering: no owner can answer with a current value). A
forwarded request is never forwarded again: a worker that receives one for a partition
it does not serve answers 503 (the layouts of the two disagree during a rebalance).

The key in the URL is decoded with the table's key codec: ``str`` (and ``bytes``) keys
as they are, other keys as JSON (``/tables/t/42``, ``/tables/t/[1,"a"]``); a table
without ``key_type`` reads JSON when the text is JSON, else the text as a string.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from .._codecs import CodecError, JsonCodec, _to_jsonable
from .._store._base import MISSING
from .._table import Collection
from .._table._values import TOMBSTONE
from ._host import WebHost

__all__ = ["Answer", "Forward", "decode_key", "route"]

RETRY_AFTER = "1"


@attrs.frozen
class Answer:
    """A response to send as it is."""

    status: int
    body: Any  # a JSON-able value
    headers: tuple[tuple[str, str], ...] = ()

    def encoded(self) -> bytes:
        return json.dumps(_to_jsonable(self.body), default=str).encode()


@attrs.frozen
class Forward:
    """Ask ``host`` (``host:port``), the owner of ``partition``."""

    host: str
    partition: int


def unavailable(message: str, partition: int | None = None) -> Answer:
    return Answer(
        503,
        {"error": message, "partition": partition},
        (("retry-after", RETRY_AFTER),),
    )


def decode_key(table: Collection, text: str) -> Any:
    """The key ``text`` names in ``table`` (see the module docstring); ``ValueError``
    saying what is wrong when it is not a key of the table."""
    key_type = table.key_type
    if key_type is str:
        return text
    if key_type is bytes:
        return text.encode()
    windowing = table._windowing
    codec = windowing.inner_key_codec if windowing is not None else table.key_codec
    if not isinstance(codec, JsonCodec):
        return text if key_type is None else codec.decode(text.encode())
    try:
        return codec.decode(text.encode())
    except CodecError as exc:
        if key_type is None:
            return text
        raise ValueError(
            f"key {text!r} of table {table.name!r} is not a JSON "
            f"{getattr(key_type, '__name__', key_type)}: {exc}"
        ) from None


def _window_rows(table: Collection, partition: int, key: Any, which: str) -> list[dict[str, Any]]:
    windowing = table._windowing
    assert windowing is not None
    span = windowing.span
    if which == "all":
        starts = sorted(
            start
            for start, keys in windowing.index.get(partition, {}).items()
            if key in keys
        )
    else:
        if windowing.expiry == "wall_clock" or partition not in windowing.stream_time:
            now = windowing.now_ms()
        else:
            now = windowing.stream_time[partition]
        starts = [windowing.window.current(now)[0]]
    rows = []
    for start in starts:
        raw = table._lookup(partition, (key, start))
        if raw is not MISSING and raw is not TOMBSTONE:
            rows.append({"start": start, "end": start + span, "value": raw})
    return rows


def local_answer(table: Collection, partition: int, key: Any, window: str) -> Answer:
    """The value of ``key`` read here (its partition is served here)."""
    where = {"key": key, "partition": partition}
    if table._windowing is not None:
        rows = _window_rows(table, partition, key, window)
        if not rows:
            return Answer(404, {"error": f"no {window} window of this key", **where})
        return Answer(200, rows if window == "all" else rows[0])
    with table.partition(partition):
        raw = table._read(key)
    if raw is MISSING or raw is TOMBSTONE:
        return Answer(404, {"error": "no such key", **where})
    return Answer(200, raw)


def route(
    host: WebHost, table_name: str, key_text: str, *, window: str, forwarded: bool
) -> Answer | Forward:
    """What to do with ``GET /tables/{table_name}/{key_text}?window=...``."""
    table = host.tables.get(table_name)
    if table is None:
        return Answer(404, {"error": f"no table {table_name!r}", "tables": sorted(host.tables)})
    if window not in ("current", "all"):
        return Answer(400, {"error": f"window must be 'current' or 'all', not {window!r}"})
    try:
        key = decode_key(table, key_text)
    except (ValueError, CodecError) as exc:
        return Answer(400, {"error": str(exc)})
    if not table.partitions:
        return unavailable("the table's partition count is not known yet")
    try:
        partition = table.partition_for_key((key, 0) if table._windowing is not None else key)
    except (TypeError, ValueError) as exc:
        return Answer(400, {"error": str(exc)})
    supervisor = host._supervisor
    if supervisor.is_stopped:
        return unavailable("this worker is stopping", partition)
    if table.is_global:
        if not table.standbys_caught_up:
            return unavailable("the global table is still catching up", partition)
        return local_answer(table, partition, key, window)
    if partition in host._ledger.ready and partition in table.active_partitions:
        return local_answer(table, partition, key, window)
    owner = host._assignor.view.active_hosts.get(partition)
    if forwarded or owner is None or owner == host._assignor.host:
        return unavailable(
            f"partition {partition} is being rebalanced or recovered; ask again", partition
        )
    return Forward(owner, partition)
