"""What the per-event fast paths must keep: the current event (set once per event, cleared
before a stream waits or ends)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_tables import current_event
from trio_tables.errors import RecordDecodeError, TableWriteOutsideStream
from trio_tables.testing import create_topic, open_test_manager, produce


async def test_the_current_event_is_set_while_processing_and_cleared_when_waiting(
    memory_url: str,
) -> None:
    await create_topic(memory_url, "words", 2)
    await produce(memory_url, "words", [(w, 1) for w in "abcab"])
    async with open_test_manager(memory_url) as manager:
        counts = manager.Table("counts", default=int, key_type=str)
        seen: list[tuple[str, int]] = []
        after: list[Any] = []
        async with manager.stream("words", key_type=str) as events:
            async with trio.open_nursery() as nursery:

                async def count() -> None:
                    try:
                        async for event in events:
                            assert current_event.get() is event
                            counts[event.key] += 1
                            seen.append((event.key, event.offset))
                            if len(seen) == 5:
                                # The next __anext__ waits (nothing left): cancelled there.
                                nursery.cancel_scope.deadline = trio.current_time() + 0.5
                    finally:
                        after.append(current_event.get())

                nursery.start_soon(count)
            # The task was cancelled while waiting for an event: it had none.
            assert len(seen) == 5
            assert after == [None]
            assert counts.as_dict() == {"a": 2, "b": 2, "c": 1}


async def test_no_current_event_after_the_stream_ends_or_fails(memory_url: str) -> None:
    await create_topic(memory_url, "src", 1)
    await produce(memory_url, "src", [("a", 1), ("b", b"not json"), ("c", 3)], partitions=1)
    async with open_test_manager(memory_url) as manager:
        table = manager.Table("t", default=int, key_type=str)
        after: list[Any] = []

        async def process(events: Any, close_after: int = 0) -> None:
            try:
                seen = 0
                async for event in events:
                    table[event.key] += 1
                    seen += 1
                    if seen == close_after:
                        events.close()  # the next __anext__ ends the iteration
            finally:
                after.append(current_event.get())

        with pytest.raises(RecordDecodeError):
            async with manager.stream("src", key_type=str) as events:
                await process(events)
        assert after == [None]
    async with open_test_manager(memory_url) as manager:
        table = manager.Table("t", default=int, key_type=str)
        async with manager.stream("src", key_type=str, on_decode_error="skip") as events:
            await process(events, close_after=2)
            assert after == [None, None]
            assert table.as_dict() == {"a": 1, "c": 1}
            with pytest.raises(TableWriteOutsideStream):
                table["late"] = 1
