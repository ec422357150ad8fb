"""Memory-transport features and behaviours that only the in-process broker can show
deterministically: evictions on a MockClock, logs with gaps, exact LSO and markers,
KIP-447 checks, the broker registry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tests.contract._helpers import (
    RecordingListener,
    flatten,
    read_to_end,
    wait_for_assignment,
)
from trio_tables._transport import open_transport
from trio_tables._transport._base import TP, OutgoingRecord, Transport
from trio_tables._transport.memory._transport import (
    MemoryBroker,
    MemoryTransport,
    get_memory_broker,
    reset_memory_broker,
)
from trio_tables.errors import CommitFailed, ProducerFenced, TransactionError


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    name = f"unit-{uuid.uuid4().hex}"
    try:
        async with open_transport(f"memory://{name}", session_timeout=10.0) as opened:
            yield opened
    finally:
        reset_memory_broker(name)


def broker_of(transport: Transport) -> MemoryBroker:
    assert isinstance(transport, MemoryTransport)
    return transport.broker


async def _fill(transport: Transport, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    async with transport.open_producer() as producer:
        await producer.send_batch([OutgoingRecord(topic, v, key=k, partition=0) for k, v in values])


def test_registry_same_name_same_broker() -> None:
    name = f"registry-{uuid.uuid4().hex}"
    first = get_memory_broker(name)
    assert get_memory_broker(name) is first
    reset_memory_broker(name)
    assert get_memory_broker(name) is not first
    reset_memory_broker(name)


async def test_url_names_the_broker() -> None:
    async with open_transport("memory://") as default, open_transport("memory://x") as named:
        assert default.url == "memory://default"
        assert named.url == "memory://x"
    reset_memory_broker("x")


async def test_compaction_and_deleted_records_leave_gaps(transport: Transport) -> None:
    await transport.create_topic("log", 1)
    tp = TP("log", 0)
    await _fill(transport, "log", [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1")])
    broker = broker_of(transport)
    broker.compact("log")
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([tp])
        records = await read_to_end(consumer, [tp])
        assert [(r.offset, r.key, r.value) for r in records] == [
            (1, b"b", b"1"),
            (2, b"a", b"2"),
            (3, b"c", b"1"),
        ]
        broker.delete_records_before(tp, 3)
        assert await consumer.beginning_offsets([tp]) == {tp: 3}
        await consumer.seek(tp, 0)  # before the log start: reset to it
        assert await consumer.position(tp) == 3
        assert [r.offset for r in await read_to_end(consumer, [tp])] == [3]


async def test_marker_at_the_end_still_reaches_the_end_offset(transport: Transport) -> None:
    await transport.create_topic("gaps", 1)
    tp = TP("gaps", 0)
    await _fill(transport, "gaps", [(b"k", b"v")])
    assert broker_of(transport).append_control_marker(tp) == 1
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([tp])
        assert await consumer.end_offsets([tp]) == {tp: 2}
        assert [r.offset for r in await read_to_end(consumer, [tp])] == [0]
        assert await consumer.position(tp) == 2


async def test_lso_and_markers_are_exact(transport: Transport) -> None:
    await transport.create_topic("tx", 1)
    tp = TP("tx", 0)
    async with (
        transport.open_producer(transactional_id="t") as producer,
        transport.open_restore_consumer(isolation_level="read_committed") as consumer,
    ):
        await consumer.assign([tp])
        await producer.init_transactions()
        await producer.begin_transaction()
        await producer.send("tx", b"1", key=b"k")
        await producer.send("tx", b"2", key=b"k")
        assert await consumer.end_offsets([tp]) == {tp: 0}
        await producer.commit_transaction()
        assert await consumer.end_offsets([tp]) == {tp: 3}
        await producer.begin_transaction()
        await producer.send("tx", b"3", key=b"k")
        await producer.abort_transaction()
        assert await consumer.end_offsets([tp]) == {tp: 5}
        assert [r.value for r in await read_to_end(consumer, [tp])] == [b"1", b"2"]
        assert await consumer.position(tp) == 5


async def test_transactional_misuse_raises_transaction_errors(transport: Transport) -> None:
    await transport.create_topic("t", 1)
    async with transport.open_producer(transactional_id="misuse") as producer:
        with pytest.raises(TransactionError):
            await producer.begin_transaction()  # before init_transactions
        await producer.init_transactions()
        with pytest.raises(TransactionError):
            await producer.send("t", b"v")  # outside a transaction
        await producer.begin_transaction()
        with pytest.raises(TransactionError):
            await producer.begin_transaction()
        await producer.abort_transaction()
    async with transport.open_producer() as plain:
        with pytest.raises(TransactionError):
            await plain.init_transactions()


async def test_closing_a_producer_aborts_its_open_transaction(transport: Transport) -> None:
    await transport.create_topic("t", 1)
    tp = TP("t", 0)
    async with transport.open_producer(transactional_id="closing") as producer:
        await producer.init_transactions()
        await producer.begin_transaction()
        await producer.send("t", b"never", key=b"k")
    async with transport.open_restore_consumer(isolation_level="read_committed") as consumer:
        await consumer.assign([tp])
        assert await consumer.end_offsets([tp]) == {tp: 2}  # record + abort marker
        assert await read_to_end(consumer, [tp]) == []


async def test_fenced_zombie_cannot_commit_its_open_transaction(transport: Transport) -> None:
    await transport.create_topic("t", 1)
    async with (
        transport.open_producer(transactional_id="z") as zombie,
        transport.open_producer(transactional_id="z") as successor,
    ):
        await zombie.init_transactions()
        await zombie.begin_transaction()
        await zombie.send("t", b"zombie", key=b"k")
        await successor.init_transactions()
        with pytest.raises(ProducerFenced):
            await zombie.commit_transaction()
        with pytest.raises(ProducerFenced):
            await zombie.send("t", b"again", key=b"k")


async def test_stale_group_metadata_is_rejected_by_the_transaction(
    transport: Transport, autojump_clock: trio.testing.MockClock
) -> None:
    await transport.create_topic("in", 2)
    tps = [TP("in", 0), TP("in", 1)]
    async with (
        transport.open_group_consumer("g", ["in"], listener=RecordingListener()) as first,
        transport.open_producer(transactional_id="eos") as producer,
    ):
        await wait_for_assignment(first, tps)
        stale = await first.group_metadata()
        async with transport.open_group_consumer(
            "g", ["in"], listener=RecordingListener()
        ) as second:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_assignment, second, [tps[1]])
                await wait_for_assignment(first, [tps[0]])
            assert (await first.group_metadata()).generation_id > stale.generation_id
            with pytest.raises(CommitFailed):
                await first.commit({tps[1]: 1})  # owned by the second member now
            await producer.init_transactions()
            await producer.begin_transaction()
            with pytest.raises(CommitFailed):
                await producer.send_offsets_to_transaction({tps[0]: 1}, stale)
            with pytest.raises(TransactionError):
                await producer.commit_transaction()
            await producer.abort_transaction()
            await producer.begin_transaction()
            await producer.send_offsets_to_transaction({tps[0]: 1}, await first.group_metadata())
            await producer.commit_transaction()
            assert await first.committed([tps[0]]) == {tps[0]: 1}


async def test_member_that_stops_polling_is_evicted_and_told_it_lost(
    transport: Transport, autojump_clock: trio.testing.MockClock
) -> None:
    await transport.create_topic("in", 2)
    tps = [TP("in", 0), TP("in", 1)]
    slow_listener = RecordingListener()
    async with (
        transport.open_group_consumer("g", ["in"], listener=RecordingListener()) as alive,
        transport.open_group_consumer("g", ["in"], listener=slow_listener) as slow,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_assignment, slow, [tps[1]])
            await wait_for_assignment(alive, [tps[0]])
        before = trio.current_time()
        # `slow` no longer polls: after the session timeout `alive` owns everything.
        await wait_for_assignment(alive, tps)
        assert trio.current_time() - before >= 10.0  # virtual time: the session timeout
        with pytest.raises(CommitFailed):
            await slow.commit({tps[1]: 0})
        # Its next poll reports the loss and rejoins (it must share again).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_assignment, alive, [tps[0]])
            await wait_for_assignment(slow, [tps[1]])
    assert ("lost", frozenset({tps[1]})) in slow_listener.events


async def test_cooperative_rebalance_revokes_only_moving_partitions(
    transport: Transport,
) -> None:
    await transport.create_topic("in", 4)
    tps = [TP("in", p) for p in range(4)]
    first_listener, second_listener = RecordingListener(), RecordingListener()
    async with transport.open_group_consumer(
        "g", ["in"], listener=first_listener, rebalance_protocol="cooperative"
    ) as first:
        await wait_for_assignment(first, tps)
        async with transport.open_group_consumer(
            "g", ["in"], listener=second_listener, rebalance_protocol="cooperative"
        ) as second:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_assignment, second, frozenset(tps) - {tps[0], tps[1]})
                await wait_for_assignment(first, [tps[0], tps[1]])
            # Records keep flowing for the partitions that stayed.
            await _fill(transport, "in", [(b"k", b"v")])
            assert [r.tp for r in flatten(await first.poll(timeout=1))] == [tps[0]]
    revoked = [tps for kind, tps in first_listener.events if kind == "revoked"]
    assert revoked[0] == frozenset({tps[2], tps[3]})  # not everything, as eager would
    assert ("assigned", frozenset({tps[2], tps[3]})) in second_listener.events


async def test_poll_wakes_on_produce_without_waiting_for_its_timeout(
    transport: Transport, autojump_clock: trio.testing.MockClock
) -> None:
    await transport.create_topic("in", 1)
    tp = TP("in", 0)
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([tp])
        got: list[int] = []

        async def poll_once() -> None:
            got.extend(r.offset for r in flatten(await consumer.poll(timeout=1000)))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll_once)
            await trio.testing.wait_all_tasks_blocked()
            await _fill(transport, "in", [(b"k", b"v")])
        assert got == [0]
        assert trio.current_time() - start < 1000  # woken, not timed out (virtual clock)
