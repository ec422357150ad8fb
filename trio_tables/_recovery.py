"""Each table's own nursery and its recovery task.

The manager sends :class:`~._table.RecoveryRequest` s ("restore these partitions, for
this assignment") over a memory channel; the recovery task handles them one at a time
with the table's group-less restore consumer. A request's cancel scope belongs to the
manager: revoking a partition while it is being restored cancels the request, and the
task goes on with the next one.
"""

from __future__ import annotations

import logging
import math

import trio

from ._table import Collection, RecoveryRequest
from ._transport._base import Transport

__all__ = ["run_table"]

logger = logging.getLogger("trio_tables.recovery")


async def run_table(
    table: Collection,
    transport: Transport,
    *,
    task_status: trio.TaskStatus[
        trio.MemorySendChannel[RecoveryRequest]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The table's nursery. Started by the manager; ``task_status.started`` hands back the
    channel for recovery requests once the restore consumer is connected. Runs until
    cancelled (or until the request channel is closed)."""
    # Unbounded: requests are few (one per assignment change) and the manager must never
    # block on sending one while it holds the rebalance in progress.
    send, receive = trio.open_memory_channel[RecoveryRequest](math.inf)
    async with trio.open_nursery() as nursery:
        await nursery.start(_recovery_task, table, transport, receive)
        task_status.started(send)


async def _recovery_task(
    table: Collection,
    transport: Transport,
    requests: trio.MemoryReceiveChannel[RecoveryRequest],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with transport.open_restore_consumer(
        max_poll_records=max(table.recovery_buffer_size, 1)
    ) as consumer, requests:
        task_status.started()
        async for request in requests:
            try:
                with request.scope:
                    await table.restore(consumer, request)
                    request.completed = True
            except Exception as exc:
                logger.exception(
                    "%s: recovery of %s failed", table.label, sorted(request.partitions)
                )
                request.error = exc
            finally:
                request.done.set()
