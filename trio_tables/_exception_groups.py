"""Unwrapping Trio's exception groups for callers: :func:`single_error`.

The manager's ``async with`` block raises the one real error of a failed worker rather
than a group of it and the cancellations it caused.
"""

from __future__ import annotations

import trio

__all__ = ["single_error"]


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one non-cancellation error inside ``group``, if there is exactly one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled) and all(exc is not seen for seen in leaves):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None
