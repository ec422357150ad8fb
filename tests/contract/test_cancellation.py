"""Contract: a cancelled send or flush loses nothing and wedges nothing.

The producer's operations are cancelled at each of their schedule points in turn
(:mod:`tests.cancel_points`); after each attempt a plain ``flush()`` must return, nothing
may be left in flight, and at the end the topic must hold exactly the records whose
``send_batch`` returned (each where its delivery says), and none of a ``send_batch``
that raised :class:`trio.Cancelled`.
"""

from __future__ import annotations

import itertools
from functools import partial

import trio

from trio_tables._transport._base import TP, Delivery, OutgoingRecord, Producer, Transport

from ..cancel_points import cancelled_after
from ._helpers import HANG_GUARD, read_to_end
from .conftest import Names


async def _send_and_flush(
    producer: Producer, batch: list[OutgoingRecord], handed: list[Delivery]
) -> None:
    handed.extend(await producer.send_batch(batch))
    await producer.flush()


async def test_send_batch_and_flush_cancelled_at_each_checkpoint(
    transport: Transport, names: Names
) -> None:
    topic = await names.topic(2)
    acknowledged: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
    cancelled_sends = 0
    outcomes = []
    for k in itertools.count():
        batch = [
            OutgoingRecord(topic, f"{k}-{i}".encode(), key=b"k%d" % i, partition=i % 2)
            for i in range(3)
        ]
        handed: list[Delivery] = []
        # A new producer each time: its first send also checks that the topic exists.
        async with transport.open_producer() as producer:
            attempt = partial(_send_and_flush, producer, batch, handed)
            outcome = await cancelled_after(k, attempt)
            outcomes.append(outcome)
            with trio.fail_after(HANG_GUARD):  # a wedged producer hangs here
                await producer.flush()
            assert producer.in_flight == 0, f"k={k}: {producer.in_flight} left in flight"
        if not handed:
            assert outcome.cancelled, f"k={k}: send_batch neither returned nor was cancelled"
            cancelled_sends += 1
        for delivery in handed:
            metadata = delivery.result()  # settled, acknowledged
            assert delivery.record.value is not None
            acknowledged[delivery.record.value] = (metadata.partition, metadata.offset)
        if not outcome.requested:
            break
    print(f"{len(outcomes)} attempts: {outcomes}")
    assert cancelled_sends >= 1  # k=0 at least: cancelled before anything happened
    assert any(o.cancelled for o in outcomes[1:]), outcomes  # cancelled later on too
    assert not outcomes[-1].cancelled

    async with transport.open_restore_consumer() as consumer:
        tps = [TP(topic, 0), TP(topic, 1)]
        await consumer.assign(tps)
        on_topic = await read_to_end(consumer, tps)
    found = {record.value: (record.partition, record.offset) for record in on_topic}
    assert len(found) == len(on_topic), "a record is on the topic twice"
    assert found == acknowledged
