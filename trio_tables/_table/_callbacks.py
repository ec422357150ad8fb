"""Calling user callbacks that may be plain functions or Trio coroutine functions."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["call_callback"]


async def call_callback(callback: Callable[..., Any], *args: Any) -> Any:
    """Call ``callback(*args)``; await the result when it is awaitable (Trio coroutine)."""
    result = callback(*args)
    if inspect.isawaitable(result):
        return await result
    return result
