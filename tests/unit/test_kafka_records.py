"""The Kafka transport's conversion of kafka-python's records (on the poll thread)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from trio_tables._transport._base import TP, Record
from trio_tables._transport.kafka._consumer import _poll_and_convert


class FakeFetcher:
    """What ``_kafka_bridge.release_parked_records`` reads before each poll: nothing
    parked."""

    _paused_partition_records: dict[Any, Any] = {}
    _next_partition_records = None


class FakeConsumer:
    def __init__(self, batch: dict[TopicPartition, list[Any]]) -> None:
        self.batch = batch
        self._fetcher = FakeFetcher()

    def poll(self, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[Any]]:
        return self.batch


def _consumer_record(offset: int, key: bytes | None, value: bytes | None, headers: Any) -> Any:
    return ConsumerRecord("t", 2, 0, offset, 1000 + offset, 0, key, value, headers, None, 1, 1, 0)


def test_poll_converts_to_records_with_header_tuples() -> None:
    batch = {
        TopicPartition("t", 2): [
            _consumer_record(5, b"k", b"v", []),
            _consumer_record(6, None, None, [("h", b"1"), ("i", b"")]),
        ]
    }
    out = _poll_and_convert(FakeConsumer(batch), 10, None)
    assert out == {
        TP("t", 2): [
            Record("t", 2, 5, b"k", b"v", 1000 + 5, ()),
            Record("t", 2, 6, None, None, 1000 + 6, (("h", b"1"), ("i", b""))),
        ]
    }
    first = out[TP("t", 2)][0]
    assert type(first) is Record
    assert (first.tp, first.offset, first.timestamp, first.headers) == (TP("t", 2), 5, 1005, ())
    with pytest.raises(AttributeError):
        first.offset = 7  # type: ignore[misc]
