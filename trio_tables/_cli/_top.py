"""``trio-tables top``: a live view of running workers, read from their HTTP endpoints
(``TableManager(web_port=...)``): per worker and partition the processed offset, the
lag and events/s; restores in progress as bars; standby copies and their lag. Refreshes
every ``--interval`` seconds (1 by default); several ``--url`` watch several workers.

Needs the ``web`` extra (its HTTP client). A worker that does not answer is shown as
such and asked again at the next refresh.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table as RichTable
from rich.text import Text

from ..errors import MissingExtra
from ._common import EXIT_OK

__all__ = ["add_parser", "run_top"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = commands.add_parser(
        "top",
        help="watch running workers through their HTTP endpoints",
        description="A live view of workers that serve their HTTP endpoint "
        "(TableManager(web_port=...)): partitions, lag, events/s, recovery bars and "
        "standbys, refreshed every --interval seconds. Ctrl-C stops it.",
        epilog="example: trio-tables top --url http://worker-1:8080 --url http://worker-2:8080",
    )
    top.add_argument(
        "--url", action="append", required=True, metavar="URL",
        help="a worker's endpoint, http://host:port (repeat for several workers)",
    )
    top.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS",
        help="seconds between refreshes (default: 1)",
    )
    top.add_argument(
        "--once", action="store_true", help="print one view and exit (for scripts)"
    )


class _Worker:
    """What ``top`` remembers of one worker between refreshes (for events/s)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.status: dict[str, Any] | None = None
        self.error: str | None = None
        self.rates: dict[tuple[str, int], float] = {}
        self.rate: float | None = None
        self._last: tuple[float, dict[tuple[str, int], int], int] | None = None

    async def refresh(self, timeout: float) -> None:
        from .._web._client import HttpError, get

        try:
            response = await get(f"{self.url}/status", timeout=timeout)
            if response.status != 200:
                raise HttpError(f"HTTP {response.status}")
            status = json.loads(response.body)
        except (HttpError, trio.TooSlowError, ValueError) as exc:
            self.error = str(exc) or type(exc).__name__
            return
        self.error = None
        now = trio.current_time()
        counts = {(p["topic"], p["partition"]): p["events_processed"] for p in status["partitions"]}
        total = status["events_processed"]
        if self._last is not None:
            then, before, total_before = self._last
            elapsed = max(now - then, 1e-9)
            self.rates = {
                tp: max(count - before.get(tp, count), 0) / elapsed for tp, count in counts.items()
            }
            self.rate = max(total - total_before, 0) / elapsed
        self._last = (now, counts, total)
        self.status = status


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _bar(position: int, target: int) -> RenderableType:
    return ProgressBar(total=max(target, 1), completed=min(position, target), width=20)


def _view(worker: _Worker) -> RenderableType:
    status = worker.status
    if worker.error is not None or status is None:
        return Text(f"{worker.url}: not answering ({worker.error})", style="red")
    rate = "-" if worker.rate is None else f"{worker.rate:,.0f}"
    title = (
        f"[bold]{escape(status['app'])}[/] @ {escape(str(status['host']))}  "
        f"generation {status['generation']}  events {status['events_processed']:,}  "
        f"events/s {rate}  "
        + ("[green]ready[/]" if status["actives_ready"] else "[yellow]recovering[/]")
    )
    partitions = RichTable(title=title, title_justify="left", expand=False)
    for column in ("partition", "state", "processed", "committed", "end", "lag", "events/s"):
        left = column in ("partition", "state")
        partitions.add_column(column, justify="left" if left else "right")
    for row in status["partitions"]:
        tp = (row["topic"], row["partition"])
        rate_tp = worker.rates.get(tp)
        partitions.add_row(
            f"{escape(row['topic'])}[{row['partition']}]",
            "[green]active[/]" if row["ready"] else "[yellow]recovering[/]",
            *(_number(row[k]) for k in ("processed", "committed", "end", "lag")),
            "-" if rate_tp is None else f"{rate_tp:,.0f}",
        )
    parts: list[RenderableType] = [partitions]
    recovering = [
        (table, p, row)
        for table, rows in status["recovery"].items()
        for p, row in rows.items()
        if row["remaining"] > 0
    ]
    if recovering:
        bars = RichTable(title="recovery", title_justify="left", show_header=False)
        for table, p, row in recovering:
            bars.add_row(
                f"{escape(table)}[{p}]", _bar(row["position"], row["target"]),
                f"{row['remaining']:,} to go",
            )
        parts.append(bars)
    standbys = [(t, p, row) for t, rows in status["standbys"].items() for p, row in rows.items()]
    if standbys:
        table = RichTable(title="standbys", title_justify="left")
        for column in ("copy", "next offset", "held back", "lag"):
            table.add_column(column, justify="left" if column == "copy" else "right")
        for name, p, row in standbys:
            table.add_row(
                f"{escape(name)}[{p}]", f"{row['position']:,}", f"{row['held_back']:,}",
                "-" if row["lag"] is None else f"{row['lag']:,}",
            )
        parts.append(table)
    return Group(*parts)


async def run_top(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        from .._web import load

        load()
    except MissingExtra as exc:
        err.print(f"error: {exc}")
        return 2
    workers = [_Worker(url) for url in args.url]
    timeout = max(args.interval, 1.0)

    async def refresh() -> RenderableType:
        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(worker.refresh, timeout)
        return Group(*(_view(worker) for worker in workers))

    if args.once:
        out.print(await refresh())
        return EXIT_OK
    with Live(await refresh(), console=out, auto_refresh=False) as live:
        deadline = trio.current_time()
        while True:
            deadline += args.interval
            await trio.sleep_until(deadline)
            live.update(await refresh(), refresh=True)
