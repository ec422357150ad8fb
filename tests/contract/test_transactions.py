"""Contract: transactions, read_committed and fencing.

Tansu runs the transactional calls and fences zombies, but delivers aborted records to
``read_committed`` consumers and has no last stable offset (BROKER.md): tests of those
semantics are ``full_transactions`` (their kafka variant needs a real Kafka cluster).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_tables._transport import open_transport
from trio_tables._transport._base import TP, Transport
from trio_tables.errors import DeliveryFailed, ProducerFenced, TransactionError, TrioTablesError

from ._helpers import RecordingListener, flatten, read_to_end, wait_for_assignment
from .conftest import KAFKA_SETTINGS, Names


async def _values(transport: Transport, tp: TP, isolation: str) -> list[bytes | None]:
    async with transport.open_restore_consumer(isolation_level=isolation) as consumer:  # type: ignore[arg-type]
        await consumer.assign([tp])
        return [r.value for r in await read_to_end(consumer, [tp])]


async def test_committed_transaction_is_visible_to_read_committed(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    async with transport.open_producer(transactional_id=names.unique("tx")) as producer:
        await producer.init_transactions()
        await producer.begin_transaction()
        for i in range(3):
            await producer.send(topic, b"%d" % i, key=b"k")
        await producer.commit_transaction()
        await producer.begin_transaction()
        await producer.send(topic, b"3", key=b"k")
        await producer.commit_transaction()
    assert await _values(transport, tp, "read_committed") == [b"0", b"1", b"2", b"3"]
    async with transport.open_restore_consumer(isolation_level="read_committed") as consumer:
        await consumer.assign([tp])
        await read_to_end(consumer, [tp])
        # Offsets have gaps (a marker after each transaction): never count records.
        assert await consumer.position(tp) == (await consumer.end_offsets([tp]))[tp]


async def test_aborted_records_are_visible_to_read_uncommitted(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    async with transport.open_producer(transactional_id=names.unique("tx")) as producer:
        await producer.init_transactions()
        await producer.begin_transaction()
        await producer.send(topic, b"aborted", key=b"k")
        await producer.flush()  # in the log, not just dropped by the client
        await producer.abort_transaction()
        await producer.begin_transaction()
        await producer.send(topic, b"committed", key=b"k")
        await producer.commit_transaction()
    assert await _values(transport, tp, "read_uncommitted") == [b"aborted", b"committed"]


@pytest.mark.full_transactions
async def test_aborted_records_are_invisible_to_read_committed(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    async with transport.open_producer(transactional_id=names.unique("tx")) as producer:
        await producer.init_transactions()
        await producer.begin_transaction()
        await producer.send(topic, b"aborted", key=b"k")
        await producer.flush()  # in the log, not just dropped by the client
        await producer.abort_transaction()
        await producer.begin_transaction()
        await producer.send(topic, b"committed", key=b"k")
        await producer.commit_transaction()
    assert await _values(transport, tp, "read_committed") == [b"committed"]


@pytest.mark.full_transactions
async def test_open_transaction_blocks_read_committed_at_the_lso(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    async with (
        transport.open_producer() as plain,
        transport.open_producer(transactional_id=names.unique("tx")) as producer,
        transport.open_restore_consumer(isolation_level="read_committed") as committed,
        transport.open_restore_consumer(isolation_level="read_uncommitted") as uncommitted,
    ):
        await committed.assign([tp])
        await uncommitted.assign([tp])
        await (await plain.send(topic, b"before", key=b"k")).wait()
        await producer.init_transactions()
        await producer.begin_transaction()
        await producer.send(topic, b"in-tx", key=b"k")
        await producer.flush()
        await (await plain.send(topic, b"after", key=b"k")).wait()
        assert await committed.end_offsets([tp]) == {tp: 1}  # the LSO
        assert await uncommitted.end_offsets([tp]) == {tp: 3}
        assert [r.value for r in await read_to_end(committed, [tp])] == [b"before"]
        assert flatten(await committed.poll(timeout=0.3)) == []  # blocked at the LSO
        assert [r.value for r in await read_to_end(uncommitted, [tp])] == [
            b"before",
            b"in-tx",
            b"after",
        ]
        await producer.commit_transaction()
        assert [r.value for r in await read_to_end(committed, [tp])] == [b"in-tx", b"after"]
        assert await committed.position(tp) == 4  # the commit marker took offset 3


async def test_zombie_producer_is_fenced(transport: Transport, names: Names) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    transactional_id = names.unique("tx")

    async def zombie_carries_on() -> None:
        async with transport.open_producer(transactional_id=transactional_id) as zombie:
            await zombie.init_transactions()
            async with transport.open_producer(transactional_id=transactional_id) as successor:
                await successor.init_transactions()
                await successor.begin_transaction()
                await successor.send(topic, b"successor", key=b"k")
                await successor.commit_transaction()
            # The zombie goes on as if nothing happened; some step must refuse.
            await zombie.begin_transaction()
            delivery = await zombie.send(topic, b"zombie", key=b"k")
            await delivery.wait()
            await zombie.commit_transaction()

    with pytest.raises(TrioTablesError) as info:
        await zombie_carries_on()
    # The memory transport refuses at once; kafka-python fails the produce request.
    fenced = info.value
    assert isinstance(fenced, ProducerFenced) or (
        isinstance(fenced, DeliveryFailed) and "ProducerFenced" in repr(fenced.__cause__)
    ), repr(fenced)
    assert await _values(transport, tp, "read_committed") == [b"successor"]


async def test_a_fenced_zombies_commit_fails_instead_of_hanging(
    broker_url: str, names: Names
) -> None:
    """kafka-python waits for EndTxn without a bound and Tansu never answers a fenced
    producer's: the commit must fail (ProducerFenced, or a TransactionError once
    end_transaction_timeout passed), never block the worker for good."""
    topic = await names.topic(1)
    transactional_id = names.unique("tx")
    options = {} if names.is_memory else {**KAFKA_SETTINGS, "end_transaction_timeout": 3.0}
    async with (
        open_transport(broker_url, **options) as transport,
        transport.open_producer(transactional_id=transactional_id) as zombie,
    ):
        await zombie.init_transactions()
        await zombie.begin_transaction()
        await zombie.send(topic, b"zombie", key=b"k")
        await zombie.flush()
        async with transport.open_producer(transactional_id=transactional_id) as successor:
            await successor.init_transactions()
        with trio.fail_after(60), pytest.raises(TransactionError):
            await zombie.commit_transaction()


@pytest.mark.full_transactions
async def test_fencing_aborts_what_the_zombie_left_open(transport: Transport, names: Names) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    transactional_id = names.unique("tx")
    async with transport.open_producer(transactional_id=transactional_id) as zombie:
        await zombie.init_transactions()
        await zombie.begin_transaction()
        await zombie.send(topic, b"zombie", key=b"k")
        await zombie.flush()
        async with transport.open_producer(transactional_id=transactional_id) as successor:
            await successor.init_transactions()
            await successor.begin_transaction()
            await successor.send(topic, b"successor", key=b"k")
            await successor.commit_transaction()
        with pytest.raises(ProducerFenced):
            await zombie.commit_transaction()
    assert await _values(transport, tp, "read_committed") == [b"successor"]


async def test_offsets_sent_to_a_transaction_commit_with_it(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    output = await names.topic(1, prefix="output")
    group = names.group()
    tp = TP(topic, 0)
    # read_uncommitted: a read_committed member's offset fetch would wait for the open
    # transaction (next test).
    async with (
        transport.open_group_consumer(group, [topic], listener=RecordingListener()) as consumer,
        transport.open_producer(transactional_id=names.unique("tx")) as producer,
    ):
        await wait_for_assignment(consumer, [tp])
        await producer.init_transactions()
        metadata = await consumer.group_metadata()

        await producer.begin_transaction()
        await producer.send(output, b"first", key=b"k")
        await producer.send_offsets_to_transaction({tp: 3}, metadata)
        assert await consumer.committed([tp]) == {tp: None}  # not before the commit
        await producer.abort_transaction()
        assert await consumer.committed([tp]) == {tp: None}

        await producer.begin_transaction()
        await producer.send(output, b"second", key=b"k")
        await producer.send_offsets_to_transaction({tp: 5}, metadata)
        await producer.commit_transaction()
        with trio.fail_after(60):  # the coordinator writes the offsets after the commit
            while await consumer.committed([tp]) != {tp: 5}:
                await consumer.poll(timeout=0.05)


@pytest.mark.full_transactions
async def test_read_committed_offset_fetch_waits_for_pending_transactional_offsets(
    transport: Transport, names: Names
) -> None:
    """KIP-447 (``require_stable``): a new owner must not start from a committed offset
    that a still-open transaction is about to move."""
    topic = await names.topic(1)
    group = names.group()
    tp = TP(topic, 0)
    fetched: list[dict[TP, int | None]] = []
    async with (
        transport.open_group_consumer(
            group, [topic], listener=RecordingListener(), isolation_level="read_committed"
        ) as consumer,
        transport.open_producer(transactional_id=names.unique("tx")) as producer,
    ):
        await wait_for_assignment(consumer, [tp])
        await producer.init_transactions()
        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: 3}, await consumer.group_metadata())

        async def fetch() -> None:
            fetched.append(await consumer.committed([tp]))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await trio.testing.wait_all_tasks_blocked()
                assert fetched == []  # waiting for the transaction to end
                await producer.commit_transaction()
    assert fetched == [{tp: 3}]
