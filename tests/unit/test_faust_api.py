"""SPEC section 8: the names Faust users look for exist and do what they say."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import trio

import trio_tables
from trio_tables import TP, TableManager
from trio_tables._transport._base import OutgoingRecord

COLLECTION = [
    "data",
    "name",
    "default",
    "schema",
    "key_type",
    "value_type",
    "partitions",
    "window",
    "help",
    "recovery_buffer_size",
    "standby_buffer_size",
    "options",
    "last_closed_window",
    "use_partitioner",
    "is_global",
    "on_start",
    "on_recover",
    "info",
    "persisted_offset",
    "need_active_standby_for",
    "reset_state",
    "send_changelog",
    "partition_for_key",
    "on_window_close",
    "join",
    "left_join",
    "inner_join",
    "outer_join",
    "clone",
    "combine",
    "contribute_to_stream",
    "remove_from_stream",
    "on_rebalance",
    "on_recovery_completed",
    "call_recover_callbacks",
    "on_changelog_event",
    "label",
    "shortlabel",
    "changelog_topic",
    "changelog_topic_name",
    "apply_changelog_batch",
    "using_window",
    "hopping",
    "tumbling",
    "as_ansitable",
    "logger",
]
# WindowWrapper's names: tests/unit/test_windowed_tables.py::test_window_api_names
TABLE = ["on_key_get", "on_key_set", "on_key_del"]
MANAGER = [
    "add",
    "actives_ready",
    "standbys_ready",
    "changelog_topics",
    "recovery",
    "persist_offset_on_commit",
    "on_commit",
    "on_commit_tp",
    "on_rebalance_start",
    "on_actives_ready",
    "on_standbys_ready",
    "on_start",
    "on_stop",
    "wait_until_tables_registered",
    "on_partitions_revoked",
    "on_rebalance",
    "wait_until_recovery_completed",
    "logger",
]


def test_the_faust_names_exist() -> None:
    manager = TableManager("names")
    table = manager.Table("t")
    glob = manager.GlobalTable("g")
    assert [n for n in COLLECTION + TABLE if not hasattr(table, n)] == []
    assert [n for n in MANAGER if not hasattr(manager, n)] == []
    assert isinstance(table, trio_tables.TableT)
    assert isinstance(table, trio_tables.CollectionT)
    assert isinstance(glob, trio_tables.GlobalTableT)
    assert isinstance(manager, trio_tables.TableManagerT)
    assert table.need_active_standby_for(TP("x", 0))
    assert not glob.need_active_standby_for(TP("x", 0))
    clone = table.clone(name="t2")
    assert (type(clone), clone.name, clone.default) == (type(table), "t2", table.default)


class Hooked(TableManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    async def on_rebalance_start(self) -> None:
        self.calls.append("rebalance_start")

    async def on_rebalance(self, assigned: Any, revoked: Any, newly: Any, gen: int = 0) -> None:
        self.calls.append(f"rebalance {len(assigned)} new={len(newly)}")

    async def on_actives_ready(self) -> None:
        self.calls.append("actives_ready")

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> None:
        self.calls.append(f"revoked {len(revoked)}")

    async def on_commit(self, offsets: Mapping[TP, int]) -> None:
        if offsets:
            self.calls.append("commit")

    async def on_commit_tp(self, tp: TP) -> None:
        self.calls.append(f"commit_tp {tp.partition}")


async def test_manager_hooks_follow_the_lifecycle() -> None:
    url = f"memory://faust-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", 2)
        async with transport.open_producer() as producer:
            await producer.send_batch([OutgoingRecord("words", b"1", key=b"k", partition=0)])
    async with Hooked("hooks", broker=url) as manager:
        counts = manager.Table("counts", default=int)
        assert manager.changelog_topics == {"hooks-counts-changelog"}
        async with manager.stream("words", key_type=str) as events:
            processed = trio.Event()

            async def process() -> None:
                async for event in events:
                    counts[event.key] += 1
                    processed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(process)
                await processed.wait()
                await manager.commit()
                text = counts.as_ansitable(title="Counts")
                nursery.cancel_scope.cancel()
        assert manager.recovery.active_remaining_total() == 0
    calls = manager.calls
    assert calls[:2] == ["rebalance 2 new=2", "actives_ready"]
    assert "commit_tp 0" in calls  # the stream's offset was committed when it closed
    assert "rebalance_start" in calls
    assert "revoked 2" in calls
    assert "Counts" in text
    assert "'k'" in text


async def test_table_on_start_runs_when_the_tables_nursery_started() -> None:
    started: list[str] = []

    class Observed(trio_tables.Table):
        async def on_start(self) -> None:
            await trio.lowlevel.checkpoint()
            started.append(self.name)

    async with TableManager("app", broker=f"memory://faust-{uuid.uuid4().hex}") as manager:
        early = manager.add(Observed(manager, "early"))
        await manager.wait_until_tables_registered()  # its nursery runs: on_start ran
        late = manager.add(Observed(manager, "late"))
        await manager.wait_until_tables_registered()
    assert started == [early.name, late.name]
