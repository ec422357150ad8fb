"""Kafka-transport specifics against the embedded broker: the IO-loop adapter that the
rebalance bridge depends on, connection failures, and cancellation of calls that are
running in a worker thread. (Behaviour shared with the memory transport is in
tests/contract.)"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import pytest
import trio
import trio.testing
from kafka import KafkaConsumer
from kafka.future import Future as KafkaFuture

from trio_tables import open_transport
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import (
    TP,
    GroupConsumer,
    GroupMetadata,
    OutgoingRecord,
    Transport,
)
from trio_tables._transport.kafka._bridge import resolve_on_io_loop
from trio_tables._transport.kafka._producer import KafkaTransportProducer
from trio_tables._transport.kafka._transport import KafkaTransport
from trio_tables.errors import BrokerUnavailable, UnknownTopic

pytestmark = pytest.mark.kafka

TEST_SETTINGS: dict[str, Any] = {
    **BROKER_SETTINGS,
    "connect_timeout": 10,
}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def kafka(kafka_broker: Any) -> AsyncIterator[Transport]:
    async with open_transport(kafka_broker.url, **TEST_SETTINGS) as transport:
        yield transport


@pytest.fixture
async def kafka_python_producing(kafka_broker: Any) -> AsyncIterator[Transport]:
    options = {**TEST_SETTINGS, "produce_client": "kafka-python"}
    async with open_transport(kafka_broker.url, **options) as transport:
        yield transport


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens on it any more


async def test_unreachable_broker_raises_typed_error_instead_of_hanging() -> None:
    port = _closed_port()
    with trio.fail_after(60):  # a hang guard, not a speed assertion
        with pytest.raises(BrokerUnavailable) as info:
            async with open_transport(f"kafka://127.0.0.1:{port}", connect_timeout=1.0):
                pass  # pragma: no cover
    assert f"127.0.0.1:{port}" in str(info.value)
    assert info.value.timeout == 1.0


def test_resolve_on_io_loop_wakes_a_waiting_coroutine(kafka_broker: Any) -> None:
    """The rebalance bridge parks kafka-python's IO loop on a Future that Trio resolves
    from another thread; the loop must wake up at once, not at its next timer."""
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        future = KafkaFuture()
        resumed = threading.Event()
        seen: list[object] = []

        async def waiter() -> None:
            seen.append(await future)
            resumed.set()

        consumer._net.call_soon_threadsafe(waiter)
        resolve_on_io_loop(consumer, future, "value")
        assert resumed.wait(timeout=30), "IO loop did not resume the waiting coroutine"
        assert seen == ["value"]
    finally:
        consumer.close()


async def test_group_consumer_on_unknown_topic_fails_before_joining(kafka: Transport) -> None:
    class Listener:
        async def on_partitions_revoked(self, revoked: frozenset[TP]) -> None:
            return None

        async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
            pass

        async def on_partitions_lost(self, lost: frozenset[TP]) -> None:
            pass

    missing = _unique("missing")
    with pytest.raises(UnknownTopic) as info:
        async with kafka.open_group_consumer(_unique("g"), [missing], listener=Listener()):
            pass  # pragma: no cover
    assert info.value.topic == missing


async def _cancel_while_in_thread(call: Callable[[], Awaitable[object]]) -> None:
    """Start ``call``, wait until it is blocked (in its worker thread), cancel it."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await call()

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()


async def test_cancelled_calls_leave_clients_usable(kafka: Transport) -> None:
    topic = _unique("cancel")
    await kafka.create_topic(topic, 2)
    tps = [TP(topic, 0), TP(topic, 1)]
    records = [OutgoingRecord(topic, b"%d" % i, partition=i % 2) for i in range(200)]
    async with kafka.open_producer() as producer:
        await producer.send(topic, b"first", partition=0)  # the topic is now known
        await _cancel_while_in_thread(lambda: producer.send_batch(records))
        await producer.flush()  # whatever was handed over is acknowledged
        assert producer.in_flight == 0
        more = await producer.send_batch(records)
        await producer.flush()
        assert all(d.done and not d.failed for d in more)

    async with kafka.open_restore_consumer() as consumer:
        await consumer.assign(tps)
        await _cancel_while_in_thread(lambda: consumer.end_offsets(tps))
        ends = await consumer.end_offsets(tps)
        assert sum(ends.values()) == 401  # the cancelled batch was still handed over

        # A poll cancelled while its thread runs hands its records back.
        await _cancel_while_in_thread(lambda: consumer.poll(timeout=2.0))
        seen: dict[TP, list[int]] = {tp: [] for tp in tps}
        with trio.fail_after(60):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch: Mapping[TP, Any] = await consumer.poll(timeout=0.5)
                for tp, recs in batch.items():
                    seen[tp].extend(r.offset for r in recs)
        for tp in tps:
            assert seen[tp] == sorted(set(seen[tp])), "a record came twice"
            assert len(seen[tp]) == ends[tp], "a record was lost"


@pytest.mark.parametrize("produce_client", ["confluent-kafka", "kafka-python"])
async def test_send_batch_cancelled_while_the_client_is_busy_leaves_nothing_in_flight(
    kafka_broker: Any, produce_client: str
) -> None:
    """Cancelled while waiting for its turn on the client (another call holds it): the
    batch was never handed over, so it is not counted in flight and ``flush()`` does not
    wait for it (it waited for ever before)."""
    topic = _unique("busy")
    options = {**TEST_SETTINGS, "produce_client": produce_client}
    async with open_transport(kafka_broker.url, **options) as kafka:
        await kafka.create_topic(topic, 1)
        await _cancelled_while_busy(kafka, topic)


async def _cancelled_while_busy(kafka: Transport, topic: str) -> None:
    async with kafka.open_producer() as producer:
        await producer.send(topic, b"first")  # the topic is now known
        await producer.flush()
        limiter = cast(KafkaTransportProducer, producer)._owner.limiter
        async with trio.open_nursery() as nursery, limiter:  # the client is busy
            scope = trio.CancelScope()
            returned: list[object] = []

            async def send() -> None:
                with scope:
                    returned.append(await producer.send_batch([OutgoingRecord(topic, b"x")]))

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1  # send waits for its turn
            scope.cancel()
        # The client is free again; send() left with Cancelled, nothing handed over.
        assert scope.cancelled_caught
        assert not returned
        assert producer.in_flight == 0
        with trio.fail_after(60):  # a hang guard: a wedged producer waits here for ever
            await producer.flush()
        again = await producer.send(topic, b"second")
        await producer.flush()
    assert (await again.wait()).offset == 1  # "x" never reached the topic


async def test_the_producer_keeps_metadata_for_every_topic_it_sends_to(
    kafka_python_producing: Transport,
) -> None:
    """kafka-python 3 keeps metadata only for topics it *tracks*, and a topic that
    existed when the producer started is never tracked (the first metadata answer
    covered it). Once a new topic is sent to, refreshes ask only for tracked topics,
    the old topic's partitions vanish, and a batch waiting for one of them expires
    after delivery_timeout_ms (exactly-once outputs were lost that way). The seam
    ``_kafka_bridge.track_topic`` makes every topic sent to tracked."""
    kafka = kafka_python_producing
    old, new = _unique("old"), _unique("new")
    await kafka.create_topic(old, 3)
    async with kafka.open_producer() as producer:
        raw = cast(KafkaTransportProducer, producer)._producer
        await producer.send(old, b"before", key=b"k")  # known from the first metadata
        await kafka.create_topic(new, 3)
        await producer.send(new, b"x", key=b"k")  # a new topic: tracked, refreshed
        await producer.flush()
        assert {old, new} <= set(raw._metadata._topics)  # the seam's effect
        # A metadata refresh now still knows the old topic's partitions ...
        await trio.to_thread.run_sync(lambda: raw._metadata.request_update())
        assert raw.partitions_for(old) == {0, 1, 2}
        # ... and a record to it is delivered, not left with an unknown leader.
        with trio.fail_after(60):  # a hang guard, not a timing assertion
            after = await producer.send(old, b"after", key=b"k")
            await producer.flush()
        assert (await after.wait()).offset == 1


async def test_group_metadata_in_the_revocation_listener_is_the_revoked_generation(
    kafka: Transport,
) -> None:
    """An exactly-once revocation commit needs the group metadata inside the listener,
    while the ``poll()`` running the listener holds the client: ``group_metadata()``
    answers from the snapshot taken for that rebalance (the generation being revoked),
    never by waiting for the client."""
    from tests.contract._helpers import RecordingListener, poll_until, wait_for_assignment

    topic = _unique("meta")
    await kafka.create_topic(topic, 2)
    everything = {TP(topic, 0), TP(topic, 1)}
    group = _unique("g")
    consumers: list[GroupConsumer] = []
    in_revocation: list[GroupMetadata] = []

    class Listener(RecordingListener):
        async def on_partitions_revoked(self, revoked: frozenset[TP]) -> Mapping[TP, int] | None:
            with trio.fail_after(60):  # a hang guard: waiting for the client deadlocks
                in_revocation.append(await consumers[0].group_metadata())
            return await super().on_partitions_revoked(revoked)

    async with kafka.open_group_consumer(group, [topic], listener=Listener()) as first:
        consumers.append(first)
        await wait_for_assignment(first, everything)
        joined = await first.group_metadata()
        stop = trio.Event()

        async def second_member() -> None:
            async with kafka.open_group_consumer(
                group, [topic], listener=RecordingListener()
            ) as second:
                while not stop.is_set():
                    await second.poll(timeout=0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second_member)
            await poll_until(first, lambda _: len(first.assignment()) == 1)
            shared = await first.group_metadata()
            stop.set()
    assert in_revocation, "the rebalance revoked nothing"
    revoked_under = in_revocation[0]
    assert (revoked_under.generation_id, revoked_under.member_id) == (
        joined.generation_id,
        joined.member_id,
    )
    assert shared.generation_id > joined.generation_id


async def test_a_join_finished_between_polls_is_completed_not_repeated(
    kafka: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    # kafka-python 3.0.12 sends a new JoinGroup when the round it started finished while
    # no poll waited for it, dropping the assignment (one more round: ~3 s here).
    # keep_finished_join hands the finished round to the next poll instead.
    from tests.contract._helpers import RecordingListener

    topic = _unique("join")
    await kafka.create_topic(topic, 2)
    listener = RecordingListener()
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    async with kafka.open_group_consumer(_unique("g"), [topic], listener=listener) as consumer:
        await consumer.poll(timeout=0.05)  # starts the join round and returns during it
        coordinator = consumer._consumer._coordinator  # type: ignore[attr-defined]
        with trio.fail_after(60):  # a hang guard
            # No event to wait on: the round runs on kafka-python's IO thread.
            while not (coordinator._join_task is not None and coordinator._join_task.is_done):  # noqa: ASYNC110
                await trio.sleep(0.05)
            while not consumer.assignment():
                await consumer.poll(timeout=0.5)
    joins = [r for r in caplog.records if r.getMessage().startswith("Successfully joined group")]
    assert len(joins) == 1, [r.getMessage() for r in joins]
    assert listener.events[0] == ("assigned", frozenset({TP(topic, 0), TP(topic, 1)}))


async def test_settings_in_the_url_reach_the_transport_and_win_over_options(
    kafka_broker: Any,
) -> None:
    url = f"kafka://{kafka_broker.bootstrap}?session_timeout_ms=5000&client_id=from-url"
    async with open_transport(url, session_timeout_ms=45_000, heartbeat_interval_ms=700) as t:
        assert isinstance(t, KafkaTransport)
        assert t.settings.session_timeout_ms == 5000  # the URL wins
        assert t.settings.client_id == "from-url"
        assert t.settings.heartbeat_interval_ms == 700  # not in the URL: the option
        assert t.url == f"kafka://{kafka_broker.bootstrap}"


async def _offsets_after_reassignment(
    kafka_broker: Any, fetch_client: str, reassign: Callable[[Any, TP], None]
) -> list[int]:
    """A one-partition topic with 30 records, polled to the end by one member, which
    commits offset 5; 10 more records; then ``reassign(consumer, tp)`` changes the
    member's ownership as its rebalance listener would when the partition is revoked and
    assigned again (kafka-python runs the listener on its IO thread, at any moment of a
    poll). The offsets the following polls return, until offset 39."""
    from tests.contract._helpers import RecordingListener

    async with open_transport(
        kafka_broker.url, **TEST_SETTINGS, fetch_client=fetch_client
    ) as kafka:
        topic = _unique("again")
        await kafka.create_topic(topic, 1)
        tp = TP(topic, 0)

        async def produce(first: int, count: int) -> None:
            async with kafka.open_producer() as producer:
                await producer.send_batch(
                    [OutgoingRecord(topic, b"%d" % i) for i in range(first, first + count)]
                )

        await produce(0, 30)
        consumer: Any
        async with kafka.open_group_consumer(
            _unique("g"), [topic], listener=RecordingListener()
        ) as consumer:
            seen: list[int] = []
            with trio.fail_after(60):
                while 29 not in seen:
                    seen += [r.offset for r in (await consumer.poll(timeout=0.5)).get(tp, ())]
                await consumer.commit({tp: 5})
                await produce(30, 10)
                reassign(consumer, tp)
                after: list[int] = []
                while 39 not in after:
                    after += [r.offset for r in (await consumer.poll(timeout=0.5)).get(tp, ())]
            return after


async def test_records_fetched_while_a_partition_is_assigned_again_are_not_returned(
    kafka_broker: Any,
) -> None:
    # The partition is revoked and assigned again while librdkafka fetches it from its
    # old position (30): those records must not be returned (the member would process
    # 30-39 and commit 40 before 5-29 came back: a revocation then skips them for good).
    def during_the_next_fetch(consumer: Any, tp: TP) -> None:
        fetcher = consumer._fetcher
        fetch = fetcher.fetch

        def fetch_then_reassign(*args: Any) -> Any:
            fetcher.fetch = fetch
            batch = fetch(*args)
            consumer._membership.release(frozenset({tp}))
            consumer._membership.assign({tp: None})
            return batch

        fetcher.fetch = fetch_then_reassign

    offsets = await _offsets_after_reassignment(
        kafka_broker, "confluent-kafka", during_the_next_fetch
    )
    assert offsets == list(range(5, 40))


@pytest.mark.parametrize("fetch_client", ["confluent-kafka", "kafka-python"])
async def test_a_partition_assigned_again_is_never_fetched_from_its_old_position(
    kafka_broker: Any, fetch_client: str
) -> None:
    # Assigned again between two polls, but kafka-python's own assignment does not show
    # it at the next poll (its next rebalance already started): the partition waits until
    # it can be started where the group says, instead of going on from where it was.
    def with_the_start_unknown_once(consumer: Any, tp: TP) -> None:
        group_starts = consumer._group_starts

        def unknown_once(fresh: Any) -> dict[TP, int]:
            consumer._group_starts = group_starts
            return {}

        consumer._group_starts = unknown_once
        consumer._membership.release(frozenset({tp}))
        consumer._membership.assign({tp: None})

    offsets = await _offsets_after_reassignment(
        kafka_broker, fetch_client, with_the_start_unknown_once
    )
    assert offsets == list(range(5, 40))


async def test_offsets_the_revocation_listener_returns_are_committed_on_the_io_loop(
    kafka: Transport,
) -> None:
    """Seam ``KafkaConsumer._coordinator.commit_offsets_async``
    (``_kafka_bridge.commit_on_io_loop``): a revocation runs on kafka-python's IO loop,
    where the blocking ``commit()`` would deadlock; the offsets the listener returns are
    committed there before the partitions are released (here: on leaving the group)."""
    from tests.contract._helpers import RecordingListener, wait_for_assignment

    topic, group = _unique("revoke"), _unique("g")
    await kafka.create_topic(topic, 2)
    everything = {TP(topic, 0), TP(topic, 1)}
    async with kafka.open_producer() as producer:
        await producer.send_batch(
            [OutgoingRecord(topic, b"v", partition=p) for p in (0, 1) for _ in range(10)]
        )
        await producer.flush()
    listener = RecordingListener(lambda revoked: {tp: 7 for tp in revoked})
    async with kafka.open_group_consumer(group, [topic], listener=listener) as consumer:
        await wait_for_assignment(consumer, everything)
    assert ("revoked", frozenset(everything)) in listener.events
    assert await kafka.group_offsets(group) == dict.fromkeys(everything, 7)
