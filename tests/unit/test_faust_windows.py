"""Issue 13 point 7: WindowWrapper and WindowSet behave as Faust documents them
(faust/tables/wrappers.py), on the memory transport. Window ranges here are integer
milliseconds (Faust: float seconds), see docs/faust-porting.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import OutgoingRecord
from trio_tables.errors import UnsupportedOperation

SIZE = 10  # seconds


def _url() -> str:
    return f"memory://fw-{uuid.uuid4().hex[:12]}"


async def _events(url: str, events: list[tuple[str, int]]) -> None:
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("clicks", 1)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [
                    OutgoingRecord("clicks", b"1", key=k.encode(), partition=0, timestamp=ts)
                    for k, ts in events
                ]
            )
            await producer.flush()


class Observed(trio_tables.Table):
    """Records Faust's per-key hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_calls: list[tuple[Any, Any]] = []
        self.del_calls: list[Any] = []

    def on_key_set(self, key: Any, value: Any) -> None:
        self.set_calls.append((key, value))

    def on_key_del(self, key: Any) -> None:
        self.del_calls.append(key)


async def test_window_wrapper_and_window_set_as_in_faust() -> None:
    url = _url()
    await _events(url, [("k", 1_000), ("j", 2_000), ("k", 12_000)])
    async with TableManager("fw", broker=url) as manager:
        table = manager.add(Observed(manager, "hits", default=int, key_type=str))
        hits = table.tumbling(SIZE)
        async with manager.stream("clicks", key_type=str) as events:
            seen = []
            async for event in events:
                hits[event.key] += 1
                seen.append(event)
                if len(seen) == 3:
                    break
            first, _, last = seen
            with hits.partition(0), hits.at(last.timestamp):
                # on_key_set for windowed writes, with Faust's (key, (start, end)) key.
                assert table.set_calls == [
                    (("k", (0, 10_000)), 1),
                    (("j", (0, 10_000)), 1),
                    (("k", (10_000, 20_000)), 1),
                ]
                # `key in wrapper`: the current window (10-20 s) holds k, not j.
                assert "k" in hits
                assert "j" not in hits
                # window_set[event] and window_set[(start, end)] (ms).
                assert hits["k"][first].value() == 1
                assert hits["k"][(0, 10_000)] == 1
                assert hits["j"][(10_000, 20_000)] == 0  # the default
                with pytest.raises(KeyError, match="not a window"):
                    hits["k"][(0, 5_000)]
                hits["k"][(0, 10_000)] = 7
                assert hits["k"][(0, 10_000)] == 7
                del hits["k"][(0, 10_000)]
                assert table.del_calls == [("k", (0, 10_000))]
                assert hits["k"][(0, 10_000)] == 0
                hits["k"][(0, 10_000)] = 1
                with pytest.raises(UnsupportedOperation):
                    hits["k"][first] = 3
                # The views: iterate (relativity), now(), current(), delta().
                assert dict(hits.items()) == {"k": 1}
                assert dict(hits.items().delta(SIZE)) == {"k": 1, "j": 1}
                assert dict(hits.items().current(first)) == {"k": 1, "j": 1}
                assert list(hits.values().delta(SIZE)) == [1, 1]
                assert sorted(hits.keys()) == ["j", "k"]  # keys with any window
                assert list(hits.keys().current()) == ["k"]
                assert dict(hits.items().now()) == {}  # wall clock: 2020s, no window
            assert "Windows of hits" in hits.as_ansitable(title="Windows of {table.name}")


async def test_relativity_accepts_seconds_datetimes_and_clone_keeps_it() -> None:
    url = _url()
    await _events(url, [("k", 1_000), ("k", 25_000)])
    async with TableManager("fr", broker=url) as manager:
        hits = manager.Table("hits", default=int, key_type=str).tumbling(SIZE)
        fixed = hits.relative_to(12.5)  # seconds
        moment = datetime(2021, 1, 1, tzinfo=UTC)
        dated = hits.relative_to(moment)
        assert fixed.get_timestamp() == 12_500
        assert dated.get_timestamp() == int(moment.timestamp() * 1000)
        assert hits.clone(12.5).get_timestamp() == 12_500  # positional, as in Faust
        assert fixed.clone(None).get_timestamp() == 12_500  # None keeps the relativity
        assert fixed.relative_to_stream().get_relative_timestamp is None
        with pytest.raises(TypeError, match="relative_to"):
            hits.relative_to("created")
        async with manager.stream("clicks", key_type=str) as events:
            count = 0
            async for event in events:
                fixed[event.key] += 1  # both events land in the 10-20 s window
                count += 1
                if count == 2:
                    # value() follows the relativity (fixed 12.5 s); current() is the
                    # event's timestamp (25 s) as in Faust.
                    assert fixed["k"].value() == 2
                    assert fixed["k"].current() == 0
                    assert fixed["k"].current(event) == 0
                    break
        await trio.lowlevel.checkpoint()
