"""Contract: topics, producing, fetching, offsets and the restore consumer."""

from __future__ import annotations

import pytest
import trio
from kafka.partitioner.default import murmur2

from trio_tables._transport._base import TP, OutgoingRecord, Transport
from trio_tables.errors import DeliveryFailed, PartitionCountMismatch, UnknownTopic

from ._helpers import RecordingListener, flatten, poll_count, poll_until, read_to_end
from .conftest import Names


async def test_create_describe_and_list_topics(transport: Transport, names: Names) -> None:
    name = names.unique("topic")
    created = await transport.create_topic(name, 3)
    assert (created.name, created.partitions) == (name, 3)
    described = await transport.describe_topic(name)
    assert (described.name, described.partitions) == (name, 3)
    assert name in await transport.list_topics()
    again = await transport.create_topic(name, 3)  # exist_ok: checks the count only
    assert again.partitions == 3


async def test_partition_count_mismatch_names_both_counts(
    transport: Transport, names: Names
) -> None:
    name = await names.topic(3)
    with pytest.raises(PartitionCountMismatch) as info:
        await transport.create_topic(name, 5)
    assert (info.value.expected, info.value.actual) == (5, 3)
    assert "3 partitions" in str(info.value)
    assert "5 are required" in str(info.value)


async def test_unknown_topics_raise_typed_errors(transport: Transport, names: Names) -> None:
    missing = names.unique("missing")
    with pytest.raises(UnknownTopic) as info:
        await transport.describe_topic(missing)
    assert info.value.topic == missing
    with pytest.raises(UnknownTopic):
        async with transport.open_group_consumer(
            names.group(), [missing], listener=RecordingListener()
        ):
            pass  # pragma: no cover
    async with transport.open_producer() as producer:
        with pytest.raises(UnknownTopic):
            await producer.send(missing, b"v")
    assert missing not in await transport.list_topics()  # never auto-created


async def test_record_round_trip_keeps_every_field(transport: Transport, names: Names) -> None:
    topic = await names.topic(2)
    headers = (("trace", b"\x00\x01"), ("source", b"test"))
    async with transport.open_producer() as producer:
        first = await producer.send(
            topic, b"value", key=b"key", partition=1, headers=headers, timestamp=1_600_000_000_123
        )
        second = await producer.send(topic, None, key=b"tombstone", partition=1)
        await producer.flush()
    meta = await first.wait()
    assert (meta.topic, meta.partition, meta.offset, meta.timestamp) == (
        topic,
        1,
        0,
        1_600_000_000_123,
    )
    assert (await second.wait()).offset == 1
    # The offset alone (what a commit cycle reads) agrees with the metadata.
    assert (first.offset, second.offset) == (0, 1)
    assert first.result() == meta  # the same metadata when asked again
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([TP(topic, 1)])
        records = await poll_count(consumer, 2)
    assert len(records) == 2
    one, two = records
    assert (one.topic, one.partition, one.offset) == (topic, 1, 0)
    assert (one.key, one.value, one.timestamp, one.headers) == (
        b"key",
        b"value",
        1_600_000_000_123,
        headers,
    )
    assert (two.offset, two.key, two.value, two.headers) == (1, b"tombstone", None, ())
    assert two.timestamp > 1_600_000_000_123  # "now", in milliseconds


async def test_record_without_key_and_value_fails_its_delivery(
    transport: Transport, names: Names
) -> None:
    """kafka-python refuses such records; the memory transport does the same."""
    topic = await names.topic(1)
    async with transport.open_producer() as producer:
        empty = await producer.send(topic, None)
        keyless = await producer.send(topic, b"value")
        with pytest.raises(DeliveryFailed):
            await producer.flush()
    assert empty.failed
    with pytest.raises(DeliveryFailed):
        empty.offset  # noqa: B018 - raises like result()
    assert keyless.result().offset == keyless.offset == 0


async def test_headers_given_as_any_pairs_are_sent_as_str_and_bytes(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(1)
    async with transport.open_producer() as producer:
        delivery = await producer.send(
            topic, b"v", key=b"k", headers=[("trace", bytearray(b"\x01")), ("n", b"2")]
        )
        await producer.flush()
    assert delivery.record.headers == (("trace", b"\x01"), ("n", b"2"))
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([TP(topic, 0)])
        (record,) = await poll_count(consumer, 1)
    assert record.headers == (("trace", b"\x01"), ("n", b"2"))


async def test_default_partitioner_is_murmur2_of_the_key(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(5)
    keys = [f"key-{i}".encode() for i in range(30)]
    async with transport.open_producer() as producer:
        deliveries = await producer.send_batch([OutgoingRecord(topic, b"v", key=k) for k in keys])
        again = await producer.send(topic, b"w", key=keys[0])
        await producer.flush()
    partitions = [d.result().partition for d in deliveries]
    assert partitions == [(murmur2(k) & 0x7FFFFFFF) % 5 for k in keys]
    assert again.result().partition == partitions[0]
    assert len(set(partitions)) > 1


async def test_bounded_in_flight_delivers_everything(transport: Transport, names: Names) -> None:
    topic = await names.topic(1)
    bound, batch = 4, 3
    deliveries = []
    most = 0
    async with transport.open_producer(max_in_flight=bound) as producer:
        for i in range(60):
            deliveries.append(await producer.send(topic, str(i).encode()))
            most = max(most, producer.in_flight)
        for i in range(20):
            records = [OutgoingRecord(topic, f"b{i}-{j}".encode()) for j in range(batch)]
            deliveries.extend(await producer.send_batch(records))
            most = max(most, producer.in_flight)
        await producer.flush()
        assert producer.in_flight == 0
    assert most <= bound + batch
    assert all(d.done and not d.failed for d in deliveries)
    assert sorted(d.result().offset for d in deliveries) == list(range(120))
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([TP(topic, 0)])
        values = [r.value for r in await read_to_end(consumer, [TP(topic, 0)])]
    assert values == [d.record.value for d in deliveries]


async def test_partition_out_of_range_fails_the_delivery(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(2)
    async with transport.open_producer() as producer:
        good = await producer.send(topic, b"ok", partition=0)
        bad = await producer.send(topic, b"lost", partition=7)
        with pytest.raises(DeliveryFailed) as info:
            await producer.flush()
        await producer.flush()  # the failure is reported once
    assert good.result().offset == 0
    assert bad.failed
    assert info.value.topic == topic
    with pytest.raises(DeliveryFailed):
        bad.result()


async def test_end_offsets_asked_again_see_what_was_written_since(
    transport: Transport, names: Names
) -> None:
    """Each answer is the end as of the question: a fetch the previous probe left in
    flight (at the offset this one seeks: an empty partition's 0, the base of the batch
    written since) must not answer it."""
    topic = await names.topic(2)
    tps = [TP(topic, 0), TP(topic, 1)]
    async with (
        transport.open_producer() as producer,
        transport.open_restore_consumer() as consumer,
    ):
        await consumer.assign(tps)
        ends = {tp: 0 for tp in tps}
        for round_ in range(6):
            assert await consumer.end_offsets(tps) == ends, round_
            # Time passes between two questions (the scenario, not a wait for
            # something): what a probe left in flight has arrived by the next one.
            await trio.sleep(0.2)
            size = 1 if round_ % 2 else 300
            await producer.send_batch(
                [OutgoingRecord(topic, b"%d" % i, partition=round_ % 2) for i in range(size)]
            )
            await producer.flush()
            ends[tps[round_ % 2]] += size
        assert await consumer.end_offsets(tps) == ends


async def test_end_offset_after_one_large_batch(transport: Transport, names: Names) -> None:
    """Tansu's ListOffsets answers 1 here (last batch base + 1): end offsets must come
    from the fetch high watermark."""
    topic = await names.topic(2)
    tp, empty = TP(topic, 0), TP(topic, 1)
    async with transport.open_producer() as producer:
        await producer.send_batch(
            [OutgoingRecord(topic, b"%d" % i, partition=0) for i in range(500)]
        )
        await producer.flush()
    async with transport.open_restore_consumer() as consumer:
        await consumer.assign([tp, empty])
        assert await consumer.end_offsets([tp, empty]) == {tp: 500, empty: 0}
        assert await consumer.beginning_offsets([tp, empty]) == {tp: 0, empty: 0}
        assert await consumer.position(tp) == 0  # end_offsets did not move it
        records = await read_to_end(consumer, [tp, empty])
    assert [r.offset for r in records] == list(range(500))


async def test_restore_consumer_assign_seek_pause_resume(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(3)
    a, b, c = TP(topic, 0), TP(topic, 1), TP(topic, 2)
    async with transport.open_producer() as producer:
        for tp in (a, b, c):
            await producer.send_batch(
                [
                    OutgoingRecord(topic, f"{tp.partition}:{i}".encode(), partition=tp.partition)
                    for i in range(10)
                ]
            )
        await producer.flush()
    async with transport.open_restore_consumer(max_poll_records=4) as consumer:
        await consumer.assign([a, b])
        assert consumer.assignment() == {a, b}
        await consumer.seek(a, 6)
        assert await consumer.position(a) == 6
        await consumer.pause([b])
        assert consumer.paused() == {b}
        got = await poll_until(consumer, lambda rs: len(rs) >= 4)
        assert [(r.partition, r.offset) for r in got] == [(0, 6), (0, 7), (0, 8), (0, 9)]
        assert flatten(await consumer.poll(timeout=0.3)) == []  # b is paused
        assert await consumer.position(a) == 10
        assert await consumer.position(b) == 0
        await consumer.resume([b])
        assert consumer.paused() == frozenset()
        got = await poll_count(consumer, 10)
        assert [(r.partition, r.offset) for r in got] == [(1, i) for i in range(10)]
        # Reassigning keeps the position of kept partitions; new ones start at 0.
        await consumer.seek(b, 3)
        await consumer.assign([b, c])
        assert consumer.assignment() == {b, c}
        assert await consumer.position(b) == 3
        assert await consumer.position(c) == 0
        got = await poll_count(consumer, 17)
        assert sorted((r.partition, r.offset) for r in got) == sorted(
            [(1, i) for i in range(3, 10)] + [(2, i) for i in range(10)]
        )


async def test_cancelled_restore_poll_loses_nothing(transport: Transport, names: Names) -> None:
    topic = await names.topic(1)
    tp = TP(topic, 0)
    async with transport.open_producer() as producer:
        await producer.send_batch([OutgoingRecord(topic, b"%d" % i) for i in range(50)])
    async with transport.open_restore_consumer(max_poll_records=7) as consumer:
        await consumer.assign([tp])
        with trio.move_on_after(0):
            await consumer.poll(timeout=5)
        # Cancel polls at varied points while reading; whatever a poll returned counts.
        seen: list[int] = []
        with trio.fail_after(60):
            rounds = 0
            while len(seen) < 50:
                rounds += 1
                with trio.CancelScope() as scope:
                    if rounds % 2:
                        scope.cancel()
                    batch = await consumer.poll(timeout=0.2)
                    seen.extend(r.offset for r in flatten(batch))
        assert seen == list(range(50))
