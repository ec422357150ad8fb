"""Finding an app's tables on a broker and rebuilding them from their changelogs, as a
recovering worker would, without joining the app's consumer group."""

from __future__ import annotations

import json
from typing import Any

import attrs

from .._manager import TableManager
from .._recovery import restore
from .._table import RecoveryRequest, Table
from .._table._windowed import WindowedKeyCodec
from .._transport._base import TP, Transport
from ._bars import RecoveryBars
from ._common import CHANGELOG_SUFFIX, UnknownApp, UnknownTable

__all__ = ["AnyCodec", "app_tables", "changelog_topic", "rebuild_table"]


def _tables_in(topics: frozenset[str], app: str) -> dict[str, str]:
    prefix = f"{app}-"
    return {
        topic[len(prefix) : -len(CHANGELOG_SUFFIX)]: topic
        for topic in sorted(topics)
        if topic.startswith(prefix)
        and topic.endswith(CHANGELOG_SUFFIX)
        and len(topic) > len(prefix) + len(CHANGELOG_SUFFIX)
    }


async def app_tables(transport: Transport, app: str) -> dict[str, str]:
    """The app's tables (name -> changelog topic), from the topics on the broker
    (``<app>-<table>-changelog``, the default changelog names)."""
    topics = await transport.list_topics()
    tables = _tables_in(topics, app)
    if not tables:
        changelogs = sorted(t for t in topics if t.endswith(CHANGELOG_SUFFIX))
        raise UnknownApp(app, transport.url, changelogs)
    return tables


async def changelog_topic(transport: Transport, app: str, table: str) -> str:
    tables = await app_tables(transport, app)
    if table not in tables:
        raise UnknownTable(app, table, sorted(tables))
    return tables[table]


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


@attrs.frozen
class _HashableJson:
    """JSON with lists as tuples (decode only: used inside :class:`AnyCodec`)."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def decode(self, data: bytes) -> Any:
        return _hashable(json.loads(data))


_HASHABLE_JSON = _HashableJson()


@attrs.frozen
class AnyCodec:
    """Decodes what an app may have written: JSON (lists become tuples, so they stay
    usable as keys), a windowed table's ``(key, window start)``, else UTF-8 text, else
    the bytes."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def decode(self, data: bytes) -> Any:
        try:
            return _HASHABLE_JSON.decode(data)
        except ValueError:
            pass
        try:
            # A windowed table's key: the key's JSON, then the window start (never valid
            # JSON as a whole: the start's first byte is a control character for any
            # timestamp before the year 4 million).
            return WindowedKeyCodec(_HASHABLE_JSON).decode(data)
        except ValueError:
            pass
        try:
            return bytes(data).decode()
        except UnicodeDecodeError:
            return bytes(data)


async def rebuild_table(
    transport: Transport,
    app: str,
    name: str,
    topic: str,
    *,
    bars: RecoveryBars | None = None,
    label: str = "",
) -> Table:
    """Read the table's whole changelog into a new in-memory :class:`Table` and return
    it with every partition active. Records caused by events that the app's group has
    not committed are left out, exactly as a recovering worker leaves them out."""
    partitions = (await transport.describe_topic(topic)).partitions
    committed: dict[TP, int | None] = dict(await transport.group_offsets(app))
    settings = TableManager(app, broker=transport.url)  # never entered: names only
    table = Table(
        settings,
        name,
        partitions=partitions,
        changelog_topic=topic,
        key_serializer=AnyCodec(),
        value_serializer=AnyCodec(),
    )
    if bars is not None:
        bars.watch(label, table)
    everything = frozenset(range(partitions))
    async with transport.open_restore_consumer(max_poll_records=10_000) as consumer:
        await restore(table, consumer, RecoveryRequest(everything, committed))
    if bars is not None:
        bars.refresh()
    table.activate(everything)
    return table
