"""The librdkafka producer's own paths (``produce_client="confluent-kafka"``) against the
embedded broker: a full librdkafka queue, the exit after a failure, transactional
producers staying kafka-python. (What every producer does is in tests/contract.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio

from trio_tables import open_transport
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import Delivery, OutgoingRecord
from trio_tables._transport.kafka._librdkafka_producer import LibrdkafkaTransportProducer
from trio_tables._transport.kafka._producer import KafkaTransportProducer

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {**BROKER_SETTINGS, "connect_timeout": 10}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_a_batch_larger_than_librdkafkas_queue_is_handed_over_whole_in_order(
    kafka_broker: Any,
) -> None:
    """librdkafka refuses records while its queue is full (BufferError); the rest of the
    batch is handed over as acknowledgements make room, and the batch arrives whole and
    in order."""
    topic = _unique("queue")
    options = {**SETTINGS, "confluent_config": {"queue.buffering.max.messages": 7}}
    async with open_transport(kafka_broker.url, **options) as kafka:
        await kafka.create_topic(topic, 1)
        async with kafka.open_producer() as producer:
            assert isinstance(producer, LibrdkafkaTransportProducer)
            records = [OutgoingRecord(topic, str(i).encode(), key=b"k") for i in range(60)]
            with trio.fail_after(60):  # a hang guard, not a timing assertion
                deliveries = await producer.send_batch(records)
                await producer.flush()
    offsets = [d.result().offset for d in deliveries]
    assert offsets == list(range(60))
    assert [d.record.value for d in deliveries] == [str(i).encode() for i in range(60)]


async def test_leaving_after_an_error_settles_every_delivery(kafka_broker: Any) -> None:
    """An error inside the producer's block: records not acknowledged are purged and
    fail, acknowledged ones keep their metadata; no delivery is left unsettled (a
    ``wait()`` on one would hang)."""
    topic = _unique("fail")
    async with open_transport(kafka_broker.url, **SETTINGS) as kafka:
        await kafka.create_topic(topic, 2)
        deliveries: list[Delivery] = []

        async def fail_after_sending() -> None:
            async with kafka.open_producer() as producer:
                records = [OutgoingRecord(topic, b"v", key=str(i).encode()) for i in range(500)]
                deliveries.extend(await producer.send_batch(records))
                raise RuntimeError("the app failed")

        with pytest.raises(RuntimeError, match="the app failed"):
            await fail_after_sending()
    assert len(deliveries) == 500
    assert all(d.done for d in deliveries)
    for delivery in deliveries:
        if not delivery.failed:
            assert delivery.result().topic == topic


async def test_transactional_producers_stay_kafka_python(kafka_broker: Any) -> None:
    """librdkafka's transactions need its own consumer's group metadata; the group
    member is kafka-python, so a transactional producer is kafka-python's whatever
    ``produce_client`` says, and commits."""
    topic = _unique("tx")
    async with open_transport(kafka_broker.url, **SETTINGS) as kafka:
        await kafka.create_topic(topic, 1)
        async with kafka.open_producer(transactional_id=_unique("tid")) as producer:
            assert isinstance(producer, KafkaTransportProducer)
            await producer.init_transactions()
            await producer.begin_transaction()
            delivery = await producer.send(topic, b"x", key=b"k")
            await producer.commit_transaction()
    assert delivery.result().offset == 0
