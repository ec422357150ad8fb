"""trio_tables.testing: the pytest plugin as a user's project sees it, and the helpers."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tables import TableManager
from trio_tables.testing import (
    create_topic,
    open_test_manager,
    produce,
    wait_for_table,
    wait_until_committed,
)

DOCS = Path(__file__).parents[2] / "docs" / "testing.md"


def _documented_example() -> str:
    text = DOCS.read_text()
    section = text.split("## Example test", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/testing.md lost its example test"
    return match.group(1)


def test_the_documented_example_passes_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    # A user's project: the plugin comes from the installed package's entry point.
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_wordcount=_documented_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


async def test_memory_manager_fixture_is_running(
    memory_manager: TableManager, memory_url: str
) -> None:
    assert memory_manager.broker_url == memory_url
    await create_topic(memory_url, "src", 1)
    table = memory_manager.Table("t")
    async with memory_manager.stream("src"):
        await memory_manager.wait_until_recovered()
        with table.partition(0):
            table["k"] = 1
        assert table["k"] == 1


async def test_produce_creates_the_topic_and_keys_by_partitioner(memory_url: str) -> None:
    sent = await produce(memory_url, "in", {"a": {"n": 1}, "b": b"raw"}, partitions=3)
    again = await produce(memory_url, "in", [("a", 2)], partitions=None)
    assert len(sent) == 2
    assert again[0].partition == sent[0].partition  # same key, same partition
    assert again[0].offset > sent[0].offset
    with pytest.raises(Exception, match="does not exist"):
        await produce(memory_url, "missing", [("a", 1)], partitions=None)


async def test_wait_until_committed_sees_every_event_processed(memory_url: str) -> None:
    await create_topic(memory_url, "words", 2)
    await produce(memory_url, "words", [(w, 1) for w in "abcabca"])
    async with open_test_manager(memory_url, "wc") as manager:
        counts = manager.Table("counts", default=int, key_type=str)
        async with manager.stream("words", key_type=str) as events, trio.open_nursery() as nursery:

            async def count() -> None:
                async for event in events:
                    counts[event.key] += 1

            nursery.start_soon(count)
            ends = await wait_until_committed(memory_url, manager, ["words"], timeout=10)
            assert sum(ends.values()) == 7
            assert counts.as_dict() == Counter("abcabca")
            nursery.cancel_scope.cancel()


async def test_wait_for_table_says_which_keys_differ(
    memory_url: str, autojump_clock: Any
) -> None:
    await create_topic(memory_url, "src", 1)
    async with open_test_manager(memory_url) as manager:
        table = manager.Table("t")
        async with manager.stream("src"):
            await manager.wait_until_recovered()
            with table.partition(0):
                table["a"] = 1
                table["b"] = 2
            with pytest.raises(AssertionError) as failure:
                await wait_for_table(table, {"a": 1, "b": 3, "c": 4}, timeout=1)
    message = str(failure.value)
    assert "'b': expected 3, got 2" in message
    assert "'c': expected 4, got '<missing>'" in message
    assert "'a'" not in message
