"""Assembly of a worker's core: the owners of each concern, wired together.

:func:`build_core` creates, for one :class:`~trio_tables.TableManager`, the table
registry, the partition ledger, the stream flow, the worker's health, the commit cycle
with its strategy (:class:`~._commit.AtLeastOnce` or :class:`~._exactly_once.Transactions`),
the rebalance supervisor and the group membership. Each gets the narrow pieces it needs
(objects and callables), never the manager itself; the manager only appears as the
:class:`~._hooks.ManagerHooks` its subclass overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from ._assignor import TablesAssignor
from ._commit import AtLeastOnce, CommitCycle, CommitStrategy, WorkerHealth
from ._exactly_once import Transactions
from ._flow import StreamFlow
from ._group import GroupMembership
from ._hooks import ManagerHooks
from ._ledger import PartitionLedger
from ._rebalance import RebalanceSupervisor
from ._registry import TableRegistry
from ._transport._base import TP, GroupMetadata, IsolationLevel, Producer, RebalanceProtocol

__all__ = ["WorkerCore", "build_core"]


@attrs.frozen
class WorkerCore:
    """The owners of one worker's concerns (see the module docstring)."""

    registry: TableRegistry
    ledger: PartitionLedger
    flow: StreamFlow
    health: WorkerHealth
    assignor: TablesAssignor
    cycle: CommitCycle
    supervisor: RebalanceSupervisor
    membership: GroupMembership
    transactions: Transactions | None


def build_core(
    app_id: str,
    *,
    hooks: ManagerHooks,
    producer: Callable[[], Producer],
    transactional_id: str | None,
    isolation_level: IsolationLevel,
    rebalance_protocol: RebalanceProtocol,
    standby_replicas: int,
    advertised_host: str | None,
    changelog_replication_factor: int,
    max_commit_backlog: int,
    max_cycle_changes: int | None,
    event_grace: float,
    commit_timeout: float,
    revoke_timeout: float,
    poll_timeout: float,
    on_released: Callable[[frozenset[int]], None],
) -> WorkerCore:
    """Create and wire the owners; ``transactional_id`` selects ``exactly_once``."""
    registry = TableRegistry(changelog_replication_factor=changelog_replication_factor)
    ledger = PartitionLedger()
    flow = StreamFlow(
        ledger,
        max_commit_backlog=max_commit_backlog,
        max_cycle_changes=max_cycle_changes,
        pending_changes=lambda: sum(table.pending_changes() for table in registry),
    )
    health = WorkerHealth()
    assignor = TablesAssignor(standby_replicas=standby_replicas, host=advertised_host)
    assignor.freshness = registry.freshness
    # Created last (it is the supervisor's client), reached through these callables.
    membership: list[GroupMembership] = []

    async def group_metadata() -> GroupMetadata:
        return await membership[0].group_metadata()

    async def committed(tps: Iterable[TP]) -> dict[TP, int | None] | None:
        return await membership[0].committed(tps)

    transactions: Transactions | None = None
    strategy: CommitStrategy = AtLeastOnce(producer)
    if transactional_id is not None:
        strategy = transactions = Transactions(
            transactional_id,
            tables=registry.tables,
            ledger=ledger,
            health=health,
            group_metadata=group_metadata,
            on_commit=hooks.on_commit,
        )
    supervisor_box: list[RebalanceSupervisor] = []
    cycle = CommitCycle(
        tables=registry.tables,
        ledger=ledger,
        flow=flow,
        health=health,
        strategy=strategy,
        assigned=lambda: supervisor_box[0].assigned,
        event_grace=event_grace,
        commit_timeout=commit_timeout,
        app_id=app_id,
    )
    supervisor = RebalanceSupervisor(
        app_id,
        registry=registry,
        ledger=ledger,
        flow=flow,
        cycle=cycle,
        health=health,
        assignor=assignor,
        hooks=hooks,
        committed=committed,
        transactions=transactions,
        revoke_timeout=revoke_timeout,
        on_released=on_released,
    )
    supervisor_box.append(supervisor)
    membership.append(
        GroupMembership(
            app_id,
            listener=supervisor,
            assignors=[assignor],
            rebalance_protocol=rebalance_protocol,
            isolation_level=isolation_level,
            poll_timeout=poll_timeout,
            flow=flow,
            ledger=ledger,
            on_commit_tp=hooks.on_commit_tp,
        )
    )
    return WorkerCore(
        registry, ledger, flow, health, assignor, cycle, supervisor, membership[0], transactions
    )
