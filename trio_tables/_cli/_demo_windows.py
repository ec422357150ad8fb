"""The demo's windowed count, kept apart: hits per word in tumbling 10-second windows,
written with the windowed-table API of SPEC section 3 (``table.tumbling``, ``WindowSet``
with ``+=`` and ``.current()``).

Windowed tables are the subject of their own issue; until ``Table.tumbling`` exists the
demo runs without this part and prints :data:`NOT_AVAILABLE` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table as RichTable

from .._manager import TableManager
from .._table import Table

__all__ = ["NOT_AVAILABLE", "WindowedHits", "latest_hits", "open_hits", "render_hits"]

WINDOW = 10.0  # seconds per tumbling window
EXPIRES = 3600.0  # windows are kept (and restorable) for an hour

NOT_AVAILABLE = (
    "hits: the windowed count is skipped (windowed tables, table.tumbling(), are not "
    "in this version yet)"
)


class WindowedHits:
    """Counts each word in the current tumbling window of its event."""

    def __init__(self, hits: Any) -> None:
        self.hits = hits
        # word -> (offset of its last event processed here, its window's count then)
        self.latest: dict[str, tuple[int, int]] = {}

    def count(self, word: str, offset: int) -> None:
        """Called while processing the event of ``word`` (the window is the event's)."""
        hits = self.hits
        hits[word] += 1
        self.latest[word] = (offset, hits[word].current())


def latest_hits(parts: Sequence[WindowedHits]) -> dict[str, int]:
    """Per word, the count of its window at its last event, over every worker (the
    worker that processed the word's last event knows; a word's events are in one
    partition, so the highest offset is the last)."""
    merged: dict[str, tuple[int, int]] = {}
    for part in parts:
        for word, seen in part.latest.items():
            if word not in merged or seen > merged[word]:
                merged[word] = seen
    return {word: count for word, (_, count) in merged.items()}


def open_hits(manager: TableManager) -> WindowedHits | None:
    """The windowed ``hits`` table of ``manager``, or ``None`` while windowed tables
    are not available."""
    if not hasattr(Table, "tumbling"):
        return None
    table: Any = manager.Table("hits", default=int)
    try:
        hits = table.tumbling(WINDOW, expires=EXPIRES)
    except NotImplementedError:
        return None
    return WindowedHits(hits)


def render_hits(parts: Sequence[WindowedHits], limit: int = 10) -> RichTable:
    """The words with the most hits in their latest window, over every worker."""
    latest = latest_hits(parts)
    view = RichTable(
        title=f"[bold]table hits[/]: top words in their latest {WINDOW:g}-second window",
        title_justify="left",
    )
    view.add_column("word")
    view.add_column("hits", justify="right")
    for word, count in sorted(latest.items(), key=lambda item: (-item[1], item[0]))[:limit]:
        view.add_row(word, f"{count:,}")
    return view
