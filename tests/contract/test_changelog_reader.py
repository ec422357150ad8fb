"""The worker's shared changelog reader: many restore consumers (one per table task) on
one client. Each consumer sees exactly its own partitions' records, in order, whatever
the others do (assign, seek, stop, get cancelled, stop polling)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from trio_tables._transport._base import TP, OutgoingRecord, Record, RestoreConsumer, Transport
from trio_tables.errors import TransportClosed

from ._helpers import HANG_GUARD, poll_until, read_to_end
from .conftest import Names


async def fill(transport: Transport, topic: str, partitions: int, count: int) -> None:
    """``count`` records in each partition of ``topic``: value ``topic:p:i``."""
    async with transport.open_producer() as producer:
        await producer.send_batch(
            [
                OutgoingRecord(topic, f"{topic}:{p}:{i}".encode(), key=b"k", partition=p)
                for p in range(partitions)
                for i in range(count)
            ]
        )


def values(records: Sequence[Record], tp: TP) -> list[str]:
    return [r.value.decode() for r in records if r.tp == tp and r.value is not None]


def expected(tp: TP, start: int, stop: int) -> list[str]:
    return [f"{tp.topic}:{tp.partition}:{i}" for i in range(start, stop)]


async def read_all(consumer: RestoreConsumer, tps: Sequence[TP], out: list[Record]) -> None:
    await consumer.assign(tps)
    out.extend(await read_to_end(consumer, tps))


async def test_several_tables_restore_and_stand_by_at_once(
    transport: Transport, names: Names
) -> None:
    topics = [await names.topic(2, prefix=f"changelog{i}") for i in range(3)]
    for topic in topics:
        await fill(transport, topic, 2, 40)
    got: dict[str, list[Record]] = {topic: [] for topic in topics}
    async with (
        transport.open_changelog_reader() as reader,
        reader.open_consumer("t0", max_poll_records=7) as c0,
        reader.open_consumer("t1", max_poll_records=7) as c1,
        reader.open_consumer("t2") as c2,
    ):
        consumers = dict(zip(topics, (c0, c1, c2), strict=True))
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                for topic, consumer in consumers.items():
                    tps = [TP(topic, 0), TP(topic, 1)]
                    nursery.start_soon(read_all, consumer, tps, got[topic])
        for topic in topics:
            for p in range(2):
                assert values(got[topic], TP(topic, p)) == expected(TP(topic, p), 0, 40)
            assert {r.topic for r in got[topic]} == {topic}
        # The standby keeps following: records written later reach c1 only.
        await fill(transport, topics[1], 2, 1)
        later = await poll_until(c1, lambda records: len(records) >= 2)
        assert sorted(r.value for r in later) == [f"{topics[1]}:{p}:0".encode() for p in range(2)]
        assert await c0.poll(timeout=0.3) == {}


async def test_assignment_changes_while_reading(transport: Transport, names: Names) -> None:
    mine, other = await names.topic(2, prefix="mine"), await names.topic(1, prefix="other")
    await fill(transport, mine, 2, 30)
    await fill(transport, other, 1, 200)
    a, b = TP(mine, 0), TP(mine, 1)
    others: list[Record] = []
    async with transport.open_changelog_reader() as reader:
        async with (
            reader.open_consumer("changing", max_poll_records=5) as consumer,
            reader.open_consumer("steady", max_poll_records=10) as steady,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(read_all, steady, [TP(other, 0)], others)
            await consumer.assign([a])
            first = await poll_until(consumer, lambda got: len(got) >= 5)
            assert values(first, a)[:5] == expected(a, 0, 5)
            # Partition a given back, b taken: nothing of a arrives any more.
            await consumer.assign([b])
            await consumer.seek(b, 10)
            assert await consumer.position(b) == 10
            rest = await read_to_end(consumer, [b])
            assert values(rest, a) == []
            assert values(rest, b) == expected(b, 10, 30)
            # a back: it starts at its beginning again, b keeps its position.
            await consumer.assign([a, b])
            again = await read_to_end(consumer, [a, b])
            assert values(again, a) == expected(a, 0, 30)
            assert values(again, b) == []
        assert values(others, TP(other, 0)) == expected(TP(other, 0), 0, 200)


async def test_a_consumer_stopping_while_others_read(transport: Transport, names: Names) -> None:
    gone, staying = await names.topic(1, prefix="gone"), await names.topic(1, prefix="staying")
    await fill(transport, gone, 1, 50)
    await fill(transport, staying, 1, 50)
    kept: list[Record] = []
    async with (
        transport.open_changelog_reader() as reader,
        reader.open_consumer("staying", max_poll_records=3) as consumer,
    ):
        await consumer.assign([TP(staying, 0)])
        async with reader.open_consumer("gone", max_poll_records=3) as leaving:
            await leaving.assign([TP(gone, 0)])
            await poll_until(leaving, lambda got: len(got) >= 3)
            kept.extend(await poll_until(consumer, lambda got: len(got) >= 3))
        with pytest.raises(TransportClosed, match="closed"):
            await leaving.poll(timeout=0)
        kept.extend(await read_to_end(consumer, [TP(staying, 0)]))
        assert values(kept, TP(staying, 0)) == expected(TP(staying, 0), 0, 50)
        # The partition it gave back is free: a new consumer reads it from the start.
        async with reader.open_consumer("next") as successor:
            await successor.assign([TP(gone, 0)])
            got = await read_to_end(successor, [TP(gone, 0)])
        assert values(got, TP(gone, 0)) == expected(TP(gone, 0), 0, 50)


async def test_cancelled_polls_of_one_consumer_lose_nobodys_records(
    transport: Transport, names: Names
) -> None:
    one, two = await names.topic(1, prefix="one"), await names.topic(1, prefix="two")
    await fill(transport, one, 1, 100)
    await fill(transport, two, 1, 100)
    got_one: list[Record] = []
    got_two: list[Record] = []
    async with (
        transport.open_changelog_reader() as reader,
        reader.open_consumer("one", max_poll_records=4) as first,
        reader.open_consumer("two", max_poll_records=4) as second,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(read_all, second, [TP(two, 0)], got_two)
        await first.assign([TP(one, 0)])
        with trio.fail_after(HANG_GUARD):
            while len(got_one) < 100:
                # Cancelled at once, or before records arrive: both hand nothing out.
                with trio.CancelScope() as scope:
                    scope.cancel()
                    got_one.extend(r for rs in (await first.poll(timeout=1)).values() for r in rs)
                with trio.move_on_after(0.001):
                    batch = await first.poll(timeout=1)
                    got_one.extend(r for rs in batch.values() for r in rs)
    assert values(got_one, TP(one, 0)) == expected(TP(one, 0), 0, 100)
    assert values(got_two, TP(two, 0)) == expected(TP(two, 0), 0, 100)


async def test_a_consumer_that_stops_polling_holds_up_no_other(
    transport: Transport, names: Names
) -> None:
    slow, fast = await names.topic(1, prefix="slow"), await names.topic(1, prefix="fast")
    await fill(transport, slow, 1, 500)
    await fill(transport, fast, 1, 500)
    async with (
        transport.open_changelog_reader() as reader,
        # Its partition pauses once 20 records wait (the other's reads go on).
        reader.open_consumer("slow", max_poll_records=10, buffer_records=20) as idle,
        reader.open_consumer("fast", max_poll_records=50) as busy,
    ):
        await idle.assign([TP(slow, 0)])
        fast_records: list[Record] = []
        await read_all(busy, [TP(fast, 0)], fast_records)
        assert values(fast_records, TP(fast, 0)) == expected(TP(fast, 0), 0, 500)
        # Nothing of the idle consumer's partition was lost while it was held back.
        slow_records = await read_to_end(idle, [TP(slow, 0)])
        assert values(slow_records, TP(slow, 0)) == expected(TP(slow, 0), 0, 500)


async def test_partitions_of_one_reader_are_disjoint(transport: Transport, names: Names) -> None:
    topic = await names.topic(1)
    async with (
        transport.open_changelog_reader() as reader,
        reader.open_consumer("first") as first,
        reader.open_consumer("second") as second,
    ):
        await first.assign([TP(topic, 0)])
        with pytest.raises(ValueError, match="already read by another consumer"):
            await second.assign([TP(topic, 0)])
        assert second.assignment() == frozenset()
        await first.assign(())
        await second.assign([TP(topic, 0)])
        assert second.assignment() == {TP(topic, 0)}
