"""``Stream.take()`` on the embedded broker: a word count through batches is exact, its
changelog rebuilds the same table in a fresh worker, and a clean stop commits every
batch."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import trio_tables
from trio_tables import TableManager
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import TP, OutgoingRecord

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {**BROKER_SETTINGS}
PARTITIONS = 4


async def test_word_count_through_take_is_exact_and_recoverable(
    kafka_broker: Any, unique_name: Any
) -> None:
    url = kafka_broker.url
    topic, app = unique_name("words"), unique_name("app")
    words = [f"w{i % 17}" for i in range(1500)]
    async with trio_tables.open_transport(url, **SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch([OutgoingRecord(topic, b"{}", key=w.encode()) for w in words])
            await producer.flush()
    seen: dict[str, int] = {}  # word -> its source partition
    batches = 0
    async with TableManager(
        app, broker=url, commit_interval=0.5, transport_options=SETTINGS
    ) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str) as events:
            processed = 0
            async for batch in events.take(100, within=0.2):
                batches += 1
                for event in batch:
                    counts[event.key] += 1
                    seen[event.key] = event.partition
                processed += len(batch)
                if processed == len(words):
                    break
            table = counts.as_dict()
    assert table == Counter(words)
    assert batches >= len(words) // 100
    async with trio_tables.open_transport(url, **SETTINGS) as transport:
        committed = await transport.group_offsets(app)
    assert sum(committed.values()) == len(words)
    assert set(committed) <= {TP(topic, p) for p in range(PARTITIONS)}
    # A fresh worker rebuilds the same table from the changelog, each word in the
    # partition of its source records (what the writes in `for event in batch` chose).
    async with TableManager(app, broker=url, transport_options=SETTINGS) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str):
            await manager.wait_until_recovered()
            assert counts.as_dict() == Counter(words)
            for partition in range(PARTITIONS):
                with counts.partition(partition):
                    assert {key for key, _ in counts.items()} == {
                        word for word, p in seen.items() if p == partition
                    }
