"""Calling user callbacks: plain functions, Trio coroutine functions, or asyncio
coroutine functions marked with :func:`trio_tables.asyncio_callback` (run on a
trio-asyncio loop, see :mod:`trio_tables._asyncio`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._asyncio import is_asyncio_function, run_asyncio
from ..errors import AsyncioCodeNotMarked

__all__ = ["call_callback"]

# What asyncio code does when awaited from Trio without a trio-asyncio loop: it asks for
# the running loop (RuntimeError), or yields an asyncio future to Trio (TypeError).
_ASYNCIO_SYMPTOMS = ("no running event loop", "trio.run received unrecognized yield message")


async def call_callback(callback: Callable[..., Any], *args: Any) -> Any:
    """Call ``callback(*args)`` and return its result, awaiting it when it is a Trio
    coroutine, or running it on the manager's trio-asyncio loop when it is marked as
    asyncio code. Cancellation: propagates into the callback (an asyncio callback's task
    is cancelled)."""
    if is_asyncio_function(callback):
        return await run_asyncio(callback, *args)
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            return await result
    except (RuntimeError, TypeError) as exc:
        if any(symptom in str(exc) for symptom in _ASYNCIO_SYMPTOMS):
            raise AsyncioCodeNotMarked(callback) from exc
        raise
    return result
