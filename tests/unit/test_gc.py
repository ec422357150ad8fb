"""The cyclic collector's first threshold while managers run (trio_tables._gc)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterator

import pytest
import trio

from trio_tables import TableManager
from trio_tables._gc import DEFAULT_GC_THRESHOLD

CPYTHON_DEFAULT = (700, 10, 10)


@pytest.fixture(autouse=True)
def cpython_default_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(*CPYTHON_DEFAULT)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _manager(gc_threshold: int | None = DEFAULT_GC_THRESHOLD) -> TableManager:
    broker = f"memory://gc-{uuid.uuid4().hex[:8]}"
    return TableManager("gc", broker=broker, gc_threshold=gc_threshold)


def _young_collections_during(work: Callable[[], None]) -> int:
    counted = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            counted[0] += 1

    gc.collect(0)  # the count of allocations starts at 0
    gc.callbacks.append(count)
    try:
        work()
    finally:
        gc.callbacks.remove(count)
    return counted[0]


def _keep_20k_lists() -> None:
    kept: list[list[int]] = [[] for _ in range(20_000)]  # 20k surviving containers
    assert len(kept) == 20_000


async def test_a_running_manager_raises_the_first_threshold_and_restores_it() -> None:
    assert _young_collections_during(_keep_20k_lists) >= 20  # every 700 allocations
    async with _manager():
        assert gc.get_threshold() == (DEFAULT_GC_THRESHOLD, 10, 10)
        assert _young_collections_during(_keep_20k_lists) == 0
    assert gc.get_threshold() == CPYTHON_DEFAULT


async def test_the_threshold_is_only_raised_and_none_leaves_the_collector_alone() -> None:
    gc.set_threshold(200_000, 5, 5)  # the application's own, higher
    async with _manager():
        assert gc.get_threshold() == (200_000, 5, 5)
    assert gc.get_threshold() == (200_000, 5, 5)
    gc.set_threshold(*CPYTHON_DEFAULT)
    async with _manager(gc_threshold=None):
        assert gc.get_threshold() == CPYTHON_DEFAULT
    async with _manager(gc_threshold=5_000):
        assert gc.get_threshold() == (5_000, 10, 10)
    assert gc.get_threshold() == CPYTHON_DEFAULT


async def test_overlapping_managers_restore_when_the_last_one_stops() -> None:
    first_left = trio.Event()
    second_started = trio.Event()

    async def second() -> None:
        async with _manager():
            second_started.set()
            await first_left.wait()
            assert gc.get_threshold() == (DEFAULT_GC_THRESHOLD, 10, 10)
        assert gc.get_threshold() == CPYTHON_DEFAULT

    async with trio.open_nursery() as nursery:
        async with _manager():
            nursery.start_soon(second)
            await second_started.wait()
        first_left.set()
        assert gc.get_threshold() == (DEFAULT_GC_THRESHOLD, 10, 10)  # the second still runs


async def test_thresholds_the_application_set_meanwhile_stay() -> None:
    async with _manager():
        gc.set_threshold(1_000, 20, 20)
    assert gc.get_threshold() == (1_000, 20, 20)


def test_a_threshold_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="gc_threshold must be a positive number or None"):
        _manager(gc_threshold=0)
