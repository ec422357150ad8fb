"""Rebalances on the memory transport: two managers in one process, deterministic."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import OutgoingRecord

PARTITIONS = 4


async def _setup(words: list[str]) -> str:
    url = f"memory://rebalance-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [OutgoingRecord("words", b"{}", key=w.encode()) for w in words]
            )
    return url


async def _produce(url: str, words: list[str]) -> None:
    async with trio_tables.open_transport(url) as transport, transport.open_producer() as p:
        await p.send_batch([OutgoingRecord("words", b"{}", key=w.encode()) for w in words])


class CountingWorker:
    """A word-count manager that records, for every event, whether its partition was
    recovered and active when the event was handed out."""

    def __init__(
        self, url: str, *, on_changelog_event: Any = None, protocol: Any = "eager"
    ) -> None:
        self.url = url
        self.protocol = protocol
        self.on_changelog_event = on_changelog_event
        self.processed = 0
        self.handed_out_unrecovered: list[int] = []
        self.snapshot: dict[str, int] = {}
        self.partitions: frozenset[int] = frozenset()
        self.stop = trio.Event()
        self.started = trio.Event()
        self.progress = trio.Event()  # replaced after each change
        self.manager: TableManager | None = None

    async def run(self) -> None:
        async with TableManager("wc", broker=self.url, commit_interval=0.5,
                                coalesce_changelog=False,
                                rebalance_protocol=self.protocol) as manager:
            self.manager = manager
            counts = manager.Table("counts", default=int, key_type=str, value_type=int,
                                   on_changelog_event=self.on_changelog_event)
            async with manager.stream("words", key_type=str) as events:
                self.started.set()
                self.progress.set()
                self.progress = trio.Event()
                async with trio.open_nursery() as nursery:

                    async def process() -> None:
                        async for event in events:
                            if event.partition not in manager.active_partitions:
                                self.handed_out_unrecovered.append(event.partition)
                            counts[event.key] += 1
                            self.processed += 1
                            self.progress.set()
                            self.progress = trio.Event()

                    nursery.start_soon(process)
                    await self.stop.wait()
                    nursery.cancel_scope.cancel()
                self.snapshot = counts.as_dict()
                self.partitions = manager.active_partitions


def _holds_everything(workers: tuple[CountingWorker, ...], total: int) -> bool:
    managers = [w.manager for w in workers]
    if any(m is None or not m._supervisor.assignment_seen.is_set() for m in managers):
        return False
    held = sorted(p for m in managers if m is not None for p in m.active_partitions)
    return held == list(range(PARTITIONS)) and sum(w.processed for w in workers) >= total


async def _settled(*workers: CountingWorker, total: int) -> None:
    """Wait until the workers together hold every partition and processed ``total``."""
    while not _holds_everything(workers, total):
        async with trio.open_nursery() as nursery:
            # Whatever changes first: a worker's progress or a manager's partitions.

            async def changed(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            for worker in workers:
                nursery.start_soon(changed, worker.progress)
                if worker.manager is not None:
                    nursery.start_soon(changed, worker.manager._supervisor.recovery_changed)


@pytest.mark.parametrize("protocol", ["eager", "cooperative"])
async def test_rebalance_while_events_flow_keeps_tables_exact(
    autojump_clock: Any, protocol: str
) -> None:
    first = [f"w{i % 9}" for i in range(400)]
    url = await _setup(first)
    a, b = CountingWorker(url, protocol=protocol), CountingWorker(url, protocol=protocol)
    second = [f"w{i % 9}" for i in range(400)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await a.started.wait()
        await _settled(a, total=len(first))
        nursery.start_soon(b.run)
        await b.started.wait()
        await _produce(url, second)
        await _settled(a, b, total=len(first) + len(second))
        # The union of what the two hold now is the whole count.
        a.stop.set()
        b.stop.set()
    assert sorted(a.partitions | b.partitions) == list(range(PARTITIONS))
    assert not a.partitions & b.partitions
    assert Counter(a.snapshot) + Counter(b.snapshot) == Counter(first + second)
    assert a.handed_out_unrecovered == b.handed_out_unrecovered == []


async def test_rebalance_during_recovery_cancels_it_and_recovers_the_new_assignment(
    autojump_clock: Any,
) -> None:
    words = [f"w{i % 9}" for i in range(300)]
    url = await _setup(words)
    warmup = CountingWorker(url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warmup.run)
        await _settled(warmup, total=len(words))
        warmup.stop.set()

    gate = trio.Event()
    blocked = trio.Event()
    cancelled_restores = 0

    async def slow_apply(record: Any) -> None:
        nonlocal cancelled_restores
        if not gate.is_set():
            blocked.set()
            try:
                await gate.wait()
            except trio.Cancelled:
                cancelled_restores += 1
                raise

    a = CountingWorker(url, on_changelog_event=slow_apply)
    b = CountingWorker(url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await blocked.wait()  # a is restoring every partition, stuck on the first record
        assert a.manager is not None
        assert a.manager.active_partitions == frozenset()
        nursery.start_soon(b.run)
        await b.started.wait()
        assert b.manager is not None
        while not b.manager.active_partitions:
            await b.manager._supervisor.recovery_changed.wait()
        gate.set()
        await _settled(a, b, total=0)
        a.stop.set()
        b.stop.set()
    assert cancelled_restores == 1  # the revocation cancelled the first restore
    assert Counter(a.snapshot) + Counter(b.snapshot) == Counter(words)
    assert a.partitions
    assert b.partitions
    assert a.handed_out_unrecovered == b.handed_out_unrecovered == []
