"""Recovery rules, on the memory transport: falsy values, copies, saved offsets outside
the changelog, and records of events that will be processed again."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._changelog import SOURCE_HEADER
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables._transport.memory._transport import get_memory_broker

PARTITIONS = 2


async def _new_broker(topic: str = "src") -> str:
    url = f"memory://recovery-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic(topic, PARTITIONS)
    return url


async def _write_then_read(url: str, store: str, writes: dict[str, Any]) -> dict[str, Any]:
    """Write ``writes`` into partition 0 of table "t" in one manager, read it back in a
    fresh one (rebuilt from the changelog or the store)."""
    async with TableManager("app", broker=url, store=store) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0):
                for key, value in writes.items():
                    table[key] = value
    async with TableManager("app", broker=url, store=store) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            return table.as_dict()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_falsy_values_survive_recovery(store: str, tmp_path: Path) -> None:
    url = await _new_broker()
    store_url = "memory://" if store == "memory" else f"sqlite://{tmp_path}"
    writes = {"zero": 0, "empty": "", "list": [], "false": False, "dict": {}}
    assert await _write_then_read(url, store_url, writes) == writes


async def test_none_deletes_and_the_delete_is_recovered(autojump_clock: Any) -> None:
    url = await _new_broker()
    async with TableManager("app", broker=url) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(1):
                table["a"] = 1
                table["b"] = 2
                table["a"] = None
                del table["b"]
                assert "a" not in table
                with pytest.raises(KeyError):
                    del table["b"]
    async with TableManager("app", broker=url) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            assert table.as_dict() == {}


async def test_values_read_are_copies(autojump_clock: Any) -> None:
    url = await _new_broker()
    async with TableManager("app", broker=url) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0):
                original = [1, 2]
                table["k"] = original
                original.append(3)  # the caller's object is not the table's
                read = table["k"]
                read.append(4)  # nor is what the caller reads
                assert table["k"] == [1, 2]
                table["k"] = read
                assert table["k"] == [1, 2, 4]


async def test_saved_offset_beyond_the_changelog_end_rebuilds_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = f"sqlite://{tmp_path}"
    url = await _new_broker()
    await _write_then_read(url, store, {"a": 1, "b": 2})
    # Same local state, but the changelog is new and empty (say the topic was recreated).
    other = await _new_broker()
    with caplog.at_level(logging.WARNING, logger="trio_tables"):
        assert await _write_then_read(other, store, {"c": 3}) == {"c": 3}
    assert any("outside the changelog" in r.getMessage() for r in caplog.records)


async def test_saved_offset_before_the_changelog_start_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = f"sqlite://{tmp_path}"
    url = await _new_broker()
    await _write_then_read(url, store, {"a": 1})
    broker = get_memory_broker(url.removeprefix("memory://"))
    changelog = TP("app-t-changelog", 0)
    # Later writes by another worker, then retention deletes what this store had seen.
    async with trio_tables.open_transport(url) as transport, transport.open_producer() as p:
        for value in (b"5", b"6", b"7"):
            await p.send("app-t-changelog", value, key=b'"a"', partition=0)
    broker.delete_records_before(changelog, broker.log(changelog).high_watermark - 1)
    with caplog.at_level(logging.WARNING, logger="trio_tables"):
        assert await _write_then_read(url, store, {}) == {"a": 7}
    assert any("outside the changelog" in r.getMessage() for r in caplog.records)


async def test_records_of_uncommitted_events_are_skipped(autojump_clock: Any) -> None:
    """A changelog record caused by an event at or after the group's committed offset
    belongs to an event that will be processed again: recovery must not apply it."""
    url = await _new_broker()
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("app-t-changelog", PARTITIONS)
        async with transport.open_producer() as p:
            records = [
                OutgoingRecord("app-t-changelog", b"1", b'"old"', 0,
                               [(SOURCE_HEADER, b"src:0:3")]),
                OutgoingRecord("app-t-changelog", b"1", b'"outside"', 0),  # no event
                OutgoingRecord("app-t-changelog", b"1", b'"new"', 0,
                               [(SOURCE_HEADER, b"src:0:10")]),
            ]
            await p.send_batch(records)
    broker = get_memory_broker(url.removeprefix("memory://"))
    broker.group("app").store_offsets({TP("src", 0): 10})
    async with TableManager("app", broker=url) as manager:
        table = manager.Table("t", value_type=int)
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            assert table.as_dict() == {"old": 1, "outside": 1}


@pytest.mark.parametrize("store", ["memory://", "sqlite"])
async def test_replay_keeps_the_last_write_of_each_key(
    store: str, tmp_path: Path, autojump_clock: Any
) -> None:
    """Recovery decodes each distinct key once (the last value of its bytes); the result
    is still the last write of each key: when two encodings of one key are both in the
    changelog (here ``"a"`` written as ``"\\u0061"`` too), the one written last wins,
    and a record a later one of its key replaces is never decoded."""
    url = await _new_broker()
    changelog = "app-t-changelog"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic(changelog, PARTITIONS)
        async with transport.open_producer() as p:
            await p.send_batch(
                [
                    OutgoingRecord(changelog, b"1", b'"\\u0061"', 0),
                    OutgoingRecord(changelog, b"not json", b'"b"', 0),
                    OutgoingRecord(changelog, b"2", b'"a"', 0),
                    OutgoingRecord(changelog, b"5", b'"b"', 0),
                    OutgoingRecord(changelog, b"3", b'"\\u0061"', 0),
                    OutgoingRecord(changelog, b"4", b'"c"', 0),
                    OutgoingRecord(changelog, None, b'"c"', 0),
                ]
            )
    location = "memory://" if store == "memory://" else f"sqlite://{tmp_path}"
    async with TableManager("app", broker=url, store=location) as manager:
        table = manager.Table("t", key_type=str, value_type=int)
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            assert table.as_dict() == {"a": 3, "b": 5}


class _CrashBetweenPersistAndCommit(TableManager):
    """Raises after the second commit cycle persisted its stores, before the source
    offsets are committed (like a worker killed at that moment)."""

    crash_on: int | None = None
    commits = 0

    async def on_commit(self, offsets: Any) -> None:
        if offsets:
            self.commits += 1
            self.committed.set()
            self.committed = trio.Event()
        if self.commits == self.crash_on:
            raise RuntimeError("simulated crash between persist and commit")


async def test_a_store_ahead_of_the_committed_offsets_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Faust bug: after a crash the local store held data of events whose offsets were
    never committed, so they were counted twice. Real clock: sqlite uses threads."""
    url = await _new_broker()
    store = f"sqlite://{tmp_path}"
    first, second = [f"w{i % 5}" for i in range(50)], [f"w{i % 5}" for i in range(50)]
    await _produce(url, first)

    manager = _CrashBetweenPersistAndCommit("app", broker=url, store=store, commit_interval=0.1)
    manager.crash_on = 2
    manager.committed = trio.Event()
    async def run_until_the_crash() -> None:
        async with manager:
            counts = manager.Table("counts", default=int)
            async with manager.stream("src", key_type=str) as events:
                await _consume(events, counts, len(first))
                await manager.committed.wait()  # the first 50 are committed
                await _produce(url, second)
                await _consume(events, counts, len(second))
                await trio.sleep_forever()  # until the second cycle crashes

    with trio.fail_after(20), pytest.raises(RuntimeError, match="simulated crash"):
        await run_until_the_crash()

    group = get_memory_broker(url.removeprefix("memory://")).group("app")
    uncommitted = len(first + second) - sum(group.committed.values())
    assert uncommitted > 0
    with trio.fail_after(20), caplog.at_level(logging.WARNING, logger="trio_tables"):
        async with TableManager("app", broker=url, store=store) as manager:
            counts = manager.Table("counts", default=int)
            async with manager.stream("src", key_type=str) as events:
                await _consume(events, counts, uncommitted)  # processed again
                got = counts.as_dict()
                assert got == Counter(first + second), (got, uncommitted, group.committed)
    assert any("past the group's committed offsets" in r.getMessage() for r in caplog.records)


async def _consume(events: Any, table: Any, n: int) -> None:
    seen = 0
    async for event in events:
        table[event.key] += 1
        seen += 1
        if seen == n:
            return


async def _produce(url: str, words: list[str]) -> None:
    async with trio_tables.open_transport(url) as transport, transport.open_producer() as p:
        await p.send_batch([OutgoingRecord("src", b"{}", key=w.encode()) for w in words])
