"""Cancel an operation at each of its schedule points in turn (tests of cancellation
safety: "cancel after the k-th checkpoint, for k = 0, 1, 2, ... until it completes").

:func:`cancelled_after` runs an operation in the calling task and cancels it right after
the task's ``k``-th trip through the scheduler (``k = 0``: before it starts). Trio then
delivers :class:`trio.Cancelled` at that schedule point if it is a cancellation point,
else at the next one; a wait that cannot be cancelled (a worker thread started with
``abandon_on_cancel=False``) finishes first. A test walks ``k = 0, 1, 2, ...`` until
an attempt completes before its ``k``-th schedule point (``requested`` is false), so
every place where a cancellation can land is hit once::

    for k in itertools.count():
        outcome = await cancelled_after(k, operation)
        ...  # check that nothing was lost or wedged
        if not outcome.requested:
            break
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio


class _CancelAfterSteps(trio.abc.Instrument):
    def __init__(
        self,
        watch: Callable[[trio.lowlevel.Task], bool],
        steps: int | None,
        scope: trio.CancelScope,
    ) -> None:
        self.watch = watch
        self.steps = steps
        self.scope = scope
        self.seen = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.watch(task):
            self.seen += 1
            if self.seen == self.steps:
                self.scope.cancel()


@attrs.frozen
class Outcome:
    """How one cancelled run went."""

    k: int
    #: The cancellation was requested (the operation reached its k-th schedule point).
    requested: bool
    #: The operation raised :class:`trio.Cancelled` (else it completed).
    cancelled: bool
    #: Schedule points of the watched tasks seen while it ran.
    steps: int = 0


async def cancelled_after(
    k: int | None,
    operation: Callable[[], Awaitable[object]],
    *,
    watch: Callable[[trio.lowlevel.Task], bool] | None = None,
) -> Outcome:
    """Run ``await operation()`` in this task, cancelled right after the ``k``-th
    schedule point of the tasks ``watch`` accepts (by default this task; ``k = 0``:
    cancelled before it starts; ``k = None``: never, only counted)."""
    me = trio.lowlevel.current_task()
    with trio.CancelScope() as scope:
        if k == 0:
            scope.cancel()
        instrument = _CancelAfterSteps(watch or (lambda task: task is me), k, scope)
        trio.lowlevel.add_instrument(instrument)
        try:
            await operation()
        finally:
            trio.lowlevel.remove_instrument(instrument)
    requested = k is not None and (k == 0 or instrument.seen >= k)
    return Outcome(-1 if k is None else k, requested, scope.cancelled_caught, instrument.seen)
