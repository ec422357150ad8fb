"""Bad input on the embedded broker: each mistake gets a typed error that says what went
wrong and what to do, and never corrupts the committed state.

* a source record whose key or value cannot be decoded: ``on_decode_error="raise"``
  (default) stops the worker with :class:`RecordDecodeError` naming topic, partition and
  offset, and no offset is committed past the record; ``"skip"`` logs and counts it and
  commits past it;
* a table write of the wrong type: ``TypeError`` at the write, nothing reaches the table
  or the changelog;
* a missing source topic, a partition-count mismatch between source topics, an
  unreachable broker: :class:`UnknownTopic`, :class:`PartitionCountMismatch`,
  :class:`BrokerUnavailable`, each with the fix in the message.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import OutgoingRecord
from trio_tables.errors import (
    BrokerUnavailable,
    PartitionCountMismatch,
    RecordDecodeError,
    TableKeyTypeError,
    TableValueTypeError,
    UnknownTopic,
)

from .workers import committed_offsets, end_offsets

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {**BROKER_SETTINGS}
PARTITIONS = 2
BAD_AT = 5  # offset of the undecodable record in partition 0
COMPLETE = {"a": 9, "b": 10}  # the count of every good record


async def _topic_with_a_bad_record(url: str, topic: str, bad: OutgoingRecord) -> None:
    """Partition 0: five good records of key ``a``, ``bad`` at offset 5, four more of
    ``a``; partition 1: ten of ``b``."""
    good = [
        OutgoingRecord(topic, b'{"n":1}', key=key, partition=p)
        for p, key in ((0, b"a"), (1, b"b"))
    ]
    async with trio_tables.open_transport(url, **SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS)
        async with transport.open_producer() as producer:
            # One at a time: each record is acknowledged before the next, so the
            # offsets are exactly the order here.
            for record in [good[0]] * BAD_AT + [bad] + [good[0]] * 4 + [good[1]] * 10:
                delivery = await producer.send_batch([record])
                await producer.flush()
                delivery[0].result()


async def _count_until_caught_up(
    url: str, app: str, topic: str, policy: Any
) -> tuple[dict[str, int], int]:
    """Count keys with ``on_decode_error=policy`` until the table holds every good record
    (or the stream raises); the table and the stream's skip count."""
    async with TableManager(
        app, broker=url, commit_interval=0.2, transport_options=SETTINGS
    ) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(
            topic, key_type=str, value_type=dict, on_decode_error=policy
        ) as events:
            async for event in events:
                counts[event.key] += 1
                if counts.as_dict() == COMPLETE:
                    break
            return counts.as_dict(), events.skipped


@pytest.mark.parametrize(
    ("what", "bad_key", "bad_value"),
    [("value", b"k", b"{not json"), ("key", b"\xff\xfe", b'{"n":1}')],
)
async def test_undecodable_record_stops_the_worker_and_is_not_committed(
    kafka_broker: Any, unique_name: Any, what: str, bad_key: bytes, bad_value: bytes
) -> None:
    topic, app = unique_name("bad"), unique_name("raise")
    await _topic_with_a_bad_record(
        kafka_broker.url, topic, OutgoingRecord(topic, bad_value, key=bad_key, partition=0)
    )
    with trio.fail_after(120), pytest.raises(RecordDecodeError) as info:
        await _count_until_caught_up(kafka_broker.url, app, topic, "raise")
    error = info.value
    assert (error.topic, error.partition, error.offset) == (topic, 0, BAD_AT)
    message = str(error)
    assert f"{topic}[0] at offset {BAD_AT}" in message
    assert f"the {what} of" in message
    assert "on_decode_error='skip'" in message  # the way out is in the message
    committed = await committed_offsets(kafka_broker, app, topic, PARTITIONS)
    assert committed[0] <= BAD_AT, f"committed past the undecodable record: {committed}"

    # The record is still there for the next run: a worker that skips it finishes the
    # partition, logs the record and counts it.
    table, skipped = await _count_until_caught_up(kafka_broker.url, app, topic, "skip")
    assert skipped == 1
    # Exact although the first run processed records it never committed.
    assert table == COMPLETE
    committed = await committed_offsets(kafka_broker, app, topic, PARTITIONS)
    assert committed == {0: 10, 1: 10}


async def test_skip_policy_logs_counts_and_commits_past_the_record(
    kafka_broker: Any, unique_name: Any, caplog: pytest.LogCaptureFixture
) -> None:
    topic, app = unique_name("bad"), unique_name("skip")
    await _topic_with_a_bad_record(
        kafka_broker.url, topic, OutgoingRecord(topic, b"[1, 2", key=b"k", partition=0)
    )
    caplog.set_level(logging.WARNING, logger="trio_tables.stream")
    with trio.fail_after(120):
        table, skipped = await _count_until_caught_up(kafka_broker.url, app, topic, "skip")
    assert skipped == 1
    assert table == COMPLETE
    warnings = [r.getMessage() for r in caplog.records if r.name == "trio_tables.stream"]
    assert len(warnings) == 1
    assert f"{topic}[0] at offset {BAD_AT}" in warnings[0]
    committed = await committed_offsets(kafka_broker, app, topic, PARTITIONS)
    assert committed == {0: 10, 1: 10}


async def test_wrong_value_type_raises_at_the_write_and_sends_nothing(
    kafka_broker: Any, unique_name: Any
) -> None:
    topic, app = unique_name("typed"), unique_name("typed")
    async with trio_tables.open_transport(kafka_broker.url, **SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch([OutgoingRecord(topic, b"{}", key=b"k", partition=0)])
    changelog = f"{app}-counts-changelog"
    with trio.fail_after(120):
        async with TableManager(
            app, broker=kafka_broker.url, commit_interval=0.2, transport_options=SETTINGS
        ) as manager:
            counts = manager.Table("counts", default=int, key_type=str, value_type=int)
            async with manager.stream(topic, key_type=str) as events:
                async for event in events:
                    wrong_value = r"bad value 'one': expected int .*, got str"
                    with pytest.raises(TableValueTypeError, match=wrong_value):
                        counts[event.key] = "one"
                    wrong_key = r"bad key 7: expected str .*, got int"
                    with pytest.raises(TableKeyTypeError, match=wrong_key):
                        counts[7] = 1
                    wrong_bool = r"bad value True: expected int .*, got bool"
                    with pytest.raises(TableValueTypeError, match=wrong_bool):
                        counts[event.key] = True
                    assert event.key not in counts
                    break
            await manager.commit()
            assert counts.as_dict() == {}
    # Nothing was sent: the changelog has no record at all.
    assert await end_offsets(kafka_broker, changelog, PARTITIONS) == {0: 0, 1: 0}


async def test_missing_source_topic_is_a_typed_error_with_the_fix(
    kafka_broker: Any, unique_name: Any
) -> None:
    missing, app = unique_name("missing"), unique_name("app")
    with trio.fail_after(60):
        async with TableManager(
            app, broker=kafka_broker.url, transport_options=SETTINGS
        ) as manager:
            manager.Table("counts", default=int)
            with pytest.raises(UnknownTopic) as info:
                async with manager.stream(missing):
                    pytest.fail("the stream must not open")  # pragma: no cover
    assert info.value.topic == missing
    assert "create it first" in str(info.value)


async def test_source_topics_with_different_partition_counts_are_rejected(
    kafka_broker: Any, unique_name: Any
) -> None:
    first, second, app = unique_name("four"), unique_name("two"), unique_name("app")
    async with trio_tables.open_transport(kafka_broker.url, **SETTINGS) as transport:
        await transport.create_topic(first, 4)
        await transport.create_topic(second, 2)
    with trio.fail_after(120):
        async with TableManager(
            app, broker=kafka_broker.url, transport_options=SETTINGS
        ) as manager:
            manager.Table("counts", default=int)
            async with manager.stream(first):
                with pytest.raises(PartitionCountMismatch) as info:
                    async with manager.stream(second):
                        pytest.fail("the stream must not open")  # pragma: no cover
    error = info.value
    assert (error.topic, error.expected, error.actual) == (second, 4, 2)
    assert f"recreate {second!r} with 4 partitions" in str(error)


async def test_unreachable_broker_fails_the_manager_with_the_fix() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    with trio.fail_after(60), pytest.raises(BrokerUnavailable) as info:
        async with TableManager(
            "app", broker=f"kafka://127.0.0.1:{port}", transport_options={"connect_timeout": 1}
        ):
            pytest.fail("the manager must not start")  # pragma: no cover
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "check that the broker runs" in message
