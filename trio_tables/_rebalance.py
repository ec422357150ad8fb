"""Rebalance supervision: what happens when partitions arrive and leave.

The group consumer calls :class:`RebalanceSupervisor` (a transport
:class:`~._transport._base.RebalanceListener`) from a Trio task while the group waits.

* **Assigned**: the new partition numbers are queued as one :class:`Assignment` with its
  own cancel scope; the manager's recovery supervisor asks every table to restore them
  and releases them to the streams only when all tables are done. The listener itself
  returns at once, so the consumer keeps polling (records of unrecovered partitions wait
  in the streams' buffers; full buffers pause their partitions).
* **Revoked**: pending recoveries of those partitions are cancelled; the streams stop
  yielding them; the manager runs a commit cycle (flush changelog, persist stores) and
  the source offsets are returned for the transport to commit before it releases the
  partitions. Under the eager protocol every partition is revoked on each rebalance;
  under the cooperative protocol only those that move.
* **Lost**: like revoked, but nothing can be committed: unpersisted changes of those
  partitions are discarded (their events will be processed again by the new owner).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from ._table import RecoveryRequest
from ._transport._base import TP

if TYPE_CHECKING:
    from ._manager import TableManager

__all__ = ["Assignment", "RebalanceSupervisor"]

logger = logging.getLogger("trio_tables.rebalance")


@attrs.define(eq=False)
class Assignment:
    """Partitions received in one rebalance, recovered together."""

    tps: frozenset[TP]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    requests: list[RecoveryRequest] = attrs.field(factory=list)

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self.tps)

    def is_revoked(self) -> bool:
        """Whether a revocation cancelled this assignment (a task of it learns at its
        next checkpoint: check before acting on the assignment without one)."""
        return self.scope.cancel_called

    def cancel(self) -> None:
        self.scope.cancel()
        for request in self.requests:
            request.scope.cancel()


class RebalanceSupervisor:
    """The manager's rebalance listener."""

    def __init__(self, manager: TableManager) -> None:
        self._manager = manager
        self.assigned: frozenset[TP] = frozenset()
        self.pending: list[Assignment] = []
        self.generation = 0
        self.assignment_seen = trio.Event()
        self._revoked_since: frozenset[TP] = frozenset()  # since the last assignment

    def _cancel_pending(self, partitions: frozenset[int]) -> None:
        """Cancel recoveries touching ``partitions``; re-queue what they had besides."""
        for assignment in list(self.pending):
            if assignment.partitions & partitions:
                assignment.cancel()
                self.pending.remove(assignment)
                rest = frozenset(tp for tp in assignment.tps if tp.partition not in partitions)
                if rest:
                    self._queue(rest)

    def _queue(self, tps: frozenset[TP]) -> None:
        assignment = Assignment(tps)
        self.pending.append(assignment)
        self._manager._assignments_send.send_nowait(assignment)

    def assignment_done(self, assignment: Assignment) -> None:
        if assignment in self.pending:
            self.pending.remove(assignment)

    async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
        self.generation += 1
        newly = assigned - self.assigned
        self.assigned |= assigned
        logger.info(
            "%s: assigned %s (generation %d)",
            self._manager.app_id,
            sorted(str(tp) for tp in assigned),
            self.generation,
        )
        self._manager._update_standbys()
        if assigned:
            self._queue(assigned)
        self.assignment_seen.set()
        self._manager._recovery_changed()
        revoked, self._revoked_since = self._revoked_since, frozenset()
        await self._manager.on_rebalance(self.assigned, revoked, newly, self.generation)
        for table in list(self._manager.tables.values()):
            await table.on_rebalance(self.assigned, revoked, newly, self.generation)

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> Mapping[TP, int] | None:
        logger.info("%s: revoked %s", self._manager.app_id, sorted(str(tp) for tp in revoked))
        await self._manager.on_rebalance_start()
        partitions = frozenset(tp.partition for tp in revoked)
        self._cancel_pending(partitions)
        try:
            offsets = await self._manager._release(partitions, commit=True)
        finally:
            self.assigned -= revoked
            self._revoked_since |= revoked
            self._manager._recovery_changed()
        await self._manager.on_partitions_revoked(revoked)
        return offsets

    async def on_partitions_lost(self, lost: frozenset[TP]) -> None:
        logger.warning(
            "%s: lost %s (evicted from the group): their uncommitted changes are discarded",
            self._manager.app_id,
            sorted(str(tp) for tp in lost),
        )
        await self._manager.on_rebalance_start()
        partitions = frozenset(tp.partition for tp in lost)
        self._cancel_pending(partitions)
        try:
            await self._manager._release(partitions, commit=False)
        finally:
            self._revoked_since |= lost
            self.assigned -= lost
            self._manager._recovery_changed()
