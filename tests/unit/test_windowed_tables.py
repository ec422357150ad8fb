"""Windowed tables on the memory transport, deterministic under trio's MockClock.

Every expectation is computed from the event timestamps by brute force (the oracle),
independently of the window arithmetic under test.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import trio_tables
from trio_tables import TableManager
from trio_tables._changelog import decode_stream_time
from trio_tables._codecs import JsonCodec
from trio_tables._table._windowed import WindowedKeyCodec
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables._transport.memory._transport import get_memory_broker
from trio_tables.errors import NoWindowTimestamp

PARTITIONS = 2
TOPIC = "clicks"
SIZE = 10_000  # ms
EXPIRES = 20_000  # ms

Ev = tuple[str, int, int]  # key, partition, timestamp (ms)


def _url() -> str:
    return f"memory://win-{uuid.uuid4().hex[:12]}"


async def _setup(url: str, events: Sequence[Ev], topic: str = TOPIC) -> None:
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic(topic, PARTITIONS, exist_ok=True)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [
                    OutgoingRecord(topic, b'{"n": 1}', key=k.encode(), partition=p, timestamp=ts)
                    for k, p, ts in events
                ]
            )
            await producer.flush()


def _tumbling_oracle(events: Sequence[Ev]) -> Counter[tuple[str, int, int]]:
    """(key, partition, window start) -> count, by brute force over 1 ms steps of
    window starts is too slow; tumbling windows are just floor division."""
    return Counter((k, p, ts - ts % SIZE) for k, p, ts in events)


async def _drive(
    manager: TableManager, stream: Any, n: int, body: Callable[[Any], None]
) -> None:
    """Process ``n`` events with ``body`` in a child task, then run a commit cycle
    (which closes the windows due) while the stream stays open."""
    done = trio.Event()

    async def process() -> None:
        seen = 0
        async for event in stream:
            body(event)
            seen += 1
            if seen == n:
                break
        stream.ack()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(process)
        await manager.wait_until_recovered()
        if n:
            await done.wait()
        await manager.commit()
        nursery.cancel_scope.cancel()


class Closed:
    """on_window_close callback recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, key: Any, value: Any) -> None:
        self.calls.append((key, value))


async def _run(
    url: str,
    n: int,
    *,
    closed: Closed,
    store: str = "memory://",
    app: str = "win",
    **window_options: Any,
) -> tuple[dict[Any, Any], TableManager, Any]:
    """Count ``n`` events per key and tumbling window; the windows left at the end."""
    async with TableManager(app, broker=url, store=store, commit_interval=0.5) as manager:
        hits = manager.Table(
            "hits", default=int, key_type=str, value_type=int, on_window_close=closed
        ).tumbling(SIZE / 1000, expires=EXPIRES / 1000, **window_options)
        async with manager.stream(TOPIC, key_type=str) as events:

            def count(event: Any) -> None:
                hits[event.key] += 1

            await _drive(manager, events, n, count)
            windows = hits.windows()
    return windows, manager, hits


def _events() -> list[Ev]:
    # Partition 0 runs to 100 s of stream time; partition 1 only to 15 s.
    p0 = [("ab"[i % 2], 0, i * 1000) for i in range(101)]
    p1 = [("cd"[i % 2], 1, i * 500) for i in range(31)]  # keys apart: windows() merges
    return p0 + p1


def _split_expected(events: Sequence[Ev]) -> tuple[dict[Any, int], dict[Any, int]]:
    """(windows closed at the end, windows still open at the end), from the oracle."""
    stream_time = {p: max(ts for _, q, ts in events if q == p) for p in range(PARTITIONS)}
    closed, open_ = {}, {}
    for (key, p, start), count in _tumbling_oracle(events).items():
        window = (key, (start, start + SIZE))
        if start + SIZE + EXPIRES <= stream_time[p]:
            closed[window] = count
        else:
            open_[window] = count
    return closed, open_


async def test_expiry_runs_on_each_partitions_stream_time(autojump_clock: Any) -> None:
    url, events = _url(), _events()
    await _setup(url, events)
    closed = Closed()
    windows, _, hits = await _run(url, len(events), closed=closed)
    expected_closed, expected_open = _split_expected(events)
    assert expected_closed
    assert expected_open
    # Partition 1's windows are far behind partition 0's stream time and stay open: no
    # clock shared between partitions (Faust's last_closed_window).
    assert any(start < 20_000 for (_, (start, _)) in expected_open)
    assert windows == expected_open
    assert dict(closed.calls) == expected_closed
    assert len(closed.calls) == len(expected_closed)  # each window closed once
    assert hits.table.late_updates == 0


async def test_closed_windows_are_tombstoned_in_the_changelog(autojump_clock: Any) -> None:
    url, events = _url(), _events()
    await _setup(url, events)
    closed = Closed()
    await _run(url, len(events), closed=closed)
    broker = get_memory_broker(url.removeprefix("memory://"))
    codec = WindowedKeyCodec(JsonCodec())
    last: dict[Any, bytes | None] = {}
    for p in range(PARTITIONS):
        for record in broker.log(TP("win-hits-changelog", p)).records:
            assert record.key is not None
            last[codec.decode(record.key)] = record.value
            assert decode_stream_time(record.headers) is not None
    expected_closed, expected_open = _split_expected(events)
    for (key, (start, _)) in expected_closed:
        assert last[(key, start)] is None
    for (key, (start, _)), count in expected_open.items():
        assert last[(key, start)] == str(count).encode()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_restart_in_the_middle_closes_each_window_once(
    autojump_clock: Any, store: str, tmp_path: Path
) -> None:
    url, events = _url(), _events()
    store_url = "memory://" if store == "memory" else f"sqlite://{tmp_path}"
    first = [e for e in events if e[2] < 50_000]
    rest = [e for e in events if e[2] >= 50_000]
    await _setup(url, first)
    closed = Closed()
    await _run(url, len(first), closed=closed, store=store_url)
    closed_first = len(closed.calls)
    assert closed_first > 0
    await _setup(url, rest)
    windows, _, hits = await _run(url, len(rest), closed=closed, store=store_url)
    expected_closed, expected_open = _split_expected(events)
    # Restored windows expire too, and none closes twice.
    assert len(closed.calls) == len(expected_closed) > closed_first
    assert dict(closed.calls) == expected_closed
    assert windows == expected_open
    assert hits.table.late_updates == 0


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_late_event_after_restart_does_not_reopen_a_closed_window(
    autojump_clock: Any, store: str, tmp_path: Path
) -> None:
    url, events = _url(), _events()
    store_url = "memory://" if store == "memory" else f"sqlite://{tmp_path}"
    await _setup(url, events)
    closed = Closed()
    await _run(url, len(events), closed=closed, store=store_url)
    calls = len(closed.calls)
    late = [("a", 0, 5_000)]  # window [0, 10 s) of partition 0 closed long ago
    await _setup(url, late)
    windows, _, hits = await _run(url, 1, closed=closed, store=store_url)
    assert len(closed.calls) == calls
    assert ("a", (0, SIZE)) not in windows
    assert hits.table.late_updates == 1


async def test_hopping_updates_every_window_and_current_reads_the_newest(
    autojump_clock: Any,
) -> None:
    url = _url()
    events = [("k", 0, ts) for ts in range(0, 60_000, 1_700)]
    await _setup(url, events)
    size, step = 10_000, 2_500
    seen_current: list[int] = []
    async with TableManager("hop", broker=url, commit_interval=0.5) as manager:
        hits = manager.Table("hits", default=int, key_type=str).hopping(size / 1000, step / 1000)
        async with manager.stream(TOPIC, key_type=str) as stream:
            n = 0
            async for event in stream:
                hits[event.key] += 1
                seen_current.append(hits[event.key].current())
                n += 1
                if n == len(events):
                    break
            windows = hits.windows()

    def holding(ts: int) -> list[int]:  # brute force: every multiple of step
        return [s for s in range(-size, ts + 1, step) if s <= ts < s + size]

    oracle: Counter[int] = Counter()
    expected_current = []
    for _, _, ts in events:
        for start in holding(ts):
            oracle[start] += 1
        expected_current.append(oracle[max(holding(ts))])
    assert windows == {("k", (s, s + size)): c for s, c in oracle.items()}
    assert seen_current == expected_current


async def test_now_is_wall_clock_inside_a_stream(autojump_clock: Any) -> None:
    url = _url()
    await _setup(url, [("k", 0, 5_000), ("k", 0, 6_000)])
    wall = [1_800_000_000.0]  # seconds
    async with TableManager("now", broker=url, commit_interval=0.5) as manager:
        hits = manager.Table("hits", default=int, key_type=str).tumbling(
            10, clock=lambda: wall[0]
        )
        async with manager.stream(TOPIC, key_type=str) as stream:
            async for event in stream:
                hits[event.key] += 1  # event time: window [0, 10 s)
                hits.relative_to_now()[event.key] += 10  # wall clock window
                if event.offset == 1:
                    assert hits[event.key].current() == 2
                    assert hits[event.key].now() == 20  # not 1970's window
                    assert hits[event.key].delta(5) == 2  # 1 s and 0 s later: same window
                    break
            wall_start = 1_800_000_000_000 - 1_800_000_000_000 % 10_000
            assert hits.windows() == {
                ("k", (0, 10_000)): 2,
                ("k", (wall_start, wall_start + 10_000)): 20,
            }


async def test_relative_to_field_and_callable(autojump_clock: Any) -> None:
    url = _url()
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic(TOPIC, PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [
                    OutgoingRecord(TOPIC, b'{"at": %d}' % sec, key=b"k", partition=0, timestamp=0)
                    for sec in (100, 105, 111)
                ]
            )
            await producer.flush()
    async with TableManager("rel", broker=url, commit_interval=0.5) as manager:
        by_field = manager.Table("f", default=int, key_type=str).tumbling(10)
        by_fn = manager.Table("g", default=int, key_type=str).tumbling(10)
        field_view = by_field.relative_to_field("at")
        fn_view = by_fn.relative_to(lambda event: event.value["at"] + 5)
        async with manager.stream(TOPIC, key_type=str) as stream:
            async for event in stream:
                field_view[event.key] += 1
                fn_view[event.key] += 1
                if event.offset == 2:
                    break
            assert by_field.windows() == {
                ("k", (100_000, 110_000)): 2,
                ("k", (110_000, 120_000)): 1,
            }
            assert by_fn.windows() == {("k", (100_000, 110_000)): 1, ("k", (110_000, 120_000)): 2}


async def test_outside_a_stream_the_timestamp_must_be_given(autojump_clock: Any) -> None:
    url = _url()
    await _setup(url, [])
    async with TableManager("out", broker=url, commit_interval=0.5) as manager:
        hits = manager.Table("hits", default=int, key_type=str).tumbling(10)
        async with manager.stream(TOPIC, key_type=str):
            await manager.wait_until_recovered()
            with pytest.raises(NoWindowTimestamp, match="at\\(timestamp_ms\\)"):
                hits["k"] += 1
            with hits.partition(1), hits.at(25_000):
                hits["k"] += 3
                assert hits["k"].value() == 3
            assert hits.windows() == {("k", (20_000, 30_000)): 3}


async def test_custom_changelog_topic_and_retention_configs(autojump_clock: Any) -> None:
    url = _url()
    await _setup(url, [("k", 1, 1_000)])
    async with TableManager("cfg", broker=url, commit_interval=0.5) as manager:
        hits = manager.Table("hits", default=int, key_type=str, changelog_topic="my-hits").tumbling(
            "10s", expires="1m", grace="5s"
        )
        async with manager.stream(TOPIC, key_type=str) as stream:
            async for event in stream:
                hits[event.key] += 1
                break
    broker = get_memory_broker(url.removeprefix("memory://"))
    configs = broker.describe_topic("my-hits").configs
    assert configs["cleanup.policy"] == "compact,delete"
    assert int(configs["retention.ms"]) == 10_000 + 60_000 + 5_000 + 24 * 3600 * 1000
    assert [r.key for r in broker.log(TP("my-hits", 1)).records] == [
        WindowedKeyCodec(JsonCodec()).encode(("k", 0))
    ]
    assert "cfg-hits-changelog" not in broker.list_topics()


async def test_keys_leave_the_index_with_their_last_window(autojump_clock: Any) -> None:
    url = _url()
    # "old" only appears early; by the end its windows are closed.
    events = [("old", 0, 0), ("new", 0, 1_000)] + [("new", 0, ts) for ts in range(0, 60_000, 5_000)]
    await _setup(url, events)
    async with TableManager("idx", broker=url, commit_interval=0.5) as manager:
        hits = manager.Table("hits", default=int, key_type=str).tumbling(
            10, expires=20, key_index=True
        )
        async with manager.stream(TOPIC, key_type=str) as stream:
            await _drive(manager, stream, 2, lambda e: hits[e.key].__iadd__(1))
            assert set(hits.keys()) == {"old", "new"}
            await _drive(manager, stream, len(events) - 2, lambda e: hits[e.key].__iadd__(1))
            # the commit closed old's only window
            assert set(hits.keys()) == {"new"}
            assert hits.key_index_table == {"new": True}
            with hits.at(55_000):
                assert dict(hits.items()) == {"new": 2}


async def test_final_results_topic_gets_each_window_once(autojump_clock: Any) -> None:
    url, events = _url(), _events()
    await _setup(url, events)
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("finals", PARTITIONS)
    await _run(url, len(events), closed=Closed(), final_results_topic="finals")
    broker = get_memory_broker(url.removeprefix("memory://"))
    got = {}
    for p in range(PARTITIONS):
        for record in broker.log(TP("finals", p)).records:
            assert record.key is not None
            assert record.value is not None
            value = JsonCodec().decode(record.value)
            window = (record.key.decode(), (value["start"], value["end"]))
            assert window not in got
            got[window] = value["value"]
    expected_closed, _ = _split_expected(events)
    assert got == expected_closed


async def test_wall_clock_expiry(autojump_clock: Any) -> None:
    url = _url()
    await _setup(url, [("k", 0, 0), ("k", 0, 15_000)])
    wall = [0.0]
    closed = Closed()
    async with TableManager("wall", broker=url, commit_interval=0.5) as manager:
        hits = manager.Table("hits", default=int, key_type=str, on_window_close=closed).tumbling(
            10, expires=5, expiry="wall_clock", clock=lambda: wall[0]
        )
        async with manager.stream(TOPIC, key_type=str) as stream:
            await _drive(manager, stream, 2, lambda e: hits[e.key].__iadd__(1))
            # Stream time is 15 s, but the wall clock says 0: nothing closes.
            assert closed.calls == []
            wall[0] = 15.0  # window [0, 10 s) ended 5 s ago
            await manager.commit()
            assert closed.calls == [(("k", (0, 10_000)), 1)]
            wall[0] = 25.0
            await manager.commit()
            assert closed.calls[1:] == [(("k", (10_000, 20_000)), 1)]


def test_windowed_key_codec_round_trips() -> None:
    codec = WindowedKeyCodec(JsonCodec())
    for key in [("a", 0), ("", -5_000), ("big", 2**40), (7, 10)]:
        assert codec.decode(codec.encode(key)) == key
    with pytest.raises(TypeError, match="window start"):
        codec.encode("not-a-pair")


async def test_window_api_names(autojump_clock: Any) -> None:
    async with TableManager("names", broker=_url()) as manager:
        table = manager.Table("t", default=int)
        wrapper = table.using_window(trio_tables.TumblingWindow(1))
        assert isinstance(wrapper, trio_tables.WindowWrapper)
        assert trio_tables.Table.WindowWrapper is trio_tables.WindowWrapper
        for name in [
            "table", "name", "key_index", "key_index_table", "get_relative_timestamp",
            "get_timestamp", "relative_to", "relative_to_field", "relative_to_now",
            "relative_to_stream", "items", "keys", "values", "clone", "as_ansitable",
            "on_recover", "on_set_key", "on_del_key",
        ]:
            assert hasattr(wrapper, name), name
        with pytest.raises(RuntimeError, match="windowed already"):
            table.tumbling(1)
        with pytest.raises(TypeError, match="global"):
            manager.GlobalTable("g").tumbling(1)
        await trio.lowlevel.checkpoint()


async def test_sliding_windows_and_in_place_operators(autojump_clock: Any) -> None:
    url = _url()
    await _setup(url, [("k", 0, ts) for ts in (10_000, 12_000, 13_000)])
    async with TableManager("ops", broker=url, commit_interval=0.5) as manager:
        around = manager.Table("around", default=int, key_type=str).sliding(2, 1)
        product = manager.Table("product", default=lambda: 1, key_type=str).tumbling(60)
        tags = manager.Table("tags", default=list, key_type=str).hopping(20, 10)
        async with manager.stream(TOPIC, key_type=str) as stream:

            def body(event: Any) -> None:
                around[event.key] += 1
                product[event.key] *= 3
                product[event.key] -= 1
                tags[event.key] += [event.timestamp // 1000]

            await _drive(manager, stream, 3, body)
            # sliding: one window [t - 2 s, t + 1 s] per event timestamp t
            assert around.windows() == {
                ("k", (8_000, 11_001)): 1,
                ("k", (10_000, 13_001)): 1,
                ("k", (11_000, 14_001)): 1,
            }
            assert product.windows() == {("k", (0, 60_000)): ((3 * 1 - 1) * 3 - 1) * 3 - 1}
            assert tags.windows() == {
                ("k", (0, 20_000)): [10, 12, 13],
                ("k", (10_000, 30_000)): [10, 12, 13],
            }


class WindowWorker:
    """A windowed-count worker that runs until told to stop, recording close calls."""

    def __init__(self, url: str, calls: list[Any]) -> None:
        self.url = url
        self.calls = calls
        self.processed = 0
        self.progress = trio.Event()
        self.stop = trio.Event()
        self.manager: TableManager | None = None
        self.table: Any = None

    async def run(self) -> None:
        async with TableManager("rb", broker=self.url, commit_interval=0.5) as manager:
            self.manager = manager
            hits = manager.Table(
                "hits", default=int, key_type=str,
                on_window_close=lambda k, v: self.calls.append((k, v)),
            ).tumbling(SIZE / 1000, expires=EXPIRES / 1000)
            self.table = hits.table
            async with manager.stream(TOPIC, key_type=str) as events, trio.open_nursery() as n:

                async def process() -> None:
                    async for event in events:
                        hits[event.key] += 1
                        self.processed += 1
                        self.progress.set()
                        self.progress = trio.Event()

                n.start_soon(process)
                await self.stop.wait()
                n.cancel_scope.cancel()


async def _until(condition: Callable[[], bool], *workers: WindowWorker) -> None:
    while not condition():
        async with trio.open_nursery() as nursery:

            async def changed(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            async def tick() -> None:  # also re-check after rebalances
                await trio.sleep(1)
                nursery.cancel_scope.cancel()

            for worker in workers:
                nursery.start_soon(changed, worker.progress)
            nursery.start_soon(tick)


async def test_windows_close_once_across_rebalances(autojump_clock: Any) -> None:
    url = _url()
    events = [(f"p{p}-{i % 3}", p, i * 700 * (p + 1)) for i in range(120) for p in range(2)]
    first, rest = events[: len(events) // 2], events[len(events) // 2 :]
    await _setup(url, first)
    calls: list[Any] = []
    a, b = WindowWorker(url, calls), WindowWorker(url, calls)
    with trio.fail_after(600):  # virtual seconds: a stuck rebalance fails, not hangs
        await _rebalance_twice(a, b, url, len(first), rest, len(events))
    # Each took a partition over from the other and restored its open windows.
    assert b.table.replayed > 0
    assert a.table.replayed > 0
    expected_closed, _ = _split_expected(events)
    assert len(calls) == len(expected_closed)
    assert dict(calls) == expected_closed


async def _rebalance_twice(
    a: WindowWorker, b: WindowWorker, url: str, n_first: int, rest: list[Ev], total: int
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await _until(lambda: a.processed >= n_first, a)
        nursery.start_soon(b.run)  # takes a partition over: restores its open windows
        await _until(lambda: b.manager is not None and bool(b.manager.active_partitions), a, b)
        await _setup(url, rest)
        await _until(lambda: a.processed + b.processed >= total, a, b)
        b.stop.set()  # hands its partition back to a
        await _until(lambda: a.manager is not None and len(a.manager.active_partitions) == 2, a)
        a.stop.set()


def test_cli_shows_windowed_keys_as_key_and_start() -> None:
    from trio_tables._cli._rebuild import AnyCodec

    windowed = WindowedKeyCodec(JsonCodec())
    assert AnyCodec().decode(windowed.encode(("k", 1_700_000_000_000))) == ("k", 1_700_000_000_000)
    assert AnyCodec().decode(windowed.encode((["a", 1], 0))) == (("a", 1), 0)
    assert AnyCodec().decode(b"12345678901") == 12345678901  # plain JSON stays plain


async def test_final_results_under_exactly_once_are_in_the_transaction(
    autojump_clock: Any,
) -> None:
    url, events = _url(), _events()
    await _setup(url, events)
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("finals", PARTITIONS)
    closed = Closed()
    async with TableManager(
        "eos", broker=url, commit_interval=0.5, processing_guarantee="exactly_once"
    ) as manager:
        hits = manager.Table("hits", default=int, key_type=str, on_window_close=closed).tumbling(
            SIZE / 1000, expires=EXPIRES / 1000, final_results_topic="finals"
        )
        async with manager.stream(TOPIC, key_type=str) as stream:
            await _drive(manager, stream, len(events), lambda e: hits[e.key].__iadd__(1))
    broker = get_memory_broker(url.removeprefix("memory://"))
    finals = [
        r for p in range(PARTITIONS) for r in broker.log(TP("finals", p)).records
        if r.value is not None
    ]
    expected_closed, _ = _split_expected(events)
    assert dict(closed.calls) == expected_closed
    assert len(finals) == len(expected_closed)
    # Written transactionally: every record is part of a committed transaction.
    assert all(r.visible("read_committed") and r.transaction is not None for r in finals)
