"""Windowed tables end to end on the embedded broker: a windowed count checked against
an oracle computed from the event timestamps, with a restart in the middle that keeps
every window's close callback exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._base import OutgoingRecord

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {**BROKER_SETTINGS}
PARTITIONS = 4
SIZE, EXPIRES = 10_000, 30_000  # ms
BASE = (int(time.time() * 1000) - 3_600_000) // SIZE * SIZE  # an hour ago, on a window edge

Ev = tuple[str, int, int]  # key, partition, timestamp


def _events(first: int, last: int) -> list[Ev]:
    """Partition p gets an event every (p + 1) * 100 ms of event time: each partition's
    stream time runs at its own pace. Keys never cross partitions."""
    return [
        (f"p{p}-k{(i // ((p + 1) * 100)) % 3}", p, BASE + i)
        for i in range(first, last)
        for p in range(PARTITIONS)
        if i % ((p + 1) * 100) == 0
    ]


async def _produce(url: str, topic: str, events: Sequence[Ev]) -> None:
    async with trio_tables.open_transport(url, **SETTINGS) as transport:
        await transport.create_topic(topic, PARTITIONS, exist_ok=True)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [OutgoingRecord(topic, b"{}", key=k.encode(), partition=p, timestamp=ts)
                 for k, p, ts in events]
            )
            await producer.flush()


def _oracle(events: Sequence[Ev]) -> tuple[dict[Any, int], dict[Any, int]]:
    """(windows closed, windows open) once every event was processed."""
    stream_time = {p: max(ts for _, q, ts in events if q == p) for p in range(PARTITIONS)}
    counts = Counter((k, p, ts - ts % SIZE) for k, p, ts in events)
    closed, open_ = {}, {}
    for (key, p, start), count in counts.items():
        target = closed if start + SIZE + EXPIRES <= stream_time[p] else open_
        target[(key, (start, start + SIZE))] = count
    return closed, open_


async def _run(url: str, app: str, topic: str, n: int, calls: list[Any]) -> dict[Any, int]:
    async with TableManager(
        app, broker=url, commit_interval=0.5, transport_options=SETTINGS
    ) as manager:
        hits = manager.Table(
            "hits", default=int, key_type=str, value_type=int,
            on_window_close=lambda key, value: calls.append((key, value)),
        ).tumbling(SIZE / 1000, expires=EXPIRES / 1000)
        async with manager.stream(topic, key_type=str) as events:
            done = trio.Event()

            async def process() -> None:
                seen = 0
                async for event in events:
                    hits[event.key] += 1
                    seen += 1
                    if seen == n:
                        break
                events.ack()
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(process)
                await done.wait()
                await manager.commit()
                nursery.cancel_scope.cancel()
            return hits.windows()


async def test_windowed_count_with_a_restart_matches_the_oracle(
    kafka_broker: Any, unique_name: Any
) -> None:
    topic, app = unique_name("clicks"), unique_name("win")
    first, rest = _events(0, 120_000), _events(120_000, 240_000)
    calls: list[Any] = []
    await _produce(kafka_broker.url, topic, first)
    await _run(kafka_broker.url, app, topic, len(first), calls)
    closed_in_first_run = len(calls)
    assert closed_in_first_run > 0
    await _produce(kafka_broker.url, topic, rest)
    # memory store: the second run rebuilds the open windows from the changelog.
    windows = await _run(kafka_broker.url, app, topic, len(rest), calls)
    expected_closed, expected_open = _oracle(first + rest)
    assert len(calls) > closed_in_first_run
    assert len(calls) == len(expected_closed)  # no window closed twice
    assert dict(calls) == expected_closed
    assert windows == expected_open
