"""Stopping on SIGINT/SIGTERM (``handle_signals=True``) and ``request_stop()`` on the
memory transport. The signals are real: they are raised in this process, whose handler
the manager replaced (each test checks that first, so a missing handler fails the test
instead of killing the test process)."""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import Sequence

import pytest
import trio
import trio.testing

import trio_tables
from trio_tables import TP, TableManager
from trio_tables._signals import HUB, describe_committed, describe_uncommitted
from trio_tables._transport._base import OutgoingRecord

PARTITIONS = 2


def _url() -> str:
    return f"memory://signals-{uuid.uuid4().hex[:12]}"


async def _produce(url: str, topic: str, keys: Sequence[str]) -> None:
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic(topic, PARTITIONS)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [OutgoingRecord(topic, b'{"n":1}', key=k.encode()) for k in keys]
            )
            await producer.flush()


async def _group_offsets(url: str, app: str) -> dict[TP, int]:
    async with trio_tables.open_transport(url) as transport:
        return await transport.group_offsets(app)


def _raise(signum: signal.Signals) -> None:
    """Raise ``signum`` in this process, which must be handled by the managers' hub."""
    assert signal.getsignal(signum) == HUB._handler, "the manager did not take the signal"
    signal.raise_signal(signum)


async def test_sigterm_ends_the_stream_after_its_event_commits_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, app, topic = _url(), "wc", "words"
    await _produce(url, topic, [f"k{i % 7}" for i in range(40)])
    before = signal.getsignal(signal.SIGTERM)
    caplog.set_level(logging.INFO, logger="trio_tables.manager")
    processed: dict[TP, int] = {}
    async with TableManager(
        app, broker=url, commit_interval=3600, handle_signals=True
    ) as manager:
        counts = manager.Table("counts", default=int, key_type=str, value_type=int)
        async with manager.stream(topic, key_type=str) as events:
            async for event in events:
                if sum(counts.as_dict().values()) == 10:
                    _raise(signal.SIGTERM)
                    # The handler runs in the Trio thread: let it. This event goes on.
                    await trio.testing.wait_all_tasks_blocked()
                    assert manager._stopper.requested
                counts[event.key] += 1
                processed[event.tp] = event.offset + 1
            ended_after = sum(counts.as_dict().values())
        assert signal.getsignal(signal.SIGTERM) == HUB._handler
    assert signal.getsignal(signal.SIGTERM) == before
    assert ended_after == 11, "the loop went on after the event in process"
    assert await _group_offsets(url, app) == processed
    stopped = [r.getMessage() for r in caplog.records if "stopped (SIGTERM)" in r.getMessage()]
    assert stopped == [f"{app}: stopped (SIGTERM): {describe_committed(processed)}; left the group"]


async def test_a_second_signal_stops_at_once_and_says_what_is_uncommitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, app, topic = _url(), "wc2", "words"
    await _produce(url, topic, ["a", "b", "c", "d", "e", "f"])
    stuck = trio.Event()  # the block never ends by itself

    async def worker() -> None:
        async with TableManager(
            app, broker=url, commit_interval=3600, handle_signals=True
        ) as manager:
            counts = manager.Table("counts", default=int, key_type=str, value_type=int)
            async with manager.stream(topic, key_type=str) as events:
                async for event in events:
                    counts[event.key] += 1
                    if sum(counts.as_dict().values()) == 6:
                        break
                _raise(signal.SIGINT)
                await trio.testing.wait_all_tasks_blocked()
                assert manager._stopper.requested
                assert not manager._stopper.forced
                _raise(signal.SIGINT)
                await stuck.wait()  # cancelled by the second signal

    with pytest.raises(SystemExit) as exited:
        await worker()
    assert exited.value.code == 128 + signal.SIGINT == 130
    assert signal.getsignal(signal.SIGINT) != HUB._handler
    assert await _group_offsets(url, app) == {}, "a forced stop committed"
    [forced] = [r for r in caplog.records if "stopping at once" in r.getMessage()]
    assert forced.levelno == logging.WARNING
    assert "SIGINT again" in forced.getMessage()
    assert "left uncommitted: words[0]" in forced.getMessage()
    assert "nothing committed yet" in forced.getMessage()


async def test_without_handle_signals_the_signal_handlers_stay_trios() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    async with TableManager("plain", broker=_url()):
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


async def test_one_signal_stops_every_manager_of_the_process_in_any_order() -> None:
    url, topic = _url(), "words"
    await _produce(url, topic, ["a", "b"])
    before = signal.getsignal(signal.SIGTERM)
    first_out = trio.Event()
    ended: list[str] = []

    async def worker(app: str, wait_for: trio.Event | None) -> None:
        async with TableManager(app, broker=url, handle_signals=True) as manager:
            async with manager.stream(topic) as events:
                async for _ in events:
                    pass
            if wait_for is not None:
                await wait_for.wait()  # leave after the other one, which entered later
        ended.append(app)
        if wait_for is None:
            first_out.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, "one", first_out)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(worker, "two", None)
        await trio.testing.wait_all_tasks_blocked()
        _raise(signal.SIGTERM)
    assert ended == ["two", "one"]
    assert signal.getsignal(signal.SIGTERM) == before


async def test_request_stop_ends_streams_opened_later_without_joining() -> None:
    url, topic = _url(), "words"
    await _produce(url, topic, ["a"])
    async with TableManager("late", broker=url) as manager:
        manager.request_stop()
        async with manager.stream(topic) as events:
            assert [event async for event in events] == []
        assert manager.assignment == frozenset()


async def test_a_stop_that_does_not_finish_in_shutdown_timeout_is_forced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stuck = trio.Event()

    async def worker() -> None:
        async with TableManager("slow", broker=_url(), shutdown_timeout=5) as manager:
            manager.request_stop()
            await stuck.wait()  # a task that ignores the stop

    with pytest.raises(trio.TooSlowError, match="shutdown_timeout=5s"):
        await worker()


def test_uncommitted_and_committed_descriptions() -> None:
    a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)
    assert describe_committed({}) == "nothing to commit (no partition was processed)"
    assert describe_committed({b: 5, a: 3}) == "committed offsets t[0]=3, t[1]=5"
    text = describe_uncommitted({a: 10, b: 4, c: 7}, {a: 6, b: 4})
    assert text == (
        "left uncommitted: t[0] offsets 6-9 (4 events), t[2] up to offset 6 (nothing "
        "committed yet) (the next owner of these partitions processes them again)"
    )
    assert describe_uncommitted({a: 4}, {a: 4}) == "nothing was left uncommitted"
