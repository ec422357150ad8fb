"""Table-core behaviour on the embedded broker (the same checks run on memory:// in
tests/unit): clean sqlite restarts replay nothing, typed errors for writes outside a
stream and for partition-count mismatches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import trio_tables
from trio_tables import TableManager
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import OutgoingRecord
from trio_tables.errors import PartitionCountMismatch, TableWriteOutsideStream

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {**BROKER_SETTINGS}


async def _topic(url: str, name: str, partitions: int, words: list[str] | None = None) -> None:
    async with trio_tables.open_transport(url, **SETTINGS) as transport:
        await transport.create_topic(name, partitions)
        if words:
            async with transport.open_producer() as producer:
                await producer.send_batch(
                    [OutgoingRecord(name, b"{}", key=w.encode()) for w in words]
                )


async def _run(url: str, app: str, topic: str, store: str, n: int) -> tuple[dict[str, int], int]:
    async with TableManager(
        app, broker=url, store=store, commit_interval=0.5, transport_options=SETTINGS
    ) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str) as events:
            await manager.wait_until_recovered()
            seen = 0
            if n:
                async for event in events:
                    counts[event.key] += 1
                    seen += 1
                    if seen == n:
                        break
            return counts.as_dict(), counts.replayed


async def test_sqlite_restart_after_clean_stop_replays_nothing(
    kafka_broker: Any, unique_name: Any, tmp_path: Path
) -> None:
    topic, app = unique_name("words"), unique_name("app")
    words = [f"w{i % 13}" for i in range(2000)]
    await _topic(kafka_broker.url, topic, 4, words)
    store = f"sqlite://{tmp_path}"
    table, replayed_first = await _run(kafka_broker.url, app, topic, store, len(words))
    assert table == Counter(words)
    assert replayed_first == 0  # nothing to replay the first time either
    restored, replayed = await _run(kafka_broker.url, app, topic, store, 0)
    assert restored == Counter(words)
    assert replayed == 0
    # A fresh memory store replays the changelog: coalesced, one record per key at most
    # per commit cycle.
    rebuilt, replayed_memory = await _run(kafka_broker.url, app, topic, "memory://", 0)
    assert rebuilt == Counter(words)
    assert 13 <= replayed_memory < len(words)


async def test_write_outside_a_stream_is_a_typed_error(
    kafka_broker: Any, unique_name: Any
) -> None:
    topic, app = unique_name("words"), unique_name("app")
    await _topic(kafka_broker.url, topic, 2)
    async with TableManager(app, broker=kafka_broker.url, transport_options=SETTINGS) as manager:
        table = manager.Table("t", default=int)
        async with manager.stream(topic):
            await manager.wait_until_recovered()
            with pytest.raises(TableWriteOutsideStream):
                table["k"] = 1


async def test_partition_count_mismatch_names_both_counts_before_processing(
    kafka_broker: Any, unique_name: Any
) -> None:
    topic, app = unique_name("words"), unique_name("app")
    await _topic(kafka_broker.url, topic, 4)
    await _topic(kafka_broker.url, f"{app}-counts-changelog", 3)
    async with TableManager(app, broker=kafka_broker.url, transport_options=SETTINGS) as manager:
        manager.Table("counts")
        with pytest.raises(PartitionCountMismatch) as info:
            async with manager.stream(topic):
                pytest.fail("the stream must not open")  # pragma: no cover
    assert (info.value.expected, info.value.actual) == (4, 3)
    assert "has 3 partitions but 4 are required" in str(info.value)
