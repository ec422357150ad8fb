"""SPEC section 8: the names Faust users look for exist and behave as Faust documents
them (issue 13), or raise a typed error that says what to use instead."""

from __future__ import annotations

import subprocess
import sys
import typing
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_tables
from trio_tables import TP, Record, TableManager
from trio_tables._transport._base import OutgoingRecord
from trio_tables.errors import RecoveryFailed, UnknownTableOption, UnsupportedOperation

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
    clone = table.clone(name="t2")
    assert (type(clone), clone.name, clone.default) == (type(table), "t2", table.default)


def _protocol_members(protocol: type) -> set[str]:
    return set(typing._get_protocol_attrs(protocol))  # type: ignore[attr-defined]


def test_the_protocols_declare_every_seed_member() -> None:
    assert set(COLLECTION) - _protocol_members(trio_tables.CollectionT) == set()
    assert set(COLLECTION + TABLE) - _protocol_members(trio_tables.TableT) == set()
    assert set(COLLECTION + TABLE) - _protocol_members(trio_tables.GlobalTableT) == set()
    assert set(MANAGER) - _protocol_members(trio_tables.TableManagerT) == set()


def test_code_annotated_with_the_protocols_type_checks(tmp_path: Path) -> None:
    """Ported Faust code annotates tables with the *T types and uses their members:
    mypy --strict accepts every seed member through them, and the classes satisfy
    them."""
    uses = "\n".join(
        [f"    print(t.{name})" for name in COLLECTION + TABLE]
        + [f"    print(g.{name})" for name in COLLECTION + TABLE]
        + [f"    print(c.{name})" for name in COLLECTION]
        + [f"    print(m.{name})" for name in MANAGER]
    )
    snippet = tmp_path / "ported.py"
    snippet.write_text(
        "from trio_tables import CollectionT, GlobalTableT, TableManager, TableManagerT, TableT\n"
        "from trio_tables import TP\n\n\n"
        "async def ported(m: TableManagerT, t: TableT, g: GlobalTableT, c: CollectionT) -> None:\n"
        f"{uses}\n"
        "    standby: bool = await t.need_active_standby_for(TP('x', 0))\n"
        "    stopped: bool = await m.wait_until_recovery_completed()\n"
        "    await t.on_window_close('k', 1)\n"
        "    await t.on_rebalance(frozenset(), frozenset(), frozenset())\n"
        "    await t.call_recover_callbacks()\n"
        "    await t.on_start()\n"
        "    print(standby, stopped, t.data, t.window, t.schema, t.logger.name)\n\n\n"
        "manager = TableManager('app')\n"
        "table: TableT = manager.Table('t')\n"
        "global_table: GlobalTableT = manager.GlobalTable('g')\n"
        "collection: CollectionT = manager.SetTable('s')\n"
        "typed_manager: TableManagerT = manager\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(snippet)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_the_seeds_async_methods_are_awaitable() -> None:
    """need_active_standby_for answers per partition; the hooks Faust declares async
    are coroutines; wait_until_recovery_completed returns Faust's bool (False:
    recovered, not stopped)."""
    url = f"memory://faust-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", 2)
    recovered: list[str] = []
    closed: list[tuple[Any, Any]] = []
    changelog: list[Any] = []
    async with TableManager("aw", broker=url) as manager:
        table = manager.Table(
            "t",
            on_recover=lambda: recovered.append("cb"),
            on_window_close=lambda k, v: closed.append((k, v)),
            on_changelog_event=changelog.append,
        )
        glob = manager.GlobalTable("g")
        assert await table.need_active_standby_for(TP("src", 0)) is True  # not here yet
        async with manager.stream("src") as stream:
            assert await manager.wait_until_recovery_completed() is False
            assert await table.need_active_standby_for(TP("src", 0)) is False  # active here
            assert await table.need_active_standby_for(TP("src", 1)) is False
            assert await table.need_active_standby_for(TP("src", 7)) is True  # elsewhere
            assert await glob.need_active_standby_for(TP("src", 7)) is False
            await table.on_window_close(("k", (0, 1000)), 3)
            assert closed == [(("k", (0, 1000)), 3)]
            recovered.clear()
            await table.on_recovery_completed(frozenset({0}))
            await table.call_recover_callbacks()
            assert recovered == ["cb", "cb"]
            record = Record("t-changelog", 0, 0, b'"k"', b"1", 0)
            await table.on_changelog_event(record)
            assert changelog == [record]
            await table.on_rebalance(frozenset(), frozenset(), frozenset(), 1)
            await table.on_start()
            with pytest.raises(UnsupportedOperation, match="join"):
                await table.remove_from_stream(stream)


async def test_wait_until_recovered_raises_when_a_recovery_failed() -> None:
    """It returned after "recovery of [0] failed" and the code after it read an empty
    table; now it raises, and the manager stops with the same typed error."""
    url = f"memory://faust-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", 1)
        await transport.create_topic("bad-t-changelog", 1)
        async with transport.open_producer() as producer:
            await producer.send_batch(
                [OutgoingRecord("bad-t-changelog", b"not json", key=b'"k"', partition=0)]
            )
            await producer.flush()
    waited: list[BaseException] = []
    read: list[dict[Any, Any]] = []

    async def run() -> None:
        async with TableManager("bad", broker=url) as manager:
            table = manager.Table("t")
            async with manager.stream("src"):
                with trio.CancelScope(shield=True):  # the waiter is not cancelled first
                    try:
                        await manager.wait_until_recovered()
                    except RecoveryFailed as exc:
                        waited.append(exc)
                    else:
                        read.append(table.as_dict())

    with pytest.raises(RecoveryFailed) as raised:
        await run()
    assert read == []  # nothing read a half-restored table
    assert waited == [raised.value]
    assert "'t'" in str(raised.value)
    assert "not valid JSON" in str(raised.value.cause)


async def test_clone_is_a_separate_table_with_the_originals_settings() -> None:
    """clone(name=...) shared the original's changelog: after a restart each held the
    other's keys. Now it has its own, and keeps serializers, callbacks and window."""
    url = f"memory://faust-{uuid.uuid4().hex[:12]}"
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", 1)
    calls: list[str] = []

    async def run(write: bool) -> tuple[dict[Any, Any], dict[Any, Any], Any]:
        async with TableManager("cl", broker=url) as manager:
            original = manager.Table(
                "orig", value_serializer="pickle", on_recover=lambda: calls.append("recover")
            )
            clone = manager.add(original.clone(name="copy"))
            async with manager.stream("src"):
                await manager.wait_until_recovered()
                if write:
                    with original.partition(0), clone.partition(0):
                        original["a"] = {1, 2}  # a set: needs the pickle serializer
                        clone["b"] = (3, 4)
                return original.as_dict(), clone.as_dict(), clone

    await run(write=True)
    calls.clear()
    original, copy, clone = await run(write=False)
    assert original == {"a": {1, 2}}
    assert copy == {"b": (3, 4)}
    assert clone.changelog_topic == "cl-copy-changelog"
    assert calls == ["recover", "recover"]  # the callback came along, called for both


async def test_clone_keeps_the_window_and_its_options() -> None:
    async with TableManager("cw", broker=f"memory://faust-{uuid.uuid4().hex}") as manager:
        wrapper = manager.Table("hits", default=int).tumbling(10, expires=60, key_index=True)
        clone = wrapper.table.clone(name="hits2")
        assert clone.window == wrapper.table.window
        assert clone._window_options["key_index"] is True
        assert clone.extra_topic_configs == wrapper.table.extra_topic_configs
        assert clone.changelog_topic == "cw-hits2-changelog"
        await trio.lowlevel.checkpoint()


class Schema:
    """Faust's Schema as far as tables read it."""

    key_type = str
    value_type = int
    key_serializer = None
    value_serializer = "json"


async def test_constructor_takes_fausts_keywords_and_lists_them_on_a_typo() -> None:
    url = f"memory://faust-{uuid.uuid4().hex[:12]}"
    calls: list[str] = []
    async with TableManager("kw", broker=url) as manager:
        windowed = manager.Table("w", default=int, window=trio_tables.TumblingWindow(10))
        assert windowed.window == trio_tables.TumblingWindow(10)
        wrapper = windowed.using_window(windowed.window, key_index=True)  # the wrapper
        assert wrapper.key_index
        recovering = manager.Table("r", recover_callbacks=[lambda: calls.append("r")])
        await recovering.call_recover_callbacks()
        assert calls == ["r"]
        glob = manager.Table("g", is_global=True)
        assert isinstance(glob, trio_tables.GlobalTable)
        assert glob.is_global
        global_set = manager.SetTable("gs", is_global=True)
        assert isinstance(global_set, trio_tables.GlobalSetTable)
        with pytest.raises(TypeError, match="GlobalTable"):
            trio_tables.Table(manager, "x", is_global=True)
        typed = manager.Table("typed", schema=Schema())
        assert (typed.key_type, typed.value_type, typed.schema.__class__) == (str, int, Schema)
        with pytest.raises(UnknownTableOption) as raised:
            manager.Table("typo", defualt=int)
        assert isinstance(raised.value, TypeError)
        assert "defualt" in str(raised.value)
        for accepted in ("default", "key_type", "window", "schema", "recover_callbacks"):
            assert accepted in raised.value.accepted
            assert accepted in str(raised.value)


async def test_methods_faust_left_unimplemented_name_the_alternative() -> None:
    async with TableManager("un", broker=f"memory://faust-{uuid.uuid4().hex}") as manager:
        table = manager.Table("t")
        for call, name in [
            (lambda: table.outer_join(None), "outer_join"),
            (lambda: table.combine(None), "combine"),
            (lambda: table.contribute_to_stream(None), "contribute_to_stream"),
        ]:
            with pytest.raises(UnsupportedOperation) as raised:
                call()
            assert raised.value.operation == name
            assert isinstance(raised.value, NotImplementedError)
            assert "join" in raised.value.alternative or "nursery" in raised.value.alternative
        await trio.lowlevel.checkpoint()


async def test_as_ansitable_formats_the_title_and_has_no_ansi_codes_in_a_pipe() -> None:
    async with TableManager("an", broker=f"memory://faust-{uuid.uuid4().hex}") as manager:
        table = manager.Table("scores", partitions=1)
        table.activate(frozenset({0}))
        with table.partition(0):
            table["alice"] = 3
        assert not sys.stdout.isatty()  # pytest captures it
        plain = table.as_ansitable()
        assert "scores" in plain  # Faust's default title: "{table.name}"
        assert "\x1b[" not in plain
        assert "Top of scores" in table.as_ansitable(title="Top of {table.name}")
        assert "\x1b[" in table.as_ansitable(color=True)
        await trio.lowlevel.checkpoint()


async def test_reads_after_the_stream_loop_see_every_active_partition() -> None:
    """Inside an event, iteration is scoped to its partition (documented); after
    `break` it saw only the last event's partition (a benchmark reported a wrong
    table); now it sees every active partition."""
    url = f"memory://faust-{uuid.uuid4().hex[:12]}"
    words = [f"w{i}" for i in range(8)]
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("words", 4)
        async with transport.open_producer() as producer:
            deliveries = await producer.send_batch(
                [OutgoingRecord("words", b"1", key=w.encode()) for w in words]
            )
            await producer.flush()
    partition_of = {w: d.result().partition for w, d in zip(words, deliveries, strict=True)}
    assert len(set(partition_of.values())) > 1
    async with TableManager("sc", broker=url) as manager:
        counts = manager.Table("counts", default=int, key_type=str)
        async with manager.stream("words", key_type=str) as events:
            seen = 0
            async for event in events:
                counts[event.key] += 1
                seen += 1
                in_partition = {w for w in words[:] if partition_of[w] == event.partition}
                assert set(counts.keys()) <= in_partition  # scoped inside the event
                if seen == len(words):
                    break
            assert trio_tables.current_event.get() is None
            assert dict(counts.items()) == Counter(words)
            assert sorted(counts.keys()) == sorted(words)
            assert len(counts) == len(words)


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
