"""A persistent store is read at most once per key while it keeps its value: the table
remembers what it persisted or read, and every way the store changes updates that."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import trio_tables
import trio_tables._table._partition as partition_state
from trio_tables import TableManager
from trio_tables._store._base import MISSING
from trio_tables._table._keyfilter import KeyFilter
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
            assert table._states[0].cache["k"] == 1
            with counts.partition(0):
                # The store held nothing for partition 0 when the table first read it:
                # the cache knows every key the store has, a missing key needs no read.
                assert table._states[0].cache_complete
                assert counts["missing"] == 0
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
            assert table._states == {}
        await trio.lowlevel.checkpoint()


async def test_a_store_with_data_is_read_once_per_key(autojump_clock: Any, tmp_path: Path) -> None:
    url = f"memory://cache-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", 1)
    for run in range(2):
        async with TableManager("rc", broker=url, store=f"sqlite://{tmp_path}") as manager:
            counts = manager.Table("counts", default=int, key_type=str, value_type=int)
            async with manager.stream("words", key_type=str):
                await manager.wait_until_recovered()
                table: Any = counts
                reads: list[Any] = []
                get = table.data.get

                def counting_get(
                    partition: int, key: Any, get: Any = get, reads: list[Any] = reads
                ) -> Any:
                    reads.append(key)
                    return get(partition, key)

                table.data.get = counting_get
                with counts.partition(0):
                    if run == 0:
                        counts["k"] = 1
                        assert counts["missing"] == 0
                        assert reads == []  # empty store: a complete cache
                    else:
                        # The store had data when the table started: read once per key,
                        # then remembered (MISSING: absent).
                        assert (counts["k"], counts["k"]) == (1, 1)
                        assert not table._states[0].cache_complete
                        assert (counts["missing"], counts["missing"]) == (0, 0)
                        assert reads == ["k", "missing"]
                        assert table._states[0].cache["missing"] is MISSING


async def test_a_cache_that_starts_over_stays_complete_through_its_key_filter(
    autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past READ_CACHE_LIMIT values the cache starts over; the key filter still knows
    every stored key, so a new key needs no store read and a stored one is read."""
    monkeypatch.setattr(partition_state, "READ_CACHE_LIMIT", 2)
    url = f"memory://cache-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", 1)
    async with TableManager("rc", broker=url, store=f"sqlite://{tmp_path}") as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("words", key_type=str):
            await manager.wait_until_recovered()
            table: Any = counts
            reads: list[Any] = []
            get = table.data.get

            def counting_get(partition: int, key: Any) -> Any:
                reads.append(key)
                return get(partition, key)

            table.data.get = counting_get
            with counts.partition(0):
                assert counts["a"] == 0
                assert table._states[0].cache_complete
                for key in "abc":
                    counts[key] = 1
                await manager.commit()  # persisted: the cache holds 3 values
                assert table._states[0].cache_complete
                counts["e"] = 1
                await manager.commit()  # more than the limit: the cache starts over
                assert table._states[0].cache == {"e": 1}
                assert table._states[0].cache_complete  # the key filter knows a, b, c
                assert [counts[k] for k in "eabc"] == [1, 1, 1, 1]  # e is cached
                assert sorted(reads) == ["a", "b", "c"]  # read from the store, once each
                assert (counts["d"], counts["new"]) == (0, 0)
                assert sorted(reads) == ["a", "b", "c"]  # never stored: no store read


def test_the_key_filter_never_forgets_a_key_and_rarely_claims_one() -> None:
    keys = KeyFilter(capacity=1 << 10)  # grows twice (x4) for 20k keys
    stored = [f"key-{i}" for i in range(20_000)]
    for key in stored:
        keys.add(key)
        keys.add(key)  # again: takes no room
    assert all(key in keys for key in stored)
    claimed = sum(f"other-{i}" in keys for i in range(100_000))
    # ~0.02 % per filled filter (32 bits per key, 4 probes), three filters asked: a
    # store read per false claim, each a GIL hand-over on the Trio thread
    assert claimed < 0.002 * 100_000
