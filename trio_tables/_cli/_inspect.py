"""``trio-tables tables``, ``show`` and ``recover``: look at an app's tables on a broker
without joining its consumer group (running workers see no rebalance)."""

from __future__ import annotations

import argparse

import trio
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from .._progress import format_duration
from .._transport._base import TP
from ._bars import recovery_bars
from ._common import EXIT_OK, connect
from ._rebuild import app_tables, changelog_topic, rebuild_table

__all__ = ["add_parsers", "run_recover", "run_show", "run_tables"]


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app", required=True, help="the app id (the first argument of TableManager)"
    )
    parser.add_argument(
        "--broker", required=True, metavar="URL", help="the app's broker, kafka://host:port"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the broker (default: 10)",
    )


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tables = commands.add_parser(
        "tables",
        help="list an app's tables with partitions, offsets and lag",
        description="List the tables of an app (found by their changelog topics, named "
        "<app>-<table>-changelog) with, per partition: the changelog's end offset, the "
        "app's committed offset of its source topics, their end offset and the lag "
        "(events not processed and committed yet). Joins no consumer group.",
        epilog="example: trio-tables tables --app wordcount --broker kafka://127.0.0.1:9092",
    )
    _common_options(tables)

    show = commands.add_parser(
        "show",
        help="rebuild a table from its changelog and print it",
        description="Read the table's changelog from the beginning into memory, as a "
        "recovering worker would (changes made by events that the app has not committed "
        "are left out), and print it as a terminal table, rendered like "
        "table.as_ansitable(). Keys and values are decoded as JSON, else text, else bytes.",
        epilog="example: trio-tables show counts --app wordcount "
        "--broker kafka://127.0.0.1:9092 --limit 20",
    )
    show.add_argument("table", metavar="TABLE", help="the table's name")
    _common_options(show)
    show.add_argument(
        "--limit", type=int, default=100, metavar="N", help="print at most N rows (default: 100)"
    )

    recover = commands.add_parser(
        "recover",
        help="rebuild an app's tables from their changelogs, with progress bars",
        description="Rebuild tables of an app from their changelogs in memory, drawing the "
        "recovery progress of each partition, then report records, keys, time and rate: how "
        "long a worker with an empty store takes to recover them. Changes nothing.",
        epilog="example: trio-tables recover --app wordcount --broker kafka://127.0.0.1:9092",
    )
    recover.add_argument(
        "tables", nargs="*", metavar="TABLE", help="tables to rebuild (default: all of them)"
    )
    _common_options(recover)


# --------------------------------------------------------------------------- tables


async def run_tables(args: argparse.Namespace, out: Console, err: Console) -> int:
    async with connect(args.broker, args.connect_timeout) as transport:
        tables = await app_tables(transport, args.app)
        committed = await transport.group_offsets(args.app)
        sources = sorted({tp.topic for tp in committed})
        counts = {
            topic: (await transport.describe_topic(topic)).partitions
            for topic in [*tables.values(), *sources]
        }
        tps = [TP(t, p) for t in counts for p in range(counts[t])]
        async with transport.open_restore_consumer() as consumer:
            ends = await consumer.end_offsets(tps)

    view = RichTable(
        title=f"tables of app {escape(args.app)} on {escape(args.broker)}", title_justify="left"
    )
    view.add_column("table")
    view.add_column("partition", justify="right")
    view.add_column("changelog end", justify="right")
    view.add_column("committed", justify="right")
    view.add_column("source end", justify="right")
    view.add_column("lag", justify="right")
    for name, topic in tables.items():
        for partition in range(counts[topic]):
            end_offset = ends[TP(topic, partition)]
            row = [name if partition == 0 else "", str(partition), f"{end_offset:,}"]
            source_tps = [TP(s, partition) for s in sources if partition < counts[s]]
            if source_tps:
                done = sum(committed.get(tp, 0) for tp in source_tps)
                end = sum(ends[tp] for tp in source_tps)
                row += [f"{done:,}", f"{end:,}", f"{max(end - done, 0):,}"]
            else:
                row += ["-", "-", "-"]
            view.add_row(*row)
        view.add_section()
    out.print(view)
    total_lag = sum(
        max(ends[TP(s, p)] - committed.get(TP(s, p), 0), 0)
        for s in sources
        for p in range(counts[s])
    )
    if sources:
        out.print(
            f"source topics (offsets committed by group {escape(args.app)}): "
            f"{escape(', '.join(sources))}; total lag {total_lag:,} events"
        )
    else:
        out.print(
            f"group {escape(args.app)} has committed no offsets yet: no source offsets or lag"
        )
    return EXIT_OK


# --------------------------------------------------------------------------- show


async def run_show(args: argparse.Namespace, out: Console, err: Console) -> int:
    async with connect(args.broker, args.connect_timeout) as transport:
        topic = await changelog_topic(transport, args.app, args.table)
        async with recovery_bars(err, transient=True) as bars:
            table = await rebuild_table(
                transport, args.app, args.table, topic, bars=bars, label=args.app
            )
    rows = sum(1 for p in table.active_partitions for _ in table._partition_items(p))
    shown = min(rows, max(args.limit, 0))
    partial = f", showing {shown:,}" if shown < rows else ""
    out.print(
        f"table {escape(args.table)} of app {escape(args.app)}: {rows:,} keys in "
        f"{len(table.active_partitions)} partitions{partial}"
    )
    # Colours only on a terminal (rich's detection of the output): none in a pipe.
    title = args.table.replace("{", "{{").replace("}", "}}")
    out.file.write(
        table.as_ansitable(title, limit=max(args.limit, 0), color=out.is_terminal)
    )
    out.file.flush()
    table.close()
    return EXIT_OK


# --------------------------------------------------------------------------- recover


async def run_recover(args: argparse.Namespace, out: Console, err: Console) -> int:
    async with connect(args.broker, args.connect_timeout) as transport:
        found = await app_tables(transport, args.app)
        names = args.tables or list(found)
        topics = {name: await changelog_topic(transport, args.app, name) for name in names}
        results = []
        async with recovery_bars(out) as bars:
            for name, topic in topics.items():
                started = trio.current_time()
                table = await rebuild_table(
                    transport, args.app, name, topic, bars=bars, label=args.app
                )
                elapsed = trio.current_time() - started
                keys = sum(1 for p in table.active_partitions for _ in table._partition_items(p))
                read = sum(r.end - r.start for r in table.restores)
                results.append((name, len(table.active_partitions), read, keys, elapsed))
                table.close()
    view = RichTable(title=f"recovery of app {escape(args.app)}", title_justify="left")
    for column in ("table", "partitions", "records read", "keys", "time", "records/s"):
        view.add_column(column, justify="left" if column == "table" else "right")
    for name, partitions, read, keys, elapsed in results:
        rate = f"{read / elapsed:,.0f}" if elapsed > 0 else "-"
        view.add_row(
            name, str(partitions), f"{read:,}", f"{keys:,}", format_duration(elapsed), rate
        )
    out.print(view)
    return EXIT_OK
