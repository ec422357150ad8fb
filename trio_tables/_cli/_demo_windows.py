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

__all__ = ["NOT_AVAILABLE", "WindowedHits", "open_hits", "render_hits"]

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
        self.latest: dict[str, int] = {}  # word -> its window's count at its last event

    def count(self, word: str) -> None:
        """Called while processing the event of ``word`` (the window is the event's)."""
        hits = self.hits
        hits[word] += 1
        self.latest[word] = hits[word].current()


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
    latest: dict[str, int] = {}
    for part in parts:
        latest.update(part.latest)
    view = RichTable(
        title=f"[bold]table hits[/]: top words in their latest {WINDOW:g}-second window",
        title_justify="left",
    )
    view.add_column("word")
    view.add_column("hits", justify="right")
    for word, count in sorted(latest.items(), key=lambda item: (-item[1], item[0]))[:limit]:
        view.add_row(word, f"{count:,}")
    return view
