"""Stopping a worker on SIGINT and SIGTERM (``TableManager(handle_signals=True)``).

The first SIGINT or SIGTERM asks the manager to stop: every stream ends after the event
in process (its ``async for`` loop finishes normally), so the code in the manager's
``async with`` block runs on to the end of the block, whose normal exit makes the last
commit and leaves the group. One log line says what was committed. A second signal (or
a stop still running ``shutdown_timeout`` seconds after the first signal) stops at once:
the manager's work is cancelled without committing, one log line says what was left
uncommitted (the next owner of those partitions processes those events again) and the
``async with`` block raises ``SystemExit(128 + signal number)`` (130 for SIGINT, 143 for
SIGTERM, as a shell reports a process killed by that signal).

Python delivers signals to the main thread only, and a signal has one handler per
process; several managers in one process (the demo runs two) share one handler
installed by :data:`HUB` for as long as any of them runs, so the process's previous
handlers (Trio's ``KeyboardInterrupt`` for SIGINT, the default for SIGTERM) come back
when the last one stops, whatever order they stop in.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any, Protocol

import trio

from ._transport._base import TP

__all__ = ["HUB", "SignalHub", "StopControl"]

logger = logging.getLogger("trio_tables.manager")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalHub:
    """One process-wide handler for :data:`STOP_SIGNALS` that calls every subscriber
    (in the Trio thread, through the run's :class:`trio.lowlevel.TrioToken`)."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[signal.Signals], None]] = []
        self._previous: dict[int, Any] = {}
        self._token: trio.lowlevel.TrioToken | None = None

    @contextlib.contextmanager
    def subscribed(self, callback: Callable[[signal.Signals], None]) -> Iterator[None]:
        """Call ``callback(signum)`` in the Trio thread for each SIGINT and SIGTERM that
        arrives during the block (instead of the process's previous handlers). Must be
        entered in the main thread, inside ``trio.run``."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "handle_signals=True needs the manager to run in the main thread (Python "
                "delivers signals only there): run trio.run() in the main thread, or pass "
                "handle_signals=False and stop the manager yourself"
            )
        token = trio.lowlevel.current_trio_token()
        if not self._subscribers:
            self._token = token
            for stop_signal in STOP_SIGNALS:
                self._previous[stop_signal] = signal.signal(stop_signal, self._handler)
        self._subscribers.append(callback)
        try:
            yield
        finally:
            self._subscribers.remove(callback)
            if not self._subscribers:
                for number, previous in self._previous.items():
                    # Someone installed a handler of their own since: leave theirs.
                    if signal.getsignal(number) == self._handler:
                        signal.signal(number, previous)
                self._previous.clear()
                self._token = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._dispatch, signum)

    def _dispatch(self, signum: int) -> None:
        for callback in list(self._subscribers):
            try:
                callback(signal.Signals(signum))
            except Exception:  # a failing subscriber must not crash the Trio run
                logger.exception("signal handler %r failed", callback)


HUB = SignalHub()
"""The process's hub: every manager with ``handle_signals=True`` (and the CLI) uses it."""


class Stoppable(Protocol):
    """What :class:`StopControl` stops: a stream of the manager."""

    def stop(self) -> None: ...


class StopControl:
    """A manager's stop on signals.

    The manager wires it: :meth:`running` spans its whole life (``__aenter__`` to the
    end of ``__aexit__``), :meth:`start` runs the deadline task in its nursery,
    :meth:`shutdown_scope` shields its normal shutdown (a second signal cancels it) and
    :meth:`released` records what each revocation left committed.
    ``streams`` and ``offsets`` read the manager's open streams and its processed and
    committed source offsets (next offset to process, per partition).
    """

    def __init__(
        self,
        app_id: str,
        *,
        streams: Callable[[], Iterable[Stoppable]],
        offsets: Callable[[], tuple[Mapping[TP, int], Mapping[TP, int]]],
        timeout: float,
    ) -> None:
        self.app_id = app_id
        self._streams = streams
        self._offsets = offsets
        self.timeout = timeout
        self.reason: str | None = None  # why a stop was asked (e.g. "SIGTERM")
        self.signal: signal.Signals | None = None
        self.forced = False
        self._forced_by = ""
        self._asked = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._shutdown: trio.CancelScope | None = None
        self._committed: dict[TP, int] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked (the streams end after their current event)."""
        return self.reason is not None

    # -- wiring ------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, *, handle_signals: bool) -> Iterator[None]:
        """The manager's whole life (entered first, left last): receives SIGINT and
        SIGTERM if ``handle_signals`` (see :class:`SignalHub`); when the manager has
        stopped, logs what a requested stop committed, or after a forced one raises
        ``SystemExit(128 + signal)`` (``trio.TooSlowError`` if no signal asked for the
        stop), whatever else was raised."""
        try:
            with HUB.subscribed(self.on_signal) if handle_signals else contextlib.nullcontext():
                yield
        except BaseException:
            if not self.forced:
                raise
        if self.forced:
            if self.signal is None:  # request_stop() and the deadline passed
                raise trio.TooSlowError(self._forced_by)
            raise SystemExit(128 + int(self.signal))
        if self.requested:
            logger.info(
                "%s: stopped (%s): %s; left the group",
                self.app_id,
                self.reason,
                describe_committed(self._committed),
            )

    def start(self, nursery: trio.Nursery) -> None:
        """Run the stop's deadline in ``nursery`` (the manager's)."""
        self._nursery = nursery
        nursery.start_soon(self._deadline)

    def shutdown_scope(self) -> trio.CancelScope:
        """A shielded scope for the manager's normal shutdown that a forced stop
        cancels."""
        self._shutdown = trio.CancelScope(shield=True)
        if self.forced:
            self._shutdown.cancel()
        return self._shutdown

    def released(self, committed: Mapping[TP, int]) -> None:
        """Partitions were released; ``committed``: their committed offsets (what the
        stop's log line reports, for partitions released while stopping)."""
        if self.requested:
            self._committed.update(committed)

    # -- signals -----------------------------------------------------------------------
    def on_signal(self, signum: signal.Signals) -> None:
        """First signal: stop after the current events (as :meth:`request`, which may
        have been called already); second: stop at once."""
        first = self.signal is None
        self.signal = signum
        if first:
            self.request(signum.name)
        else:
            self.force(f"{signum.name} again")

    def request(self, reason: str) -> None:
        """Ask for a stop: every stream (also one opened later) ends after its current
        event. Idempotent."""
        if self.requested:
            return
        self.reason = reason
        logger.info(
            "%s: %s: stopping: streams end after their current event, then a last commit "
            "and leaving the group (send %s again to stop at once)",
            self.app_id,
            reason,
            self.signal.name if self.signal is not None else "SIGINT or SIGTERM",
        )
        for stream in list(self._streams()):
            stream.stop()
        self._asked.set()

    def force(self, reason: str) -> None:
        """Stop at once: cancel the manager's work, nothing more is committed."""
        if self.forced:
            return
        self.forced = True
        self._forced_by = reason
        if self.reason is None:
            self.reason = reason
        processed, committed = self._offsets()
        logger.warning(
            "%s: %s: stopping at once; %s",
            self.app_id,
            reason,
            describe_uncommitted(processed, committed),
        )
        for stream in list(self._streams()):
            stream.stop()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        if self._shutdown is not None:
            self._shutdown.cancel()
        self._asked.set()

    async def _deadline(self) -> None:
        await self._asked.wait()
        if self.forced:
            return
        await trio.sleep(self.timeout)
        self.force(
            f"the stop did not finish within shutdown_timeout={self.timeout:g}s (is a task "
            "of the manager's block waiting for something else than a stream?)"
        )


def _tp(tp: TP) -> str:
    return f"{tp.topic}[{tp.partition}]"


def describe_committed(committed: Mapping[TP, int]) -> str:
    """``committed offsets words[0]=120, words[1]=98`` (next offset to process)."""
    if not committed:
        return "nothing to commit (no partition was processed)"
    parts = ", ".join(f"{_tp(tp)}={offset}" for tp, offset in sorted(committed.items()))
    return f"committed offsets {parts}"


def describe_uncommitted(processed: Mapping[TP, int], committed: Mapping[TP, int]) -> str:
    """What was processed and not committed, per partition."""
    parts = []
    for tp, done in sorted(processed.items()):
        last = committed.get(tp)
        if last is None:
            parts.append(f"{_tp(tp)} up to offset {done - 1} (nothing committed yet)")
        elif done > last:
            parts.append(f"{_tp(tp)} offsets {last}-{done - 1} ({done - last} events)")
    if not parts:
        return "nothing was left uncommitted"
    return (
        "left uncommitted: "
        + ", ".join(parts)
        + " (the next owner of these partitions processes them again)"
    )
