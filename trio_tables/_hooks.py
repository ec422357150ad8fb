"""The hooks of :class:`~trio_tables.TableManager` that a subclass overrides.

Each is awaited by the manager at the moment its docstring names; the defaults do
nothing. A hook that raises stops the worker like any other error in its tasks; a hook
that blocks holds up what awaits it (a rebalance, a commit): keep them short.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._transport._base import TP

__all__ = ["ManagerHooks"]


class ManagerHooks:
    """Lifecycle, commit and rebalance hooks (override in a subclass)."""

    async def on_start(self) -> None:
        """Hook: called when the manager has started (override in a subclass)."""

    async def on_stop(self) -> None:
        """Hook: called before the manager stops (after the group was left)."""

    async def on_commit(self, offsets: Mapping[TP, int]) -> None:
        """Hook: called with the offsets about to be committed. Under ``at_least_once``
        the changes are acknowledged and persisted already; under ``exactly_once`` this
        runs inside the transaction, after the changelog records, the outputs and the
        offsets were sent and before the transaction commits (stores are written after
        the commit)."""

    async def on_commit_tp(self, tp: TP) -> None:
        """Hook: called for each source partition whose offset was just committed by a
        periodic or explicit commit (commits made by a revocation are handed to the
        group protocol and not reported here; :meth:`on_commit` sees them)."""

    async def on_rebalance_start(self) -> None:
        """Hook: a rebalance began (partitions are about to be revoked or assigned)."""

    async def on_partitions_revoked(self, revoked: frozenset[TP]) -> None:
        """Hook: ``revoked`` were released (their changes persisted and committed)."""

    async def on_rebalance(
        self,
        assigned: frozenset[TP],
        revoked: frozenset[TP],
        newly_assigned: frozenset[TP],
        generation_id: int = 0,
    ) -> None:
        """Hook: an assignment arrived (``assigned``: everything owned now); recovery of
        the new partitions starts right after. Also calls every table's
        ``on_rebalance``."""

    async def on_actives_ready(self) -> None:
        """Hook: every assigned partition is recovered by every table."""

    async def on_standbys_ready(self) -> None:
        """Hook: every table's standby copies read up to the changelog's end offsets
        seen when they started following the latest standby assignment."""
