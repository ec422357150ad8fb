"""asyncio code in tables and streams, through trio-asyncio (on the memory transport)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import trio
import trio.lowlevel

import trio_tables
from trio_tables import Record, TableManager
from trio_tables.errors import AsyncioCodeNotMarked
from trio_tables.testing import open_test_manager, produce, wait_for_table

WORDS = ["a", "b", "a", "c", "a", "b"]


async def _count_words(url: str, app: str, **table_options: Any) -> TableManager:
    """Count WORDS into table "counts" of ``app`` and stop (the changelog holds them)."""
    await produce(url, "words", [(w, 1) for w in WORDS], partitions=2)
    async with open_test_manager(url, app) as manager:
        counts = manager.Table("counts", default=int, key_type=str, **table_options)
        async with manager.stream("words", key_type=str) as events:
            seen = 0
            async for event in events:
                counts[event.key] += 1
                seen += 1
                if seen == len(WORDS):
                    break
    return manager


async def test_asyncio_callbacks_run_on_a_trio_asyncio_loop(memory_url: str) -> None:
    await _count_words(memory_url, "app")
    calls: list[tuple[str, Any]] = []

    @trio_tables.asyncio_callback
    async def on_changelog_event(record: Record) -> None:
        await asyncio.sleep(0)  # asyncio-only: fails outside an asyncio loop
        calls.append(("changelog", type(asyncio.get_running_loop()).__name__))

    @trio_tables.asyncio_callback
    async def on_recover() -> None:
        await asyncio.sleep(0.01)
        calls.append(("recovered", asyncio.current_task() is not None))

    async with open_test_manager(memory_url, "app") as manager:
        counts = manager.Table(
            "counts",
            default=int,
            key_type=str,
            on_changelog_event=on_changelog_event,
            on_recover=on_recover,
        )
        async with manager.stream("words", key_type=str):
            await manager.wait_until_recovered()
            assert counts.as_dict() == Counter(WORDS)
            assert manager._asyncio.is_open
    changelog = [c for c in calls if c[0] == "changelog"]
    assert changelog
    assert set(changelog) == {("changelog", "TrioEventLoop")}
    assert ("recovered", True) in calls
    assert manager._asyncio.opened == 1  # one loop for every callback


async def test_trio_and_plain_callbacks_never_open_a_loop(memory_url: str) -> None:
    await _count_words(memory_url, "app")
    seen: list[str] = []

    async def trio_callback(record: Record) -> None:
        await trio.lowlevel.checkpoint()
        seen.append("trio")

    def plain_callback() -> None:
        seen.append("plain")

    async with open_test_manager(memory_url, "app") as manager:
        manager.Table("counts", on_changelog_event=trio_callback, on_recover=plain_callback)
        async with manager.stream("words", key_type=str):
            await manager.wait_until_recovered()
    assert "trio" in seen
    assert "plain" in seen
    assert manager._asyncio.opened == 0


async def test_an_unmarked_asyncio_callback_fails_with_what_to_do(memory_url: str) -> None:
    await _count_words(memory_url, "app")

    async def on_recover() -> None:  # asyncio code, not marked
        await asyncio.sleep(0)

    async def run() -> None:
        async with open_test_manager(memory_url, "app") as manager:
            manager.Table("counts", on_recover=on_recover)
            async with manager.stream("words", key_type=str):
                await manager.wait_until_recovered()
                await trio.sleep_forever()  # the failing callback cancels this

    with pytest.raises(AsyncioCodeNotMarked, match="asyncio_callback"):
        await run()


async def test_stream_processing_in_asyncio_sees_the_current_event(memory_url: str) -> None:
    await produce(memory_url, "words", [(w, 1) for w in WORDS], partitions=2)

    async def enrich(counts: trio_tables.Table, key: str) -> int:
        # asyncio code (a client library, say) that also writes the table: the write goes
        # to the current event's partition, as it would from Trio code.
        await asyncio.sleep(0)
        counts[key] += 10
        value: int = counts[key]
        return value

    async with open_test_manager(memory_url) as manager:
        counts = manager.Table("counts", default=int, key_type=str)
        async with manager.stream("words", key_type=str) as events:
            results = []
            async for event in events:
                results.append(await manager.run_asyncio(enrich, counts, event.key))
                if len(results) == len(WORDS):
                    break
            await wait_for_table(counts, {k: 10 * n for k, n in Counter(WORDS).items()})
    assert sorted(results) == [10, 10, 10, 20, 20, 30]


async def test_run_asyncio_is_cancelled_with_its_caller(memory_url: str) -> None:
    outcome: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("asyncio task cancelled")
            raise

    async with open_test_manager(memory_url) as manager:
        with trio.move_on_after(0.1) as scope:
            await manager.run_asyncio(slow)
        assert scope.cancelled_caught
        assert outcome == ["asyncio task cancelled"]
        with pytest.raises(ZeroDivisionError):  # asyncio exceptions reach the caller
            await manager.run_asyncio(_divide_by_zero)


async def _divide_by_zero() -> None:
    await asyncio.sleep(0)
    _ = 1 / 0


async def test_marked_methods_and_calls_outside_a_manager() -> None:
    class Notifier:
        def __init__(self) -> None:
            self.sent: list[str] = []

        @trio_tables.asyncio_callback
        async def notify(self, text: str) -> str:
            await asyncio.sleep(0)
            self.sent.append(text)
            return text.upper()

    notifier = Notifier()
    bound = notifier.notify
    assert trio_tables.asyncio_callback(bound) is bound  # marking twice changes nothing
    # No manager in this context: the dispatcher opens a loop for the call.
    from trio_tables._table._callbacks import call_callback

    assert await call_callback(notifier.notify, "hi") == "HI"
    assert notifier.sent == ["hi"]


async def test_on_recover_sees_the_recovered_table_before_new_events(memory_url: str) -> None:
    await _count_words(memory_url, "app")
    await produce(memory_url, "words", [(w, 1) for w in WORDS])  # waiting for the restart
    snapshots: list[dict[str, int]] = []

    @trio_tables.asyncio_callback
    async def on_recover() -> None:
        await asyncio.sleep(0.05)  # events would be processed meanwhile if they could
        snapshots.append(counts.as_dict())

    async with open_test_manager(memory_url, "app") as manager:
        counts = manager.Table("counts", default=int, key_type=str, on_recover=on_recover)
        async with manager.stream("words", key_type=str) as events:
            seen = 0
            async for event in events:
                counts[event.key] += 1
                seen += 1
                if seen == len(WORDS):
                    break
            assert counts.as_dict() == Counter(WORDS * 2)
    assert snapshots == [Counter(WORDS)]


async def test_window_close_callbacks_may_be_asyncio(memory_url: str) -> None:
    for key, timestamp in [("a", 1_000), ("a", 2_000), ("b", 3_000), ("a", 100_000)]:
        await produce(memory_url, "clicks", [(key, 1)], partitions=1, timestamp=timestamp)
    closed: list[tuple[Any, int]] = []

    @trio_tables.asyncio_callback
    async def on_window_close(key: Any, value: int) -> None:
        await asyncio.sleep(0)
        closed.append((key, value))

    async with open_test_manager(memory_url) as manager:
        hits = manager.Table(
            "hits", default=int, key_type=str, value_type=int, on_window_close=on_window_close
        ).tumbling(10.0, expires=20.0)
        async with manager.stream("clicks", key_type=str) as events:
            seen = 0
            async for event in events:
                hits[event.key] += 1
                seen += 1
                if seen == 4:
                    break
            events.ack()
            await manager.commit()  # closes the windows the stream time left behind
    assert sorted(closed) == [(("a", (0, 10_000)), 2), (("b", (0, 10_000)), 1)]
