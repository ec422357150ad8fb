"""Consumers of the in-process broker: the group member and the restore consumer.

``poll()`` never moves a position before the step that returns the records: fetching
is one synchronous step after the last checkpoint, so a cancelled poll loses nothing.
A group member takes part in rebalances inside ``poll()``; each listener call and the
commit of the offsets it returns run shielded (atomic with respect to cancellation),
while waiting for the rest of the group is cancellable and resumes at the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import trio

from ...errors import CommitFailed
from .._base import (
    TP,
    Assignor,
    GroupMetadata,
    IsolationLevel,
    RebalanceListener,
    RebalanceProtocol,
    Record,
)
from ._broker import MemoryBroker
from ._group import Member

__all__ = ["MemoryGroupConsumer", "MemoryRestoreConsumer"]

logger = logging.getLogger("trio_tables.transport.memory")

Batch = dict[TP, list[Record]]


class _MemoryFetching:
    """What both consumers share: positions, pausing, offsets and the poll loop."""

    def __init__(
        self,
        broker: MemoryBroker,
        *,
        isolation_level: IsolationLevel,
        max_poll_records: int,
        auto_offset_reset: Literal["earliest", "latest"],
    ) -> None:
        self._broker = broker
        self._isolation_level: IsolationLevel = isolation_level
        self._max_poll_records = max_poll_records
        self._auto_offset_reset = auto_offset_reset
        self._positions: dict[TP, int] = {}
        self._paused: set[TP] = set()
        self._rotation = 0

    # -- hooks -------------------------------------------------------------------------
    def assignment(self) -> frozenset[TP]:
        raise NotImplementedError

    def _initial_position(self, tp: TP) -> int | None:
        """Where a partition without a position starts (``None``: reset policy)."""
        return None

    async def _prepare(self) -> None:
        """Runs before each fetch attempt of a poll; must checkpoint."""
        await trio.lowlevel.checkpoint()

    def _next_wake(self) -> float:
        """When the poll must wake up even if nothing changes."""
        return float("inf")

    # -- positions ---------------------------------------------------------------------
    def _check_assigned(self, tps: Iterable[TP]) -> list[TP]:
        wanted = list(tps)
        if missing := [tp for tp in wanted if tp not in self.assignment()]:
            raise ValueError(
                f"{', '.join(sorted(map(str, missing)))} not assigned to this consumer"
            )
        return wanted

    def _unstable(self) -> frozenset[TP]:
        """Partitions whose committed offset is not known yet (group consumers)."""
        return frozenset()

    def _resolve(self, tp: TP) -> int:
        log = self._broker.log(tp)
        position = self._positions.get(tp)
        if position is None:
            position = self._initial_position(tp)
        if position is None or not log.log_start_offset <= position <= log.high_watermark:
            if self._auto_offset_reset == "earliest":
                position = log.log_start_offset
            else:
                position = log.end_offset(self._isolation_level)
        return position

    def _fetch(self, max_records: int | None) -> Batch:
        """One synchronous fetch; moves positions (including past skipped gaps)."""
        budget = self._max_poll_records if max_records is None else max_records
        tps = sorted(self.assignment() - self._paused)
        if not tps:
            return {}
        start = self._rotation % len(tps)
        self._rotation += 1
        out: Batch = {}
        unstable = self._unstable()
        for tp in tps[start:] + tps[:start]:
            if budget <= 0:
                break
            if tp not in self._positions and tp in unstable:
                continue  # starts at a committed offset that an open transaction may move
            records, position = self._broker.log(tp).read(
                self._resolve(tp), self._isolation_level, budget
            )
            self._positions[tp] = position
            if records:
                out[tp] = records
                budget -= len(records)
        return out

    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        """Records since the last poll, by partition in offset order, waiting up to
        ``timeout`` seconds for some. Cancelled: no position moved, nothing is lost."""
        deadline = trio.current_time() + timeout
        while True:
            await self._prepare()
            changed = self._broker.changed  # taken before the check: no lost wake-up
            batch = self._fetch(max_records)
            if batch:
                return batch
            if trio.current_time() >= deadline:
                return {}
            with trio.move_on_at(min(deadline, self._next_wake())):
                await changed.wait()

    async def seek(self, tp: TP, offset: int) -> None:
        await trio.lowlevel.checkpoint()
        self._check_assigned([tp])
        self._positions[tp] = offset

    async def position(self, tp: TP) -> int:
        await trio.lowlevel.checkpoint()
        self._check_assigned([tp])
        position = self._positions[tp] = self._resolve(tp)
        return position

    async def beginning_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        await trio.lowlevel.checkpoint()
        return {tp: self._broker.log(tp).log_start_offset for tp in tps}

    async def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """High watermarks (last stable offsets under ``read_committed``); positions do
        not move."""
        await trio.lowlevel.checkpoint()
        return {tp: self._broker.log(tp).end_offset(self._isolation_level) for tp in tps}

    async def pause(self, tps: Iterable[TP]) -> None:
        await trio.lowlevel.checkpoint()
        self._paused.update(self._check_assigned(tps))

    async def resume(self, tps: Iterable[TP]) -> None:
        await trio.lowlevel.checkpoint()
        self._paused.difference_update(tps)

    def paused(self) -> frozenset[TP]:
        return frozenset(self._paused)

    def _forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._positions.pop(tp, None)
            self._paused.discard(tp)


class MemoryRestoreConsumer(_MemoryFetching):
    """Implements :class:`~._base.RestoreConsumer`: explicitly assigned partitions,
    starting at their beginning."""

    def __init__(
        self, broker: MemoryBroker, *, isolation_level: IsolationLevel, max_poll_records: int
    ) -> None:
        super().__init__(
            broker,
            isolation_level=isolation_level,
            max_poll_records=max_poll_records,
            auto_offset_reset="earliest",
        )
        self._assignment: frozenset[TP] = frozenset()

    def assignment(self) -> frozenset[TP]:
        return self._assignment

    async def assign(self, tps: Iterable[TP]) -> None:
        """Replace the assignment (unknown topics raise
        :class:`~trio_tables.errors.UnknownTopic`); kept partitions keep their position."""
        await trio.lowlevel.checkpoint()
        wanted = frozenset(tps)
        for tp in wanted:
            self._broker.log(tp)
        self._forget(self._assignment - wanted)
        self._assignment = wanted


class MemoryGroupConsumer(_MemoryFetching):
    """Implements :class:`~._base.GroupConsumer`: a member of a
    :class:`~._group.MemoryGroup`, joining at its first ``poll()``."""

    def __init__(
        self,
        broker: MemoryBroker,
        group_id: str,
        topics: frozenset[str],
        *,
        listener: RebalanceListener,
        assignors: Sequence[Assignor],
        rebalance_protocol: RebalanceProtocol,
        isolation_level: IsolationLevel,
        auto_offset_reset: Literal["earliest", "latest"],
        max_poll_records: int,
        session_timeout: float,
        rebalance_timeout: float,
    ) -> None:
        super().__init__(
            broker,
            isolation_level=isolation_level,
            max_poll_records=max_poll_records,
            auto_offset_reset=auto_offset_reset,
        )
        if not assignors:
            raise ValueError("a group consumer needs at least one assignor")
        self._group = broker.group(group_id)
        self._topics = topics
        self._listener = listener
        self._assignors = list(assignors)
        self._protocol: RebalanceProtocol = rebalance_protocol
        self._session_timeout = session_timeout
        self._rebalance_timeout = rebalance_timeout
        self._member: Member | None = None
        self._generation = -1
        self._assignment: frozenset[TP] = frozenset()
        # What the last generation gave this member: reported when rejoining under the
        # eager protocol too (after revoking), so sticky assignors stay sticky.
        self._last_assigned: frozenset[TP] = frozenset()
        self._polling = False

    def assignment(self) -> frozenset[TP]:
        return self._assignment

    # -- rebalancing -------------------------------------------------------------------
    async def poll(
        self, *, timeout: float = 0.2, max_records: int | None = None
    ) -> Mapping[TP, Sequence[Record]]:
        """Joins the group at the first call; takes part in rebalances (listener calls
        shielded, see the module docstring), then fetches like every consumer."""
        self._polling = True
        if self._member is not None:
            self._member.in_poll = 1
        try:
            return await super().poll(timeout=timeout, max_records=max_records)
        finally:
            self._polling = False
            if self._member is not None:
                self._member.in_poll = 0
                self._member.last_seen = trio.current_time()

    async def _prepare(self) -> None:
        await trio.lowlevel.checkpoint()
        self._group.expire()
        while await self._rebalance_step():
            pass

    def _next_wake(self) -> float:
        return self._group.next_expiry()

    async def _rebalance_step(self) -> bool:
        """Do the next thing the group needs from this member; ``False``: nothing."""
        group, member = self._group, self._member
        if member is None or member.evicted:
            if member is not None and self._assignment:
                lost, self._assignment = self._assignment, frozenset()
                self._forget(lost)
                with trio.CancelScope(shield=True):
                    await self._listener.on_partitions_lost(lost)
            self._generation = -1
            self._last_assigned = frozenset()
            self._member = group.join(
                self._topics,
                self._assignors,
                self._protocol,
                session_timeout=self._session_timeout,
                rebalance_timeout=self._rebalance_timeout,
            )
            self._member.in_poll = int(self._polling)
            return True
        if group.generation > self._generation and member.member_id in group.assignment:
            await self._apply_assignment(member)
            return True
        if group.rebalancing and member.joined_round < group.round:
            if self._protocol == "eager" and self._assignment:
                await self._revoke(member, self._assignment)
                return True
            metadata = self._assignors[0].metadata(self._topics)
            owned = self._assignment if self._protocol == "cooperative" else self._last_assigned
            group.rejoin(member, owned, metadata)
            return True
        return False

    async def _apply_assignment(self, member: Member) -> None:
        group = self._group
        generation = group.generation
        mine = group.assignment[member.member_id]
        self._generation = generation
        if revoked := self._assignment - mine.partitions:
            await self._revoke(member, revoked)
            if group.protocol == "cooperative":
                group.start_round()  # second round: the revoked partitions move
        added = mine.partitions - self._assignment
        self._assignment = self._last_assigned = mine.partitions
        for assignor in self._assignors:
            if assignor.name == group.assignor_name:
                assignor.on_assignment(mine, generation)
        with trio.CancelScope(shield=True):
            await self._listener.on_partitions_assigned(
                added if group.protocol == "cooperative" else mine.partitions
            )

    async def _revoke(self, member: Member, revoked: frozenset[TP]) -> None:
        self._assignment -= revoked
        self._forget(revoked)
        with trio.CancelScope(shield=True):
            offsets = await self._listener.on_partitions_revoked(revoked)
        if offsets:
            try:
                self._group.commit_released(member, offsets)
            except CommitFailed as exc:
                # Not fatal: the next owner continues from the last commit (at least once).
                logger.warning("commit on revocation failed: %s", exc)

    async def close(self) -> None:
        """Leave the group: revoke through the listener, commit what it returns."""
        with trio.CancelScope(shield=True):
            member = self._member
            if member is None:
                return
            try:
                if member.evicted:
                    if lost := self._assignment:
                        self._assignment = frozenset()
                        await self._listener.on_partitions_lost(lost)
                else:
                    # Still a member while the listener runs (as on Kafka): an
                    # exactly-once commit of the revoked partitions needs its metadata.
                    if self._assignment:
                        await self._revoke(member, self._assignment)
                    self._group.leave(member)
            finally:
                self._member = None
            self._forget(list(self._positions))

    # -- offsets -------------------------------------------------------------------------
    def _initial_position(self, tp: TP) -> int | None:
        return self._group.committed.get(tp)

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Raises :class:`~trio_tables.errors.CommitFailed` unless this member owns every
        partition in the group's current generation."""
        await trio.lowlevel.checkpoint()
        if not offsets:
            return
        self._group.expire()
        self._group.commit(self._member, self._generation, offsets)

    def _unstable(self) -> frozenset[TP]:
        if self._isolation_level != "read_committed":
            return frozenset()
        return self._broker.pending_offsets(self._group.group_id)

    async def committed(self, tps: Iterable[TP]) -> dict[TP, int | None]:
        """Under ``read_committed``, waits while an open transaction holds offsets of
        ``tps`` for this group (Kafka's ``require_stable`` offset fetch, KIP-447), so a
        new owner never starts before a zombie's pending commit is settled."""
        wanted = list(tps)
        await trio.lowlevel.checkpoint()
        while True:
            changed = self._broker.changed  # taken before the check: no lost wake-up
            if not self._unstable() & set(wanted):
                return {tp: self._group.committed.get(tp) for tp in wanted}
            await changed.wait()

    async def group_metadata(self) -> GroupMetadata:
        await trio.lowlevel.checkpoint()
        member_id = self._member.member_id if self._member is not None else ""
        return GroupMetadata(self._group.group_id, self._generation, member_id)
