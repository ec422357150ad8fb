"""Rebalance supervision: what happens when partitions arrive and leave.

The group consumer calls :class:`RebalanceSupervisor` (a transport
:class:`~._transport._base.RebalanceListener`) from a Trio task while the group waits.

* **Assigned**: the new partitions are queued as one :class:`Assignment` with its own
  cancel scope; :meth:`RebalanceSupervisor.run` (a task of the manager's nursery)
  recovers each assignment in a task of its own: it asks every table to restore them
  and releases them to the streams only when all tables are done. The listener itself
  returns at once, so the consumer keeps polling (records of unrecovered partitions wait
  in the streams' buffers; full buffers pause their partitions).
* **Revoked**: pending recoveries of those partitions are cancelled; the streams stop
  yielding them; a commit cycle runs (flush changelog, persist stores) and the source
  offsets are returned for the transport to commit before it releases the partitions.
  Under the eager protocol every partition is revoked on each rebalance; under the
  cooperative protocol only those that move.
* **Lost**: like revoked, but nothing can be committed: unpersisted changes of those
  partitions are discarded (their events will be processed again by the new owner).

Threads: only the Trio thread touches it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

import attrs
import trio

from ._assignor import TablesAssignor
from ._commit import CommitCycle, WorkerHealth
from ._exactly_once import Transactions
from ._flow import StreamFlow
from ._ledger import PartitionLedger
from ._registry import TableRegistry
from ._table import Collection, RecoveryRequest, StandbyUpdate
from ._transport._base import TP
from .errors import RecoveryFailed

__all__ = ["Assignment", "RebalanceHooks", "RebalanceSupervisor"]

logger = logging.getLogger("trio_tables.rebalance")

CommittedOffsets = Callable[[Iterable[TP]], Awaitable["dict[TP, int | None] | None"]]


class RebalanceHooks(Protocol):
    """The manager's public rebalance hooks (see :class:`~trio_tables.TableManager`)."""

    async def on_rebalance_start(self) -> None: ...

    async def on_rebalance(
        self,
        assigned: frozenset[TP],
        revoked: frozenset[TP],
        newly_assigned: frozenset[TP],
        generation_id: int = 0,
    ) -> None: ...

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> None: ...

    async def on_commit(self, offsets: Mapping[TP, int]) -> None: ...

    async def on_actives_ready(self) -> None: ...

    async def on_standbys_ready(self) -> None: ...


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
    """The manager's rebalance listener and the recovery of what it is assigned."""

    def __init__(
        self,
        app_id: str,
        *,
        registry: TableRegistry,
        ledger: PartitionLedger,
        flow: StreamFlow,
        cycle: CommitCycle,
        health: WorkerHealth,
        assignor: TablesAssignor,
        hooks: RebalanceHooks,
        committed: CommittedOffsets,
        transactions: Transactions | None,
        revoke_timeout: float,
        on_released: Callable[[frozenset[int]], None],
    ) -> None:
        self.app_id = app_id
        self._on_released = on_released
        self._registry = registry
        self._ledger = ledger
        self._flow = flow
        self._cycle = cycle
        self._health = health
        self._assignor = assignor
        self._hooks = hooks
        self._committed = committed
        self._transactions = transactions
        self._revoke_timeout = revoke_timeout
        self.assigned: frozenset[TP] = frozenset()
        self.pending: list[Assignment] = []
        self.generation = 0  # the group's generation of the latest assignment
        self.assignment_seen = trio.Event()
        self.standbys: frozenset[int] = frozenset()
        self._revoked_since: frozenset[TP] = frozenset()  # since the last assignment
        self._assignments_send, self._assignments_receive = trio.open_memory_channel[
            Assignment
        ](float("inf"))
        # Set (and replaced) whenever recovery state changes.
        self.recovery_changed = trio.Event()
        # The first failed restore: what the manager stops with and recovery waiters
        # raise (the same object, so it is reported once).
        self.recovery_error: RecoveryFailed | None = None
        self.is_stopped = False
        self._nursery: trio.Nursery | None = None

    # -- the listener ------------------------------------------------------------------
    async def on_partitions_assigned(self, assigned: frozenset[TP]) -> None:
        # The group's generation, as the assignor saw it with this assignment (the
        # transport hands it over before calling the listener); a count of assignments
        # when no assignor reported one.
        group_generation = self._assignor.view.generation
        self.generation = group_generation if group_generation >= 0 else self.generation + 1
        newly = assigned - self.assigned
        self.assigned |= assigned
        logger.info(
            "%s: assigned %s (generation %d)",
            self.app_id,
            sorted(str(tp) for tp in assigned),
            self.generation,
        )
        self._update_standbys()
        if assigned:
            self._queue(assigned)
        self.assignment_seen.set()
        self._changed()
        revoked, self._revoked_since = self._revoked_since, frozenset()
        await self._hooks.on_rebalance(self.assigned, revoked, newly, self.generation)
        for table in self._registry:
            await table.on_rebalance(self.assigned, revoked, newly, self.generation)

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> Mapping[TP, int] | None:
        logger.info("%s: revoked %s", self.app_id, sorted(str(tp) for tp in revoked))
        await self._hooks.on_rebalance_start()
        partitions = frozenset(tp.partition for tp in revoked)
        self._cancel_pending(partitions)
        try:
            offsets = await self._release(partitions, commit=True)
        finally:
            self.assigned -= revoked
            self._revoked_since |= revoked
            self._changed()
        await self._hooks.on_partitions_revoked(revoked)
        return offsets

    async def on_partitions_lost(self, lost: frozenset[TP]) -> None:
        logger.warning(
            "%s: lost %s (evicted from the group): their uncommitted changes are discarded",
            self.app_id,
            sorted(str(tp) for tp in lost),
        )
        await self._hooks.on_rebalance_start()
        partitions = frozenset(tp.partition for tp in lost)
        self._cancel_pending(partitions)
        try:
            await self._release(partitions, commit=False)
        finally:
            self._revoked_since |= lost
            self.assigned -= lost
            self._changed()

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
        self._assignments_send.send_nowait(assignment)

    def _done(self, assignment: Assignment) -> None:
        if assignment in self.pending:
            self.pending.remove(assignment)

    # -- releasing ----------------------------------------------------------------------
    async def _release(self, partitions: frozenset[int], *, commit: bool) -> dict[TP, int] | None:
        """Stop processing ``partitions``; with ``commit``, commit what was processed
        (the offsets for the transport to commit, ``None`` when there is nothing to do
        or the transaction committed them); without, discard their uncommitted changes.
        Cancellation: the commit cycle's critical section is shielded; whatever happens,
        the partitions are forgotten here at the end."""
        self._flow.withhold(partitions)
        releasing = frozenset(partitions & self._ledger.ready)
        self._ledger.ready -= partitions
        offsets: dict[TP, int] | None = None
        tables = list(self._registry)
        try:
            if commit and not self._health.failing():
                async with self._cycle.lock:
                    result = await self._cycle.run(releasing, grace=self._revoke_timeout)
                # An event still in process after revoke_timeout: its partition's changes
                # are dropped and the new owner processes the event again.
                for table in tables:
                    table.discard_uncommitted(result.busy & partitions)
                if self._transactions is None:
                    offsets = self._ledger.offsets_to_commit(result.snapshot, self.assigned)
                    self._ledger.record_committed(offsets)
                    await self._hooks.on_commit(offsets)
                # else: committed with the transaction (on_commit was called there)
            else:
                async with self._flow.quiesced(self._cycle.event_grace):
                    pass
                for table in tables:
                    table.discard_uncommitted(partitions)
                if self._transactions is not None and not self._health.failing():
                    await self._transactions.roll_back(partitions)
        finally:
            self._on_released(partitions)
            for table in tables:
                table.deactivate(partitions)
            self._flow.drop(partitions)
            self._ledger.forget(partitions)
        return offsets

    # -- recovering assignments --------------------------------------------------------
    async def run(self, nursery: trio.Nursery) -> None:
        """Recover each queued assignment in a task of ``nursery``."""
        self._nursery = nursery
        async for assignment in self._assignments_receive:
            nursery.start_soon(self._recover_assignment, assignment)

    async def _recover_assignment(self, assignment: Assignment) -> None:
        try:
            with assignment.scope:
                await self._registry.wait_until_started()
                committed = await self._committed(assignment.tps)
                if committed is None:  # the group was left meanwhile
                    return
                self._ledger.learn_committed(committed)
                partitions = assignment.partitions
                done: set[str] = set()
                while missing := [t for t in self._registry.partitioned if t.name not in done]:
                    # A table added meanwhile is recovered for these partitions too.
                    await self._registry.wait_until_started()
                    requests = []
                    for table in missing:
                        request = RecoveryRequest(partitions, committed)
                        assignment.requests.append(request)
                        requests.append(request)
                        await self._registry.channels[table.name].send(request)
                    for request in requests:
                        await request.done.wait()
                    for table, request in zip(missing, requests, strict=True):
                        if request.error is not None:
                            raise self._recovery_failed(
                                table.name, partitions, request.error
                            ) from request.error
                    if not all(request.completed for request in requests):
                        return
                    done.update(table.name for table in missing)
                if assignment.is_revoked():
                    # Revoked while the last table finished: the cancellation would only
                    # land at the next checkpoint, after the partitions were activated
                    # again behind the revocation's back.
                    return
                # on_recover callbacks see the recovered tables before any event of these
                # partitions is processed (as in Faust); then the streams get them.
                for table in self._registry:
                    table.activate(partitions)
                for table in self._registry:
                    await table.on_recovery_completed(partitions)
                if assignment.is_revoked():
                    return
                self._activate(partitions, assignment.tps)
                self._done(assignment)
                if self.fully_recovered():
                    await self._hooks.on_actives_ready()
        finally:
            self._done(assignment)
            self._changed()

    def _activate(self, partitions: frozenset[int], tps: frozenset[TP]) -> None:
        for table in self._registry:
            table.activate(partitions)
        self._ledger.ready |= partitions
        self._flow.release(tps)
        logger.info("%s: partitions %s recovered and active", self.app_id, sorted(partitions))

    async def recover_new_table(self, table: Collection) -> None:
        """Recover a table added while partitions are being processed. Those partitions
        stop handing out events until the new table has them (an event already in
        process goes on: it may be the one waiting for this table)."""
        partitions = frozenset(self._ledger.ready)
        if not partitions:
            return
        tps = frozenset(tp for tp in self.assigned if tp.partition in partitions)
        self._flow.withhold(partitions)
        try:
            committed = await self._committed(tps)
            if committed is None:
                return
            request = RecoveryRequest(partitions, committed)
            await self._registry.channels[table.name].send(request)
            await request.done.wait()
            if request.error is not None:
                raise self._recovery_failed(table.name, partitions, request.error) from (
                    request.error
                )
            still_ready = partitions & self._ledger.ready
            if request.completed:
                table.activate(still_ready)
                await table.on_recovery_completed(still_ready)
        finally:
            self._flow.release(tp for tp in tps if tp.partition in self._ledger.ready)
            self._changed()

    def _recovery_failed(
        self, table: str, partitions: frozenset[int], error: BaseException
    ) -> RecoveryFailed:
        """Remember a failed restore (the first one)."""
        if self.recovery_error is None:
            self.recovery_error = RecoveryFailed(table, sorted(partitions), error)
        self._changed()
        return self.recovery_error

    def check_recovery(self) -> None:
        """Raise the failed restore's error, if one failed."""
        if self.recovery_error is not None:
            raise self.recovery_error

    def stopped(self) -> None:
        """The manager is stopping: recovery waiters stop waiting."""
        self.is_stopped = True
        self._changed()

    def _changed(self) -> None:
        self.recovery_changed.set()
        self.recovery_changed = trio.Event()

    def new_group_session(self) -> None:
        """The worker (re-)joins the group: no assignment of the new session was seen
        yet, so :meth:`fully_recovered` is false until one arrives."""
        if self.assignment_seen.is_set():
            self.assignment_seen = trio.Event()
            self._changed()

    def fully_recovered(self) -> bool:
        """Whether an assignment arrived and every assigned partition is recovered by
        every table."""
        if not self.assignment_seen.is_set():
            return False
        assigned = {tp.partition for tp in self.assigned}
        return not self.pending and assigned <= self._ledger.ready

    # -- standbys ----------------------------------------------------------------------
    def _update_standbys(self) -> None:
        """After an assignment: tell every table which partitions to keep warm (the
        assignor's standbys that are not active here). Sent before the recovery requests
        of the assignment, so a promoted standby is released first."""
        active = {tp.partition for tp in self.assigned}
        standbys = self._assignor.view.standbys - active
        if standbys == self.standbys:
            return
        self.standbys = standbys
        logger.info("%s: standby partitions %s", self.app_id, sorted(standbys))
        updates = []
        for table in self._registry.partitioned:
            channel = self._registry.channels.get(table.name)
            if channel is not None:
                update = StandbyUpdate(standbys)
                channel.send_nowait(update)
                updates.append((table, update))
        if self._nursery is not None and standbys:
            self._nursery.start_soon(self._announce_standbys_ready, updates)

    async def _announce_standbys_ready(
        self, updates: list[tuple[Collection, StandbyUpdate]]
    ) -> None:
        for table, update in updates:
            await update.done.wait()
            await table.wait_caught_up()
        if updates and all(update.partitions == self.standbys for _, update in updates):
            await self._hooks.on_standbys_ready()
