"""``Stream.take(max_, within=)``: batches of events on the memory transport.

What must hold: batches hold 1..max_ events, every event exactly once and in order per
partition; each event's table writes go to its own partition (``for event in batch``
makes it the current event); a batch counts as processed only when the next one is
asked for; a commit cycle waits for a batch in process (and leaves its partitions out
after the grace) but not for one being collected; cancelling or withholding loses
nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
import trio
import trio.testing

import trio_tables
from trio_tables import Batch, Event, TableManager, current_event
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables.errors import TableWriteOutsideStream

PARTITIONS = 4


def _url() -> str:
    return f"memory://take-{uuid.uuid4().hex[:8]}"


async def _produce(url: str, keys: list[str], *, create: bool = True) -> None:
    async with trio_tables.open_transport(url) as transport:
        if create:
            await transport.create_topic("src", PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch([OutgoingRecord("src", b"1", key=k.encode()) for k in keys])
            await producer.flush()


async def _group_offsets(url: str, app: str) -> dict[TP, int]:
    async with trio_tables.open_transport(url) as transport:
        return await transport.group_offsets(app)


def _keys(n: int) -> list[str]:
    return [f"k{i % 13}" for i in range(n)]


async def test_batches_hold_at_most_max_and_each_write_goes_to_its_events_partition() -> None:
    url, keys = _url(), _keys(200)
    await _produce(url, keys)
    seen: list[Event] = []
    sizes: list[int] = []
    async with TableManager("app", broker=url) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("src", key_type=str) as events:
            async for batch in events.take(16, within=timedelta(milliseconds=50)):
                assert isinstance(batch, Batch)
                sizes.append(len(batch))
                assert current_event.get() is None  # only inside `for event in batch`
                for event in batch:
                    assert current_event.get() is event
                    counts[event.key] += 1
                    seen.append(event)
                assert current_event.get() is None
                if len(seen) == len(keys):
                    break
            source_partition = {event.key: event.partition for event in seen}
            for partition in range(PARTITIONS):
                with counts.partition(partition):
                    written = dict(counts.items())
                assert all(source_partition[key] == partition for key in written)
            total = counts.as_dict()
    assert all(1 <= size <= 16 for size in sizes)
    assert 16 in sizes
    assert total == dict(Counter(keys))
    for partition in range(PARTITIONS):
        offsets = [e.offset for e in seen if e.partition == partition]
        assert offsets == list(range(len(offsets)))  # each once, in order


async def test_within_hands_out_what_came_and_the_next_batch_waits_for_new_events() -> None:
    url = _url()
    await _produce(url, _keys(3))
    async with (
        TableManager("app", broker=url) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        batches = events.take(100, within="20ms")
        first = await batches.__anext__()
        assert len(first) == 3  # not 100: `within` after the first event ended it
        produced: list[str] = []

        async def produce_late() -> None:
            await trio.testing.wait_all_tasks_blocked()  # the reader waits, no batch
            produced.append("late")
            await _produce(url, ["late"], create=False)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce_late)
            second = await batches.__anext__()
        assert produced == ["late"]
        assert [event.key for event in second] == ["late"]
        assert second.values == [1]


async def test_a_batch_counts_as_processed_only_when_the_next_one_is_asked_for() -> None:
    url, app = _url(), "app"
    await _produce(url, _keys(40))
    async with (
        TableManager(app, broker=url, commit_interval=3600, event_grace=0.05) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        await manager.wait_until_recovered()
        batches = events.take(100, within=0.05)
        first = await batches.__anext__()
        assert events.busy_partitions() == first.partitions
        # A commit now waits event_grace for the batch, then leaves its partitions out.
        await manager.commit()
        assert not set(await _group_offsets(url, app)) & {TP("src", p) for p in first.partitions}
        with trio.move_on_after(0.2):  # the next batch finishes the first one
            await batches.__anext__()
        assert events.busy_partitions() == frozenset()  # the cancelled wait held none
        await manager.commit()
        committed = await _group_offsets(url, app)
    for partition in first.partitions:
        last = max(e.offset for e in first if e.partition == partition)
        assert committed[TP("src", partition)] >= last + 1


async def test_a_commit_does_not_wait_for_a_batch_being_collected() -> None:
    url, app = _url(), "app"
    await _produce(url, _keys(10))
    collected: list[Batch] = []
    # event_grace is far longer than the test may take: a commit waiting for the
    # batch being collected would hang until the guard below fails it.
    async with (
        TableManager(app, broker=url, commit_interval=3600, event_grace=600) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        await manager.wait_until_recovered()

        async def collect() -> None:
            async for batch in events.take(1000, within=600):
                collected.append(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await trio.testing.wait_all_tasks_blocked()
            assert events.busy_partitions() == frozenset()  # collected, not handed out
            with trio.fail_after(300):  # a hang guard, not a speed limit
                await manager.commit()
            assert await _group_offsets(url, app) == {}  # nothing processed yet
            nursery.cancel_scope.cancel()
        assert collected == []
        # The cancelled collection lost nothing: all 10 come again, in order.
        again = await events.take(1000, within=0).__anext__()
        while len(again) < 10:
            more = await events.take(1000, within=0.05).__anext__()
            again = Batch([*again, *more])
    for partition in range(PARTITIONS):
        offsets = [e.offset for e in again if e.partition == partition]
        assert offsets == list(range(len(offsets)))
    assert len(again) == 10


async def test_withheld_partitions_take_their_collected_events_back() -> None:
    url = _url()
    await _produce(url, _keys(30))
    async with (
        TableManager("app", broker=url) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        await manager.wait_until_recovered()

        async def collect() -> None:
            await events.take(1000, within=600).__anext__()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await trio.testing.wait_all_tasks_blocked()
            # What the rebalance does while a new table recovers: the collected
            # events of partition 0 go back to its buffer, in order.
            events.unready(0)
            buffered = events.buffered(0)
            assert buffered > 0
            nursery.cancel_scope.cancel()
        events.set_ready(0)
        batch = await events.take(1000, within=0.05).__anext__()
        zero = [e.offset for e in batch if e.partition == 0]
        assert zero == list(range(buffered))


async def test_batch_context_helpers_and_bad_arguments() -> None:
    url = _url()
    await _produce(url, _keys(5))
    async with TableManager("app", broker=url) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream("src", key_type=str) as events:
            with pytest.raises(ValueError, match="max_ >= 1"):
                events.take(0, within=1)
            with pytest.raises(TypeError, match="needs an int"):
                events.take(2.5, within=1)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="as a duration"):
                events.take(10, within="soon")
            batch = await events.take(10, within=0.05).__anext__()
            with pytest.raises(TableWriteOutsideStream):
                counts[batch[0].key] += 1  # indexing sets no current event
            with batch.processing(batch[0]) as event:
                counts[event.key] += 1
            assert current_event.get() is None
            for event in batch:
                assert current_event.get() is event
                break
            assert current_event.get() is None  # `break` ends the event's scope
            foreign = Event("k", 1, "src", 0, 99, 0)
            with (
                pytest.raises(ValueError, match="not an event of this batch"),
                batch.processing(foreign),
            ):
                pass
            assert counts[batch[0].key] == 1


async def test_a_stop_while_collecting_ends_the_loop_and_commits_none_of_the_collection() -> None:
    url, app = _url(), "app"
    await _produce(url, _keys(20))
    handed_out: list[Batch] = []
    async with (
        TableManager(app, broker=url, commit_interval=3600) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        await manager.wait_until_recovered()

        async def collect() -> None:
            async for batch in events.take(1000, within=600):
                handed_out.append(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await trio.testing.wait_all_tasks_blocked()
            events.stop()  # what a SIGTERM does with handle_signals=True
        assert handed_out == []  # the loop ended without handing the collection out
        assert sum(events.buffered(p) for p in range(PARTITIONS)) == 20  # all back
    # Leaving the stream committed what was processed: none of the collected events.
    assert await _group_offsets(url, app) == {}
