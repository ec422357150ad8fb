"""A persistent store is read at most once per key while it keeps its value: the table
remembers what it persisted or read, and every way the store changes updates that."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

import trio_tables
from trio_tables import TableManager
from trio_tables._store._base import MISSING
from trio_tables._transport._base import OutgoingRecord, Record


async def test_cached_reads_follow_every_store_change(autojump_clock: Any, tmp_path: Path) -> None:
    url = f"memory://cache-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", 1)
        async with transport.open_producer() as producer:
            await producer.send_batch([OutgoingRecord("words", b"{}", key=b"k", partition=0)])
    async with TableManager("rc", broker=url, store=f"sqlite://{tmp_path}") as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("words", key_type=str) as events:
            async for event in events:
                counts[event.key] += 1
                break
            events.ack()
            await manager.commit()
            table: Any = counts
            # Persisted by the commit: remembered, so no store read is needed.
            assert table._read_cache[0]["k"] == 1
            with counts.partition(0):
                assert counts["missing"] == 0  # read once from the store ...
                assert table._read_cache[0]["missing"] is MISSING  # ... and remembered
                # A changelog record applied to the store (standby, global, restore).
                record = Record("rc-counts-changelog", 0, 99, b'"k"', b"5", 0)
                await counts.apply_changelog_batch(0, [record])
                assert counts["k"] == 5
                assert counts.data.get(0, "k") == 5
                tombstone = Record("rc-counts-changelog", 0, 100, b'"k"', None, 0)
                await counts.apply_changelog_batch(0, [tombstone])
                assert "k" not in counts
            # Forgetting local state forgets what was remembered.
            counts.reset_state()
            assert table._read_cache == {}
        await trio.lowlevel.checkpoint()
