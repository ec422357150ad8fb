"""trio-asyncio interop: asyncio code called from tables and streams.

The choice (docs/asyncio.md): asyncio code is **marked**, never guessed. A Trio coroutine
and an asyncio coroutine are the same Python type, and telling them apart means running
one until it yields, which cannot be undone. So:

* ``@trio_tables.asyncio_callback`` marks an ``async def`` written for asyncio; it may be
  given as ``on_recover``, ``on_changelog_event``, ``on_window_close`` (or registered with
  the table's decorators) and is run on a trio-asyncio loop;
* ``await manager.run_asyncio(fn, *args)`` runs any asyncio coroutine function from Trio
  code (stream processing, timers), returning its result;
* an unmarked callback that turns out to need asyncio fails with
  :class:`~trio_tables.errors.AsyncioCodeNotMarked`, saying how to mark it.

The loop is opened lazily: the manager owns an :class:`AsyncioLoop` whose trio-asyncio
loop is started in the manager's nursery the first time asyncio code runs, and closed
with the nursery. A manager whose callbacks are all Trio or plain functions never opens
one. Context variables (the current event, a table's explicit partition) are copied into
the asyncio task, so table reads and writes in asyncio code go where they would in Trio
code.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

import trio
import trio_asyncio

__all__ = [
    "AsyncioFunction",
    "AsyncioLoop",
    "asyncio_callback",
    "current_asyncio_loop",
    "is_asyncio_function",
    "reset_current_asyncio_loop",
    "run_asyncio",
    "set_current_asyncio_loop",
]


class AsyncioFunction:
    """An asyncio coroutine function, marked by :func:`asyncio_callback`.

    Calling it still returns the asyncio coroutine (so it stays usable from asyncio
    code); trio_tables awaits it on a trio-asyncio loop. Works on functions and methods.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> AsyncioFunction:
        if instance is None:
            return self
        return AsyncioFunction(self.fn.__get__(instance, owner))

    def __repr__(self) -> str:
        return f"<asyncio callback {getattr(self.fn, '__qualname__', self.fn)!r}>"


def asyncio_callback(fn: Callable[..., Any]) -> AsyncioFunction:
    """Mark ``fn``, an ``async def`` written for asyncio, so that trio_tables runs it on
    a trio-asyncio loop when it is a table callback (``on_recover``,
    ``on_changelog_event``, ``on_window_close``)::

        @trio_tables.asyncio_callback
        async def announce(key, value):
            await aiohttp_session.post(URL, json={key: value})   # any asyncio library

        hits = manager.Table("hits", on_changelog_event=announce)

    Cancellation: the asyncio task is cancelled when the Trio caller is (it sees
    ``asyncio.CancelledError``).
    """
    if isinstance(fn, AsyncioFunction):
        return fn
    if not callable(fn):
        raise TypeError(f"asyncio_callback() needs an async function, got {fn!r}")
    return AsyncioFunction(fn)


def is_asyncio_function(fn: Any) -> bool:
    """Whether ``fn`` was marked with :func:`asyncio_callback`."""
    return isinstance(fn, AsyncioFunction)


class AsyncioLoop:
    """A trio-asyncio loop opened on first use in a nursery (a manager's), closed when
    that nursery is. Before :meth:`attach` and after the nursery closed, calls run on a
    temporary loop opened for the call."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._loop: Any = None
        self._lock = trio.Lock()
        self.opened = 0  # how many loops this object opened in its nursery (0 or 1)

    def attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def detach(self) -> None:
        self._nursery = None
        self._loop = None

    @property
    def is_open(self) -> bool:
        """Whether the loop runs now (only after asyncio code was run)."""
        return self._loop is not None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``await fn(*args)`` (an asyncio coroutine function) on the loop; returns its
        result. Cancellation: cancels the asyncio task and waits for it to finish."""
        loop = await self._get_loop()
        if loop is None:
            async with trio_asyncio.open_loop() as temporary:
                return await trio_asyncio.aio_as_trio(_unmarked(fn), loop=temporary)(*args)
        return await trio_asyncio.aio_as_trio(_unmarked(fn), loop=loop)(*args)

    async def _get_loop(self) -> Any:
        if self._loop is not None:
            return self._loop
        async with self._lock:
            nursery = self._nursery
            closing = nursery is None or nursery.cancel_scope.cancel_called
            if self._loop is None and nursery is not None and not closing:
                try:
                    self._loop = await nursery.start(self._serve)
                except RuntimeError:  # the nursery is closing: use a temporary loop
                    return None
            return self._loop

    async def _serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio_asyncio.open_loop() as loop:
            self.opened += 1
            try:
                task_status.started(loop)
                await trio.sleep_forever()
            finally:
                self._loop = None


def _unmarked(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn.fn if isinstance(fn, AsyncioFunction) else fn


_current: ContextVar[AsyncioLoop | None] = ContextVar("trio_tables_asyncio_loop", default=None)


def current_asyncio_loop() -> AsyncioLoop | None:
    """The :class:`AsyncioLoop` of the innermost running manager in this context."""
    return _current.get()


def set_current_asyncio_loop(loop: AsyncioLoop) -> Token[AsyncioLoop | None]:
    """Make ``loop`` the one asyncio callbacks run on in this context (and in tasks
    started from it); undo with :func:`reset_current_asyncio_loop`."""
    return _current.set(loop)


def reset_current_asyncio_loop(token: Token[AsyncioLoop | None]) -> None:
    with contextlib.suppress(ValueError):  # reset from another context: leave it
        _current.reset(token)


async def run_asyncio(fn: Callable[..., Any], *args: Any) -> Any:
    """Run the asyncio coroutine function ``fn(*args)`` from Trio code and return its
    result: on the running manager's loop when there is one in this context, else on a
    loop opened for this call."""
    loop = _current.get()
    if loop is None:
        loop = AsyncioLoop()  # not attached: a temporary loop for this call
    return await loop.run(fn, *args)
