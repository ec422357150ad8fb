"""processing_guarantee="exactly_once" on the embedded broker (Tansu): the commit path
(changelog records, outputs and source offsets in one transaction, KIP-447 group
metadata), restarts, and a fenced zombie.

Tansu delivers records of aborted transactions to read_committed readers (BROKER.md), so
checks that an aborted interval stays invisible run only on a real Kafka cluster
(``real_kafka``, ``TRIO_TABLES_REAL_KAFKA=host:port``); on memory:// they run always
(tests/unit/test_exactly_once.py).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trio_tables
from trio_tables import TP, TableManager
from trio_tables._transport._base import IsolationLevel, OutgoingRecord
from trio_tables._transport._url import split_kafka_url
from trio_tables.errors import TransactionAborted, WorkerFenced

from .workers import (
    Worker,
    merge_dumps,
    printing_worker_logs_on_failure,
    scratch_dir,
    wait_caught_up,
    words,
)

pytestmark = pytest.mark.kafka

SETTINGS: dict[str, Any] = {
    # Real Kafka's minimum (group.min.session.timeout.ms); the embedded broker's URL
    # carries its own settings, which take precedence.
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "end_transaction_timeout": 5.0,
}
PARTITIONS = 3
HANG_GUARD = 120
REAL_KAFKA = os.environ.get("TRIO_TABLES_REAL_KAFKA", "")


@attrs.frozen
class _Broker:
    """What tests/integration/workers.py needs of a broker."""

    url: str

    @property
    def bootstrap(self) -> str:
        return split_kafka_url(self.url)[0]


@pytest.fixture
def url(kafka_broker: Any) -> str:
    return f"kafka://{REAL_KAFKA}" if REAL_KAFKA else str(kafka_broker.url)


async def _topics(url: str, *names: str) -> None:
    async with trio_tables.open_transport(url, **SETTINGS) as transport:
        for name in names:
            await transport.create_topic(name, PARTITIONS)


async def _produce(url: str, topic: str, words: list[str]) -> None:
    async with (
        trio_tables.open_transport(url, **SETTINGS) as transport,
        transport.open_producer() as producer,
    ):
        await producer.send_batch([OutgoingRecord(topic, b"{}", key=w.encode()) for w in words])


async def _read(url: str, topic: str, isolation: IsolationLevel) -> list[bytes | None]:
    async with (
        trio_tables.open_transport(url, **SETTINGS) as transport,
        transport.open_restore_consumer(isolation_level=isolation) as consumer,
    ):
        tps = [TP(topic, p) for p in range(PARTITIONS)]
        await consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        values: list[bytes | None] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for records in (await consumer.poll(timeout=0.2)).values():
                values.extend(r.value for r in records)
        return values


async def _committed(manager: TableManager, topic: str) -> int:
    consumer = manager._membership.consumer
    assert consumer is not None
    offsets = await consumer.committed([TP(topic, p) for p in range(PARTITIONS)])
    return sum(offset or 0 for offset in offsets.values())


class Processor:
    """Counts keys into ``counts``, one output per event; ``wait_for(n)``."""

    def __init__(self, manager: TableManager, counts: Any, events: Any, out: str) -> None:
        self.manager, self.counts, self.events, self.out = manager, counts, events, out
        self.seen = 0
        self._changed = trio.Event()

    async def run(self) -> None:
        async for event in self.events:
            self.counts[event.key] += 1
            await self.manager.send(self.out, event.key, f"{event.partition}:{event.offset}")
            self.seen += 1
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while self.seen < n:
            await self._changed.wait()


def _eos(url: str, store: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "broker": url,
        "store": store,
        "processing_guarantee": "exactly_once",
        "commit_interval": 3600.0,  # commits happen where the test says
        "transport_options": SETTINGS,
    } | kwargs


async def test_exactly_once_commit_path_and_a_restart_that_replays_nothing(
    url: str, unique_name: Any, tmp_path: Path
) -> None:
    src, out, app = unique_name("src"), unique_name("out"), unique_name("eos")
    await _topics(url, src, out)
    words = [f"w{i % 11}" for i in range(300)]
    await _produce(url, src, words[:150])
    store = f"sqlite://{tmp_path}"
    with trio.fail_after(HANG_GUARD):
        async with TableManager(app, **_eos(url, store, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int, key_type=str, value_type=int)
            async with manager.stream(src, key_type=str) as events, trio.open_nursery() as n:
                processor = Processor(manager, counts, events, out)
                n.start_soon(processor.run)
                await processor.wait_for(150)
                await manager.commit()
                assert await _committed(manager, src) == 150
                assert len(await _read(url, out, "read_committed")) == 150
                await _produce(url, src, words[150:])
                await processor.wait_for(300)
                n.cancel_scope.cancel()
        # Leaving committed the rest; the stores recorded their changelog offsets.
        async with TableManager(app, **_eos(url, store, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int, key_type=str, value_type=int)
            async with manager.stream(src, key_type=str):
                await manager.wait_until_recovered()
                assert await _committed(manager, src) == 300
                assert counts.as_dict() == Counter(words)
                assert counts.replayed == 0
    outputs = await _read(url, out, "read_committed")
    assert len(outputs) == 300
    assert len(set(outputs)) == 300


class _HangBeforeCommit(TableManager):
    """Waits inside its second commit with offsets, before the transaction commits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commits = 0
        self.at_hang = trio.Event()
        self.release = trio.Event()

    async def on_commit(self, offsets: Mapping[TP, int]) -> None:
        if offsets:
            self.commits += 1
        if self.commits == 2:
            self.at_hang.set()
            await self.release.wait()


async def _zombie_and_successor(
    url: str, src: str, out: str, app: str, words: list[str]
) -> tuple[list[BaseException], Counter[str]]:
    """A stops before committing its second interval; B (same worker_id) registers the
    transactional id, then A tries to commit. What A raised, and B's counts after
    processing what A did not commit."""
    a = _HangBeforeCommit(app, **_eos(url, "memory://", worker_id="w1"))
    a_errors: list[BaseException] = []
    a_stopped = trio.Event()

    async def run_a() -> None:
        try:
            async with a:
                counts = a.Table("counts", default=int, key_type=str, value_type=int)
                async with a.stream(src, key_type=str) as events, trio.open_nursery() as n:
                    processor = Processor(a, counts, events, out)
                    n.start_soon(processor.run)
                    await processor.wait_for(50)
                    await a.commit()
                    await _produce(url, src, words[50:])
                    await processor.wait_for(100)
                    await a.commit()  # waits in on_commit, then is fenced
        except Exception as exc:
            a_errors.append(exc)
        finally:
            a_stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_a)
        await a.at_hang.wait()
        async with TableManager(app, **_eos(url, "memory://", worker_id="w1")) as b:
            a.release.set()
            await a_stopped.wait()
            counts = b.Table("counts", default=int, key_type=str, value_type=int)
            async with b.stream(src, key_type=str) as events, trio.open_nursery() as n:
                await b.wait_until_recovered()
                processor = Processor(b, counts, events, out)
                n.start_soon(processor.run)
                await processor.wait_for(50)  # A's second interval, processed again
                result = Counter(counts.as_dict())
                n.cancel_scope.cancel()
    return a_errors, result


async def test_a_fenced_zombie_stops_and_its_successor_counts_exactly(
    url: str, unique_name: Any
) -> None:
    src, out, app = unique_name("src"), unique_name("out"), unique_name("eos")
    await _topics(url, src, out)
    words = [f"w{i % 11}" for i in range(100)]
    await _produce(url, src, words[:50])
    with trio.fail_after(HANG_GUARD):
        errors, counts = await _zombie_and_successor(url, src, out, app, words)
    (error,) = errors
    if REAL_KAFKA:
        assert isinstance(error, WorkerFenced), repr(error)
    else:
        # Tansu drops the connection instead of answering the zombie's EndTxn: the
        # commit times out (end_transaction_timeout) and the worker stops all the same.
        assert isinstance(error, (WorkerFenced, TransactionAborted)), repr(error)
        assert "fenced" in str(error)
    assert f"{app}-w1" in str(error)
    assert counts == Counter(words)


@pytest.mark.real_kafka
@pytest.mark.skipif(not REAL_KAFKA, reason="Tansu shows aborted records to read_committed")
async def test_a_fenced_zombies_interval_is_invisible_to_read_committed(
    url: str, unique_name: Any
) -> None:
    src, out, app = unique_name("src"), unique_name("out"), unique_name("eos")
    await _topics(url, src, out)
    words = [f"w{i % 11}" for i in range(100)]
    await _produce(url, src, words[:50])
    with trio.fail_after(HANG_GUARD):
        await _zombie_and_successor(url, src, out, app, words)
    assert len(await _read(url, out, "read_uncommitted")) == 150  # A's 50 aborted ones too
    outputs = await _read(url, out, "read_committed")
    assert len(outputs) == 100
    assert len(set(outputs)) == 100


async def test_kill_9_between_send_and_commit_and_at_random_points_counts_once(
    url: str, unique_name: Any, tmp_path: Path
) -> None:
    """SPEC section 5: after kill -9 at any point, counting every event once gives exact
    counts. Worker processes with a sqlite store and a stable worker_id: killed with
    its second transaction sent but not committed, then at random moments, then run to
    the end; a fresh worker with no local state rebuilds the same table."""
    topic, app = unique_name("words"), unique_name("eos-crash")
    await _topics(url, topic)
    workdir = scratch_dir(tmp_path, "eos-crash")
    store = f"sqlite://{workdir / 'state'}"
    seed = int(os.environ.get("TRIO_TABLES_TEST_SEED", random.randrange(2**32)))
    print(f"random kill points: TRIO_TABLES_TEST_SEED={seed}")
    rnd = random.Random(seed)
    produced: list[str] = []
    broker = _Broker(url)

    fed_all = trio.Event()

    async def keep_feeding(stop: trio.Event) -> None:
        batch_number = 0
        while not stop.is_set():
            batch = words(100, seed + batch_number)
            batch_number += 1
            produced.extend(batch)
            await _produce(url, topic, batch)
            with trio.move_on_after(0.05):
                await stop.wait()
        fed_all.set()

    def worker(kill_point: str | None = None, name: str = "eos", **kwargs: Any) -> Worker:
        settings: dict[str, Any] = {"store": store, "worker_id": "w1"} | kwargs
        return Worker(
            name,
            broker=broker,
            app=app,
            topic=topic,
            workdir=workdir,
            kill_point=kill_point,
            guarantee="exactly_once",
            **settings,
        )

    with printing_worker_logs_on_failure(), trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            stop_feeding = trio.Event()
            nursery.start_soon(keep_feeding, stop_feeding)

            w = worker("before-commit", name="eos-before-commit")
            await w.start(nursery)
            with trio.fail_after(60):
                await w.wait_for_line("KILLPOINT before-commit")
            await w.kill()

            for i in range(2):
                w = worker(name=f"eos-random-{i}")
                await w.start(nursery)
                await w.wait_for_line("ACTIVE [")
                with trio.move_on_after(rnd.uniform(0.0, 1.5)):
                    await w.wait_for_line("never printed")
                await w.kill()

            stop_feeding.set()
            await fed_all.wait()  # a batch still in flight would move the end offsets
            w = worker(name="eos-final")
            await w.start(nursery)
            await wait_caught_up(broker, app, topic, PARTITIONS, [w])
            w.terminate()
            final = await w.wait_stopped()

            fresh = worker(name="fresh", store="memory://", worker_id="w2")
            await fresh.start(nursery)
            await fresh.wait_for_line(f"ACTIVE {json.dumps(list(range(PARTITIONS)))}")
            fresh.terminate()
            rebuilt = await fresh.wait_stopped()

    expected = Counter(produced)
    assert merge_dumps([final], PARTITIONS) == expected
    assert merge_dumps([rebuilt], PARTITIONS) == expected
