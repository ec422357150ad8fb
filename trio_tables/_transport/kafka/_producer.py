"""The Kafka producer: kafka-python's ``KafkaProducer`` owned by one Trio task.

Records are handed to kafka-python in batches (one thread hop per batch). Acknowledgements
arrive on kafka-python's sender thread; they are collected under a lock and delivered to
Trio with one ``run_sync_soon`` per burst, not one per record.

Threads: the Trio thread owns the accounting (``_in_flight``, an
:class:`~._in_flight.InFlight`, and the deliveries' outcomes); the client's worker thread
hands records over (``_hand_over``) and runs every other client call; kafka-python's
sender thread (or the worker thread, for a record refused at once) reports outcomes into
an :class:`~._in_flight.AckQueue`, drained on the Trio thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.structs import ConsumerGroupMetadata

from ...errors import ProducerFenced, TransactionError
from .._base import (
    TP,
    Delivery,
    GroupMetadata,
    OutgoingRecord,
    RecordMetadata,
    SendOneAsBatch,
)
from ._bridge import ClientOwner, end_transaction, to_kafka_offsets, track_topic
from ._in_flight import AckQueue, InFlight, Outcome

__all__ = ["KafkaTransportProducer"]


def _metadata(raw: Any) -> RecordMetadata:
    return RecordMetadata(raw.topic, raw.partition, raw.offset, raw.timestamp)


def _group(group: GroupMetadata) -> Any:
    return ConsumerGroupMetadata(
        group_id=group.group_id,
        generation_id=group.generation_id,
        member_id=group.member_id,
        group_instance_id=group.group_instance_id,
    )


class KafkaTransportProducer(SendOneAsBatch):
    """Implements :class:`~trio_tables._transport._base.Producer` on kafka-python."""

    def __init__(
        self,
        owner: ClientOwner,
        producer: Any,
        *,
        max_in_flight: int,
        transactional: bool,
        check_topic: Callable[[str], Awaitable[object]],
        end_transaction_timeout: float = 30.0,
    ) -> None:
        self._owner = owner
        self._end_transaction_timeout = end_transaction_timeout
        self._broken = False  # an end of transaction timed out: close without waiting
        self._check_topic = check_topic
        self._known_topics: set[str] = set()
        # Worker thread only (the hand-over): topics the producer keeps metadata for.
        self._tracked_topics: set[str] = set()
        self._producer = producer
        self._transactional = transactional
        # Trio thread only: counted at the hand-over, settled by the ack queue's drain.
        self._in_flight = InFlight(max_in_flight)
        self._acks = AckQueue(self._settle)

    @property
    def in_flight(self) -> int:
        return self._in_flight.count

    def _settle(self, outcomes: list[Outcome]) -> None:
        failed = None
        for delivery, raw, error in outcomes:
            if error is not None:
                delivery.settle(None, error)
                failed = failed or delivery
            else:
                delivery.settle(_metadata(raw), None)
        self._in_flight.settled(len(outcomes), failed)

    def _hand_over(self, deliveries: list[Delivery]) -> None:
        """(Worker thread) Give every record to kafka-python. Never raises: each record
        ends up with exactly one outcome through :meth:`_AckQueue.on_done` (an ack, or the
        error that stopped it), so every record counted in flight is settled once."""
        send = self._producer.send
        on_done = self._acks.on_done
        tracked = self._tracked_topics
        for index, delivery in enumerate(deliveries):
            record = delivery.record
            try:
                if record.topic not in tracked:
                    track_topic(self._producer, record.topic)
                    tracked.add(record.topic)
                future = send(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=record.partition,
                    headers=list(record.headers) or None,
                    timestamp_ms=record.timestamp,
                )
            except Exception as exc:  # e.g. unknown topic, bad partition, buffer timeout
                on_done(delivery, exc)
            except BaseException as exc:  # e.g. MemoryError: fail the rest of the batch
                for rest in deliveries[index:]:
                    on_done(rest, exc)
                return
            else:
                future.add_both(on_done, delivery)

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Hand ``records`` to kafka-python (one thread hop) and return their deliveries.

        Cancellation: if this raises :class:`trio.Cancelled`, none of ``records`` was
        handed over (the cancellation came while checking a new topic, waiting for room,
        or before the worker thread started): nothing of the batch is sent, nothing is
        counted in flight, and the caller sends the batch again if it still wants it.
        Once the worker thread started, the call returns the deliveries even if it was
        cancelled meanwhile (the cancellation then arrives at the caller's next
        checkpoint): those records are in flight, and :meth:`flush` waits for them.
        """
        # kafka-python would block for max_block_ms on a topic that does not exist (we never
        # rely on auto-creation): check each topic once, raising UnknownTopic at once.
        for topic in {record.topic for record in records} - self._known_topics:
            await self._check_topic(topic)
            self._known_topics.add(topic)
        await self._in_flight.wait_for_room()
        deliveries = [Delivery(record) for record in records]
        if not deliveries:
            return deliveries
        self._in_flight.add(len(deliveries))
        try:
            await self._owner.run(self._hand_over, deliveries)
        except BaseException:
            # ClientOwner.run raises only when the worker thread never ran _hand_over
            # (cancelled at its entry or waiting for the client, or the client is
            # closed), and _hand_over itself never raises: no record of this batch was
            # handed over, and none will ever be acknowledged.
            self._in_flight.withdraw(len(deliveries))
            raise
        return deliveries

    async def flush(self) -> None:
        """Wait until every record handed over so far is settled; raise
        :class:`~trio_tables.errors.DeliveryFailed` for the first one that failed since
        the last flush.

        Cancellation: the records stay in flight (nothing is lost or taken back); a
        later ``flush()`` waits for them and reports their failures.
        """
        await self._owner.run(self._producer.flush)
        await self._in_flight.wait_settled()

    async def _transactional_call(
        self, method: str, *args: Any, call: Callable[..., Any] | None = None, **kwargs: Any
    ) -> None:
        if not self._transactional:
            raise TransactionError("this producer has no transactional_id")
        fn = call if call is not None else getattr(self._producer, method)
        try:
            await self._owner.run(partial(fn, *args, **kwargs))
        except kafka_errors.KafkaTimeoutError as exc:
            if call is end_transaction:
                self._broken = True
            raise TransactionError(
                f"{method} failed: {exc}; this producer cannot be used any more"
            ) from exc
        except kafka_errors.ProducerFencedError as exc:
            raise ProducerFenced(
                "another producer with this transactional id took over; this worker must "
                "stop (its partitions now belong to the newer instance)"
            ) from exc
        except (kafka_errors.KafkaError, kafka_errors.IllegalStateError) as exc:
            # kafka-python reports a fenced producer's later calls as a plain KafkaError
            # ("... in an error state: ProducerFencedError").
            if isinstance(exc, kafka_errors.InvalidProducerEpochError) or (
                "ProducerFenced" in str(exc)
            ):
                raise ProducerFenced(f"producer fenced: {exc}") from exc
            raise TransactionError(f"{method} failed: {exc}") from exc

    async def init_transactions(self) -> None:
        await self._transactional_call("init_transactions")

    async def begin_transaction(self) -> None:
        await self._transactional_call("begin_transaction")

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TP, int], group: GroupMetadata
    ) -> None:
        await self._transactional_call(
            "send_offsets_to_transaction", to_kafka_offsets(offsets), _group(group)
        )

    async def commit_transaction(self) -> None:
        await self._transactional_call(
            "commit_transaction",
            self._producer,
            call=end_transaction,
            commit=True,
            timeout=self._end_transaction_timeout,
        )
        # Acks of the committed records may still be on their way to Trio.
        await self._in_flight.wait_settled()

    async def abort_transaction(self) -> None:
        await self._transactional_call(
            "abort_transaction",
            self._producer,
            call=end_transaction,
            commit=False,
            timeout=self._end_transaction_timeout,
        )
        await self._in_flight.wait_settled(raise_failure=False)

    async def close(self, *, flush: bool) -> None:
        """Close the client; with ``flush``, first wait for every acknowledgement."""
        try:
            if flush and not self._owner.closed:
                await self.flush()
        finally:
            # A transaction stuck in its end would keep the sender retrying.
            timeout = 0.0 if self._broken else None
            await self._owner.close(partial(self._producer.close, timeout=timeout))


def new_kafka_producer(config: dict[str, Any]) -> Any:
    return KafkaProducer(**config)
