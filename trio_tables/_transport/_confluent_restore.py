"""The restore consumer on librdkafka (confluent-kafka): the fast path for changelog
replay, ``KafkaSettings(restore_client="confluent-kafka")`` (the default).

Why: kafka-python parses record batches in Python. With the one header every changelog
record carries, its consumer alone reads ~150k records/s on a 2-core machine, which caps
recovery and standby tailing below what the raw client reads from a header-less topic.
librdkafka parses in C (600k+ records/s on the same machine and broker).

Only the group-less restore consumer uses it. Group membership (our assignor places
standbys, and librdkafka has no Python assignors), producers, the admin client and the
high-watermark probe that gives end offsets stay on kafka-python.

librdkafka behaviours this module works around (each pinned by the transport contract
suite, which runs against this consumer too):

* ``seek()`` fails ("Erroneous state") until the partition's fetcher started, so
  positions are applied by assigning again with explicit offsets before the next fetch;
* ``consume(n, timeout)`` waits the whole timeout unless ``n`` records arrived, so a poll
  takes what is queued and only then waits for the first record of a new batch;
* the position of a partition that returned nothing yet is unknown (-1001): the offset
  assigned or sought is the answer then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trio

from ..errors import UnknownTopic
from ._base import TP, Record
from ._kafka_bridge import ClientOwner
from ._kafka_consumer import HighWatermarkProbe

__all__ = ["ConfluentRestoreConsumer", "confluent_consumer_config", "new_confluent_consumer"]

logger = logging.getLogger("trio_tables.transport.kafka")

Batch = dict[TP, list[Record]]

#: librdkafka's "no offset" (``RD_KAFKA_OFFSET_INVALID``).
_INVALID_OFFSET = -1001


def confluent_consumer_config(
    settings: Any, *, isolation_level: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """librdkafka configuration for a restore consumer from the transport's
    :class:`~trio_tables._transport._kafka.KafkaSettings`, then ``extra`` (which wins)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        # Never joined, never committed: librdkafka only insists on having one.
        "group.id": f"{settings.client_id}-restore-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "isolation.level": isolation_level,
        "socket.connection.setup.timeout.ms": int(settings.connect_timeout * 1000),
        "socket.timeout.ms": settings.request_timeout_ms,
        "security.protocol": settings.security_protocol.lower(),
        # Replay wants large fetches (measured on a local broker: 8 MiB per partition
        # instead of 1 MiB reads 3.5x faster); the queue ahead of the application stays
        # bounded at 16 MiB per partition.
        "fetch.max.bytes": 50 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 16 * 1024,
        "fetch.wait.max.ms": 100,
    }
    optional = {
        "sasl.mechanism": settings.sasl_mechanism,
        "sasl.username": settings.sasl_plain_username,
        "sasl.password": settings.sasl_plain_password,
        "ssl.ca.location": settings.ssl_cafile,
        "ssl.certificate.location": settings.ssl_certfile,
        "ssl.key.location": settings.ssl_keyfile,
        "ssl.key.password": settings.ssl_password,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    config.update(extra)
    return config


def new_confluent_consumer(config: Mapping[str, Any]) -> Any:
    """A confluent-kafka ``Consumer``; ``ImportError`` saying what to do if it is missing."""
    try:
        from confluent_kafka import Consumer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'restore_client="confluent-kafka" needs the confluent-kafka package (a '
            'dependency of trio-tables): pip install confluent-kafka, or pass '
            'restore_client="kafka-python"'
        ) from exc
    return Consumer(dict(config))


class ConfluentRestoreConsumer:
    """Implements :class:`~trio_tables._transport._base.RestoreConsumer` on librdkafka.

    Every call runs in a worker thread through the client's :class:`ClientOwner`, one at
    a time. Positions are kept here: the offset of the next record to hand out per
    assigned partition. A change of assignment or position is applied to librdkafka
    (one ``assign`` with every partition's offset) right before the next fetch.
    """

    def __init__(
        self,
        owner: ClientOwner,
        consumer: Any,
        probe: HighWatermarkProbe,
        *,
        timeout: float,
        max_poll_records: int,
    ) -> None:
        from confluent_kafka import TopicPartition

        self._owner = owner
        self._max_poll_records = max(max_poll_records, 1)
        self._consumer = consumer
        self._probe = probe
        self._timeout = timeout
        self._ctp = TopicPartition
        self._assignment: frozenset[TP] = frozenset()
        self._positions: dict[TP, int] = {}
        self._paused: set[TP] = set()
        self._stale = False  # librdkafka's assignment or offsets differ from ours

    # -- worker-thread side ------------------------------------------------------------
    def _apply_assignment(self) -> None:
        ctp = self._ctp
        self._consumer.assign(
            [ctp(tp.topic, tp.partition, self._positions[tp]) for tp in sorted(self._assignment)]
        )
        # librdkafka keeps a partition's pause flag across assignments: set both ways.
        if self._paused:
            self._consumer.pause([ctp(tp.topic, tp.partition) for tp in sorted(self._paused)])
        if running := self._assignment - self._paused:
            self._consumer.resume([ctp(tp.topic, tp.partition) for tp in sorted(running)])
        self._stale = False

    def _fetch(self, timeout: float, max_records: int) -> Batch:
        if self._stale:
            self._apply_assignment()
        if not self._assignment:
            return {}
        consumer = self._consumer
        messages = consumer.consume(num_messages=max_records, timeout=0)
        if not messages:
            first = consumer.poll(timeout)
            if first is None:
                return {}
            messages = [first]
            if max_records > 1:
                messages.extend(consumer.consume(num_messages=max_records - 1, timeout=0))
        return self._convert(messages)

    def _convert(self, messages: Sequence[Any]) -> Batch:
        # Runs for every replayed record: what depends only on the partition is decided
        # once per run of records of one partition (librdkafka delivers such runs).
        out: Batch = {}
        positions = self._positions
        topic = ""
        partition = -1
        floor: int | None = None
        append: Any = None
        for message in messages:
            error = message.error()
            if error is not None:
                self._raise_or_log(error, message.topic())
                continue
            if message.partition() != partition or message.topic() != topic:
                topic, partition = message.topic(), message.partition()
                tp = TP(topic, partition)
                # Queued before a pause or a seek (or no longer assigned): dropped, and
                # fetched again from the position.
                floor = None if tp in self._paused else positions.get(tp)
                append = out.setdefault(tp, []).append
            offset = message.offset()
            if floor is None or offset < floor:
                continue
            headers = message.headers()
            append(
                Record(
                    topic,
                    partition,
                    offset,
                    message.key(),
                    message.value(),
                    message.timestamp()[1],
                    tuple(headers) if headers else (),
                )
            )
        for tp, got in list(out.items()):
            if got:
                positions[tp] = got[-1].offset + 1
            else:
                del out[tp]
        return out

    def _raise_or_log(self, error: Any, topic: str | None) -> None:
        from confluent_kafka import KafkaError, KafkaException

        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise UnknownTopic(topic or error.str())
        if error.retriable() or error.code() in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
        ):
            # librdkafka reconnects by itself; the fetch resumes where it stopped.
            logger.warning("restore consumer: %s (librdkafka retries)", error.str())
            return
        raise KafkaException(error)

    def _rewind(self, batch: Batch) -> None:
        for tp, records in batch.items():
            if records and tp in self._positions:
                self._positions[tp] = records[0].offset
                self._stale = True

    def _low_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        ctp = self._ctp
        return {
            tp: int(
                self._consumer.get_watermark_offsets(
                    ctp(tp.topic, tp.partition), timeout=self._timeout, cached=False
                )[0]
            )
            for tp in tps
        }

    def _librdkafka_position(self, tp: TP) -> int:
        (found,) = self._consumer.position([self._ctp(tp.topic, tp.partition)])
        return int(found.offset)

    # -- RestoreConsumer ----------------------------------------------------------------
    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        box: list[Batch] = []

        def work() -> None:
            box.append(self._fetch(timeout, max_records or self._max_poll_records))

        try:
            await self._owner.run(work)
            # As the kafka-python consumer: a cancellation that arrived while the thread
            # ran is delivered here, with the records handed back.
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            if box and box[0]:
                self._rewind(box[0])
            raise
        return box[0]

    async def seek(self, tp: TP, offset: int) -> None:
        def work() -> None:
            if tp not in self._assignment:
                raise ValueError(f"seek on {tp}, which is not assigned")
            self._positions[tp] = offset
            self._stale = True

        # Through the owner like every call: never while a poll is in its thread.
        await self._owner.run(work)

    async def position(self, tp: TP) -> int:
        """The next offset this consumer hands out for ``tp``; past trailing transaction
        markers once a fetch reached them (librdkafka skips them)."""
        if tp not in self._positions:
            raise ValueError(f"position of {tp}, which is not assigned")
        ours = self._positions[tp]
        if self._stale:
            return ours
        theirs = await self._owner.run(self._librdkafka_position, tp)
        return max(ours, theirs) if theirs != _INVALID_OFFSET else ours

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = sorted(set(tps))
        if not wanted:
            return {}
        return await self._owner.run(self._low_watermarks, wanted)

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        return await self._probe.end_offsets(tps)

    async def assign(self, tps: Iterable[TP]) -> None:
        wanted = frozenset(tps)
        new = sorted(wanted - self._assignment)
        starts = await self.beginning_offsets(new)

        def work() -> None:
            kept = {tp: self._positions[tp] for tp in wanted if tp in self._positions}
            self._positions = {**kept, **starts}
            self._assignment = wanted
            self._paused &= wanted
            self._stale = True

        await self._owner.run(work)

    def assignment(self) -> frozenset[TP]:
        return self._assignment

    async def pause(self, tps: Iterable[TP]) -> None:
        wanted = set(tps)

        def work() -> None:
            self._paused.update(wanted & self._assignment)
            self._stale = True

        await self._owner.run(work)

    async def resume(self, tps: Iterable[TP]) -> None:
        wanted = set(tps)

        def work() -> None:
            self._paused.difference_update(wanted)
            self._stale = True

        await self._owner.run(work)

    def paused(self) -> frozenset[TP]:
        return frozenset(self._paused)

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            if not self._owner.closed:
                await self._owner.run(self._consumer.close)
                self._owner.closed = True
