"""Recovery progress bars: each table's ``recovery_progress`` (``(position, target)``
per partition) drawn with rich, one bar per worker, table and partition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .._table import Collection

__all__ = ["RecoveryBars", "recovery_bars"]


class RecoveryBars:
    """Bars for the restores of the watched tables.

    A bar appears when a partition's restore has something to read (an empty changelog
    partition is recovered at once and gets none) and follows the position up to the
    target, both changelog offsets. Restores that were done before :meth:`watch` are not
    drawn; a later restore of the same partition replaces its bar's numbers.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._watched: list[tuple[str, Collection, dict[int, tuple[int, int]]]] = []
        self._tasks: dict[tuple[int, int], TaskID] = {}
        self.drawn = 0  # how many bars were drawn

    def watch(self, label: str, table: Collection) -> None:
        """Draw the restores of ``table`` from now on, labelled ``label`` (a worker)."""
        self._watched.append((label, table, dict(table.recovery_progress)))

    def refresh(self) -> None:
        for index, (label, table, before) in enumerate(self._watched):
            for partition, (position, target) in sorted(table.recovery_progress.items()):
                key = (index, partition)
                task = self._tasks.get(key)
                if task is None:
                    if target <= 0 or before.get(partition) == (position, target):
                        continue
                    task = self.progress.add_task(
                        f"{label} {table.name}[{partition}]", total=target
                    )
                    self._tasks[key] = task
                    self.drawn += 1
                self.progress.update(task, completed=min(position, target), total=target)

    async def run(self, interval: float = 0.1) -> None:
        """Refresh every ``interval`` seconds until cancelled (refreshing once more)."""
        try:
            while True:
                self.refresh()
                await trio.sleep(interval)
        finally:
            self.refresh()


@asynccontextmanager
async def recovery_bars(
    console: Console, *, transient: bool = False, interval: float = 0.1
) -> AsyncIterator[RecoveryBars]:
    """A live display of recovery bars on ``console`` for the block, refreshed every
    ``interval`` seconds by a task of its own (and once more at the end)."""
    progress = Progress(
        TextColumn("  [bold blue]restore[/] {task.description}", justify="left"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("offsets"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
    bars = RecoveryBars(progress)
    with progress:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bars.run, interval)
            try:
                yield bars
            finally:
                nursery.cancel_scope.cancel()
