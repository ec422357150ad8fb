"""What a running :class:`~trio_tables.TableManager` can tell: :class:`ManagerStatus`.

A mixin of the manager (no state of its own): its assignment, recovery and standby
progress, where a key lives, and waiting until the assigned partitions are recovered.
"""

from __future__ import annotations

from typing import Any

from ._assignor import KeyMetadata, TablesAssignor
from ._group import GroupMembership
from ._ledger import PartitionLedger
from ._rebalance import RebalanceSupervisor
from ._recovery import RecoveryStatus
from ._registry import TableRegistry
from ._table import Collection
from ._transport._base import TP

__all__ = ["ManagerStatus"]


class ManagerStatus:
    """Status and recovery waits of a manager (mixed into ``TableManager``)."""

    # Provided by TableManager.
    tables: dict[str, Collection]
    _registry: TableRegistry
    _ledger: PartitionLedger
    _supervisor: RebalanceSupervisor
    _membership: GroupMembership
    _assignor: TablesAssignor

    @property
    def changelog_topics(self) -> frozenset[str]:
        """Every table's changelog topic."""
        return frozenset(table.changelog_topic_name for table in self.tables.values())

    @property
    def actives_ready(self) -> bool:
        """Whether every assigned partition is recovered by every table."""
        return self._supervisor.fully_recovered()

    @property
    def standbys_ready(self) -> bool:
        """Whether every table's standby copies (and global tables) have caught up."""
        return all(table.standbys_caught_up for table in self.tables.values())

    @property
    def recovery(self) -> RecoveryStatus:
        """A snapshot of recovery and standby progress (Faust's ``recovery`` service)."""
        return RecoveryStatus(
            {name: dict(t.recovery_progress) for name, t in self.tables.items()},
            {name: dict(t.standby_progress) for name, t in self.tables.items()},
            self.actives_ready,
        )

    @property
    def standby_partitions(self) -> frozenset[int]:
        """Partition numbers this worker keeps warm copies of."""
        return self._supervisor.standbys

    def metadata_for_key(self, table: str | Collection, key: Any) -> KeyMetadata:
        """Which member serves ``key`` of ``table`` (by the key's partition under Kafka's
        default partitioner), as of the latest assignment: the advertised host of its
        owner and of the members holding standbys (``advertised_host=`` setting)."""
        collection = self.tables[table] if isinstance(table, str) else table
        partition = collection.partition_for_key(key)
        view = self._assignor.view
        return KeyMetadata(
            partition,
            view.active_hosts.get(partition),
            tuple(view.standby_hosts.get(partition, ())),
        )

    async def wait_until_recovered(self) -> None:
        """Wait until this worker has the first assignment of its current group session
        (a stream opened after the group was left waits for the new one) and every
        assigned partition is recovered by every table (at once when no stream is
        open), and every global
        table has read up to the end offsets seen when it started. Raises
        :class:`~trio_tables.errors.RecoveryFailed` when a restore failed (the manager
        stops with its cause) instead of returning over a half-restored table.
        Cancellation: safe, nothing is waiting on the caller."""
        await self._wait_recovered()

    async def _wait_recovered(self) -> bool:
        """:meth:`wait_until_recovered`; ``True`` if the manager stopped first."""
        supervisor = self._supervisor
        while self._membership.joined and not supervisor.fully_recovered():
            supervisor.check_recovery()
            if supervisor.is_stopped:
                return True
            await supervisor.recovery_changed.wait()
        supervisor.check_recovery()
        for table in list(self.tables.values()):
            if table.is_global:
                await self._registry.wait_until_ready(table)
                await table.wait_caught_up()
        return False

    async def wait_until_recovery_completed(self) -> bool:
        """Faust's name for :meth:`wait_until_recovered`, with Faust's result: ``False``
        once recovered, ``True`` if the manager stopped before (Faust: "stopped").
        Raises :class:`~trio_tables.errors.RecoveryFailed` when a restore failed.
        Cancellation: safe."""
        return await self._wait_recovered()

    def recovery_progress(self) -> dict[str, dict[int, tuple[int, int]]]:
        """Per table and partition: ``(position, target)`` of the current or last
        restore."""
        return {name: dict(table.recovery_progress) for name, table in self.tables.items()}

    @property
    def assignment(self) -> frozenset[TP]:
        """Source partitions assigned to this worker."""
        return self._supervisor.assigned

    @property
    def active_partitions(self) -> frozenset[int]:
        """Partition numbers recovered and being processed here."""
        return frozenset(self._ledger.ready)
