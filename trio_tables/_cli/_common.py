"""What the commands share: exit codes, broker connections, the errors they report."""

from __future__ import annotations

import difflib
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import attrs
import trio
from rich.console import Console
from rich.markup import escape

from .._testing import TEST_KAFKA_SETTINGS
from .._transport import open_transport
from .._transport._base import Transport
from ..errors import TrioTablesError

__all__ = [
    "CHANGELOG_SUFFIX",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Interrupts",
    "UnknownApp",
    "UnknownTable",
    "connect",
    "current_interrupts",
    "print_error",
    "transport_options",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad arguments, unreachable broker, unknown app or table
EXIT_INTERRUPTED = 130

CHANGELOG_SUFFIX = "-changelog"


class UnknownApp(TrioTablesError):
    """No changelog topic of the app exists on the broker."""

    def __init__(self, app: str, url: str, changelogs: list[str]) -> None:
        if url.startswith("memory://"):
            hint = (
                "a memory:// broker lives inside one process, so another process sees it "
                "empty: inspect apps on a kafka://host:port broker"
            )
        elif changelogs:
            # The most similar names first: a mistyped app id shows its own topics.
            ranked = sorted(
                changelogs, key=lambda topic: -difflib.SequenceMatcher(None, app, topic).ratio()
            )
            shown = ", ".join(ranked[:8])
            more = f" and {len(ranked) - 8} more" if len(ranked) > 8 else ""
            hint = f"changelog topics on this broker, the most similar first: {shown}{more}"
        else:
            hint = "this broker has no changelog topics at all: is it the right broker?"
        super().__init__(
            f"no tables of app {app!r} on {url}: its changelog topics would be named "
            f"'{app}-<table>{CHANGELOG_SUFFIX}'. Check --app (the app id given to "
            f"TableManager) and --broker; {hint}"
        )
        self.app = app


class UnknownTable(TrioTablesError):
    """The app exists but has no table of that name."""

    def __init__(self, app: str, table: str, tables: list[str]) -> None:
        super().__init__(
            f"app {app!r} has no table {table!r} (no topic '{app}-{table}{CHANGELOG_SUFFIX}'); "
            f"its tables: {', '.join(tables)}. `trio-tables tables --app {app} --broker URL` "
            "lists them with their offsets"
        )
        self.app = app
        self.table = table


def transport_options(url: str, connect_timeout: float, *, short_sessions: bool) -> dict[str, Any]:
    """Options for ``open_transport``: the connect timeout, and for a group that the
    command joins itself (the demo's workers) Tansu's short session timeouts."""
    if not url.startswith("kafka://"):
        return {}
    options: dict[str, Any] = {"connect_timeout": connect_timeout}
    if short_sessions:
        options = {**TEST_KAFKA_SETTINGS, **options}
    return options


@asynccontextmanager
async def connect(url: str, connect_timeout: float) -> AsyncIterator[Transport]:
    """A transport for inspecting ``url`` (joins no group)."""
    options = transport_options(url, connect_timeout, short_sessions=False)
    async with open_transport(url, **options) as transport:
        yield transport


def print_error(err: Console, problem: BaseException | str) -> None:
    err.print(f"[bold red]error:[/] {escape(str(problem))}")


@attrs.define(eq=False)
class Interrupts:
    """Ctrl-C and SIGTERM while a command runs (it receives them through the process's
    signal hub, with the demo's workers).

    The first signal prints a line at once and calls ``graceful`` when a command set one
    (the demo: its workers, which receive the signal too, finish their events, commit
    and leave the group, while the rest of its story is cancelled), else cancels the
    command. A second signal prints a line and cancels the command at once (the demo's
    workers stop at once too, see ``TableManager(handle_signals=True)``).
    """

    err: Console
    scope: trio.CancelScope
    graceful: Callable[[], None] | None = None
    received: list[signal.Signals] = attrs.field(factory=list)

    @property
    def exit_code(self) -> int:
        """128 + the first signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(self.received[0]) if self.received else EXIT_INTERRUPTED

    def on_signal(self, signum: signal.Signals) -> None:
        self.received.append(signum)
        if len(self.received) == 1 and self.graceful is not None:
            self.err.print(
                f"[bold yellow]{signum.name}[/]: stopping; the workers finish their events, "
                "commit and leave the group (press Ctrl-C again to stop at once)"
            )
            self.graceful()
        elif len(self.received) == 1:
            self.err.print(f"[bold yellow]{signum.name}[/]: stopping")
            self.scope.cancel()
        else:
            self.err.print(f"[bold yellow]{signum.name}[/] again: stopping at once")
            self.scope.cancel()


current_interrupts: ContextVar[Interrupts | None] = ContextVar(
    "trio_tables_cli_interrupts", default=None
)
"""The running command's :class:`Interrupts` (``None`` outside the command line)."""
