"""Record fetching on librdkafka (confluent-kafka), for ``fetch_client="confluent-kafka"``.

Why: kafka-python parses record batches in Python. On a 2-core machine its consumer
alone reads ~210k records/s of a header-less topic and ~150k/s of a changelog (one
header per record); that is most of the per-event cost of processing and caps recovery.
librdkafka parses in C (600k+ records/s on the same machine and broker).

:class:`LibrdkafkaFetcher` owns one librdkafka consumer in *assign* mode (it never joins
a group) and the positions: the offset of the next record to hand out per partition.
Both the restore consumer and the group consumer fetch through it; group membership
(our assignor places standbys, and librdkafka cannot call Python assignors), commits,
producers and the admin client stay on kafka-python.

Threads: every method runs on a worker thread of the owning consumer's
:class:`~._bridge.ClientOwner`, one call at a time; the fetcher's state is that
thread's. The Trio thread only reads ``assignment`` and ``paused``, immutable sets
replaced whole. librdkafka's own threads never call back into Python (no callbacks are
configured): they only fill the queue that :meth:`LibrdkafkaFetcher.fetch` reads.

librdkafka behaviours worked around here (the transport contract suite runs on both
clients):

* ``seek()`` fails ("Erroneous state") until the partition's fetcher started, so a
  change of assignment or position is applied right before the next fetch by assigning
  the partitions concerned again (``incremental_unassign`` then ``incremental_assign``
  with explicit offsets); the others keep their fetch state and prefetched records (one
  fetcher serves every table of a worker: a table's change must not restart the
  others' reads);
* ``consume(n, timeout)`` waits the whole timeout unless ``n`` records arrived, so a
  fetch takes what is queued and only then waits for the first record of a new batch;
* pause flags do not survive a re-assignment, and a pause or resume right after an
  assign can lose the assign's offset (librdkafka issue 2190): paused partitions are
  unassigned in librdkafka instead (no ``pause()``/``resume()`` calls at all);
* the position of a partition that returned nothing yet is unknown (-1001).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...errors import KafkaClientError
from .._base import TP, Record
from ._librdkafka_errors import librdkafka_call, translate_error

__all__ = [
    "REPLAY",
    "STREAMING",
    "LibrdkafkaFetcher",
    "librdkafka_config",
    "librdkafka_connection",
    "new_librdkafka_consumer",
]

logger = logging.getLogger("trio_tables.transport.kafka")

Batch = dict[TP, list[Record]]

#: librdkafka's "no offset" (``RD_KAFKA_OFFSET_INVALID``).
_INVALID_OFFSET = -1001


#: Replay reads whole changelogs as fast as it can. Measured on a local broker: 8 MiB per
#: partition instead of 1 MiB reads a changelog 3.5x faster; letting librdkafka queue up
#: to 1M records (16 MiB) ahead of the application instead of 100k took the 200k-record
#: recovery from 132k to 191k records/s.
REPLAY = {
    "fetch.max.bytes": 50 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.min.messages": 300_000,
    "queued.max.messages.kbytes": 16 * 1024,
}

#: A stream only needs to stay ahead of processing, and holds its own buffers: moderate
#: fetches and a small queue keep memory down. Measured (200k-event word count on
#: memory / 1M-key sqlite build peak RSS): 8 MiB total / 1 MiB per partition fetches
#: 103k ev/s / 298 MB; these 93k ev/s / 250 MB; 1 MiB / 256 KiB starved the stream
#: (46k ev/s, fetch latency bound) at 213 MB. kafka-python fetching: 243 MB.
#: ``fetch.queue.backoff.ms``: once a partition's queue passed those bounds, librdkafka
#: waits this long before fetching it again (default 1000 ms): the queue ran dry first,
#: and the stream stood still for ~0.5 s every second or two (py-spy timeline: the poll
#: thread in ``poll()``, the Trio thread idle). 10 ms, 400k-event word count on memory,
#: two pairs back to back: 95.1k / 78.9k -> 125.5k / 109.6k events/s.
STREAMING = {
    "fetch.max.bytes": 2 * 1024 * 1024,
    "max.partition.fetch.bytes": 512 * 1024,
    "queued.min.messages": 20_000,
    "queued.max.messages.kbytes": 4 * 1024,
    "fetch.queue.backoff.ms": 10,
}


def librdkafka_connection(settings: Any) -> dict[str, Any]:
    """The connection settings every librdkafka client gets from the transport's
    :class:`~trio_tables._transport.kafka._transport.KafkaSettings` (librdkafka's names)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "socket.connection.setup.timeout.ms": int(settings.connect_timeout * 1000),
        "socket.timeout.ms": settings.request_timeout_ms,
        "security.protocol": settings.security_protocol.lower(),
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
    return config


def librdkafka_config(
    settings: Any, *, isolation_level: str, sizes: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """librdkafka configuration for a fetching consumer: :func:`librdkafka_connection`,
    then the fetching settings, then ``sizes`` (:data:`REPLAY` or :data:`STREAMING`),
    then ``extra`` (which wins)."""
    config: dict[str, Any] = {
        **librdkafka_connection(settings),
        # Never joined, never committed: librdkafka only insists on having one.
        "group.id": f"{settings.client_id}-fetch-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "isolation.level": isolation_level,
        "fetch.wait.max.ms": 100,
        **sizes,
    }
    config.update(extra)
    return config


@librdkafka_call("creating the consumer")
def new_librdkafka_consumer(config: Mapping[str, Any]) -> Any:
    """A confluent-kafka ``Consumer``; ``ImportError`` saying what to do if it is missing."""
    try:
        from confluent_kafka import Consumer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'fetch_client="confluent-kafka" needs the confluent-kafka package (a '
            "dependency of trio-tables): pip install confluent-kafka, or pass "
            'fetch_client="kafka-python"'
        ) from exc
    return Consumer(dict(config))


class LibrdkafkaFetcher:
    """Assigned partitions, their positions and pause state, fetched with librdkafka.

    Changes are recorded here and applied to librdkafka (one ``assign`` with every
    partition's offset) right before the next fetch. Records that librdkafka queued
    before a seek, a pause or an unassignment are dropped by :meth:`fetch`: they are
    fetched again from the position.
    """

    def __init__(self, consumer: Any, *, timeout: float) -> None:
        from confluent_kafka import TopicPartition

        self.consumer = consumer
        self._timeout = timeout
        self._ctp = TopicPartition
        # Read by the Trio thread too: replaced whole (worker thread), never mutated.
        self.assignment: frozenset[TP] = frozenset()
        self.paused: frozenset[TP] = frozenset()
        self.positions: dict[TP, int] = {}  # worker thread only
        self._stale = False  # librdkafka's assignment, offsets or pauses differ from ours
        # What librdkafka has (worker thread only): its assignment (ours minus the paused
        # partitions), and the partitions whose fetch position must be set again.
        self._applied: frozenset[TP] = frozenset()
        self._reset: set[TP] = set()

    # -- state changes ---------------------------------------------------------------
    def assign(self, starts: Mapping[TP, int]) -> None:
        """Fetch exactly the partitions of ``starts``, from those offsets."""
        positions = self.positions
        self._reset.update(tp for tp, offset in starts.items() if positions.get(tp) != offset)
        self.positions = dict(starts)
        self.assignment = frozenset(starts)
        self.paused = self.paused & self.assignment
        self._stale = True

    def seek(self, tp: TP, offset: int) -> None:
        if tp not in self.assignment:
            raise ValueError(f"seek on {tp}, which is not assigned")
        self.positions[tp] = offset
        self._reset.add(tp)
        self._stale = True

    def set_paused(self, tps: Iterable[TP]) -> None:
        """Pause exactly ``tps`` (those assigned); the rest fetch."""
        wanted = frozenset(tps) & self.assignment
        if wanted != self.paused:
            self.paused = wanted
            self._stale = True

    def rewind(self, batch: Mapping[TP, Sequence[Record]]) -> None:
        """Hand ``batch`` back: the next fetch returns its records again."""
        for tp, records in batch.items():
            if records and tp in self.positions:
                self.positions[tp] = records[0].offset
                self._reset.add(tp)
                self._stale = True

    # -- reads -------------------------------------------------------------------------
    @librdkafka_call("position")
    def position(self, tp: TP) -> int:
        """The next offset handed out for ``tp``; past trailing transaction markers once a
        fetch reached them (librdkafka skips them without returning anything)."""
        if tp not in self.positions:
            raise ValueError(f"position of {tp}, which is not assigned")
        ours = self.positions[tp]
        if self._stale:
            return ours
        (found,) = self.consumer.position([self._ctp(tp.topic, tp.partition)])
        theirs = int(found.offset)
        return ours if theirs == _INVALID_OFFSET else max(ours, theirs)

    @librdkafka_call("fetch")
    def fetch(self, timeout: float, max_records: int) -> Batch:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the
        first one; positions move past what is returned."""
        if self._stale:
            self._apply()
        if not self.assignment:
            return {}
        consumer = self.consumer
        messages = consumer.consume(num_messages=max_records, timeout=0)
        if not messages:
            first = consumer.poll(timeout)
            if first is None:
                return {}
            messages = [first]
            if max_records > 1:
                messages.extend(consumer.consume(num_messages=max_records - 1, timeout=0))
        return self._convert(messages)

    @librdkafka_call("close")
    def close(self) -> None:
        self.consumer.close()

    # -- internals -----------------------------------------------------------------------
    def _apply(self) -> None:
        """Make librdkafka fetch exactly the assigned partitions that are not paused, each
        re-assigned (with its explicit offset) only if it is new or its position changed.
        A paused partition is unassigned in librdkafka rather than paused: its pause flag
        would not survive a re-assignment, and a pause or resume right after an assign
        can make librdkafka drop the assign's offset (librdkafka issue 2190) and fetch
        from its old position. Our positions are the truth either way."""
        ctp = self._ctp
        consumer = self.consumer
        wanted = self.assignment - self.paused
        reset = (self._reset & wanted & self._applied) | (wanted - self._applied)
        if gone := sorted((self._applied - wanted) | (reset & self._applied)):
            consumer.incremental_unassign([ctp(tp.topic, tp.partition) for tp in gone])
        if reset:
            consumer.incremental_assign(
                [ctp(tp.topic, tp.partition, self.positions[tp]) for tp in sorted(reset)]
            )
        self._applied = wanted
        self._reset = set()
        self._stale = False

    def _convert(self, messages: Sequence[Any]) -> Batch:
        # Runs for every record: what depends only on the partition is decided once per
        # run of records of one partition (librdkafka delivers such runs).
        out: Batch = {}
        positions = self.positions
        topic = ""
        partition = -1
        floor: int | None = None
        append: Any = None
        new = tuple.__new__  # Record(...) without its argument handling
        for message in messages:
            error = message.error()
            if error is not None:
                _raise_or_log(error, message.topic())
                continue
            if message.partition() != partition or message.topic() != topic:
                topic, partition = message.topic(), message.partition()
                tp = TP(topic, partition)
                floor = None if tp in self.paused else positions.get(tp)
                append = out.setdefault(tp, []).append
            offset = message.offset()
            if floor is None or offset < floor:
                # Queued before a pause, a seek or an unassignment (librdkafka normally
                # drops these itself). Its position moved past it: ours is the truth.
                if tp in self.assignment:
                    self._reset.add(tp)
                self._stale = True
                continue
            headers = message.headers()
            append(
                new(
                    Record,
                    (
                        topic,
                        partition,
                        offset,
                        message.key(),
                        message.value(),
                        message.timestamp()[1],
                        tuple(headers) if headers else (),
                    ),
                )
            )
        for tp, got in list(out.items()):
            if got:
                positions[tp] = got[-1].offset + 1
            else:
                del out[tp]
        return out


def _raise_or_log(error: Any, topic: str | None) -> None:
    typed = translate_error(error, "fetch", topic=topic)
    if isinstance(typed, KafkaClientError) and typed.retriable:
        # librdkafka reconnects by itself; fetching resumes where it stopped.
        logger.warning("librdkafka fetch: %s (librdkafka retries)", error.str())
        return
    raise typed
