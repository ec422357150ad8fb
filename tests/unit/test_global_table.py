"""GlobalTable on the memory transport: every worker holds everything and converges."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import trio

from trio_tables import GlobalTable, TableManager


def _url() -> str:
    return f"memory://global-{uuid.uuid4().hex[:12]}"


async def _until_equal(table: GlobalTable, expected: dict[str, Any]) -> None:
    with trio.fail_after(600):  # mock clock: a hang guard
        while table.as_dict() != expected:
            await table.wait_progress()


async def test_writes_on_any_worker_reach_every_worker(autojump_clock: Any) -> None:
    url = _url()
    async with TableManager("g", broker=url, commit_interval=0.2) as a, \
            TableManager("g", broker=url, commit_interval=0.2) as b:
        ta = a.GlobalTable("config", partitions=3)
        tb = b.GlobalTable("config", partitions=3)
        async with ta, tb:  # caught up: nothing in the changelog yet
            assert ta.as_dict() == tb.as_dict() == {}
            ta["from-a"] = 1  # no stream, no explicit partition needed
            tb["from-b"] = [2, 3]
            assert ta["from-a"] == 1  # read-your-writes at once
            await _until_equal(ta, {"from-a": 1, "from-b": [2, 3]})
            await _until_equal(tb, {"from-a": 1, "from-b": [2, 3]})
            tb["from-a"] = None  # deletes travel too
            await _until_equal(ta, {"from-b": [2, 3]})

        # A worker that starts later has everything as soon as it entered the table.
        # (partitions= not given: taken from the existing changelog topic)
        async with TableManager("g", broker=url) as c, c.GlobalTable("config") as tc:
            assert tc.partitions == 3
            assert tc.as_dict() == {"from-b": [2, 3]}


async def test_restart_with_sqlite_reads_only_the_tail(tmp_path: Path) -> None:
    url = _url()
    store = f"sqlite://{tmp_path}"
    async with (
        TableManager("g", broker=url, store=store, commit_interval=0.05) as a,
        a.GlobalTable("config", partitions=2) as table,
    ):
        for i in range(50):
            table[f"k{i}"] = i
        await _until_equal(table, {f"k{i}": i for i in range(50)})
        while table.standby_applied < 50:  # the tailer read all back and saved it
            await table.wait_progress()
    async with (
        TableManager("g", broker=url, store=store) as b,
        b.GlobalTable("config", partitions=2) as again,
    ):
        assert again.as_dict() == {f"k{i}": i for i in range(50)}
        assert sorted(again.standby_progress) == [0, 1]  # tailing every partition
        read_on_restart = again.standby_applied
    assert read_on_restart == 0
