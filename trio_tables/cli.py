"""The ``trio-tables`` command (also ``python -m trio_tables``).

Commands (``trio-tables COMMAND --help`` describes each):

* ``demo``: word count and windowed count on two workers with a restart, on the
  embedded broker unless ``--broker`` names another one;
* ``broker``: the embedded Kafka-protocol broker (Tansu) in the foreground;
* ``tables``: an app's tables with partitions, changelog end offsets, committed offsets
  and lag;
* ``show TABLE``: a table rebuilt from its changelog, printed as a terminal table;
* ``recover``: an app's tables rebuilt from their changelogs with progress bars, and
  how long that took;
* ``top --url http://worker:port``: a live view of running workers through their HTTP
  endpoints (partitions, lag, events/s, recovery bars, standbys).

``tables``, ``show`` and ``recover`` join no consumer group: running workers see no
rebalance. Exit codes: 0 success, 1 failure, 2 usage error, unreachable broker, unknown
app or table, 130 interrupted (Ctrl-C; 143 for SIGTERM). Every command answers Ctrl-C at
once with a line on standard error (see :class:`~trio_tables._cli._common.Interrupts`).
Each module of :mod:`trio_tables._cli` holds a command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio
from rich.console import Console

from . import __version__
from ._cli import _broker, _demo, _inspect, _top
from ._cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Interrupts,
    UnknownApp,
    UnknownTable,
    current_interrupts,
    print_error,
)
from ._signals import HUB
from .errors import BrokerUnavailable, InvalidBrokerURL, TrioTablesError, UnsupportedBrokerURL

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]

Runner = Callable[[argparse.Namespace, Console, Console], Awaitable[int]]

RUNNERS: dict[str, Runner] = {
    "broker": _broker.run_broker,
    "demo": _demo.run_demo,
    "tables": _inspect.run_tables,
    "show": _inspect.run_show,
    "recover": _inspect.run_recover,
    "top": _top.run_top,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-tables",
        description="Changelog-backed, partitioned tables on Kafka for Trio. Start with "
        "`trio-tables demo`.",
        epilog="`trio-tables COMMAND --help` describes a command. Exit codes: 0 ok, "
        "1 failure, 2 usage error / unreachable broker / unknown app or table, "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"trio-tables {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo.add_parser(commands)
    _broker.add_parser(commands)
    _inspect.add_parsers(commands)
    _top.add_parser(commands)
    return parser


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _run_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """The command, answering SIGINT/SIGTERM (``broker`` handles its own)."""
    runner = RUNNERS[args.command]
    if args.command == "broker":
        return await runner(args, out, err)
    with trio.CancelScope() as scope:
        interrupts = Interrupts(err, scope)
        token = current_interrupts.set(interrupts)
        try:
            with HUB.subscribed(interrupts.on_signal):
                code = await runner(args, out, err)
        except SystemExit:
            if not interrupts.received:
                raise
        except BaseExceptionGroup as group:
            # Workers stopped at once by a second signal end with SystemExit(130/143).
            if not interrupts.received or group.split((SystemExit, trio.Cancelled))[1]:
                raise
        finally:
            current_interrupts.reset(token)
    if interrupts.received:
        err.print("interrupted")
        return interrupts.exit_code
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    # soft_wrap: long lines are not cut at the terminal width (tables still fit it).
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        try:
            return trio.run(_run_command, args, out, err)
        except BaseExceptionGroup as group:
            raise _leaf(group) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except (
        BrokerUnavailable,
        InvalidBrokerURL,
        UnsupportedBrokerURL,
        UnknownApp,
        UnknownTable,
    ) as exc:
        print_error(err, exc)
        return EXIT_USAGE
    except trio.TooSlowError:
        print_error(
            err,
            f"the {args.command} command did not finish within --timeout="
            f"{getattr(args, 'timeout', 0):g}s: is the broker overloaded, or the consumer "
            "group stuck rebalancing? (--verbose shows what the workers do)",
        )
        return EXIT_FAILURE
    except TrioTablesError as exc:
        print_error(err, exc)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
