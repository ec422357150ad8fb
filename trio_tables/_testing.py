"""Test helpers that need no pytest: managers with test settings, producing input, and
waiting for tables to converge. Re-exported by :mod:`trio_tables.testing`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._embedded import BROKER_SETTINGS
from ._manager import TableManager
from ._table import Collection
from ._transport import open_transport
from ._transport._base import TP, OutgoingRecord, RecordMetadata, Transport
from .errors import UnknownTopic

__all__ = [
    "TEST_KAFKA_SETTINGS",
    "create_topic",
    "fresh_memory_url",
    "open_test_manager",
    "produce",
    "transport_options_for",
    "wait_for_table",
    "wait_until_committed",
]

TEST_KAFKA_SETTINGS: Mapping[str, Any] = {**BROKER_SETTINGS, "connect_timeout": 10}
"""Kafka client settings for tests and demos on the embedded broker: its URL's settings
(:data:`~trio_tables._embedded.BROKER_SETTINGS`: Tansu holds each join round for about
half the session timeout, so a short one keeps rebalances at ~2 s; kafka-python's
default 45 s would make them ~23 s) and a 10 s connect timeout."""

_POLL = 0.05  # seconds between two looks at state owned by another task or process


def transport_options_for(broker: str) -> dict[str, Any]:
    """The transport options tests use for ``broker`` (a URL): the short timeouts of
    :data:`TEST_KAFKA_SETTINGS` for ``kafka://``, nothing for ``memory://``."""
    return dict(TEST_KAFKA_SETTINGS) if broker.startswith("kafka://") else {}


def fresh_memory_url(prefix: str = "test") -> str:
    """A URL naming a new in-process broker, ``memory://<prefix>-<random>``."""
    return f"memory://{prefix}-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def open_test_manager(
    broker: str, app_id: str | None = None, **settings: Any
) -> AsyncIterator[TableManager]:
    """``async with open_test_manager(url) as manager:`` a running
    :class:`~trio_tables.TableManager` with test-friendly settings: a unique app id
    unless given, ``commit_interval=0.2``, and for ``kafka://`` the short group timeouts
    of :data:`TEST_KAFKA_SETTINGS`. ``settings`` override any of them."""
    options = {**transport_options_for(broker), **settings.pop("transport_options", {})}
    settings.setdefault("commit_interval", 0.2)
    app = app_id or f"app-{uuid.uuid4().hex[:12]}"
    async with TableManager(app, broker=broker, transport_options=options, **settings) as manager:
        yield manager


@asynccontextmanager
async def _transport(broker: str | Transport) -> AsyncIterator[Transport]:
    if isinstance(broker, str):
        async with open_transport(broker, **transport_options_for(broker)) as transport:
            yield transport
    else:
        yield broker


async def create_topic(broker: str | Transport, topic: str, partitions: int = 4) -> None:
    """Create ``topic`` with ``partitions`` (nothing if it exists with that count)."""
    async with _transport(broker) as transport:
        await transport.create_topic(topic, partitions)


def _key_bytes(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return json.dumps(key).encode()


def _value_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return json.dumps(value).encode()


async def produce(
    broker: str | Transport,
    topic: str,
    records: Iterable[tuple[Any, Any]] | Mapping[Any, Any],
    *,
    partitions: int | None = 4,
    timestamp: int | None = None,
) -> list[RecordMetadata]:
    """Send ``records`` (``(key, value)`` pairs, or a mapping) to ``topic`` and wait for
    the acknowledgements; their metadata, in order.

    Keys that are ``str`` are sent as UTF-8 (what a stream with ``key_type=str``
    decodes), ``bytes`` as they are, other keys as JSON; values that are ``bytes`` as
    they are, others as JSON (a stream's default). Records go to the partition Kafka's
    default partitioner picks for the key. A missing topic is created with
    ``partitions`` (``None``: the topic must exist). ``timestamp`` (ms) is set on every
    record when given.
    """
    pairs = list(records.items() if isinstance(records, Mapping) else records)
    async with _transport(broker) as transport:
        try:
            await transport.describe_topic(topic)
        except UnknownTopic:
            if partitions is None:
                raise
            await transport.create_topic(topic, partitions)
        async with transport.open_producer() as producer:
            deliveries = await producer.send_batch(
                [
                    OutgoingRecord(topic, _value_bytes(v), key=_key_bytes(k), timestamp=timestamp)
                    for k, v in pairs
                ]
            )
            await producer.flush()
    return [delivery.result() for delivery in deliveries]


async def wait_until_committed(
    broker: str | Transport,
    group: str | TableManager,
    topics: Sequence[str] | None = None,
    *,
    timeout: float = 60.0,
) -> dict[TP, int]:
    """Wait until consumer group ``group`` (an app id, or a manager) has committed every
    record that ``topics`` hold now: the workers processed them, and (for trio_tables
    apps) their table changes are in the changelog and in the stores. ``topics``
    defaults to every topic the group has committed offsets for (give them when the group
    may not have committed yet). Works across workers and processes. Returns the end
    offsets waited for; raises ``trio.TooSlowError`` after ``timeout`` seconds.
    """
    group_id = group.app_id if isinstance(group, TableManager) else group
    async with _transport(broker) as transport:
        with trio.fail_after(timeout):
            if topics is None:
                while True:
                    committed = await transport.group_offsets(group_id)
                    if committed:
                        break
                    await trio.sleep(_POLL)  # another process's progress: look again
                topics = sorted({tp.topic for tp in committed})
            tps = []
            for topic in topics:
                count = (await transport.describe_topic(topic)).partitions
                tps += [TP(topic, p) for p in range(count)]
            async with transport.open_restore_consumer() as consumer:
                ends = await consumer.end_offsets(tps)
            while True:
                committed = await transport.group_offsets(group_id)
                if all(ends[tp] == 0 or committed.get(tp, 0) >= ends[tp] for tp in tps):
                    return ends
                await trio.sleep(_POLL)


async def wait_for_table(
    tables: Collection | Sequence[Collection],
    expected: Mapping[Any, Any],
    *,
    timeout: float = 60.0,
) -> None:
    """Wait until the content of ``tables`` (the same table on several workers: their
    active partitions are merged) equals ``expected``. On timeout, raises
    ``AssertionError`` listing the keys that differ."""
    group = [tables] if isinstance(tables, Collection) else list(tables)
    deadline = trio.current_time() + timeout
    while True:
        merged: dict[Any, Any] = {}
        for table in group:
            merged.update(_content(table))
        if merged == dict(expected):
            return
        if trio.current_time() >= deadline:
            raise AssertionError(
                f"table {group[0].name!r} did not converge within {timeout:g}s: "
                + _difference(merged, expected)
            )
        await trio.sleep(min(_POLL, max(deadline - trio.current_time(), 0)))


def _content(table: Collection) -> dict[Any, Any]:
    return {
        key: value
        for partition in sorted(table.active_partitions)
        for key, value in table._partition_items(partition)
    }


def _difference(actual: Mapping[Any, Any], expected: Mapping[Any, Any], limit: int = 10) -> str:
    lines = []
    for key in list(dict.fromkeys([*expected, *actual])):
        want, got = expected.get(key, "<missing>"), actual.get(key, "<missing>")
        if want != got:
            lines.append(f"{key!r}: expected {want!r}, got {got!r}")
    shown = "; ".join(lines[:limit])
    more = len(lines) - limit
    return (
        shown
        + (f"; and {more} more" if more > 0 else "")
        + f" ({len(actual)} keys, {len(expected)} expected)"
    )
