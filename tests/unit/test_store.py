"""One store contract, run on every store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trio_tables._codecs import JsonCodec
from trio_tables._store import Store, open_store
from trio_tables._store._base import MISSING

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[Store] = []
    url = "memory://" if request.param == "memory" else f"sqlite://{tmp_path / 'state'}"

    def make() -> Store:
        store = open_store(url, name="counts", key_codec=JsonCodec(), value_codec=JsonCodec())
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_missing_key_is_missing_not_none(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.get(0, "nope") is MISSING
    assert store.persisted_offset(0) is None
    assert store.count(0) == 0


def test_falsy_values_are_kept_and_none_deletes(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch(0, {"zero": 0, "empty": "", "list": [], "gone": 1}, offset=3)
    store.write_batch(0, {"gone": None}, offset=4)
    assert store.get(0, "zero") == 0
    assert store.get(0, "empty") == ""
    assert store.get(0, "list") == []
    assert store.get(0, "gone") is MISSING
    assert dict(store.items(0)) == {"zero": 0, "empty": "", "list": []}
    assert store.count(0) == 3
    assert store.persisted_offset(0) == 4


def test_a_batch_of_thousands_of_writes_and_deletes_lands_whole(
    make_store: StoreFactory,
) -> None:
    """sqlite writes many rows per statement (up to 1,000): batches around and past that
    size, upserts and deletes, with the offset row in the last statement."""
    store = make_store()
    store.write_batch(0, {f"k{i}": i for i in range(2_501)}, offset=7)
    deletes = {f"k{i}": None for i in range(0, 2_501, 2)}  # 1,251 deletes
    store.write_batch(0, {**deletes, "new": "v", "k1": -1}, offset=9, meta={"t": 5})
    expected = {f"k{i}": i for i in range(1, 2_501, 2)} | {"new": "v", "k1": -1}
    assert dict(store.items(0)) == expected
    assert store.count(0) == len(expected)
    assert store.persisted_offset(0) == 9
    assert store.persisted_meta(0) == {"t": 5}
    assert store.get(0, "k0") is MISSING
    assert store.get(0, "k2499") == 2_499


def test_partitions_are_separate(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch(0, {"a": 1}, offset=10)
    store.write_batch(1, {"a": 2}, offset=None)
    assert store.get(0, "a") == 1
    assert store.get(1, "a") == 2
    assert store.persisted_offset(0) == 10
    assert store.persisted_offset(1) is None
    assert store.partitions() == {0, 1}


def test_offset_none_keeps_the_recorded_offset(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch(0, {"a": 1}, offset=7)
    store.write_batch(0, {"a": 2}, offset=None)
    assert store.persisted_offset(0) == 7
    assert store.get(0, "a") == 2


def test_source_offsets_are_recorded_with_the_data(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.persisted_source_offsets(0) == {}
    store.write_batch(0, {"a": 1}, offset=5, source_offsets={"words": 17, "clicks": 3})
    store.write_batch(0, {"a": 2}, offset=6)
    assert store.persisted_source_offsets(0) == {"words": 17, "clicks": 3}
    assert store.count(0) == 1
    store.reset_partition(0)
    assert store.persisted_source_offsets(0) == {}


def test_reset_partition_forgets_data_and_offset(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch(0, {"a": 1}, offset=7)
    store.write_batch(1, {"b": 1}, offset=8)
    store.reset_partition(0)
    assert store.get(0, "a") is MISSING
    assert store.persisted_offset(0) is None
    assert store.get(1, "b") == 1


def test_sqlite_unencodable_value_writes_nothing(tmp_path: Path) -> None:
    store = open_store(
        f"sqlite://{tmp_path}", name="t", key_codec=JsonCodec(), value_codec=JsonCodec(int)
    )
    try:
        store.write_batch(0, {"a": 1}, offset=1)
        with pytest.raises(TypeError):
            store.write_batch(0, {"b": 2, "bad": "not an int"}, offset=2)
        assert store.get(0, "b") is MISSING
        assert store.persisted_offset(0) == 1
    finally:
        store.close()


def test_persistent_store_survives_reopen(make_store: StoreFactory) -> None:
    store = make_store()
    store.write_batch(2, {"k": {"nested": [1, 2]}, "n": 0}, offset=41, source_offsets={"w": 9})
    store.close()
    reopened = make_store()
    if store.persistent:
        assert reopened.persisted_offset(2) == 41
        assert reopened.persisted_source_offsets(2) == {"w": 9}
        assert dict(reopened.items(2)) == {"k": {"nested": [1, 2]}, "n": 0}
        assert reopened.partitions() == {2}
    else:
        assert reopened.persisted_offset(2) is None
        assert reopened.partitions() == frozenset()


def test_get_sees_every_write_and_reset_after_earlier_reads(make_store: StoreFactory) -> None:
    # The sqlite store reads with a connection of its own, opened by the first get: it
    # must see what later batches committed (and forgot).
    store = make_store()
    store.write_batch(0, {"a": 1}, offset=1)
    assert store.get(0, "a") == 1
    assert store.get(0, "b") is MISSING
    store.write_batch(0, {"a": 2, "b": 3}, offset=2)
    assert (store.get(0, "a"), store.get(0, "b")) == (2, 3)
    store.write_batch(0, {"a": None}, offset=3)
    assert store.get(0, "a") is MISSING
    store.reset_partition(0)
    assert store.get(0, "b") is MISSING
    store.write_batch(0, {"c": 4}, offset=4)
    assert store.get(0, "c") == 4
    store.close()
    reopened = make_store()
    assert reopened.get(0, "c") == (4 if store.persistent else MISSING)


def test_sqlite_partition_opened_by_two_threads_at_once_is_opened_once(tmp_path: Path) -> None:
    """A table reads on the Trio thread while its committer writes from a worker thread;
    both may be the first to open a partition. Exactly one connection thread per
    partition must exist, and closing the store must end all of them."""
    from sqlitedict import SqliteMultithread

    directory = tmp_path / "state"
    store = open_store(
        f"sqlite://{directory}", name="counts", key_codec=JsonCodec(), value_codec=JsonCodec()
    )
    path = str(directory / "counts.sqlite")

    def connections() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if isinstance(t, SqliteMultithread) and t.filename == path and t.is_alive()
        ]

    threads_per_partition = 4
    partitions = range(3)
    start = threading.Barrier(threads_per_partition * len(partitions))
    errors: list[BaseException] = []

    def open_partition(partition: int, number: int) -> None:
        start.wait()
        try:
            if number % 2:
                store.write_batch(partition, {f"k{number}": number}, None)
            else:
                store.persisted_offset(partition)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    workers = [
        threading.Thread(target=open_partition, args=(p, n))
        for p in partitions
        for n in range(threads_per_partition)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    try:
        assert errors == []
        assert len(connections()) == len(partitions)  # one SqliteDict per partition
        for p in partitions:
            assert dict(store.items(p)) == {"k1": 1, "k3": 3}
    finally:
        store.close()
    leftover = connections()
    for thread in leftover:
        thread.join(timeout=10)  # a closed connection's thread ends
    assert not [t for t in leftover if t.is_alive()], "a connection was never closed"
