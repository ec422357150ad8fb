"""Contract: group consumers, rebalances, commits and cancellation."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pytest
import trio

from trio_tables._transport._base import (
    TP,
    GroupConsumer,
    OutgoingRecord,
    RebalanceProtocol,
    Record,
    Transport,
)
from trio_tables.errors import CommitFailed

from ._helpers import (
    HANG_GUARD,
    RecordingListener,
    flatten,
    poll_count,
    poll_until,
    wait_for_assignment,
)
from .conftest import Names


async def _produce(transport: Transport, topic: str, partitions: int, count: int, tag: str) -> None:
    async with transport.open_producer() as producer:
        await producer.send_batch(
            [
                OutgoingRecord(topic, f"{tag}-{i}".encode(), partition=i % partitions)
                for i in range(count)
            ]
        )


async def _keep_polling(consumer: GroupConsumer, stop: trio.Event) -> None:
    while not stop.is_set():
        await consumer.poll(timeout=0.1)


async def test_single_member_gets_every_partition(transport: Transport, names: Names) -> None:
    topic = await names.topic(3)
    other = await names.topic(3, prefix="other")
    everything = {TP(t, p) for t in (topic, other) for p in range(3)}
    listener = RecordingListener()
    async with transport.open_group_consumer(
        names.group(), [topic, other], listener=listener
    ) as consumer:
        assert consumer.assignment() == frozenset()  # joining happens in poll()
        await wait_for_assignment(consumer, everything)
    assert listener.all("assigned") == everything
    assert ("revoked", frozenset(everything)) in listener.events  # leaving revokes


async def test_commit_round_trip_and_resume_from_commit(transport: Transport, names: Names) -> None:
    topic = await names.topic(2)
    group = names.group()
    a, b = TP(topic, 0), TP(topic, 1)
    await _produce(transport, topic, 2, 20, "r")
    async with transport.open_group_consumer(
        group, [topic], listener=RecordingListener()
    ) as consumer:
        assert await consumer.committed([a, b]) == {a: None, b: None}
        await wait_for_assignment(consumer, [a, b])
        await consumer.commit({a: 4, b: 7})
        assert await consumer.committed([a, b]) == {a: 4, b: 7}
    async with transport.open_group_consumer(
        group, [topic], listener=RecordingListener()
    ) as consumer:
        records = await poll_count(consumer, 6 + 3)
    assert sorted((r.partition, r.offset) for r in records) == [(0, o) for o in range(4, 10)] + [
        (1, o) for o in range(7, 10)
    ]


async def test_group_offsets_are_read_without_joining(transport: Transport, names: Names) -> None:
    topic = await names.topic(2)
    group = names.group()
    a, b = TP(topic, 0), TP(topic, 1)
    await _produce(transport, topic, 2, 10, "g")
    assert await transport.group_offsets(group) == {}  # unknown group: nothing, no error
    listener = RecordingListener()
    async with transport.open_group_consumer(group, [topic], listener=listener) as consumer:
        await wait_for_assignment(consumer, [a, b])
        await consumer.commit({a: 3})
        # A member is in the group: looking at its offsets must not make it rebalance.
        assert await transport.group_offsets(group) == {a: 3}
        await consumer.poll(timeout=0.1)
        assert consumer.assignment() == {a, b}
        assert [kind for kind, _ in listener.events] == ["assigned"]
    assert await transport.group_offsets(group) == {a: 3}


async def test_auto_offset_reset_latest_skips_earlier_records(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    # Several batches: a broker that answers ListOffsets with the last batch's base
    # offset (Tansu) must not make "latest" start in the middle of the log.
    for _ in range(2):
        await _produce(transport, topic, 1, 5, "old")
    async with transport.open_group_consumer(
        names.group(), [topic], listener=RecordingListener(), auto_offset_reset="latest"
    ) as consumer:
        await wait_for_assignment(consumer, [tp])
        assert await consumer.position(tp) == 10
        await _produce(transport, topic, 1, 3, "new")
        records = await poll_count(consumer, 3)
    assert [(r.offset, r.value) for r in records] == [
        (10, b"new-0"),
        (11, b"new-1"),
        (12, b"new-2"),
    ]


async def test_group_pause_and_resume(transport: Transport, names: Names) -> None:
    topic = await names.topic(2)
    a, b = TP(topic, 0), TP(topic, 1)
    await _produce(transport, topic, 2, 10, "x")
    async with transport.open_group_consumer(
        names.group(), [topic], listener=RecordingListener()
    ) as consumer:
        early = await wait_for_assignment(consumer, [a, b])
        await consumer.pause([b])
        assert consumer.paused() == {b}
        seen = early + await poll_until(
            consumer, lambda got: len([r for r in early + got if r.tp == a]) >= 5
        )
        seen += flatten(await consumer.poll(timeout=0.3))
        before_resume = [r for r in seen if r.tp == b]
        assert all(r.offset < 5 for r in seen)
        await consumer.resume([b])
        assert consumer.paused() == frozenset()
        seen += await poll_until(consumer, lambda got: len(seen) + len(got) >= 10)
    assert sorted((r.partition, r.offset) for r in seen) == [
        (p, o) for p in (0, 1) for o in range(5)
    ]
    assert len(before_resume) < 5 or early  # b was held back unless fetched before pause


async def test_group_metadata_follows_generations(transport: Transport, names: Names) -> None:
    topic = await names.topic(4)
    group = names.group()
    everything = {TP(topic, p) for p in range(4)}
    async with transport.open_group_consumer(group, [topic], listener=RecordingListener()) as first:
        await wait_for_assignment(first, everything)
        joined = await first.group_metadata()
        assert joined.group_id == group
        assert joined.member_id
        assert joined.generation_id >= 0  # Kafka starts at 1, Tansu at 0

        stop = trio.Event()
        second_consumer: list[GroupConsumer] = []

        async def second_member() -> None:
            async with transport.open_group_consumer(
                group, [topic], listener=RecordingListener()
            ) as second:
                second_consumer.append(second)
                await _keep_polling(second, stop)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second_member)
            await poll_until(
                first,
                lambda _: (
                    bool(second_consumer)
                    and len(first.assignment()) == 2
                    and first.assignment() | second_consumer[0].assignment() == everything
                ),
            )
            shared = await first.group_metadata()
            assert shared.generation_id > joined.generation_id
            assert shared.member_id == joined.member_id
            stop.set()
            # The second member leaves; the first takes everything back.
            await wait_for_assignment(first, everything)
        alone = await first.group_metadata()
        assert alone.generation_id > shared.generation_id


class _Progress:
    """A broadcast "something happened" (a fresh event after each bump)."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def bump(self) -> None:
        self.event.set()
        self.event = trio.Event()


class _Worker(RecordingListener):
    """Processes records in order and commits; returns processed offsets on revoke."""

    def __init__(self, progress: _Progress) -> None:
        super().__init__(self.offsets_for)
        self.records: list[Record] = []
        self.next: dict[TP, int] = {}
        self.progress = progress
        self.got_partitions = trio.Event()

    def offsets_for(self, revoked: frozenset[TP]) -> Mapping[TP, int]:
        # Forget them: if they come back, the group's commit is the truth, not our past.
        return {tp: self.next.pop(tp) for tp in revoked if tp in self.next}

    async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
        await super().on_partitions_assigned(assigned)
        if assigned:
            self.got_partitions.set()

    async def step(self, consumer: GroupConsumer) -> None:
        batch = await consumer.poll(timeout=0.1, max_records=5)
        for tp, records in batch.items():
            for record in records:
                assert record.offset >= self.next.get(tp, 0), "a member went backwards"
                self.records.append(record)
                self.next[tp] = record.offset + 1
        if batch:
            # A rebalance meanwhile: the revocation committed them.
            with contextlib.suppress(CommitFailed):
                await consumer.commit({tp: self.next[tp] for tp in batch})
            self.progress.bump()

    async def run(self, consumer: GroupConsumer, stop: trio.Event) -> None:
        while not stop.is_set():
            await self.step(consumer)


@pytest.mark.parametrize("protocol", ["eager", "cooperative"])
async def test_rebalance_loses_and_duplicates_nothing(
    transport: Transport, names: Names, protocol: RebalanceProtocol
) -> None:
    topic = await names.topic(4)
    group = names.group()
    tps = [TP(topic, p) for p in range(4)]
    await _produce(transport, topic, 4, 400, "first")
    progress = _Progress()
    a, b = _Worker(progress), _Worker(progress)
    stop = trio.Event()

    async def member_b() -> None:
        async with transport.open_group_consumer(
            group, [topic], listener=b, rebalance_protocol=protocol
        ) as consumer:
            await b.run(consumer, stop)

    def covered() -> bool:
        done = {(r.partition, r.offset) for r in a.records + b.records}
        return done == {(tp.partition, o) for tp in tps for o in range(150)}

    with trio.fail_after(HANG_GUARD):
        async with transport.open_group_consumer(
            group, [topic], listener=a, rebalance_protocol=protocol
        ) as consumer_a:
            while len(a.records) < 40:  # A works alone for a while, committing
                await a.step(consumer_a)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.run, consumer_a, stop)
                nursery.start_soon(member_b)
                await b.got_partitions.wait()
                # More records flow once B took part of the work.
                await _produce(transport, topic, 4, 200, "second")
                while not covered():
                    await progress.event.wait()
                stop.set()

    processed = [(r.partition, r.offset) for r in a.records + b.records]
    assert len(processed) == len(set(processed)) == 600, "duplicates or losses"
    assert b.records, "the second member never got any record"
    assert a.all("revoked"), "the first member never gave anything up"
    # Commits cover everything processed: a newcomer has nothing left to read.
    async with transport.open_group_consumer(group, [topic], listener=RecordingListener()) as check:
        assert await check.committed(tps) == dict.fromkeys(tps, 150)


async def test_cancelled_group_poll_loses_nothing(transport: Transport, names: Names) -> None:
    topic = await names.topic(2)
    await _produce(transport, topic, 2, 60, "c")
    async with transport.open_group_consumer(
        names.group(), [topic], listener=RecordingListener(), max_poll_records=7
    ) as consumer:
        with trio.move_on_after(0):
            await consumer.poll(timeout=5)
        seen: list[tuple[int, int]] = []
        with trio.fail_after(HANG_GUARD):
            rounds = 0
            while len(seen) < 60:
                rounds += 1
                with trio.CancelScope() as scope:
                    if rounds % 3 == 0:
                        scope.cancel()
                    batch = await consumer.poll(timeout=0.2)
                    seen.extend((r.partition, r.offset) for r in flatten(batch))
    assert sorted(seen) == [(p, o) for p in (0, 1) for o in range(30)]
    assert len(seen) == len(set(seen))


async def test_listener_error_raised_by_poll_loses_no_records(
    transport: Transport, names: Names
) -> None:
    """``poll()`` raises what the listener raised; records fetched in that poll are handed
    back, so a caller that goes on polling still gets every record once."""
    topic = await names.topic(2)
    await _produce(transport, topic, 2, 40, "e")

    class Failing(RecordingListener):
        async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
            await super().on_partitions_assigned(assigned)
            if len(self.events) == 1:
                raise RuntimeError("listener failed")

    group = names.group()
    async with transport.open_group_consumer(group, [topic], listener=Failing()) as consumer:
        seen: list[tuple[int, int]] = []

        async def poll_until_it_fails() -> None:
            while True:
                batch = await consumer.poll(timeout=0.5)
                seen.extend((r.partition, r.offset) for r in flatten(batch))

        with trio.fail_after(HANG_GUARD), pytest.raises(RuntimeError, match="listener failed"):
            await poll_until_it_fails()
        seen.extend((r.partition, r.offset) for r in await poll_count(consumer, 40 - len(seen)))
    assert sorted(seen) == [(p, o) for p in (0, 1) for o in range(20)]


async def test_reassigned_partition_resumes_from_the_group_commit(
    transport: Transport, names: Names
) -> None:
    """After a rebalance a member starts from the committed offset even for a partition
    it owned before (kafka-python keeps the old fetch position across an eager
    rebalance; another member may have moved the partition on in between)."""
    topic = await names.topic(1)
    group = names.group()
    tp = TP(topic, 0)
    await _produce(transport, topic, 1, 10, "r")
    # The revocation commits 3, as if records 3.. had not been processed.
    listener = RecordingListener(lambda revoked: {tp: 3} if tp in revoked else None)
    async with transport.open_group_consumer(group, [topic], listener=listener) as first:
        before = await poll_count(first, 10)
        assert [r.offset for r in before] == list(range(10))
        stop = trio.Event()

        async def second_member() -> None:
            async with transport.open_group_consumer(
                group, [topic], listener=RecordingListener()
            ) as second:
                await _keep_polling(second, stop)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second_member)
            again = await poll_count(first, 7)  # sticky: the partition stays here
            stop.set()
    assert [r.offset for r in again] == list(range(3, 10))
    assert [kind for kind, _ in listener.events][:3] == ["assigned", "revoked", "assigned"]


async def test_resumed_partition_delivers_what_was_fetched_while_paused(
    transport: Transport, names: Names
) -> None:
    """A partition paused with fetched records still unread, while the other partition
    is read to exhaustion, delivers all of them once resumed (kafka-python 3 parks such
    records and, without a fix, never hands them back)."""
    topic = await names.topic(2)
    a, b = TP(topic, 0), TP(topic, 1)
    await _produce(transport, topic, 2, 400, "x")
    async with transport.open_group_consumer(
        names.group(), [topic], listener=RecordingListener(), max_poll_records=10
    ) as consumer:
        # Pause `a` right after a poll that returned only some of a fetched batch of it.
        seen = await poll_until(consumer, lambda got: bool(got) and got[-1].tp == a)
        await consumer.pause([a])
        seen += await poll_until(
            consumer, lambda got: len([r for r in seen + got if r.tp == b]) >= 200
        )
        await consumer.resume([a])
        seen += await poll_until(consumer, lambda got: len(seen) + len(got) >= 400)
    assert sorted((r.partition, r.offset) for r in seen) == [
        (p, o) for p in (0, 1) for o in range(200)
    ]
