"""The table core on the memory transport, deterministic under trio's MockClock."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_tables
from tests.cancellation import process
from trio_tables import TableManager
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables._transport.memory._transport import get_memory_broker
from trio_tables.errors import PartitionCountMismatch, TableWriteOutsideStream

PARTITIONS = 4


def _broker_url() -> str:
    return f"memory://core-{uuid.uuid4().hex[:12]}"


async def _produce(url: str, topic: str, keys: Sequence[str]) -> None:
    async with trio_tables.open_transport(url) as transport, transport.open_producer() as p:
        await p.send_batch([OutgoingRecord(topic, b'{"n":1}', key=k.encode()) for k in keys])
        await p.flush()


async def _topic(url: str, topic: str, partitions: int = PARTITIONS) -> None:
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic(topic, partitions)


async def _count(
    url: str,
    topic: str,
    expected_events: int,
    *,
    app: str = "wc",
    store: str = "memory://",
    coalesce: bool = True,
) -> tuple[dict[str, int], int]:
    """Run a word count until ``expected_events`` were processed; the table and how many
    changelog records recovery replayed."""
    async with TableManager(
        app, broker=url, store=store, commit_interval=0.5, coalesce_changelog=coalesce
    ) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str) as events:
            await manager.wait_until_recovered()
            seen = 0
            if expected_events:
                async for event in events:
                    counts[event.key] += 1
                    seen += 1
                    if seen == expected_events:
                        break
            table = counts.as_dict()
    return table, counts.replayed


async def test_word_count_is_exact_and_survives_a_restart(autojump_clock: Any) -> None:
    url, topic = _broker_url(), "words"
    await _topic(url, topic)
    words = [f"w{i % 7}" for i in range(500)]
    await _produce(url, topic, words)
    table, _ = await _count(url, topic, len(words))
    assert table == Counter(words)
    restored, replayed = await _count(url, topic, 0)
    assert restored == Counter(words)
    assert replayed > 0  # memory store: rebuilt from the changelog


@pytest.mark.parametrize("coalesce", [True, False])
async def test_coalescing_changes_record_count_not_state(
    autojump_clock: Any, coalesce: bool
) -> None:
    url, topic = _broker_url(), "words"
    await _topic(url, topic)
    words = [f"w{i % 5}" for i in range(300)]
    await _produce(url, topic, words)
    table, _ = await _count(url, topic, len(words), coalesce=coalesce)
    broker = get_memory_broker(url.removeprefix("memory://"))
    changelog = "wc-counts-changelog"
    records = sum(
        broker.log(TP(changelog, p)).end_offset("read_uncommitted") for p in range(PARTITIONS)
    )
    assert records == (5 if coalesce else 300)
    restored, _ = await _count(url, topic, 0)
    assert restored == table == Counter(words)


async def test_sqlite_restart_after_clean_stop_replays_nothing(tmp_path: Path) -> None:
    # Real clock: sqlite work happens in threads, which an autojump clock would skip over.
    url, topic = _broker_url(), "words"
    await _topic(url, topic)
    words = [f"w{i % 11}" for i in range(400)]
    await _produce(url, topic, words)
    store = f"sqlite://{tmp_path}"
    table, _ = await _count(url, topic, len(words), store=store)
    restored, replayed = await _count(url, topic, 0, store=store)
    assert restored == table == Counter(words)
    assert replayed == 0


async def test_write_outside_a_stream_is_a_typed_error(autojump_clock: Any) -> None:
    url, topic = _broker_url(), "words"
    await _topic(url, topic)
    async with TableManager("w", broker=url) as manager:
        table = manager.Table("t", default=int)
        async with manager.stream(topic):
            await manager.wait_until_recovered()
            with pytest.raises(TableWriteOutsideStream, match=r"table\.partition"):
                table["k"] = 1
            with table.partition(2):
                table["k"] = 1
                assert table["k"] == 1
            assert table.as_dict() == {"k": 1}


async def test_partition_count_mismatch_is_reported_before_processing(
    autojump_clock: Any,
) -> None:
    url, topic = _broker_url(), "words"
    await _topic(url, topic, 4)
    await _topic(url, "mm-counts-changelog", 2)
    async with TableManager("mm", broker=url) as manager:
        manager.Table("counts")
        with pytest.raises(PartitionCountMismatch) as info:
            async with manager.stream(topic):
                pytest.fail("the stream must not open")  # pragma: no cover
    assert (info.value.expected, info.value.actual) == (4, 2)
    assert "4" in str(info.value)
    assert "2" in str(info.value)


async def test_gaps_at_the_end_of_a_changelog_do_not_hang_recovery(autojump_clock: Any) -> None:
    """Faust waits to *see* offset highwater-1; compaction and transaction markers at the
    end of the log mean it never comes. Recovery here stops on the position."""
    url, topic = _broker_url(), "words"
    await _topic(url, topic)
    words = [f"w{i % 3}" for i in range(90)]
    await _produce(url, topic, words)
    await _count(url, topic, len(words), coalesce=False)
    broker = get_memory_broker(url.removeprefix("memory://"))
    changelog = "wc-counts-changelog"
    for p in range(PARTITIONS):
        broker.append_control_marker(TP(changelog, p))
        broker.append_control_marker(TP(changelog, p))
    broker.compact(changelog)  # the older records of each key are gone: gaps everywhere
    with trio.fail_after(60):
        restored, replayed = await _count(url, topic, 0)
    assert restored == Counter(words)
    assert 0 < replayed <= 3  # only the latest record of each key is left


async def test_tables_added_while_running_are_recovered_without_a_rebalance(
    autojump_clock: Any,
) -> None:
    url, topic = _broker_url(), "words"
    await _topic(url, topic)
    first, second = [f"a{i % 4}" for i in range(40)], [f"b{i % 4}" for i in range(40)]
    await _produce(url, topic, first)
    # An earlier run filled the changelog of "late".
    async with TableManager("dyn", broker=url, commit_interval=0.5) as manager:
        late = manager.Table("late", default=int)
        async with manager.stream(topic, key_type=str) as events:
            async for n, event in _enumerate(events):
                late[event.key] += 1
                if n == len(first):
                    break
    await _produce(url, topic, second)
    async with TableManager("dyn", broker=url, commit_interval=0.5) as manager:
        counts = manager.Table("counts", default=int)
        async with manager.stream(topic, key_type=str) as events:
            await manager.wait_until_recovered()
            generation = manager._supervisor.generation
            recovered: list[str] = []
            async for n, event in _enumerate(events):
                if n == 1:
                    async with manager.Table(
                        "late", default=int, on_recover=lambda: recovered.append("late")
                    ) as late:
                        assert late.as_dict() == Counter(first)
                late[event.key] += 1
                counts[event.key] += 1
                if n == len(second):
                    break
            assert manager._supervisor.generation == generation  # no rebalance
            assert recovered == ["late"]
            assert late.as_dict() == Counter(first) + Counter(second)


async def _enumerate(events: Any) -> Any:
    n = 0
    async for event in events:
        n += 1
        yield n, event


@pytest.mark.parametrize(
    ("backlog", "changes"), [(500, None), (10**6, 500)], ids=["events", "changes"]
)
async def test_streams_wait_for_a_commit_cycle_that_fell_behind(
    backlog: int, changes: int | None
) -> None:
    # A commit cycle slower than processing (the changelog is the bottleneck when every
    # event writes a new key) must not let changes pile up without bound: after
    # max_commit_backlog events past the cycle's snapshot, or once the tables hold
    # max_cycle_changes new changes, streams wait for it.
    url = _broker_url()
    await _topic(url, "keys")
    await _produce(url, "keys", [f"k{i}" for i in range(8000)])
    in_cycle, release = trio.Event(), trio.Event()

    class SlowChangelog(TableManager):
        max_commit_backlog = backlog
        max_cycle_changes = changes

    async def slow_delivery() -> None:
        if not release.is_set():
            in_cycle.set()
            await release.wait()

    seen = 0
    held_at: list[int] = []
    ten_seen = trio.Event()

    async def commit_after_ten(manager: TableManager) -> None:
        await ten_seen.wait()
        await manager.commit()

    async def release_once_everything_waits() -> None:
        await in_cycle.wait()
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        held_at.append(seen)
        release.set()

    async with SlowChangelog("slow", broker=url, commit_interval=3600) as manager:
        manager._cycle.before_delivery = slow_delivery
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("keys", key_type=str) as events, trio.open_nursery() as nursery:
            nursery.start_soon(release_once_everything_waits)
            nursery.start_soon(commit_after_ten, manager)
            async for event in events:
                counts[event.key] += 1
                seen += 1
                if seen == 10:
                    ten_seen.set()
                if seen == 8000:
                    break
            table = counts.as_dict()
    assert len(held_at) == 1
    # Held by the backlog bound (checked every 1024 events), not by running dry.
    assert 500 <= held_at[0] <= 4096
    assert table == {f"k{i}": 1 for i in range(8000)}


def _changelog_records(url: str, topic: str) -> int:
    broker = get_memory_broker(url.removeprefix("memory://"))
    return sum(
        broker.log(TP(topic, p)).end_offset("read_uncommitted") for p in range(PARTITIONS)
    )


async def test_many_changed_keys_start_a_commit_cycle_before_the_interval() -> None:
    # A fast stream of distinct keys would make each cycle as large as commit_interval
    # times its rate; max_cycle_changes starts one early. A stream of few keys (one
    # coalesced change per key) keeps its interval.
    url = _broker_url()
    await _topic(url, "keys")
    await _topic(url, "few")
    await _produce(url, "keys", [f"k{i}" for i in range(6000)])
    await _produce(url, "few", [f"w{i % 10}" for i in range(6000)])

    class SmallCycles(TableManager):
        max_cycle_changes = 2000

    async with SmallCycles("early", broker=url, commit_interval=3600) as manager:
        distinct = manager.Table("distinct", default=int, key_type=str, value_type=int)
        few = manager.Table("few", default=int, key_type=str, value_type=int)
        changelog = distinct.changelog_topic_name
        async with manager.stream("few", key_type=str) as events:
            await process(events, few, 6000)
            await trio.testing.wait_all_tasks_blocked()
            # Before the block ends (leaving it releases the partitions: a cycle).
            assert _changelog_records(url, few.changelog_topic_name) == 0  # interval only
        async with manager.stream("keys", key_type=str) as events:
            await process(events, distinct, 6000)
            with trio.fail_after(10):
                while _changelog_records(url, changelog) < 2000:
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.lowlevel.checkpoint()
            # Cycles of at least max_cycle_changes records (asked every 1024 events).
            assert 2000 <= _changelog_records(url, changelog) < 6000
            assert distinct.as_dict() == {f"k{i}": 1 for i in range(6000)}
