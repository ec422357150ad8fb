"""What the commands share: exit codes, broker connections, the errors they report."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
    "UnknownApp",
    "UnknownTable",
    "connect",
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
