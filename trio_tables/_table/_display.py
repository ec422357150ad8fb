"""Tables drawn for terminals (``as_ansitable``, the CLI's ``show``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["render_table"]


def render_table(
    rows: Iterable[tuple[Any, Any]],
    *,
    title: str,
    limit: int,
    color: bool | None = None,
    width: int = 100,
) -> str:
    """``rows`` (sorted by key when keys allow) as a text table of at most ``limit``
    rows with ``title``, rendered by rich. ``color``: ANSI colours and styles; ``None``
    means only when standard output is a terminal (never escape codes in a pipe or a
    file)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    rows = list(rows)
    with contextlib.suppress(TypeError):
        rows.sort(key=lambda row: row[0])
    if color is None:
        color = sys.stdout.isatty()
    table = RichTable(title=title)
    table.add_column("key")
    table.add_column("value")
    for key, value in rows[:limit]:
        table.add_row(repr(key), repr(value))
    if len(rows) > limit:
        table.caption = f"{limit} of {len(rows)} rows"
    console = Console(
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=color,
    )
    with console.capture() as capture:
        console.print(table)
    return capture.get()
