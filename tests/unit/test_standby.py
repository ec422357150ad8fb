"""Standby replicas on the memory transport: a warm copy follows the changelog (only up
to what the group committed) and a promotion replays just the lag."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._changelog import caused_by_uncommitted_event
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables._transport.memory._transport import get_memory_broker

PARTITIONS = 4
APP = "sb"
CHANGELOG = f"{APP}-counts-changelog"


class Crash(Exception):
    """Stands in for kill -9: the manager stops without committing anything more."""


class CrashingManager(TableManager):
    crash_at_next_commit = False

    async def commit(self) -> None:
        await super().commit()
        if self.crash_at_next_commit:
            # Right after the commit: b's copy has not seen it confirmed yet.
            raise Crash


class StandbyWorker:
    def __init__(self, url: str, host: str) -> None:
        self.url = url
        self.host = host
        self.manager: CrashingManager | None = None
        self.counts: Any = None
        self.processed = 0
        self.started = trio.Event()
        self.stop = trio.Event()
        self.crash = trio.Event()
        self.changed = trio.Event()  # replaced after each change
        self.snapshot: dict[str, int] = {}

    def _bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def run(self) -> None:
        try:
            async with CrashingManager(APP, broker=self.url, standby_replicas=1,
                                       commit_interval=0.5,
                                       advertised_host=self.host) as manager:
                self.manager = manager
                self.counts = manager.Table("counts", default=int, key_type=str,
                                            value_type=int)
                async with manager.stream("words", key_type=str) as events:
                    self.started.set()
                    async with trio.open_nursery() as nursery:

                        async def process() -> None:
                            async for event in events:
                                self.counts[event.key] += 1
                                self.processed += 1
                                self._bump()

                        async def crash() -> None:
                            await self.crash.wait()
                            raise Crash

                        async def progress() -> None:
                            while True:
                                await self.counts.wait_progress()
                                self._bump()

                        nursery.start_soon(process)
                        nursery.start_soon(crash)
                        nursery.start_soon(progress)
                        await self.stop.wait()
                        nursery.cancel_scope.cancel()
                    self.snapshot = self.counts.as_dict()
        except* Crash:
            pass


async def _produce(url: str, words: list[str]) -> None:
    async with trio_tables.open_transport(url) as transport, transport.open_producer() as p:
        await p.send_batch([OutgoingRecord("words", b"{}", key=w.encode()) for w in words])


async def _until(check: Any, *workers: StandbyWorker) -> None:
    """Wait until ``check()`` holds, re-checking whenever a worker changes."""
    with trio.fail_after(600):  # on the mock clock: a hang guard, not a timing assertion
        while not check():
            async with trio.open_nursery() as nursery:
                for worker in workers:

                    async def changed(event: trio.Event = worker.changed) -> None:
                        await event.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(changed)
                nursery.start_soon(trio.sleep, 1.0)  # group changes have no event


def _standby_current(worker: StandbyWorker) -> bool:
    """The worker's standby copies hold every confirmed changelog record."""
    manager = worker.manager
    if manager is None or not manager.standby_partitions:
        return False
    broker = get_memory_broker(worker.url.removeprefix("memory://"))
    committed = broker.group(APP).committed
    for p in manager.standby_partitions:
        log = broker.log(TP(CHANGELOG, p))
        confirmed = [r.offset for r in log.records if not caused_by_uncommitted_event(r, committed)]
        if confirmed and worker.counts.local_offsets.get(p, -1) < confirmed[-1]:
            return False
    return True


async def test_standby_follows_and_promotion_replays_only_the_lag(autojump_clock: Any) -> None:
    url = f"memory://standby-{uuid.uuid4().hex[:12]}"
    broker_name = url.removeprefix("memory://")
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", PARTITIONS)
    first = [f"w{i % 13}" for i in range(800)]
    await _produce(url, first)
    a, b = StandbyWorker(url, "a.example:8080"), StandbyWorker(url, "b.example:8080")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await a.started.wait()
        await _until(lambda: a.processed == len(first), a)
        nursery.start_soon(b.run)
        await b.started.wait()
        # Both members hold half the partitions and keep a copy of the other half.
        await _until(
            lambda: a.manager is not None and b.manager is not None
            and len(a.manager.active_partitions) == len(b.manager.active_partitions) == 2
            and a.manager.standby_partitions == b.manager.active_partitions
            and b.manager.standby_partitions == a.manager.active_partitions,
            a, b,
        )
        assert a.manager is not None
        assert b.manager is not None
        promoted = a.manager.active_partitions
        # Both know which host serves a key and which keeps a copy of it.
        for key in ("w1", "w2", "w3", "w4", "w5"):
            where = b.manager.metadata_for_key("counts", key)
            assert where == a.manager.metadata_for_key("counts", key)
            owner, copy = ("a", "b") if where.partition in promoted else ("b", "a")
            assert where.active_host == f"{owner}.example:8080"
            assert where.standby_hosts == (f"{copy}.example:8080",)
        await _until(lambda: _standby_current(b), a, b)
        # b never applied more than the confirmed records (nothing a will redo).
        standby_offsets = {p: b.counts.local_offsets.get(p, -1) for p in promoted}
        assert all(offset >= 0 for offset in standby_offsets.values())
        restores_before = len(b.counts.restores)

        second = [f"w{i % 13}" for i in range(600)]
        await _produce(url, second)
        await _until(lambda: a.processed + b.processed >= len(first) + len(second), a, b)
        a.manager.crash_at_next_commit = True  # a dies: b takes its partitions over
        await _until(lambda: b.manager is not None and len(b.manager.active_partitions) == 4, b)
        b.stop.set()

    broker = get_memory_broker(broker_name)
    reports = [r for r in b.counts.restores[restores_before:] if r.partition in promoted]
    assert sorted(r.partition for r in reports) == sorted(promoted)
    for report in reports:
        log = broker.log(TP(CHANGELOG, report.partition))
        # The promotion started where the standby copy was, not at the beginning...
        assert report.start > standby_offsets[report.partition] >= 0
        # ...and there was a lag (a committed just before dying): exactly the records
        # after the copy's last apply were replayed, all of them confirmed by a's commit.
        lag = [r for r in log.records if report.start <= r.offset < report.end]
        assert 0 < report.applied == len(lag) < len(log.records)
    assert Counter(b.snapshot) == Counter(first + second)
