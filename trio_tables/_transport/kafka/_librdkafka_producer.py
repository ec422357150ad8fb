"""The non-transactional Kafka producer on librdkafka (``produce_client="confluent-kafka"``).

Changelog records (``at_least_once``) and ``manager.send()`` outputs go through it; a
transactional producer stays kafka-python (its transactions take the group's metadata
from kafka-python's group member, which librdkafka cannot accept: see
docs/architecture.md). Measured on the embedded broker, 200k records with one header:
kafka-python ~25-30k records/s at ~24 us of CPU per record, librdkafka 114-337k records/s
at ~2.9 us (docs/NOTES.md).

librdkafka reports outcomes only from ``poll()``/``flush()``, in the thread that calls
them. Two :class:`~._bridge.ClientOwner` worker threads touch the client (librdkafka is
thread-safe): the *hand-over* owner runs ``produce()``; the *poll* owner runs ``poll()``
for :meth:`LibrdkafkaTransportProducer.serve_acks`, a task of the nursery that owns the
producer, whenever records are in flight. ``poll()`` runs the delivery callbacks, which
go through an :class:`~._in_flight.AckQueue` (its lock) to the Trio thread in bursts.

Threads: the Trio thread owns the accounting (``_in_flight``, an
:class:`~._in_flight.InFlight`, and the deliveries' outcomes); the hand-over thread
reads ``_client`` only; the poll thread appends to the ack queue under its lock.
librdkafka's own threads never call Python.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, NoReturn

import trio

from ...errors import TransactionError
from .._base import TP, Delivery, GroupMetadata, OutgoingRecord, RecordMetadata, SendOneAsBatch
from ._bridge import ClientOwner
from ._in_flight import AckQueue, InFlight, Outcome
from ._librdkafka import librdkafka_connection
from ._librdkafka_errors import librdkafka_call, translate, translate_error

__all__ = ["LibrdkafkaTransportProducer", "open_librdkafka_producer", "producer_config"]

#: Seconds one ``poll()`` of the ack task may block (it returns at the first report).
_POLL_TIMEOUT = 0.1


def producer_config(
    base: Mapping[str, Any], *, linger: float, max_in_flight: int, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """librdkafka producer settings: the shared connection settings ``base``, what
    keeps records in order as the kafka-python producer does (not idempotent, one
    request in flight per connection: see ``_open_producer``), then ``extra``."""
    config: dict[str, Any] = {
        **base,
        "acks": "all",
        "linger.ms": linger * 1000,
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        # kafka-python's default partitioner (murmur2, random without a key).
        "partitioner": "murmur2_random",
        # kafka-python's delivery_timeout_ms.
        "message.timeout.ms": 120_000,
        # send_batch may exceed max_in_flight by one batch; BufferError is handled too.
        "queue.buffering.max.messages": max(100_000, 4 * max_in_flight),
    }
    config.update(extra)
    return config


@librdkafka_call("creating the producer")
def _new_client(config: Mapping[str, Any]) -> Any:
    from confluent_kafka import Producer

    return Producer(dict(config))


def _metadata(message: Any) -> RecordMetadata:
    return RecordMetadata(
        message.topic(), message.partition(), message.offset(), message.timestamp()[1]
    )


class LibrdkafkaTransportProducer(SendOneAsBatch):
    """Implements :class:`~trio_tables._transport._base.Producer` on librdkafka, without
    transactions (the transactional calls raise :class:`TransactionError`)."""

    def __init__(
        self,
        client: Any,
        *,
        max_in_flight: int,
        check_topic: Callable[[str], Awaitable[object]],
        name: str = "Kafka producer (librdkafka)",
    ) -> None:
        self._client = client
        self._owner = ClientOwner(name)
        self._poller = ClientOwner(f"{name} acks")
        self._check_topic = check_topic
        self._known_topics: set[str] = set()
        # Trio thread only: counted at the hand-over, settled by the ack queue's drain.
        self._in_flight = InFlight(max_in_flight)
        self._work = trio.lowlevel.ParkingLot()
        self._acks = AckQueue(self._settle)

    @property
    def in_flight(self) -> int:
        return self._in_flight.count

    def _settle(self, outcomes: list[Outcome]) -> None:
        """(Trio thread) Settle a burst of reports: ``raw`` is (error, message)."""
        failed = None
        for delivery, raw, _ in outcomes:
            error, message = raw
            if error is not None:
                exc = (
                    error
                    if isinstance(error, BaseException)
                    else translate_error(error, "producing", topic=delivery.record.topic)
                )
                delivery.settle(None, exc)
                failed = failed or delivery
            else:
                delivery.settle_lazily(message.offset(), message, _metadata)
        self._in_flight.settled(len(outcomes), failed)

    def _report(self, delivery: Delivery, error: Any, message: Any) -> None:
        """librdkafka delivery callback (the poll thread, or the hand-over thread for a
        record refused at once)."""
        self._acks.on_done(delivery, (error, message))

    def _refuse(self, delivery: Delivery, exc: BaseException) -> None:
        """A record refused at once (the hand-over thread); _settle takes the pair."""
        self._acks.on_done(delivery, (exc, None))

    def _hand_over(self, deliveries: list[Delivery], start: int) -> int:
        """(Hand-over thread) Give records from ``start`` on to librdkafka; return the
        index of the first one not handed over (librdkafka's queue is full), or
        ``len(deliveries)``. Every record handed over gets exactly one report."""
        produce = self._client.produce
        report = self._report
        for index in range(start, len(deliveries)):
            delivery = deliveries[index]
            record = delivery.record
            if record.key is None and record.value is None:
                # kafka-python and the memory transport refuse it; librdkafka would not.
                self._refuse(delivery, ValueError("a record needs a key or a value (or both)"))
                continue
            try:
                produce(
                    record.topic,
                    record.value,
                    record.key,
                    -1 if record.partition is None else record.partition,
                    on_delivery=partial(report, delivery),
                    timestamp=record.timestamp or 0,
                    headers=list(record.headers) or None,
                )
            except BufferError:
                return index
            except Exception as exc:  # e.g. unknown partition
                self._refuse(delivery, translate(exc, "producing"))
            except BaseException as exc:  # e.g. MemoryError: fail the rest of the batch
                for rest in deliveries[index:]:
                    self._refuse(rest, exc)
                return len(deliveries)
        return len(deliveries)

    async def serve_acks(self) -> NoReturn:
        """(A task of the producer's nursery) ``poll()`` librdkafka while records are in
        flight, so their reports reach Trio. Cancelled when the producer closes; a poll
        in progress finishes first (at most :data:`_POLL_TIMEOUT`)."""
        while True:
            while not self._in_flight.count:
                await self._work.park()
            await self._poller.run(self._client.poll, _POLL_TIMEOUT)

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Hand ``records`` to librdkafka and return their deliveries.

        Cancellation: if this raises :class:`trio.Cancelled`, none of ``records`` was
        handed over (cancelled while checking a new topic, waiting for room, or before
        the hand-over thread started). Once the first hand-over started, the call
        returns the deliveries even if cancelled meanwhile; if librdkafka's queue was
        full, it waits (shielded) for room and hands over the rest, so a returned batch
        is always wholly in flight.
        """
        for topic in {record.topic for record in records} - self._known_topics:
            await self._check_topic(topic)
            self._known_topics.add(topic)
        await self._in_flight.wait_for_room()
        deliveries = [Delivery(record) for record in records]
        if not deliveries:
            return deliveries
        self._in_flight.add(len(deliveries))
        self._work.unpark_all()
        try:
            done = await self._owner.run(self._hand_over, deliveries, 0)
        except BaseException:
            # The hand-over never ran (ClientOwner.run), and _hand_over never raises.
            self._in_flight.withdraw(len(deliveries))
            raise
        with trio.CancelScope(shield=True):
            while done < len(deliveries):
                # Queue full: the ack task's reports make room. Give them a moment.
                await trio.sleep(0.01)
                done = await self._owner.run(self._hand_over, deliveries, done)
        return deliveries

    async def flush(self) -> None:
        """Wait until every record handed over so far is settled; raise
        :class:`~trio_tables.errors.DeliveryFailed` for the first one that failed since
        the last flush.

        Cancellation: the records stay in flight (nothing is lost or taken back); a
        later ``flush()`` waits for them and reports their failures.
        """
        await self._in_flight.wait_settled()

    async def _no_transactions(self, *args: Any) -> None:
        raise TransactionError(
            "this producer has no transactional_id (transactional producers are kafka-python's)"
        )

    async def init_transactions(self) -> None:
        await self._no_transactions()

    async def begin_transaction(self) -> None:
        await self._no_transactions()

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TP, int], group: GroupMetadata
    ) -> None:
        await self._no_transactions()

    async def commit_transaction(self) -> None:
        await self._no_transactions()

    async def abort_transaction(self) -> None:
        await self._no_transactions()

    def _close_client(self) -> None:
        """(Poll thread, after the ack task stopped) Fail what is still queued (only
        after a failure or a cancelled flush: a clean close flushed first), report it,
        close."""
        self._client.purge()
        self._client.flush(5.0)  # reports the purged records (and any late ack)
        self._client.close()


@asynccontextmanager
async def open_librdkafka_producer(
    settings: Any,
    linger: float,
    *,
    max_in_flight: int,
    check_topic: Callable[[str], Awaitable[object]],
) -> AsyncIterator[LibrdkafkaTransportProducer]:
    """A librdkafka producer for the transport's ``settings`` (a ``KafkaSettings``) with
    its ack task; on a clean exit, waits for every
    acknowledgement first (raising :class:`~trio_tables.errors.DeliveryFailed` for a
    failed one). On an error or cancellation inside (or while that flush waits), records
    not yet acknowledged are purged and their deliveries fail (none was acknowledged, so
    nothing acknowledged is lost). The close itself is shielded."""
    config = producer_config(
        librdkafka_connection(settings),
        linger=linger,
        max_in_flight=max_in_flight,
        extra=settings.confluent_config,
    )
    client = await trio.to_thread.run_sync(_new_client, config)
    producer = LibrdkafkaTransportProducer(
        client, max_in_flight=max_in_flight, check_topic=check_topic
    )
    raised: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer.serve_acks)
            try:
                yield producer
                await producer.flush()
            except BaseException as exc:
                raised.append(exc)
                raise
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await producer._owner.close(lambda: None)
                    await producer._poller.close(producer._close_client)
                    # Purged records' reports are on their way (run_sync_soon).
                    await trio.lowlevel.checkpoint()
    except BaseExceptionGroup as group:
        # The ack task never fails; what the block raised leaves as the caller's
        # kafka-python producer would raise it (not wrapped by this nursery).
        if raised and list(group.exceptions) == raised:
            raise raised[0] from None
        raise
