"""SetTable: set operations, a compactable changelog, restarts on both stores."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import SetTable, TableManager
from trio_tables._transport._base import TP, OutgoingRecord
from trio_tables._transport.memory._transport import get_memory_broker


async def _run(
    url: str, store: str, events: list[tuple[str, str, str]], *, coalesce: bool = True
) -> dict[str, set[str]]:
    """Apply (user, op, tag) events through a stream; the table's content at the end."""
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("ops", 2, exist_ok=True)
        async with transport.open_producer() as producer:
            await producer.send_batch([
                OutgoingRecord("ops", f'["{op}", "{tag}"]'.encode(), key=user.encode())
                for user, op, tag in events
            ])
    async with TableManager(
        "sets", broker=url, store=store, commit_interval=0.1, coalesce_changelog=coalesce
    ) as manager:
        tags: SetTable = manager.SetTable("tags", key_type=str)
        async with manager.stream("ops", key_type=str) as stream:
            seen = 0
            async for event in stream:
                op, tag = event.value
                members = tags[event.key]
                if op == "add":
                    members.add(tag)
                elif op == "discard":
                    members.discard(tag)
                elif op == "update":
                    members.update(tag.split(","))
                elif op == "difference_update":
                    members.difference_update(tag.split(","))
                elif op == "intersection_update":
                    members.intersection_update(tag.split(","))
                elif op == "symmetric_difference_update":
                    members.symmetric_difference_update(tag.split(","))
                elif op == "clear":
                    members.clear()
                elif op == "ior":
                    tags[event.key] |= set(tag.split(","))
                seen += 1
                if seen == len(events):
                    break
            return tags.as_dict()


def _oracle(events: list[tuple[str, str, str]]) -> dict[str, set[str]]:
    sets: dict[str, set[str]] = {}
    for user, op, tag in events:
        current = sets.setdefault(user, set())
        if op == "add":
            current.add(tag)
        elif op == "discard":
            current.discard(tag)
        elif op in ("update", "ior"):
            current.update(tag.split(","))
        elif op == "difference_update":
            current.difference_update(tag.split(","))
        elif op == "intersection_update":
            current.intersection_update(tag.split(","))
        elif op == "symmetric_difference_update":
            current.symmetric_difference_update(tag.split(","))
        elif op == "clear":
            current.clear()
    return {user: s for user, s in sets.items() if s}


EVENTS = [
    ("ann", "add", "x"), ("bob", "add", "y"), ("ann", "update", "p,q,r"),
    ("ann", "discard", "q"), ("bob", "symmetric_difference_update", "y,z"),
    ("cid", "ior", "1,2,3"), ("cid", "intersection_update", "2,3,4"),
    ("ann", "difference_update", "x,r"), ("dan", "add", "solo"), ("dan", "clear", ""),
]


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_set_operations_survive_a_restart(store_kind: str, tmp_path: Path) -> None:
    url = f"memory://sets-{uuid.uuid4().hex[:12]}"
    store = "memory://" if store_kind == "memory" else f"sqlite://{tmp_path}"
    first = await _run(url, store, EVENTS)
    assert first == _oracle(EVENTS)
    more = [("ann", "add", "late"), ("eve", "update", "a,b")]
    # A new worker process (memory store: rebuilt from the changelog; sqlite: its file).
    second = await _run(url, store, more)
    assert second == _oracle(EVENTS + more)


async def test_the_latest_record_of_a_key_holds_the_whole_set(tmp_path: Path) -> None:
    """What a compacted changelog keeps (the last record per key) restores every set."""
    url = f"memory://sets-{uuid.uuid4().hex[:12]}"
    await _run(url, "memory://", EVENTS, coalesce=False)  # a record per change
    broker = get_memory_broker(url.removeprefix("memory://"))
    before = sum(len(broker.log(TP("sets-tags-changelog", p)).records) for p in range(2))
    broker.compact("sets-tags-changelog")
    after = sum(len(broker.log(TP("sets-tags-changelog", p)).records) for p in range(2))
    assert after < before  # compaction dropped older records of some keys
    async with TableManager("sets", broker=url) as manager:
        tags = manager.SetTable("tags", key_type=str)
        async with manager.stream("ops", key_type=str):
            await manager.wait_until_recovered()
            assert tags.as_dict() == _oracle(EVENTS)


async def test_set_values_read_like_sets_and_reject_other_values() -> None:
    url = f"memory://sets-{uuid.uuid4().hex[:12]}"
    async with TableManager("sets", broker=url) as manager:
        tags = manager.SetTable("tags", key_type=str, partitions=1)
        async with trio_tables.open_transport(url) as transport:
            await transport.create_topic("ops", 1)
        async with manager.stream("ops", key_type=str):
            await manager.wait_until_recovered()
            with tags.partition(0):
                tags["k"].update({"a", "b"})
                view: Any = tags["k"]
                assert "a" in view
                assert len(view) == 2
                assert view == {"a", "b"}
                assert sorted(view) == ["a", "b"]
                copy = view.as_set()
                copy.add("not in the table")
                assert tags["k"] == {"a", "b"}
                with pytest.raises(TypeError, match="must be a set"):
                    tags._write("k", ["a", "list"])
                with pytest.raises(KeyError):
                    tags["k"].remove("zzz")
                tags["k"] = set()  # an empty set deletes the key
                assert "k" not in tags
        await trio.lowlevel.checkpoint()
