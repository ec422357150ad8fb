"""What the per-event fast paths must keep: the current event (set once per event, cleared
before a stream waits or ends), per-key hooks of subclasses, checks and copies of values
that are not JSON scalars, and the source offsets of coalesced changelog records."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_tables import Table, TableManager, current_event
from trio_tables._changelog import SOURCE_HEADER, ChangelogBuffer, SourceOffset, to_records
from trio_tables._codecs import JsonCodec, RawCodec, check_encodable, trivially_encodable
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


class Observed(Table):
    """Overrides the per-key hooks (Faust style): they must still be called."""

    calls: list[tuple[Any, ...]]

    def on_key_get(self, key: Any) -> None:
        self.calls.append(("get", key))

    def on_key_set(self, key: Any, value: Any) -> None:
        self.calls.append(("set", key, value))

    def on_key_del(self, key: Any) -> None:
        self.calls.append(("del", key))


async def test_hooks_of_a_subclass_are_called_and_values_are_still_copied(
    memory_url: str,
) -> None:
    await create_topic(memory_url, "src", 1)
    async with open_test_manager(memory_url) as manager:
        observed = manager.add(Observed(manager, "observed", default=int, key_type=str))
        assert isinstance(observed, Observed)
        observed.calls = []
        plain = manager.Table("plain", key_type=str)
        assert not plain._key_hooks
        assert observed._key_hooks
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with observed.partition(0), plain.partition(0):
                observed["k"] += 1
                del observed["k"]
                assert observed.calls == [("get", "k"), ("set", "k", 1), ("del", "k")]
                value = {"n": [1]}
                plain["d"] = value
                value["n"].append(2)  # the table holds a copy
                got = plain["d"]
                got["n"].append(3)  # and hands out copies
                assert plain["d"] == {"n": [1]}
                with pytest.raises(TypeError):
                    plain["bad"] = object()
                with pytest.raises(TypeError):
                    plain[("not", "a", "str")] = 1


def test_trivially_encodable_gives_the_verdict_of_check_encodable() -> None:
    samples: list[Any] = ["s", 1, 1.5, True, b"b", None, [1], {"a": 1}]
    for codec in (JsonCodec(), JsonCodec(str), JsonCodec(int), JsonCodec(float), RawCodec()):
        for value in samples:
            if type(value) in trivially_encodable(codec):
                check_encodable(codec, value)  # accepted without encoding


def test_coalesced_writes_keep_the_last_value_and_cause_in_last_write_order() -> None:
    buffer = ChangelogBuffer(coalesce=True)
    buffer.add("a", (1, ("src", 0, 5), None))
    buffer.add("b", (1, None, 7))
    buffer.add("a", (2, ("src", 0, 9), None))
    records = to_records("cl", 3, buffer.drain(), JsonCodec(str), JsonCodec(int))
    assert [(r.key, r.value, r.partition) for r in records] == [
        (b'"b"', b"1", 3),
        (b'"a"', b"2", 3),
    ]
    assert records[0].headers == (("trio-tables-stream-time", b"7"),)
    assert records[1].headers == ((SOURCE_HEADER, b"src:0:9"),)
    assert len(buffer) == 0


async def test_send_changelog_takes_a_source_offset(memory_url: str) -> None:
    async with TableManager("app", broker=memory_url) as manager:
        table = manager.Table("t", key_type=str, partitions=1)
        table.send_changelog(0, "k", 1, source=SourceOffset("src", 0, 4))
        records, _ = table.take_changes()
        assert [(r.key, r.value, r.headers) for r in records] == [
            (b'"k"', b"1", ((SOURCE_HEADER, b"src:0:4"),))
        ]
