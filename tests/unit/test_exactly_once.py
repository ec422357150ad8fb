"""processing_guarantee="exactly_once" on the memory transport (which hides aborted
records from read_committed readers, as Kafka does): one transaction per commit interval
holding the changelog records, the outputs of manager.send and the source offsets; local
stores hold committed data only; a fenced zombie stops with a typed error."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_tables
from trio_tables import TP, TableManager
from trio_tables._codecs import resolve_codec
from trio_tables._store import open_store
from trio_tables._transport._base import IsolationLevel, OutgoingRecord
from trio_tables._transport.memory._transport import get_memory_broker
from trio_tables.errors import TransactionAborted, WorkerFenced

PARTITIONS = 2
HANG_GUARD = 600  # virtual seconds too: above the memory group's rebalance timeout


async def _new_broker() -> str:
    url = f"memory://eos-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", PARTITIONS)
        await transport.create_topic("out", PARTITIONS)
    return url


async def _produce(url: str, words: list[str]) -> None:
    async with trio_tables.open_transport(url) as transport, transport.open_producer() as p:
        await p.send_batch([OutgoingRecord("src", b"{}", key=w.encode()) for w in words])


async def _read(url: str, topic: str, isolation: IsolationLevel) -> list[bytes | None]:
    """Values of every record of ``topic`` a reader with ``isolation`` sees."""
    async with (
        trio_tables.open_transport(url) as transport,
        transport.open_restore_consumer(isolation_level=isolation) as consumer,
    ):
        tps = [TP(topic, p) for p in range((await transport.describe_topic(topic)).partitions)]
        await consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        values: list[bytes | None] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for records in (await consumer.poll(timeout=0.1)).values():
                values.extend(r.value for r in records)
        return values


def _eos(url: str, store: str = "memory://", **kwargs: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "broker": url,
        "store": store,
        "processing_guarantee": "exactly_once",
        "commit_interval": 3600.0,  # commits happen where the test says
    }
    return settings | kwargs


class Processor:
    """Counts the keys of a stream into ``counts`` and sends one output per event (its
    partition and offset); ``wait_for(n)`` returns once ``n`` events were processed."""

    def __init__(self, manager: TableManager, counts: Any, events: Any) -> None:
        self.manager, self.counts, self.events = manager, counts, events
        self.seen = 0
        self._changed = trio.Event()
        self.fail_at: int | None = None
        self.work = 0.0  # seconds each event takes (simulated work)

    async def run(self) -> None:
        async for event in self.events:
            self.counts[event.key] += 1
            await self.manager.send("out", event.key, f"{event.partition}:{event.offset}")
            if self.work:
                await trio.sleep(self.work)
            if self.seen + 1 == self.fail_at:
                raise RuntimeError("processing failed")
            self.seen += 1
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while self.seen < n:
            await self._changed.wait()


def _group_committed(url: str) -> int:
    return sum(get_memory_broker(url.removeprefix("memory://")).group("app").committed.values())


async def test_exactly_once_counts_and_outputs_once_and_commits_offsets(
    autojump_clock: Any,
) -> None:
    url = await _new_broker()
    words = [f"w{i % 7}" for i in range(60)]
    await _produce(url, words[:30])
    async with TableManager("app", **_eos(url, worker_id="w1")) as manager:
        assert manager.transactional_id == "app-w1"
        counts = manager.Table("counts", default=int)
        async with manager.stream("src", key_type=str) as events, trio.open_nursery() as n:
            processor = Processor(manager, counts, events)
            n.start_soon(processor.run)
            await processor.wait_for(30)
            await _produce(url, words[30:])  # more to do while the commit runs
            assert await _read(url, "out", "read_committed") == []  # not committed yet
            assert len(await _read(url, "out", "read_uncommitted")) >= 30  # but sent
            await manager.commit()
            committed = _group_committed(url)
            assert committed >= 30
            assert len(await _read(url, "out", "read_committed")) == committed
            await processor.wait_for(60)
            n.cancel_scope.cancel()
    # Leaving commits the rest.
    assert _group_committed(url) == 60
    outputs = await _read(url, "out", "read_committed")
    assert len(set(outputs)) == 60
    assert len(outputs) == 60
    async with TableManager("app", **_eos(url, worker_id="w1")) as manager:
        counts = manager.Table("counts", default=int)
        async with manager.stream("src", key_type=str):
            await manager.wait_until_recovered()
            assert counts.as_dict() == Counter(words)


async def test_exactly_once_persists_store_offsets(tmp_path: Path) -> None:
    """Faust bug: under exactly-once the stores never recorded their changelog offsets,
    so every restart replayed the whole changelog. Real clock: sqlite uses threads."""
    url = await _new_broker()
    store = f"sqlite://{tmp_path}"
    words = [f"w{i % 7}" for i in range(40)]
    await _produce(url, words)
    with trio.fail_after(HANG_GUARD):
        async with TableManager("app", **_eos(url, store, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int)
            async with manager.stream("src", key_type=str) as events, trio.open_nursery() as n:
                processor = Processor(manager, counts, events)
                n.start_soon(processor.run)
                await processor.wait_for(40)
                await manager.commit()
                n.cancel_scope.cancel()
            offsets = dict(counts.local_offsets)
        assert sorted(offsets) == list(range(PARTITIONS))
        async with TableManager("app", **_eos(url, store, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int)
            async with manager.stream("src", key_type=str):
                await manager.wait_until_recovered()
                assert counts.as_dict() == Counter(words)
                assert counts.replayed == 0
                assert {r.partition: r.applied for r in counts.restores} == dict.fromkeys(
                    range(PARTITIONS), 0
                )


def _store_contents(store: str) -> dict[Any, Any]:
    """What the sqlite store of table "counts" holds, read directly from disk."""
    codec = resolve_codec(None, None, default="json")
    data = open_store(store, name="app-counts", key_codec=codec, value_codec=codec)
    try:
        return {key: value for p in data.partitions() for key, value in data.items(p)}
    finally:
        data.close()


async def test_abort_mid_interval_discards_outputs_and_local_changes(tmp_path: Path) -> None:
    """An event fails after the first commit: the interval's outputs are aborted (in the
    log, invisible to read_committed), no offset of it is committed, the store on disk
    holds the committed counts only, and a restart counts every event once. Real clock:
    sqlite uses threads."""
    url = await _new_broker()
    store = f"sqlite://{tmp_path}"
    words = [f"w{i % 7}" for i in range(40)]
    await _produce(url, words[:20])

    async def fail_in_the_second_interval() -> None:
        async with TableManager("app", **_eos(url, store, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int)
            async with (
                manager.stream("src", key_type=str) as events,
                trio.open_nursery() as nursery,
            ):
                processor = Processor(manager, counts, events)
                processor.fail_at = 35
                nursery.start_soon(processor.run)
                await processor.wait_for(20)
                await manager.commit()
                await _produce(url, words[20:])
                await trio.sleep_forever()  # until the 35th event fails

    with trio.fail_after(HANG_GUARD):
        with pytest.raises(RuntimeError, match="processing failed"):
            await fail_in_the_second_interval()
        assert _group_committed(url) == 20
        assert len(await _read(url, "out", "read_uncommitted")) == 35
        assert len(await _read(url, "out", "read_committed")) == 20
        assert _store_contents(store) == Counter(words[:20])

        async with TableManager("app", **_eos(url, store, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int)
            async with (
                manager.stream("src", key_type=str) as events,
                trio.open_nursery() as nursery,
            ):
                processor = Processor(manager, counts, events)
                nursery.start_soon(processor.run)
                await processor.wait_for(20)  # the aborted interval, processed again
                assert counts.as_dict() == Counter(words)
                nursery.cancel_scope.cancel()
        assert _store_contents(store) == Counter(words)
    outputs = await _read(url, "out", "read_committed")
    assert len(outputs) == 40
    assert len(set(outputs)) == 40


class _HangBeforeCommit(TableManager):
    """Stops inside its ``hang_on``-th commit with offsets, after the changelog records,
    the outputs and the offsets went into the transaction and before it commits."""

    hang_on: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commits = 0
        self.at_hang = trio.Event()
        self.release = trio.Event()

    async def on_commit(self, offsets: Mapping[TP, int]) -> None:
        if offsets:
            self.commits += 1
        if self.commits == self.hang_on:
            self.at_hang.set()
            await self.release.wait()


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
@pytest.mark.parametrize("outcome", ["killed", "zombie"])
async def test_crash_between_send_and_commit_and_the_fenced_zombie(
    outcome: str, store_kind: str, tmp_path: Path
) -> None:
    """Worker A stops between sending its second interval and committing it. A new
    worker B with the same worker_id registers the transactional id: that aborts A's open
    transaction (as the coordinator does after kill -9) and fences A. ``killed``: A never
    runs again. ``zombie``: A wakes up and tries to commit; it must stop with
    WorkerFenced. Either way B counts every event once and nothing of A's second
    interval is visible to read_committed readers (restore included); the sqlite store
    on disk never held any of it. Real clock: sqlite uses threads."""
    url = await _new_broker()
    store = "memory://" if store_kind == "memory" else f"sqlite://{tmp_path}"
    words = [f"w{i % 7}" for i in range(40)]
    await _produce(url, words[:20])
    a = _HangBeforeCommit("app", **_eos(url, store, worker_id="w1"))
    a.hang_on = 2
    a_stopped = trio.Event()
    a_scope = trio.CancelScope()  # cancelling it: A never runs again (kill -9)
    fenced: list[WorkerFenced] = []

    async def run_a() -> None:
        try:
            with a_scope:
                await _run_a()
        except WorkerFenced as exc:
            fenced.append(exc)
        finally:
            a_stopped.set()

    async def _run_a() -> None:
        async with a:
            counts = a.Table("counts", default=int)
            async with (
                a.stream("src", key_type=str) as events,
                trio.open_nursery() as nursery,
            ):
                processor = Processor(a, counts, events)
                nursery.start_soon(processor.run)
                await processor.wait_for(20)
                await a.commit()
                with counts.partition(0):
                    counts["outside"] = 1  # a write that no event caused
                await _produce(url, words[20:])
                await processor.wait_for(40)
                await a.commit()  # hangs before the transaction commits

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_a)
            await a.at_hang.wait()
            changelog = "app-counts-changelog"
            assert b"1" in await _read(url, changelog, "read_uncommitted")  # "outside"
            assert len(await _read(url, "out", "read_uncommitted")) == 40
            assert len(await _read(url, "out", "read_committed")) == 20
            async with TableManager("app", **_eos(url, store, worker_id="w1")) as b:
                if outcome == "killed":
                    a_scope.cancel()
                else:
                    a.release.set()
                await a_stopped.wait()
                if outcome == "zombie":
                    (error,) = fenced
                    assert "app-w1" in str(error)
                    assert "fenced" in str(error)
                assert len(await _read(url, "out", "read_committed")) == 20
                assert _group_committed(url) == 20
                if store_kind == "sqlite":
                    assert _store_contents(store) == Counter(words[:20])
                counts = b.Table("counts", default=int)
                async with (
                    b.stream("src", key_type=str) as events,
                    trio.open_nursery() as processing,
                ):
                    await b.wait_until_recovered()
                    assert counts.as_dict() == Counter(words[:20])  # nothing of A's abort
                    processor = Processor(b, counts, events)
                    processing.start_soon(processor.run)
                    await processor.wait_for(20)
                    assert counts.as_dict() == Counter(words)
                    processing.cancel_scope.cancel()
    outputs = await _read(url, "out", "read_committed")
    assert len(outputs) == 40
    assert len(set(outputs)) == 40


async def test_a_failing_commit_aborts_and_stops_the_worker(autojump_clock: Any) -> None:
    """An output the broker refuses (no such partition) fails the commit: the
    transaction is aborted (its changelog records, outputs and offsets with it), the
    worker stops with TransactionAborted, and a restart counts every event once."""
    url = await _new_broker()
    words = [f"w{i % 7}" for i in range(20)]
    await _produce(url, words)

    async def commit_a_bad_output() -> None:
        async with TableManager("app", **_eos(url, worker_id="w1")) as manager:
            counts = manager.Table("counts", default=int)
            async with (
                manager.stream("src", key_type=str) as events,
                trio.open_nursery() as nursery,
            ):
                processor = Processor(manager, counts, events)
                nursery.start_soon(processor.run)
                await processor.wait_for(20)
                await manager.send("out", "bad", "no such partition", partition=PARTITIONS)
                await manager.commit()

    with pytest.raises(TransactionAborted, match="could not commit and was aborted"):
        await commit_a_bad_output()
    assert _group_committed(url) == 0
    assert len(await _read(url, "out", "read_uncommitted")) == 20
    assert await _read(url, "out", "read_committed") == []
    assert len(await _read(url, "app-counts-changelog", "read_uncommitted")) == 7  # keys
    assert await _read(url, "app-counts-changelog", "read_committed") == []
    async with TableManager("app", **_eos(url, worker_id="w1")) as manager:
        counts = manager.Table("counts", default=int)
        async with manager.stream("src", key_type=str) as events, trio.open_nursery() as n:
            processor = Processor(manager, counts, events)
            n.start_soon(processor.run)
            await processor.wait_for(20)
            assert counts.as_dict() == Counter(words)
            n.cancel_scope.cancel()
    assert len(set(await _read(url, "out", "read_committed"))) == 20


class _SeesEverything(TableManager):
    """Sets ``assigned_all`` once an assignment gives it every source partition."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assigned_all = trio.Event()

    async def on_rebalance(self, assigned: Any, *args: Any) -> None:
        if len(assigned) == PARTITIONS:
            self.assigned_all.set()


async def test_a_new_owner_waits_for_a_zombies_pending_offsets(autojump_clock: Any) -> None:
    """KIP-447: worker A added its offsets to a transaction and stalls before committing.
    B joins, A misses the rebalance and is evicted, B owns everything. B must not start
    from the committed offsets while A's transaction may still move them (read_committed
    offset fetches wait for stable offsets): once A commits, B goes on from there and
    every output exists exactly once."""
    url = await _new_broker()
    words = [f"w{i % 7}" for i in range(60)]
    await _produce(url, words[:20])
    a = _HangBeforeCommit("app", **_eos(url, worker_id="a"))
    a.hang_on = 2
    b = _SeesEverything("app", **_eos(url, worker_id="b"))

    async def run_a() -> None:
        async with a:
            counts = a.Table("counts", default=int)
            async with a.stream("src", key_type=str) as events, trio.open_nursery() as nursery:
                processor = Processor(a, counts, events)
                nursery.start_soon(processor.run)
                await processor.wait_for(20)
                await a.commit()
                await _produce(url, words[20:40])
                await processor.wait_for(40)
                await a.commit()  # stalls in on_commit until released, then commits
                nursery.cancel_scope.cancel()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_a)
            await a.at_hang.wait()
            async with b:
                counts = b.Table("counts", default=int)
                async with (
                    b.stream("src", key_type=str) as events,
                    trio.open_nursery() as processing,
                ):
                    await b.assigned_all.wait()  # A was evicted meanwhile
                    await trio.testing.wait_all_tasks_blocked()
                    assert not b.actives_ready  # its recovery waits for A's offsets
                    a.release.set()
                    await b.wait_until_recovered()
                    assert _group_committed(url) == 40  # A's transaction committed
                    processor = Processor(b, counts, events)
                    processing.start_soon(processor.run)
                    await _produce(url, words[40:])
                    await processor.wait_for(20)
                    processing.cancel_scope.cancel()
    assert _group_committed(url) == 60
    outputs = await _read(url, "out", "read_committed")
    assert len(outputs) == 60
    assert len(set(outputs)) == 60
    async with TableManager("app", **_eos(url, worker_id="c")) as c:
        counts = c.Table("counts", default=int)
        async with c.stream("src", key_type=str):
            await c.wait_until_recovered()
            assert counts.as_dict() == Counter(words)


async def test_no_commit_while_an_event_is_in_process(autojump_clock: Any) -> None:
    """An event that already sent its output and is still in process when a commit
    starts: committing would make its output visible while its offset stays
    uncommitted (a crash then sends it twice). The commit waits event_grace, then is
    skipped; the next one, after the event finished, commits both."""
    url = await _new_broker()
    await _produce(url, ["a", "b"])
    proceed = trio.Event()
    held = trio.Event()
    async with TableManager("app", **_eos(url, worker_id="w1", event_grace=0.5)) as manager:
        counts = manager.Table("counts", default=int)

        async def process(events: Any) -> None:
            async for event in events:
                counts[event.key] += 1
                await manager.send("out", event.key, f"{event.partition}:{event.offset}")
                if event.key == "b":
                    held.set()
                    await proceed.wait()  # still in process during the first commit

        async with manager.stream("src", key_type=str) as events, trio.open_nursery() as n:
            n.start_soon(process, events)
            await held.wait()
            await manager.commit()
            assert await _read(url, "out", "read_committed") == []
            assert _group_committed(url) == 0
            proceed.set()
            await manager.commit()
            assert len(await _read(url, "out", "read_committed")) == 2
            assert _group_committed(url) == 2
            n.cancel_scope.cancel()


class _StallsInRebalance(TableManager):
    """Once ``armed``, its next rebalance hook waits for ``release`` (inside poll, so
    the group evicts it for not rejoining the next round in time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed = False
        self.stalled = trio.Event()
        self.release = trio.Event()
        self.assigned_all = trio.Event()

    async def on_rebalance(self, assigned: Any, *args: Any) -> None:
        if len(assigned) == PARTITIONS:
            self.assigned_all.set()
        if self.armed:
            self.armed = False
            self.stalled.set()
            await self.release.wait()


async def test_partitions_lost_abort_the_open_transaction(autojump_clock: Any) -> None:
    """A is a slow worker: it fetched every event and works through them. B joins (a
    cooperative rebalance); A commits what it did when it gives up a partition, then
    stalls in its rebalance hook while its task goes on processing the buffered events of
    the partition it kept: outputs in its open transaction. The group evicts A and gives
    everything to B; C later processes those events again. When A learns that its
    partitions were lost it must abort that transaction; otherwise A's final commit
    publishes them a second time."""
    url = await _new_broker()
    words = [f"w{i % 7}" for i in range(40)]
    await _produce(url, words)
    settings = _eos(url, rebalance_protocol="cooperative")
    a = _StallsInRebalance("app", **settings | {"worker_id": "a"})
    b_done = trio.Event()
    a_armed = trio.Event()

    async def run_a() -> None:
        async with a:
            counts = a.Table("counts", default=int)
            async with a.stream("src", key_type=str) as events, trio.open_nursery() as n:
                processor = Processor(a, counts, events)
                processor.work = 1.0
                n.start_soon(processor.run)
                await processor.wait_for(2)
                a.armed = True
                a_armed.set()
                await b_done.wait()
                a.release.set()
                n.cancel_scope.cancel()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_a)
            await a_armed.wait()
            b = _StallsInRebalance("app", **settings | {"worker_id": "b"})
            async with b:  # takes the partitions over; C processes the rest afterwards
                b.Table("counts", default=int)
                async with b.stream("src", key_type=str):
                    await a.stalled.wait()
                    await b.assigned_all.wait()  # A was evicted
                    await b.wait_until_recovered()
                    b_done.set()
    async with TableManager("app", **_eos(url, worker_id="c")) as c:
        counts = c.Table("counts", default=int)
        async with c.stream("src", key_type=str) as events, trio.open_nursery() as n:
            await c.wait_until_recovered()
            processor = Processor(c, counts, events)
            n.start_soon(processor.run)
            await processor.wait_for(40 - _group_committed(url))  # what is left
            assert counts.as_dict() == Counter(words)
            n.cancel_scope.cancel()
    outputs = await _read(url, "out", "read_committed")
    assert len(outputs) == 40
    assert len(set(outputs)) == 40
