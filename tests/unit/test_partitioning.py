"""Issue 13 point 3: ``partition_for_key``, ``metadata_for_key``, ``manager.send`` and
Kafka's default partitioner (murmur2 of the key bytes as sent) agree, with the default
codecs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio
from kafka.partitioner.default import DefaultPartitioner

import trio_tables
from trio_tables import TableManager
from trio_tables._partitioner import key_bytes
from trio_tables._transport._base import OutgoingRecord
from trio_tables.errors import TableKeyTypeError

PARTITIONS = 4
KEYS: list[Any] = [f"user-{i}" for i in range(12)] + [b"raw", 7, ("a", 1), -3]


def _url() -> str:
    return f"memory://part-{uuid.uuid4().hex[:12]}"


class _Cluster:
    """The metadata kafka-python's partitioner reads: one topic of PARTITIONS."""

    def topics(self) -> set[str]:
        return {"out"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))


def _kafka_python_partition(key: Any) -> int:
    """Where kafka-python's default partitioner puts ``key`` sent as ``key_bytes``."""
    as_sent = key_bytes(key)
    partition: int = DefaultPartitioner().partition("out", key, as_sent, None, b"", _Cluster())
    return partition


def test_key_bytes_are_the_bytes_send_uses() -> None:
    assert key_bytes("a") == b"a"  # not the JSON form b'"a"'
    assert key_bytes(b"\x00") == b"\x00"
    assert key_bytes(7) == b"7"
    assert key_bytes(("a", 1)) == b'["a",1]'
    with pytest.raises(TypeError):
        key_bytes(None)


async def test_partition_for_key_agrees_with_send_metadata_and_kafka_python() -> None:
    url = _url()
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("out", PARTITIONS)
    all_partitions = list(range(PARTITIONS))
    async with TableManager("part", broker=url) as manager:
        table = manager.Table("t", partitions=PARTITIONS)
        sent = {}
        for key in KEYS:
            delivery = await manager.send("out", key, {"n": 1})
            await delivery.wait()
            sent[key] = delivery.result().partition
    for key in KEYS:
        expected = _kafka_python_partition(key)
        assert table.partition_for_key(key) == expected == sent[key], key
        assert manager.metadata_for_key(table, key).partition == expected
    # Not a coincidence: the keys spread over every partition.
    assert {table.partition_for_key(key) for key in KEYS} == set(all_partitions)


async def test_a_producers_str_keys_land_where_partition_for_key_says() -> None:
    """The issue's case: 12 keys produced with Kafka's default partitioner (raw UTF-8
    bytes, as a Kafka producer sends a str key), 10 of which partition_for_key
    pointed elsewhere because it hashed the JSON form."""
    url = _url()
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", PARTITIONS)
        async with transport.open_producer() as producer:
            deliveries = await producer.send_batch(
                [OutgoingRecord("src", b"1", key=f"k{i}".encode()) for i in range(12)]
            )
            await producer.flush()
    placed = {f"k{i}": d.result().partition for i, d in enumerate(deliveries)}
    async with TableManager("part", broker=url) as manager:
        table = manager.Table("t", partitions=PARTITIONS)
        assert {k: table.partition_for_key(k) for k in placed} == placed
        await trio.lowlevel.checkpoint()


async def test_use_partitioner_table_written_with_the_event_key_owns_its_partition(
    autojump_clock: Any,
) -> None:
    """Two workers; a use_partitioner=True table written with each event's str key
    raised PartitionNotOwned on 6 of 10 events: the key's partition is the event's."""
    url = _url()
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [OutgoingRecord("src", b"1", key=f"k{i}".encode()) for i in range(10)]
            )
            await producer.flush()
    seen: dict[str, int] = {}
    done = trio.Event()

    async def worker(name: str, started: trio.Event) -> None:
        async with TableManager("two", broker=url, commit_interval=0.2) as manager:
            table = manager.Table("by_key", default=int, use_partitioner=True)
            async with manager.stream("src", key_type=str) as events:
                started.set()
                async for event in events:
                    assert table.partition_for_key(event.key) == event.partition
                    table[event.key] += 1
                    seen[event.key] = event.partition
                    if len(seen) == 10:
                        done.set()

    async with trio.open_nursery() as nursery:
        first, second = trio.Event(), trio.Event()
        nursery.start_soon(worker, "a", first)
        await first.wait()
        nursery.start_soon(worker, "b", second)
        await done.wait()
        nursery.cancel_scope.cancel()
    assert sorted(seen) == sorted(f"k{i}" for i in range(10))


async def test_a_key_without_bytes_is_a_key_error() -> None:
    async with TableManager("part", broker=_url()) as manager:
        table = manager.Table("t", partitions=PARTITIONS, use_partitioner=True)
        with pytest.raises(TableKeyTypeError, match="partition"):
            table.partition_for_key(object())
        await trio.lowlevel.checkpoint()
