"""The fetcher interface: what the Kafka transport's consumers need of a record-fetching
client, and its kafka-python implementation.

A :class:`Fetcher` owns the assigned partitions, their positions (the offset of the next
record to hand out) and their pause state, and fetches records. Two implement it:
:class:`~._librdkafka.LibrdkafkaFetcher` (librdkafka, the default) and
:class:`KafkaPythonFetcher` (``fetch_client="kafka-python"``). The restore consumer
(:mod:`._restore`, which the worker's changelog reader uses) fetches only through
it, and so does the librdkafka group consumer (:mod:`._librdkafka_group`).

Threads: every method runs on the worker thread of the owning consumer's
:class:`~._bridge.ClientOwner`, one call at a time; the fetcher's state is that
thread's. The Trio thread reads only ``assignment`` and ``paused`` (immutable sets
replaced whole).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from kafka import errors as kafka_errors

from .._base import TP, Record
from ._bridge import to_kafka_tp
from ._consumer import _poll_and_convert

__all__ = ["Batch", "Fetcher", "KafkaPythonFetcher"]

Batch = dict[TP, list[Record]]


class Fetcher(Protocol):
    """A record-fetching client in assign mode (it never joins a group)."""

    #: Assigned partitions and paused ones (read by the Trio thread: replaced whole).
    assignment: frozenset[TP]
    paused: frozenset[TP]
    #: The offset of the next record handed out, per assigned partition.
    positions: dict[TP, int]

    def assign(self, starts: Mapping[TP, int]) -> None:
        """Fetch exactly the partitions of ``starts``, from those offsets."""
        ...

    def seek(self, tp: TP, offset: int) -> None:
        """``ValueError`` if ``tp`` is not assigned."""
        ...

    def set_paused(self, tps: Iterable[TP]) -> None:
        """Pause exactly ``tps`` (those assigned); the rest fetch."""
        ...

    def rewind(self, batch: Mapping[TP, Sequence[Record]]) -> None:
        """Hand ``batch`` back: the next fetch returns its records again."""
        ...

    def position(self, tp: TP) -> int:
        """The next offset handed out for ``tp``, past trailing transaction markers once
        a fetch reached them."""
        ...

    def fetch(self, timeout: float, max_records: int) -> Batch:
        """Up to ``max_records`` records of unpaused partitions, waiting at most
        ``timeout`` seconds for the first; positions move past what is returned. A
        failure hands nothing out and moves no position."""
        ...

    def close(self) -> None: ...


class KafkaPythonFetcher:
    """Implements :class:`Fetcher` on a group-less kafka-python ``KafkaConsumer``."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.assignment: frozenset[TP] = frozenset()
        self.paused: frozenset[TP] = frozenset()
        self.positions: dict[TP, int] = {}

    def assign(self, starts: Mapping[TP, int]) -> None:
        wanted = sorted(starts)
        self.consumer.assign([to_kafka_tp(tp) for tp in wanted])
        for tp in wanted:
            self.consumer.seek(to_kafka_tp(tp), starts[tp])
        self.positions = dict(starts)
        self.assignment = frozenset(starts)
        paused = self.paused & self.assignment
        self.paused = frozenset()
        self.set_paused(paused)

    def seek(self, tp: TP, offset: int) -> None:
        if tp not in self.assignment:
            raise ValueError(f"seek on {tp}, which is not assigned")
        self.consumer.seek(to_kafka_tp(tp), offset)
        self.positions[tp] = offset

    def set_paused(self, tps: Iterable[TP]) -> None:
        wanted = frozenset(tps) & self.assignment
        if pause := wanted - self.paused:
            self.consumer.pause(*map(to_kafka_tp, sorted(pause)))
        if resume := self.paused - wanted:
            self.consumer.resume(*map(to_kafka_tp, sorted(resume)))
        self.paused = wanted

    def rewind(self, batch: Mapping[TP, Sequence[Record]]) -> None:
        for tp, records in batch.items():
            if records and tp in self.positions:
                # No longer assigned in the client: nothing to hand back there.
                with contextlib.suppress(kafka_errors.IllegalStateError):
                    self.consumer.seek(to_kafka_tp(tp), records[0].offset)
                self.positions[tp] = records[0].offset

    def position(self, tp: TP) -> int:
        if tp not in self.positions:
            raise ValueError(f"position of {tp}, which is not assigned")
        return max(self.positions[tp], int(self.consumer.position(to_kafka_tp(tp))))

    def fetch(self, timeout: float, max_records: int) -> Batch:
        if not self.assignment:
            return {}
        batch = _poll_and_convert(self.consumer, int(timeout * 1000), max_records)
        for tp, records in batch.items():
            self.positions[tp] = records[-1].offset + 1
        return batch

    def close(self) -> None:
        self.consumer.close(autocommit=False)
