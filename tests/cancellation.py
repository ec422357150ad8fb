"""Cancel a commit cycle, or a restore, at each of its checkpoints in turn; restart; check.

Shared by tests/unit (memory transport) and tests/integration (the embedded broker).

A *step* of a task is what it runs between two checkpoints that yield (trio's
instrument hooks see each one); ``tests.cancel_points.cancelled_after`` cancels after the
``k``-th step, so the cancellation lands at the ``k``-th checkpoint (k = 0: at the first
one). Each scenario first counts the steps of an uncancelled run, then runs k = 0, 1,
... up to that count (and one past it, which must complete), each on its own app,
topics and store; after each one it restarts the app and checks the table against the
oracle (the words produced) and against a raw replay of the changelog.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

import trio_tables
from tests.cancel_points import cancelled_after
from trio_tables import TableManager
from trio_tables._transport._base import TP, OutgoingRecord

PARTITIONS = 3


async def run_cancelled_after(
    k: int | None, fn: Callable[[], Awaitable[None]], watch: Callable[[Any], bool] | None = None
) -> tuple[bool, int]:
    """(completed, steps counted) of ``fn`` cancelled after the ``k``-th step of the
    watched tasks (see :func:`tests.cancel_points.cancelled_after`)."""
    outcome = await cancelled_after(k, fn, watch=watch)
    return not outcome.cancelled, outcome.steps


def words(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i % 11}" for i in range(n)]


async def produce(url: str, topic: str, keys: list[str], settings: Mapping[str, Any]) -> None:
    async with (
        trio_tables.open_transport(url, **settings) as transport,
        transport.open_producer() as producer,
    ):
        await producer.send_batch([OutgoingRecord(topic, b"{}", key=key.encode()) for key in keys])
        await producer.flush()


async def create_topic(url: str, topic: str, settings: Mapping[str, Any]) -> None:
    async with trio_tables.open_transport(url, **settings) as transport:
        await transport.create_topic(topic, PARTITIONS)


async def replay_changelog(url: str, topic: str, settings: Mapping[str, Any]) -> dict[str, int]:
    """Every record of the changelog ``topic``, last write of a key wins (raw: no
    source-offset filter), as the table it describes."""
    table: dict[str, int] = {}
    async with (
        trio_tables.open_transport(url, **settings) as transport,
        transport.open_restore_consumer() as consumer,
    ):
        tps = [TP(topic, p) for p in range(PARTITIONS)]
        end = await consumer.end_offsets(tps)
        todo = [tp for tp in tps if end[tp] > 0]
        await consumer.assign(todo)
        for tp in todo:
            await consumer.seek(tp, 0)
        remaining = set(todo)
        while remaining:
            batch = await consumer.poll(timeout=0.2)
            for records in batch.values():
                for record in records:
                    assert record.key is not None
                    key = json.loads(record.key)
                    if record.value is None:
                        table.pop(key, None)
                    else:
                        table[key] = json.loads(record.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    return table


class App:
    """One word-count app: its own group, source topic and changelog."""

    def __init__(self, url: str, store: str, settings: Mapping[str, Any], **options: Any):
        self.url = url
        self.store = store
        self.settings = dict(settings)
        self.options = options
        self.name = f"app-{uuid.uuid4().hex[:8]}"
        self.topic = f"src-{uuid.uuid4().hex[:8]}"
        self.changelog = f"{self.name}-counts-changelog"
        self.produced: list[str] = []

    def manager(self, **options: Any) -> TableManager:
        settings: dict[str, Any] = {
            "broker": self.url,
            "store": self.store,
            "commit_interval": 3600,  # commits only when the test says, and on rebalance
            "transport_options": self.settings,
            **self.options,
            **options,
        }
        return TableManager(self.name, **settings)

    async def produce(self, keys: list[str]) -> None:
        if not self.produced:
            await create_topic(self.url, self.topic, self.settings)
        await produce(self.url, self.topic, keys, self.settings)
        self.produced += keys

    async def check_restart(self) -> None:
        """Restart the app and check the recovered table against the words produced,
        then the raw changelog replay against the table."""
        async with self.manager() as manager:
            counts = manager.Table("counts", default=int, key_type=str, value_type=int)
            async with manager.stream(self.topic, key_type=str):
                await manager.wait_until_recovered()
                table = counts.as_dict()
        assert table == Counter(self.produced), (self.name, table)
        assert await replay_changelog(self.url, self.changelog, self.settings) == table


async def process(events: Any, counts: Any, n: int) -> None:
    """Count the next ``n`` events and finish the last one (the stream stays open)."""
    seen = 0
    async for event in events:
        counts[event.key] += 1
        seen += 1
        if seen == n:
            events.ack()
            return


async def commit_scenario(app: App, k: int | None) -> tuple[bool, int]:
    """Process 30 events, run ``manager.commit()`` cancelled after its ``k``-th step,
    process 15 more, stop cleanly; restart and check. (completed, steps)."""
    await app.produce(words(30))
    result = (False, 0)
    async with app.manager() as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(app.topic, key_type=str) as events:
            await manager.wait_until_recovered()
            await process(events, counts, 30)
            result = await run_cancelled_after(k, manager.commit)
            # Other keys: a record lost by the cancelled cycle is never written again.
            await app.produce(words(15, prefix="v"))
            await process(events, counts, 15)
    await app.check_restart()
    return result


async def recovery_scenario(app: App, k: int | None) -> tuple[bool, int]:
    """Build a changelog of 60 events (one record each: coalescing off), then recover it
    into an empty sqlite store with a worker that is cancelled (as by a crash) after
    the ``k``-th step of its table's recovery task; restart on the same store and check.
    (completed, steps)."""
    await app.produce(words(60))
    async with app.manager(store="memory://") as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(app.topic, key_type=str) as events:
            await manager.wait_until_recovered()
            await process(events, counts, 60)

    async def recover() -> None:
        async with app.manager() as manager:
            manager.Table(
                "counts", default=int, key_type=str, value_type=int, recovery_buffer_size=7
            )
            async with manager.stream(app.topic, key_type=str):
                await manager.wait_until_recovered()

    me = trio.lowlevel.current_task()

    def is_recovery_task(task: Any) -> bool:
        return str(task.name).endswith("_recovery_task") and _descends_from(task, me)

    result = await run_cancelled_after(k, recover, is_recovery_task)
    await app.check_restart()
    return result


def _descends_from(task: Any, ancestor: Any) -> bool:
    while task is not None:
        if task is ancestor:
            return True
        nursery = task.parent_nursery
        task = None if nursery is None else nursery.parent_task
    return False


Scenario = Callable[[App, "int | None"], Awaitable[tuple[bool, int]]]


async def every_checkpoint(
    scenario: Scenario, new_app: Callable[[], App], *, parallel: int = 1
) -> int:
    """Run ``scenario`` uncancelled to count its steps n, then cancelled after step k
    for every k in 0..n+1 (``parallel`` at a time, each on a new app); the last must
    complete. Returns n."""
    completed, steps = await scenario(new_app(), None)
    assert completed
    assert steps > 0
    outcomes: dict[int, bool] = {}

    async def one(k: int, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            outcomes[k], _ = await scenario(new_app(), k)

    limiter = trio.CapacityLimiter(parallel)
    last = steps + 1
    async with trio.open_nursery() as nursery:
        for k in range(last + 1):
            nursery.start_soon(one, k, limiter)
    assert not outcomes[0]  # cancelled at its first checkpoint
    # Past the last step nothing is left to cancel (a run may take a few more steps
    # than the one counted: thread hand-overs vary).
    while not outcomes[last]:
        last += 1
        assert last <= 3 * steps + 10, outcomes
        outcomes[last], _ = await scenario(new_app(), last)
    return steps


def sqlite_store(tmp_path: Path) -> Callable[[], str]:
    def new() -> str:
        path = tmp_path / uuid.uuid4().hex[:8]
        path.mkdir()
        return f"sqlite://{path}"

    return new
